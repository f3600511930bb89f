"""The ``orch`` command line. The only place that prints for the user or exits.

Commands raise; :class:`OrchGroup` turns what they raise into one ``error:`` line on
stderr and an exit code, in one place:

=================================  =========================================
raised                             exit code
=================================  =========================================
OrchestratorError                  its ``exit_code``: 2 for an error, 1 for a
                                   result that is "no" (RunsFailed,
                                   NotReproduced, VerifyMismatch)
click's usage and other errors     2
Ctrl-C                             130
anything else (a bug)              2, "internal error ...; rerun with ORCH_DEBUG=1"
=================================  =========================================

A program calling ``cli.main(args, standalone_mode=False)`` (or :func:`main` with it) gets
the exception itself instead, and the process-wide output policy (third-party warnings
and log records kept off the terminal unless ORCH_DEBUG) is left to it.

The commands live in ``sweeping`` (compose, sweep, status), ``inspect`` (results, runs,
show, logs, compare, report), ``watch``, ``database`` (best, tag, note, name, query,
export, gc), ``data`` (inputs) and ``reproduce`` (rerun, image); ``context`` gives them the
project, the store, the daemon and the settings. Heavy modules are imported inside the
commands, so ``orch --help`` and ``orch compose`` stay fast.

Nothing in the package imports it; it calls :mod:`orchestrator.api` and prints.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from ..errors import OrchestratorError, ResultError
from .data import inputs_command
from .database import best, export, gc, name, note, query, tag
from .detach import status
from .inspect import compare, list_runs, logs, report, results, show
from .pull import pull
from .reproduce import image, rerun
from .start import image_base, init
from .sweeping import compose, sweep
from .watch import watch

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_INTERRUPTED", "OrchGroup", "cli", "main"]

EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _debug() -> bool:
    # Read directly, not through Settings: it must work when other ORCH_* values are bad.
    return bool(os.environ.get("ORCH_DEBUG"))


def failure(exc: BaseException) -> tuple[str, int] | None:
    """The error line and exit code the user sees for ``exc``; None for a bug."""
    if isinstance(exc, OrchestratorError):
        return str(exc) or type(exc).__name__, exc.exit_code
    if isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, click.exceptions.Abort) and isinstance(exc.__cause__, KeyboardInterrupt)
    ):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, click.exceptions.Abort):
        return "aborted", EXIT_ERROR
    if isinstance(exc, click.exceptions.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return f"{exc.format_message()}{hint}", EXIT_ERROR
    if isinstance(exc, click.exceptions.ClickException):
        return exc.format_message(), EXIT_ERROR
    return None


@contextmanager
def quiet_third_party(debug: bool) -> Iterator[None]:
    """Keep other libraries' warnings and log records off the user's terminal.

    They are about those libraries (a wheel with ``__pycache__`` files, urllib3 without
    SOCKS support), not about anything the user can fix; ORCH_DEBUG shows them.
    """
    if debug:
        yield
        return
    root = logging.getLogger()
    # With a handler on the root logger, logging's last-resort stderr handler is unused.
    drop = logging.NullHandler()
    root.addHandler(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(?!orchestrator(\.|$))")
            # installer attributes this one to its caller (our code) with stacklevel=2.
            warnings.filterwarnings(
                "ignore", message=r"Skip installing .*__pycache__", category=RuntimeWarning
            )
            yield
    finally:
        root.removeHandler(drop)


@contextmanager
def orch_warnings() -> Iterator[None]:
    """orch's own warnings (a corrupt record skipped, a lost claim) as ``warning:`` lines."""
    logger = logging.getLogger("orchestrator")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


class OrchGroup(click.Group):
    """Runs click in non-standalone mode so every error, ours or click's, is one line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        run = super().main
        if not standalone_mode:
            return run(args, prog_name or "orch", complete_var, standalone_mode=False, **extra)
        debug = _debug()
        with quiet_third_party(debug), orch_warnings():
            try:
                value = run(args, prog_name or "orch", complete_var, False, **extra)
            except BrokenPipeError:
                sys.exit(0)
            except (Exception, KeyboardInterrupt) as exc:
                known = failure(exc)
                if known is None:  # a bug: still one line, unless asked for the traceback
                    if debug:
                        raise
                    _fail(
                        f"internal error ({type(exc).__name__}: {exc}); rerun with ORCH_DEBUG=1",
                        EXIT_ERROR,
                    )
                if (
                    debug
                    and isinstance(exc, OrchestratorError)
                    and not isinstance(exc, ResultError)
                ):
                    traceback.print_exception(exc)
                _fail(*known)
        # click returns an int for an explicit exit (--help, --version); commands None.
        sys.exit(value if isinstance(value, int) else 0)


@click.group(cls=OrchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="orch")
def cli() -> None:
    """orch: sweep Hydra configs into pinned containers; store, compare and rerun results."""


image.add_command(image_base)
for _command in (
    init,
    compose,
    sweep,
    status,
    results,
    list_runs,
    show,
    logs,
    pull,
    rerun,
    image,
    compare,
    report,
    watch,
    inputs_command,
    best,
    query,
    tag,
    note,
    name,
    export,
    gc,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None, standalone_mode: bool = True) -> Any:
    """Console-script entry point; with ``standalone_mode=False`` errors are raised."""
    args = list(argv) if argv is not None else None
    return cli.main(args=args, prog_name="orch", standalone_mode=standalone_mode)
