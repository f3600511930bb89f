"""The lightning-hydra-template as a real project for orch's tests (issue #24).

:func:`make_template_project` lays out ashleve/lightning-hydra-template at commit
:data:`UPSTREAM_COMMIT` from ``tests/fixtures/lightning-hydra-template`` (see its README.md):
upstream's files verbatim, except ``src/data/mnist_datamodule.py``, replaced by
``patches/mnist_datamodule.py`` (no torchvision), plus a synthetic MNIST in ``data/MNIST/raw``
(gitignored by the template, so orch takes it as a data input) and ``requirements.lock``.
It writes no ``orch.yaml``: the test adds its own.

A run that fits the synthetic set (:data:`TRAIN_OVERRIDES`, :data:`TRAIN_ENV`), from the
project root::

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 python src/train.py trainer=cpu logger=csv \\
        trainer.max_epochs=1 'data.train_val_test_split=[500,100,100]' data.batch_size=64

writes ``logs/train/runs/<time>/`` with ``csv/version_0/metrics.csv`` (``val/acc`` among
its columns), ``csv/version_0/hparams.yaml``, ``checkpoints/{epoch_000,last}.ckpt`` and
``.hydra/``.
"""

from __future__ import annotations

import difflib
import importlib.util
import shutil
import subprocess
from pathlib import Path

from helpers import git_commit_all

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lightning-hydra-template"
UPSTREAM = "ashleve/lightning-hydra-template"
UPSTREAM_COMMIT = "bddbc24b82ab6ccfa6243e815a49dc5bfe8d4144"
#: The upstream file that the project gets in a replaced version, and its replacement.
PATCHED = "src/data/mnist_datamodule.py"
PATCH = "patches/mnist_datamodule.py"
#: The fixture's own files: not upstream's, not copied into a project (but the lock).
OWN_FILES = frozenset({
    "README.md", "SHA256SUMS", "make_mnist.py", "requirements.in", "requirements.lock",
    "ruff.toml", PATCH, "patches/mnist_datamodule.py.diff",
})
#: Tool caches that may appear in the fixture directory (ignored by the repository's .gitignore).
CACHES = frozenset({"__pycache__", ".ruff_cache", ".mypy_cache", ".pytest_cache"})
#: The synthetic MNIST: train + test images, and the split of their concatenation
#: (the datamodule's default, [55000, 5000, 10000], needs the real 70,000 images).
N_TRAIN, N_TEST, DATA_SEED = 600, 100, 0
SPLIT = (500, 100, 100)
#: Overrides for every run of the fixture here, whatever a sweep varies (the split is needed;
#: the rest keeps a run to a few seconds and its outputs to CSV files).
TRAIN_OVERRIDES = (
    "trainer=cpu", "logger=csv", "trainer.max_epochs=1",
    f"data.train_val_test_split=[{','.join(map(str, SPLIT))}]",
)

#: The environment a run needs for upstream's ``trainer.test(ckpt_path="best")`` under
#: lightning 2.6 and torch 2.13: torch otherwise loads the checkpoint weights-only and refuses
#: the ``SimpleDenseNet`` in its hyperparameters (or override ``test=False``; see README.md).
TRAIN_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def upstream_files() -> list[str]:
    """The fixture's files kept verbatim from upstream, as sorted relative POSIX paths."""
    return sorted(
        rel for path in FIXTURE.rglob("*")
        if path.is_file() and not CACHES & set(path.parts)
        and (rel := path.relative_to(FIXTURE).as_posix()) not in OWN_FILES
    )


def patch_diff() -> str:
    """The unified diff from upstream's ``src/data/mnist_datamodule.py`` to its replacement
    (kept as ``patches/mnist_datamodule.py.diff`` for reading)."""
    return "".join(difflib.unified_diff(
        (FIXTURE / PATCHED).read_text().splitlines(keepends=True),
        (FIXTURE / PATCH).read_text().splitlines(keepends=True),
        fromfile=f"a/{PATCHED}", tofile=f"b/{PATCHED}",
    ))


def write_mnist(raw_dir: Path, n_train: int = N_TRAIN, n_test: int = N_TEST,
                seed: int = DATA_SEED, gz: bool = False) -> Path:
    """The fixture's ``make_mnist.write_mnist``: the synthetic set's four IDX files."""
    spec = importlib.util.spec_from_file_location("lht_make_mnist", FIXTURE / "make_mnist.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_mnist(raw_dir, n_train, n_test, seed, gz)


def make_template_project(dest: Path, *, commit: bool = True) -> Path:
    """Lay out the template in ``dest`` (created, or empty), patched, with its synthetic data
    in ``data/MNIST/raw`` and ``requirements.lock``; ``git init`` and commit everything the
    template's .gitignore lets through. Writes no ``orch.yaml``. Returns ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for rel in upstream_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURE / rel, dest / rel)
    shutil.copyfile(FIXTURE / PATCH, dest / PATCHED)
    for name in ("requirements.in", "requirements.lock"):
        shutil.copyfile(FIXTURE / name, dest / name)
    write_mnist(dest / "data" / "MNIST" / "raw")
    subprocess.run(["git", "init", "-q", "-b", "main", str(dest)], check=True)
    if commit:
        git_commit_all(dest, "lightning-hydra-template at "
                       f"{UPSTREAM_COMMIT[:8]}, torchvision-free datamodule")
    return dest
