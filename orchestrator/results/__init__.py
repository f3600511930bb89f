"""Results: pure functions over run records (``docs/records.md``); no store access here.

    render(records, "table", sort="-accuracy", where=["optimizer.name=adam"])
    compare(record_a, record_b) -> Diff;  render_diff(diff, a_id, b_id)
    write_report(sweep, records, Path("report.html"))

Renderers return text without a final newline (print it with ``click.echo``), except
CSV, where every record, the last included, ends with its line terminator.
Bad user input (``--sort``, ``--where``, ``--format``) raises :class:`UsageError`.

Reads records, labels and step metrics; never starts a container, never writes
to the store, never imports a driver, a backend or the CLI.
"""

from __future__ import annotations

from .compare import MISSING as MISSING
from .compare import Diff as Diff
from .compare import compare as compare
from .compare import diff_to_json as diff_to_json
from .compare import render_diff as render_diff
from .render import FORMATS as FORMATS
from .render import render as render
from .render import render_rows as render_rows
from .render import runs_table as runs_table
from .report import write_report as write_report
from .table import best_run as best_run
from .table import default_sort as default_sort
from .table import sort_records as sort_records
from .table import varying_keys as varying_keys
from .where import select as select

__all__ = [
    "FORMATS",
    "MISSING",
    "Diff",
    "best_run",
    "compare",
    "default_sort",
    "diff_to_json",
    "render",
    "render_diff",
    "render_rows",
    "runs_table",
    "select",
    "sort_records",
    "varying_keys",
    "write_report",
]
