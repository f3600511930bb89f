"""Image building: deterministic layers, canonical image configs, thin docker-archives."""
