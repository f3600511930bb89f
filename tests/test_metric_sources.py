"""Step metrics from a framework's own logs: Lightning's ``metrics.csv``, TensorBoard event files.

Every file here is written by the real library (lightning's ``CSVLogger`` and ``Trainer``,
``torch.utils.tensorboard.SummaryWriter``), never by hand: the readers are tested against
the formats as they are, torn, growing and rewritten the way the libraries leave them
while a run writes. ``torch`` comes from the dev machines' disk (``torch==2.13.0``, the
CPU build; see pyproject.toml's dev extra).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.runner import live
from orchestrator.runner.live import CsvSteps, EventSteps, JsonlSteps, RunMetrics
from orchestrator.runner.live import _tfevents as tfevents
from orchestrator.runner.live._base import MAX_LINE

torch = pytest.importorskip("torch", reason="torch==2.13.0 (CPU) from the dev machine's disk")
pl = pytest.importorskip("lightning.pytorch", reason="pip install -e '.[dev]'")
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

CSV = "csv/version_0/metrics.csv"
TB = "tensorboard/version_0"


class _Tiny(pl.LightningModule):  # type: ignore[misc]
    """Logs the way real training does: per step, per validation, a key that comes late."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("val/loss", loss)
        self.log("val/acc", 1 / (1 + loss))

    def on_train_epoch_end(self) -> None:
        if self.current_epoch == 1:  # a new key mid-run: Lightning rewrites the header
            self.log("late/key", 3.0)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(scope="session")
def lightning_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output directory as a Lightning run leaves it, CSV and TensorBoard loggers both."""
    out = tmp_path_factory.mktemp("lightning")
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 2), torch.randn(16, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = pl.Trainer(
        max_epochs=3, log_every_n_steps=2, default_root_dir=str(out),
        logger=[CSVLogger(str(out), name="csv"), TensorBoardLogger(str(out), name="tensorboard")],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(_Tiny(), loader, loader)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _last(rows: list[dict[str, str]], key: str) -> float:
    return float([row[key] for row in rows if row[key]][-1])


# -- metrics.csv ----------------------------------------------------------------------------


def test_csv_sparse_rows_give_the_last_value_of_each_metric(lightning_run: Path) -> None:
    rows = _rows(lightning_run / CSV)
    assert any(not row["val/acc"] for row in rows), "Lightning's rows are sparse"
    reader = CsvSteps(lightning_run, CSV)
    assert reader.poll()
    assert reader.lines == len(rows) and reader.bad_lines == 0
    assert reader.step == float(rows[-1]["step"])
    final = reader.final()
    assert set(final) == {"train/loss", "val/loss", "val/acc", "late/key"}  # not epoch
    assert final["val/acc"] == _last(rows, "val/acc")
    assert final["train/loss"] == _last(rows, "train/loss")


def test_csv_header_that_grows_is_followed_without_counting_rows_twice(tmp_path: Path) -> None:
    logger = CSVLogger(str(tmp_path), name="csv", flush_logs_every_n_steps=1)
    reader = CsvSteps(tmp_path, CSV)
    assert not reader.poll()  # nothing written yet
    logger.log_metrics({"train/loss": 1.0}, step=0)
    assert reader.poll() and reader.lines == 1
    header = (tmp_path / CSV).read_text().splitlines()[0]
    logger.log_metrics({"train/loss": 0.5, "val/acc": 0.25}, step=1)  # rewrites the file
    assert (tmp_path / CSV).read_text().splitlines()[0] != header
    assert reader.poll()
    assert reader.lines == 2 and reader.latest == {"train/loss": 0.5, "val/acc": 0.25}
    logger.log_metrics({"val/acc": 0.5}, step=2)
    assert reader.poll() and reader.lines == 3 and reader.step == 2.0
    assert not reader.poll()  # nothing new, nothing changed


def test_csv_torn_last_row_waits_for_its_newline(lightning_run: Path, tmp_path: Path) -> None:
    data = (lightning_run / CSV).read_bytes()
    cut = data.rindex(b"\n", 0, len(data) - 1) + 5  # into the last row
    target = tmp_path / CSV
    target.parent.mkdir(parents=True)
    target.write_bytes(data[:cut])
    reader = CsvSteps(tmp_path, CSV)
    reader.poll()
    rows = len(_rows(lightning_run / CSV))
    assert reader.lines == rows - 1 and reader.bad_lines == 0
    with target.open("ab") as handle:
        handle.write(data[cut:])
    assert reader.poll() and reader.lines == rows
    # a run that ended without the last newline: final() still takes that row
    target.write_bytes(data.rstrip(b"\r\n"))
    ended = CsvSteps(tmp_path, CSV)
    assert ended.final()["val/acc"] == _last(_rows(lightning_run / CSV), "val/acc")
    assert ended.lines == rows


def test_csv_that_is_not_lightnings_is_skipped_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_bytes(b"a,a\n1,2\n")
    metrics = RunMetrics(tmp_path)
    assert metrics.final() == {}
    assert any("not a header of distinct names" in note for note in metrics.notes())


def test_a_linked_metrics_file_is_not_followed(lightning_run: Path, tmp_path: Path) -> None:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").symlink_to(lightning_run / CSV)
    (tmp_path / "tb").symlink_to(lightning_run / TB, target_is_directory=True)
    (tmp_path / "metrics.jsonl").symlink_to(lightning_run / CSV)
    metrics = RunMetrics(tmp_path)
    metrics.poll()
    assert metrics.final() == {} and metrics.step_log() is None
    assert CsvSteps(tmp_path, "csv/metrics.csv").final() == {}
    assert JsonlSteps(tmp_path).final() == {}


@pytest.mark.parametrize("name", ["metrics.jsonl", "csv/metrics.csv"])
def test_a_line_over_the_limit_is_one_bad_line_and_the_next_ones_are_read(
    tmp_path: Path, name: str
) -> None:
    """A run that prints a megabyte line into its metrics file (or a line never ended)."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    is_csv = name.endswith(".csv")

    def row(step: int, loss: str) -> bytes:
        return (f"{step},{loss}" if is_csv else f'{{"step": {step}, "loss": {loss}}}').encode()

    reader = CsvSteps(tmp_path, name) if is_csv else JsonlSteps(tmp_path, name)
    path.write_bytes((b"step,loss\n" if is_csv else b"") + row(1, "1.0") + b"\n"
                     + b"9" * (MAX_LINE + 10))
    reader.poll()
    assert (reader.lines, reader.bad_lines) == (1, 0)
    with path.open("ab") as handle:  # the long line ends, two rows follow, one torn
        handle.write(b"9\n" + row(2, "0.5") + b"\n" + row(3, "0.2")[:-2])
    reader.poll()
    assert (reader.lines, reader.bad_lines, reader.step) == (2, 1, 2.0)
    with path.open("ab") as handle:  # the run ends without the last newline
        handle.write(row(3, "0.25")[-3:])
    assert reader.final() == {"loss": 0.25} and reader.step == 3.0


# -- TensorBoard event files ---------------------------------------------------------------


def _event_file(directory: Path) -> Path:
    (path,) = [p for p in directory.iterdir() if "tfevents" in p.name]
    return path


@pytest.mark.parametrize("new_style", [False, True], ids=["simple_value", "tensor"])
def test_tensorboard_scalars_in_either_form(tmp_path: Path, new_style: bool) -> None:
    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in range(5):
        writer.add_scalar("val/acc", step / 10, step, new_style=new_style)
        writer.add_scalar("train/loss", 1 / (step + 1), step, new_style=new_style)
    writer.add_histogram("weights", torch.randn(100), 4)  # not a scalar: passed over
    writer.add_text("note", "hello", 4)
    writer.close()
    if new_style:
        from tensorboard.backend.event_processing.event_file_loader import (
            LegacyEventFileLoader,
        )

        raw = [e for e in LegacyEventFileLoader(str(_event_file(tmp_path / "tb"))).Load()
               if e.HasField("summary")]
        assert all(not v.HasField("simple_value") for e in raw for v in e.summary.value)
    reader = EventSteps(tmp_path, "tb")
    assert reader.poll()
    assert reader.lines == 10 and reader.step == 4.0  # an event per add_scalar
    final = reader.final()
    assert set(final) == {"val/acc", "train/loss"}
    assert final["val/acc"] == pytest.approx(0.4) and final["train/loss"] == pytest.approx(0.2)


def test_tensorboard_incremental_polls_and_a_torn_record(tmp_path: Path) -> None:
    writer = SummaryWriter(str(tmp_path / "tb"))
    reader = EventSteps(tmp_path, "tb")
    for step in range(3):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
    writer.flush()
    assert reader.poll() and reader.lines == 3
    assert not reader.poll()
    writer.add_scalar("loss", 0.125, 7)
    writer.flush()
    assert reader.poll() and reader.lines == 4 and reader.step == 7.0
    writer.close()
    reader.close()

    # the same bytes, cut in the middle of the last record, then completed
    data = _event_file(tmp_path / "tb").read_bytes()
    torn = tmp_path / "torn"
    torn.mkdir()
    target = torn / _event_file(tmp_path / "tb").name
    target.write_bytes(data[:-6])
    follower = EventSteps(tmp_path, "torn")
    follower.poll()
    assert follower.lines == 3 and follower.bad_lines == 0 and follower.skipped == {}
    with target.open("ab") as handle:
        handle.write(data[-6:])
    assert follower.poll() and follower.lines == 4
    assert follower.final() == {"loss": 0.125}
    follower.close()


def test_lightning_tensorboard_logger_matches_its_csv(lightning_run: Path) -> None:
    csv_final = CsvSteps(lightning_run, CSV).final()
    reader = EventSteps(lightning_run, TB)
    tb_final = reader.final()
    reader.close()
    for key in ("val/acc", "val/loss", "train/loss", "late/key"):
        assert tb_final[key] == pytest.approx(csv_final[key], rel=1e-6)


def test_a_file_that_is_not_an_event_file_is_no_failure(tmp_path: Path) -> None:
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "events.out.tfevents.1.host").write_bytes(os.urandom(200))
    metrics = RunMetrics(tmp_path)
    metrics.poll()
    assert metrics.final() == {} and metrics.step_log() is None


def test_without_the_extra_event_files_get_the_install_note(
    lightning_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(lightning_run / TB, tmp_path / TB)
    monkeypatch.setattr(tfevents, "available", lambda: False)
    metrics = RunMetrics(tmp_path)
    assert metrics.final() == {}
    assert any(live.INSTALL_HINT in note for note in metrics.notes())
    assert "install 'orch[tensorboard]' to read TensorBoard event files" == live.INSTALL_HINT


# -- which source wins ---------------------------------------------------------------------


@pytest.fixture
def both_loggers(lightning_run: Path, tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "out"
    shutil.copytree(lightning_run, out, ignore=shutil.ignore_patterns("*.yaml"))
    yield out


def test_csv_wins_over_event_files_and_becomes_metrics_jsonl(both_loggers: Path,
                                                             tmp_path: Path) -> None:
    log = tmp_path / "steps.jsonl"
    metrics = RunMetrics(both_loggers, step_log=log, scan_s=0)
    assert metrics.poll()
    rows = _rows(both_loggers / CSV)
    assert metrics.lines == len(rows)  # the CSV's rows, not the event count
    assert metrics.step_log() == log
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [line["step"] for line in lines]
    assert steps == sorted(set(steps)) == sorted({int(row["step"]) for row in rows})
    assert lines[-1]["val/acc"] == _last(rows, "val/acc") == metrics.final()["val/acc"]
    from orchestrator.results.curves import parse_curve

    curve = parse_curve(log.read_bytes())
    assert list(curve["val/acc"][1]) == [float(r["val/acc"]) for r in rows if r["val/acc"]]


def test_event_files_serve_when_there_is_no_csv(both_loggers: Path, tmp_path: Path) -> None:
    shutil.rmtree(both_loggers / "csv")
    metrics = RunMetrics(both_loggers, step_log=tmp_path / "steps.jsonl")
    final = metrics.final()
    assert {"val/acc", "train/loss"} <= set(final)
    assert metrics.step_log() is not None


def test_metrics_jsonl_wins_over_everything(both_loggers: Path, tmp_path: Path) -> None:
    (both_loggers / "metrics.jsonl").write_text('{"step": 1, "mine": 0.5}\n')
    metrics = RunMetrics(both_loggers, step_log=tmp_path / "steps.jsonl", scan_s=0)
    metrics.poll()
    assert metrics.latest == {"mine": 0.5}
    assert metrics.final() == {"mine": 0.5} and metrics.step_log() is None


def test_several_csv_files_are_told_apart_by_directory(lightning_run: Path,
                                                       tmp_path: Path) -> None:
    for version in ("version_0", "version_1"):
        target = tmp_path / "csv" / version / "metrics.csv"
        target.parent.mkdir(parents=True)
        shutil.copy(lightning_run / CSV, target)
    final = RunMetrics(tmp_path).final()
    assert final["version_0/val/acc"] == final["version_1/val/acc"]
    assert "val/acc" not in final


# -- end to end: a run on the real engine -----------------------------------------------------

RUN = """
import os
out = os.path.join(os.environ["ORCH_OUTPUT"], "csv", "version_0")
os.makedirs(out)
with open(os.path.join(out, "metrics.csv"), "wb") as f:
    f.write({data!r})
"""


@pytest.mark.docker
def test_a_run_that_only_wrote_lightnings_csv(
    make_project: Callable[..., Path],
    orch: Callable[..., subprocess.CompletedProcess[str]],
    lightning_run: Path,
) -> None:
    """The bytes a real CSVLogger wrote, written by a plain-Python run (the base image has
    no lightning): the record's metrics, ``orch best`` and the stored curve come from it."""
    data = (lightning_run / CSV).read_bytes()
    rows = _rows(lightning_run / CSV)
    root = make_project("csvrun", files={"run.py": RUN.format(data=data),
                                         "configs/config.yaml": "x: 1\n"},
                        command=["python3", "run.py"])
    proc = orch("sweep", "-p", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    (run,) = json.loads(proc.stdout)["runs"]
    results = orch("results", "-p", str(root), "--format", "json")
    assert results.returncode == 0, results.stderr
    (row,) = json.loads(results.stdout)
    assert row["run_id"] == run["run_id"]
    assert row["metrics"] == {key: _last(rows, key)
                              for key in ("late/key", "train/loss", "val/acc", "val/loss")}

    best = orch("best", "val/acc", "-p", str(root), "--json")
    assert best.returncode == 0, best.stderr
    assert run["run_id"] in best.stdout

    stored = root / ".orch" / "runs" / run["run_id"] / "metrics.jsonl"
    lines = [json.loads(line) for line in stored.read_text().splitlines()]
    assert [line["step"] for line in lines] == sorted({int(r["step"]) for r in rows})
    assert [line["val/acc"] for line in lines if "val/acc" in line] == [
        float(r["val/acc"]) for r in rows if r["val/acc"]
    ]
    manifest = (stored.parent / "outputs.jsonl").read_text().splitlines()
    assert "csv/version_0/metrics.csv" in [json.loads(line)["name"] for line in manifest]
