"""``orch export mlflow``: every run as an MLflow run, once.

Each orch run becomes one MLflow run in one experiment: params are the flattened config,
metrics the final metrics (at the run's last step) and the step metrics of
``metrics.jsonl`` with their steps, tags the orch run id, sweep id and name, image id,
repo digest, git commit, input digests, status and orch tags. A run is exported once:
runs already in the experiment are found by their ``orch.run_id`` tag; one whose export
was cut short (no ``orch.exported`` tag, which is set last) is replaced.

Needs the ``mlflow`` package (``pip install 'orch[mlflow]'``); imported only here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError, require
from ..results.table import display_value, flatten
from ..schema.record import RunRecord, RunStatus
from ..store import RunStore
from ..store.labels import Label, Labels
from .query import read_steps

_STATUS = {RunStatus.SUCCEEDED: "FINISHED", RunStatus.FAILED: "FAILED",
           RunStatus.CANCELLED: "KILLED", RunStatus.PRUNED: "KILLED"}
#: MLflow's limits: a param value's length, and entities per log_batch call.
_PARAM_MAX = 6000
_BATCH_METRICS = 1000
_BATCH_PARAMS = 100
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


@dataclass(frozen=True)
class ExportResult:
    created: int
    existing: int
    experiment_id: str


def _mlflow() -> Any:
    return require("mlflow.tracking", "orch export mlflow", "'orch[mlflow]'").MlflowClient


def _ms(stamp: str | None) -> int | None:
    if stamp is None:
        return None
    try:
        return int(dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _key(name: str) -> str:
    return _KEY_BAD.sub("_", name)[:250]


def _tags(record: RunRecord, label: Label) -> dict[str, str]:
    digests = sorted({ref.digest for ref in record.inputs.values()})
    tags = {
        "orch.run_id": record.run_id,
        "orch.sweep_id": record.sweep_id,
        "orch.sweep_name": label.name,
        "orch.project": record.project,
        "orch.status": record.status.value,
        "orch.image_id": record.image_id,
        "orch.repo_digest": record.repo_digest,
        "orch.git_commit": record.git_commit,
        "orch.rerun_of": record.rerun_of,
        "orch.input_digests": ",".join(digests) or None,
        "orch.tags": ",".join(sorted(label.tags)) or None,
        "orch.overrides": " ".join(record.overrides) or None,
        "mlflow.runName": record.run_id,
        "mlflow.note.content": label.note,
    }
    return {k: str(v) for k, v in tags.items() if v not in (None, "")}


def _existing(client: Any, experiment_id: str) -> dict[str, tuple[str, bool]]:
    """orch run id -> (MLflow run id, export complete) for runs already exported."""
    from mlflow.entities import ViewType

    found: dict[str, tuple[str, bool]] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string="tags.`orch.run_id` != ''",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        for run in page:
            tags = run.data.tags
            found[tags["orch.run_id"]] = (run.info.run_id, tags.get("orch.exported") == "1")
        token = page.token
        if not token:
            return found


def _log(
    client: Any, runs: RunStore, record: RunRecord, label: Label, experiment_id: str
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    start = _ms(record.started_at) or 0
    end = _ms(record.ended_at) or start
    run = client.create_run(experiment_id, start_time=start, tags=_tags(record, label),
                            run_name=record.run_id)
    run_id = run.info.run_id
    params = [
        Param(_key(k), display_value(v)[:_PARAM_MAX])
        for k, v in sorted(flatten(record.config).items())
    ]
    steps = read_steps(runs, record.run_id)
    last: dict[str, float] = {}
    metrics = []
    for step, name, value in steps:
        last[name] = max(step, last.get(name, step))
        metrics.append(Metric(_key(name), value, start + int(step), int(step)))
    for name, value in sorted(record.metrics.items()):
        metrics.append(Metric(_key(name), float(value), end, int(last.get(name, 0))))
    for i in range(0, len(params), _BATCH_PARAMS):
        client.log_batch(run_id, params=params[i : i + _BATCH_PARAMS])
    for i in range(0, len(metrics), _BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[i : i + _BATCH_METRICS])
    client.log_batch(run_id, tags=[RunTag("orch.exported", "1")])
    client.set_terminated(run_id, _STATUS.get(record.status, "FINISHED"), end)


def export(
    runs: RunStore, records: Sequence[RunRecord], labels: Labels, tracking_uri: str,
    experiment: str,
) -> ExportResult:
    """Log ``records`` (finished runs) to ``experiment`` at ``tracking_uri``, each with
    its sweep's name, its tags and note from ``labels``."""
    client_type = _mlflow()
    from mlflow.exceptions import MlflowException

    try:
        client = client_type(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        existing = _existing(client, experiment_id)
        created = kept = 0
        for record in records:
            previous = existing.get(record.run_id)
            if previous and previous[1]:
                kept += 1
                continue
            if previous:  # an export cut short: replace it, so nothing is half there
                client.delete_run(previous[0])
            _log(client, runs, record, labels.of_run(record.sweep_id, record.run_id),
                 experiment_id)
            created += 1
    except MlflowException as exc:
        raise BackendError(f"MLflow at {tracking_uri}: {' '.join(str(exc).split())}") from exc
    return ExportResult(created, kept, experiment_id)
