"""``orch pull``: a run's outputs into a local directory (``orchestrator.pull`` prints here)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .context import Context, check_id, complete_run_ids, with_context

#: A pull shows a bar on a terminal when it has at least this much to fetch.
BAR_BYTES = 32 * 1024 * 1024


class _Bar:
    """Bytes received, on stderr, for a big pull on a terminal; nothing otherwise."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def planned(self, files: int, total_bytes: int | None) -> None:
        if not sys.stderr.isatty() or (total_bytes or 0) < BAR_BYTES:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn(f"[bold]pull[/] {files} file{'s' if files != 1 else ''}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._bar.add_task("pull", total=total_bytes)
        self._bar.start()

    def advanced(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{nbytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


@click.command()
@click.argument("run_id", shell_complete=complete_run_ids)
@click.argument("paths", nargs=-1)
@click.option("-o", "--output", "dest", default=".", show_default=True,
              type=click.Path(file_okay=False),
              help="Directory to write into; files keep their paths under the run's output.")
@with_context()
@click.option("-j", "--jobs", default=16, show_default=True, type=click.IntRange(1, 128),
              help="Files downloaded at once.")
@click.option("--json", "as_json", is_flag=True, help="Print what was pulled as one JSON object.")
def pull(context: Context, run_id: str, paths: tuple[str, ...], dest: str, jobs: int,
         as_json: bool) -> None:
    """Download a run's outputs (all, or the PATHS given, as globs: model.ckpt, csv,
    '**/*.ckpt') into -o DIR, each checked against the size and SHA-256 recorded when
    the run was committed. A file already there and identical is kept; others are
    replaced, atomically."""
    from ..store.artifacts import ArtifactMismatch
    from ..store.artifacts import pull as pull_outputs

    check_id(run_id, "run id")
    bar = _Bar()
    try:
        result = pull_outputs(run_id, paths, dest, store=context.runs(), workers=jobs,
                              progress=bar)
    except ArtifactMismatch as exc:
        bar.close()
        if exc.result.files and not as_json:
            click.echo(_summary(exc.result.to_json()))
        raise
    finally:
        bar.close()
    data = result.to_json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if result.unchecked:
        click.echo(
            f"warning: {len(result.unchecked)} file(s) not checked: run {result.run_id}'s "
            "record is older than the sizes and SHA-256 digests orch keeps for outputs",
            err=True,
        )
    click.echo(_summary(data))


def _summary(data: dict[str, Any]) -> str:
    fetched, unchanged = data["fetched"], data["unchanged"]
    line = (f"pulled {fetched} file{'s' if fetched != 1 else ''} "
            f"({_size(data['fetched_bytes'])}) of run {data['run_id']} into {data['dest']}")
    if unchanged:
        line += f"; {unchanged} already there and identical"
    if not fetched and not unchanged:
        line = f"run {data['run_id']} has no outputs: nothing pulled"
    return line
