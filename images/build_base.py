"""Build the default base image ``orch/base:bookworm`` reproducibly and print its ID.

Usage: .venv/bin/python images/build_base.py [--mirror URL] [--rootfs DIR] [--frozen]

Progress goes to stderr; the last line of stdout is the image ID (``sha256:...``). The
package set is recorded in ``images/bookworm-python.packages.txt`` next to this script.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import docker

from orchestrator.docker_api import connect
from orchestrator.errors import OrchestratorError
from orchestrator.image import base

PACKAGES_FILE = Path(__file__).resolve().parent / "bookworm-python.packages.txt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", help="Debian mirror (default: from the host's apt sources)")
    parser.add_argument("--rootfs", type=Path, help="rootfs directory (default: in the cache)")
    parser.add_argument(
        "--frozen",
        action="store_true",
        help=f"fail instead of rewriting {PACKAGES_FILE.name} when the package set changed",
    )
    args = parser.parse_args(argv)
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] base-image: {message}", file=sys.stderr)

    try:
        client = connect()
        image = base.ensure_base_image(
            client,
            PACKAGES_FILE,
            mirror=args.mirror,
            rootfs=args.rootfs,
            frozen=args.frozen,
            log=log,
        )
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except docker.errors.DockerException as exc:
        print(f"error: Docker daemon unreachable: {exc}", file=sys.stderr)
        return 2
    log(f"{base.TAG} is {image.image_id}")
    print(image.image_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
