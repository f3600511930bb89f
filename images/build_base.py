"""Build the default base image ``orch/base:bookworm`` reproducibly and print its ID.

Usage: .venv/bin/python images/build_base.py [--mirror URL] [--rootfs DIR] [--frozen]

The same as ``orch image base`` (the recipe is ``orchestrator.image.base_image``, the package
set ``orchestrator/image/bookworm-python.packages.txt``, which ``images/`` links to).
Progress goes to stderr; the last line of stdout is the image ID (``sha256:...``).
"""

from __future__ import annotations

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    main(["image", "base", *sys.argv[1:]])
