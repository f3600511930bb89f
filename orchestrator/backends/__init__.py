"""Execution backends: where a run's container is started.

Every backend has the same small interface (:class:`Backend`): ``submit(job)`` returns a
future of the run's record. The backend never sees the CLI, and the sweep driver never
asks which backend it has.

Imports the runner, the store and the images; never a driver, the API or the CLI.
"""

from ..schema.job import Job as Job
from .backend import Backend as Backend
