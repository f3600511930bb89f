"""The lightning-hydra-template fixture (tests/lht.py): verbatim upstream where it says so,
a patch that touches only the two torchvision imports, and a project that tests can sweep."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest
from lht import (
    FIXTURE,
    PATCH,
    PATCHED,
    SPLIT,
    UPSTREAM_COMMIT,
    make_template_project,
    patch_diff,
    upstream_files,
    write_mnist,
)

#: A git directory of upstream (``LHT_UPSTREAM_GIT=.../lightning-hydra-template/.git``), to
#: compare the fixture with upstream itself; without one, with SHA256SUMS made from it.
MIRROR = Path(os.environ.get("LHT_UPSTREAM_GIT", "/nonexistent"))
REPO = Path(__file__).resolve().parent.parent


def _sums() -> dict[str, str]:
    lines = (FIXTURE / "SHA256SUMS").read_text().splitlines()
    return {rel: digest for digest, rel in (line.split("  ", 1) for line in lines)}


def _upstream_bytes(rel: str) -> bytes:
    return subprocess.run(
        ["git", "--git-dir", str(MIRROR), "show", f"{UPSTREAM_COMMIT}:{rel}"],
        check=True, capture_output=True,
    ).stdout


def test_fixture_is_verbatim_upstream() -> None:
    """Every file the fixture claims as upstream's is byte for byte the one at the commit:
    against the mirror when this machine has it, else against SHA256SUMS (made from it)."""
    files = upstream_files()
    sums = _sums()
    assert sorted(sums) == files, "SHA256SUMS and the fixture's upstream files differ"
    assert {"src/train.py", PATCHED, ".project-root", "configs/train.yaml"} <= set(files)
    for rel in files:
        data = (FIXTURE / rel).read_bytes()
        if MIRROR.is_dir():
            assert data == _upstream_bytes(rel), f"{rel} differs from upstream"
            assert hashlib.sha256(data).hexdigest() == sums[rel], f"SHA256SUMS is stale: {rel}"
        else:
            assert hashlib.sha256(data).hexdigest() == sums[rel], f"{rel} differs from upstream"


def test_patch_replaces_only_the_torchvision_imports() -> None:
    """The replacement is upstream's file with its two torchvision imports swapped for one
    marked block; the .diff kept for reading is the current one."""
    upstream = (FIXTURE / PATCHED).read_text()
    patched = (FIXTURE / PATCH).read_text()
    imports = ("from torchvision.datasets import MNIST\n"
               "from torchvision.transforms import transforms\n")
    assert upstream.count(imports) == 1
    block = re.search(r"\n# ---- orch test fixture:.*?# ---- end of the replacement block -+ #\n",
                      patched, re.S)
    assert block is not None
    assert patched.replace(block.group(0), imports, 1) == upstream
    assert "torchvision" not in patched.replace(block.group(0), "")
    assert (FIXTURE / "patches" / "mnist_datamodule.py.diff").read_text() == patch_diff()


def _idx(path: Path) -> tuple[tuple[int, ...], bytes]:
    data = path.read_bytes()
    magic, = struct.unpack(">I", data[:4])
    assert magic >> 8 == 0x08, path  # unsigned bytes
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return shape, data[4 + 4 * ndim:]


def test_synthetic_mnist_is_idx_and_deterministic(tmp_path: Path) -> None:
    a = write_mnist(tmp_path / "a", gz=True)
    b = write_mnist(tmp_path / "b")
    names = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
             "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    assert sorted(p.name for p in b.iterdir()) == names
    assert sorted(p.name for p in a.iterdir()) == sorted(names + [n + ".gz" for n in names])
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    shape, _ = _idx(b / "train-images-idx3-ubyte")
    labels_shape, labels = _idx(b / "train-labels-idx1-ubyte")
    test_shape, _ = _idx(b / "t10k-images-idx3-ubyte")
    assert shape[1:] == (28, 28) and labels_shape == shape[:1]
    assert shape[0] + test_shape[0] == sum(SPLIT)
    assert set(labels) == set(range(10))
    assert write_mnist(tmp_path / "c", seed=1).joinpath(names[2]).read_bytes() != \
        (b / names[2]).read_bytes()


def test_make_template_project(tmp_path: Path) -> None:
    root = make_template_project(tmp_path / "lht")
    assert not (root / "orch.yaml").exists()
    assert (root / PATCHED).read_text() == (FIXTURE / PATCH).read_text()
    assert (root / "requirements.lock").read_bytes() == (FIXTURE / "requirements.lock").read_bytes()
    tracked = subprocess.run(["git", "-C", str(root), "ls-files"], check=True,
                             capture_output=True, text=True).stdout.split()
    assert set(tracked) == set(upstream_files()) | {"requirements.in", "requirements.lock"}
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--ignored"],
                            check=True, capture_output=True, text=True).stdout
    assert status == "!! data/\n"  # the template's .gitignore: data is an input, not code
    assert len(list((root / "data" / "MNIST" / "raw").iterdir())) == 4


def test_lock_shares_the_torch_wheel_with_the_bench_lock() -> None:
    """Same torch wheel hash as bench/torch/requirements.lock: one torch layer for both."""

    def torch_pin(lock: Path) -> str:
        pattern = r"^torch==(\S+) \\\n((?:\s+--hash=\S+(?: \\)?\n)+)"
        match = re.search(pattern, lock.read_text(), re.M)
        assert match is not None, lock
        return match.group(0)

    pin = torch_pin(FIXTURE / "requirements.lock")
    assert pin.startswith("torch==2.13.0+cpu ")
    bench = REPO / "bench" / "torch" / "requirements.lock"
    if not bench.exists():
        pytest.skip("no bench lock")
    assert pin == torch_pin(bench)
