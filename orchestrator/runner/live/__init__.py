"""A run's step metrics, read while the run writes them, from whichever file it writes.

Sources, each read incrementally by one reader with the same interface
(:class:`StepMetrics`: ``poll``, ``latest``, ``step``, ``lines``, ``final``):

- ``$ORCH_OUTPUT/metrics.jsonl``: orch's own, one JSON object of numbers per line
  (:class:`JsonlSteps`);
- ``metrics.csv`` anywhere under ``$ORCH_OUTPUT``: Lightning's ``CSVLogger`` (sparse rows,
  a header that grows; :class:`CsvSteps`);
- TensorBoard event files (``events.out.tfevents.*``) anywhere under ``$ORCH_OUTPUT``:
  Lightning's default logger, Hugging Face's Trainer, Keras (:class:`EventSteps`, with the
  optional ``orch[tensorboard]``; without it the run gets a note naming the extra).

Which source wins when a run writes several. For the final metrics, ``metrics.json``
wins over all of these (it is what the run declared its result); without it, the last
value of each metric of the step source that wins. For the step metrics, the first of
``metrics.jsonl``, ``metrics.csv``, event files that holds at least one step wins, alone:
sources are never merged, because a Lightning run that logs to CSV and TensorBoard writes
the same values to both. ``metrics.jsonl`` first, since a run writes it to orch on
purpose; ``metrics.csv`` before event files, since it is plain text that needs no extra,
and holds exactly what Lightning logged. Several files of one kind (``metrics.csv`` of
``version_0`` and ``version_1``; event files in ``train/`` and ``validation/``) are all
read, each one's names prefixed by its directory below the one holding them all; a lone
one keeps the framework's names (``val/acc``). ``epoch`` and ``time`` are bookkeeping,
never prefixed and never final metrics.

When a framework source wins, the store's ``metrics.jsonl`` is written from it (one
object per step, ``step`` set), so curves, ``orch watch``, ``orch best``, reports and
pruning read one format. Memory stays bounded (incremental reads, ``MAX_LINE``,
``MAX_KEYS``, capped numbers of files); no link is followed; a malformed file or line is
skipped with a note, never fatal.
"""

from __future__ import annotations

from ._base import MAX_KEYS as MAX_KEYS
from ._base import MAX_LINE as MAX_LINE
from ._base import StepLog as StepLog
from ._base import StepMetrics as StepMetrics
from ._base import number as number
from ._csv import CsvSteps as CsvSteps
from ._jsonl import JsonlSteps as JsonlSteps
from ._sources import RunMetrics as RunMetrics
from ._tfevents import INSTALL_HINT as INSTALL_HINT
from ._tfevents import EventSteps as EventSteps
