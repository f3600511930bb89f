"""Image building: deterministic layers, canonical image configs, thin docker-archives.

May import the store (``verify`` checks its blobs, ``on_daemon`` reads its records)
and the daemon client; never a runner, a backend, a driver or the CLI.
"""
