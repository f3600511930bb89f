"""Drivers: what turns composed points into committed runs.

``grid`` (a sweep's grid: plan, skip, retry, batches) and ``search`` (a search whose
points are chosen as results arrive) decide which runs to start; both start them through
one ``launcher`` (stage inputs, prepare a batch of images through an ``images`` builder,
submit to the backend, collect; ``inflight`` waits for runs another submitter holds).
``rerun`` runs a recorded run again, from its image. They use the image builder, a
backend and a store; they never import the CLI (the CLI and :mod:`orchestrator.api`
call them).
"""
