"""From a project on disk to composed configs: ``orch.yaml``, Hydra composition and
its cache, sweep expansion, search spaces, how a Hydra app receives its config,
and ``orch init``.

May import :mod:`orchestrator.inputs` (a config names its data inputs); never the
store, images, containers or backends.
"""
