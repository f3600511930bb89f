"""The container engine's API: the one place a Docker-API client is made, and which
engine (Docker, Podman rootful or rootless) answers on it.

Imports nothing above :mod:`orchestrator._util`; knows nothing of runs or stores.
"""
