"""``orch image base`` and ``orch init``: starting a project from the installed package alone.

``orch image base`` builds the default base image from the recipe and package list that
ship in the package (``images/build_base.py`` and ``make base-image`` call it) and prints
its ID last. ``orch init`` writes an ``orch.yaml`` for a project that has none (see
:mod:`orchestrator.compose.scaffold` for what it looks for).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..daemon.client import DockerClient


def _progress(prefix: str) -> Callable[[str], None]:
    start = time.monotonic()

    def log(message: str) -> None:
        click.echo(f"[{time.monotonic() - start:6.1f}s] {prefix}: {message}", err=True)

    return log


def build_default_base(
    client: DockerClient, *, mirror: str | None = None, rootfs: Path | None = None,
    frozen: bool = False,
) -> str:
    """Make sure the daemon has the default base image (built when missing); its ID."""
    from ..image import base_image as base

    log = _progress("base-image")
    image = base.ensure_base_image(
        client, base.PACKAGES_FILE, mirror=mirror, rootfs=rootfs, frozen=frozen, log=log
    )
    log(f"{base.TAG} is {image.image_id}")
    return image.image_id


@click.command("base")
@click.option("--mirror", help="Debian mirror (default: from the host's apt sources).")
@click.option("--rootfs", type=click.Path(path_type=Path),
              help="The rootfs directory (default: in orch's cache).")
@click.option("--frozen", is_flag=True,
              help="Fail instead of rewriting the recorded package list when Debian's "
                   "packages moved on.")
def image_base(mirror: str | None, rootfs: Path | None, frozen: bool) -> None:
    """Build the default base image (Debian bookworm with python3, reproducibly); its ID
    (sha256:...) is the last line. A second call costs a lookup."""
    from ..daemon.client import connect

    click.echo(build_default_base(connect(), mirror=mirror, rootfs=rootfs, frozen=frozen))


@click.command("init")
@click.option("-p", "--project", "project_dir", type=click.Path(path_type=Path),
              default=Path("."), help="The project directory (default: here).")
@click.option("--base-image", help="The base image's ID (default: the default base image, "
              "built when the daemon lacks it).")
@click.option("--force", is_flag=True, help="Replace an existing orch.yaml.")
def init(project_dir: Path, base_image: str | None, force: bool) -> None:
    """Write an orch.yaml for an existing Hydra project: its entry point, config, lock, data."""
    from ..compose import scaffold
    from ..compose.project import PROJECT_FILE, is_pinned
    from ..errors import ProjectError

    root = project_dir.resolve()
    if (root / PROJECT_FILE).exists() and not force:
        raise ProjectError(
            f"{root / PROJECT_FILE} exists: orch init never overwrites it (--force replaces it)"
        )
    found = scaffold.find(root)
    say = click.echo
    kind = "@hydra.main application" if found.hydra_app else "plain script (no @hydra.main)"
    say(f"entry point: {found.script}, a {kind}")
    say(f"config: {found.config_dir}/{found.config_name}.yaml (from {found.config_source})")
    if base_image is None:
        base_image = _default_base(say)
    elif not is_pinned(base_image):
        raise ProjectError(
            f"--base-image {base_image!r} is not pinned: give an image ID (sha256:...) or "
            "name@sha256:<digest>"
        )
    else:
        say(f"base image: {base_image}")
    if found.lock is not None:
        say(f"lock: {found.lock}")
    else:
        write_it = ("" if (root / found.lock_source).is_file()
                    else f" (write {found.lock_source} first: the packages the runs need)")
        say(f"lock: none; make one from {found.lock_source}{write_it} with pip-tools or uv, "
            "then set requirements: requirements.lock in orch.yaml:")
        for command in found.lock_commands():
            say(f"  {command}")
    if found.data_input:
        key = found.data_key or "data_dir"
        say(f"data: data/ is gitignored: the input 'data' (point the config at it with "
            f"{key}=${{orch.input:data}})")
    path = scaffold.write(root, scaffold.render(found, base_image), force=force)
    say(f"wrote {path}")
    if not found.git_repo:
        say("next: git init && git add -A && git commit -m 'orch.yaml', then orch sweep "
            "--dry-run (runs are pinned to a commit)")
    else:
        say("next: git add orch.yaml && git commit -m 'orch.yaml', then orch sweep --dry-run")


def _default_base(say: Callable[[str], None]) -> str:
    from ..daemon.client import connect
    from ..image import base_image as base

    client = connect()
    found = base.default_image_id(client)
    if found is not None:
        say(f"base image: {found} (the default base image, on the daemon)")
        return found
    say("base image: the default one is not on the daemon: building it (about a minute, "
        "once; orch image base does the same)")
    sys.stdout.flush()
    built = build_default_base(client)
    say(f"base image: {built} (the default base image, built now)")
    return built
