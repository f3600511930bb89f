"""The typed values that cross layers: a run's plan and record, a sweep's document,
the job a backend receives, the immutable specs and the identities derived from them.

Imports only :mod:`orchestrator._util` and :mod:`orchestrator.errors`: no Docker,
no store, no Hydra.
"""
