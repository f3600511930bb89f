"""Execution backends: where a run's container is started.

Every backend has the same small interface (:class:`Backend`): ``submit(job)`` returns a
future of the run's record. The backend never sees the CLI, and the sweep driver never
asks which backend it has.
"""

from ..job import Job as Job
from .base import Backend as Backend
