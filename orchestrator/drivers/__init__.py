"""Drivers: what turns composed points into committed runs.

``grid`` (a sweep's grid: plan, build the run images, dispatch, collect), ``search`` (a
search whose points are chosen as results arrive, on the same launcher) and ``rerun`` (a
recorded run again, from its image). They use the image builder, a backend and a store;
they never import the CLI (the CLI and :mod:`orchestrator.api` call them).
"""
