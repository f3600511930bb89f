"""Helpers shared by test modules (imported by name; conftest.py holds only fixtures)."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
#: The demo's data inputs, as the repository's orch.yaml declares them.
DEMO_INPUTS: dict[str, str] = yaml.safe_load((REPO / "orch.yaml").read_text())["inputs"]


#: A base image orchestrator.testing's fake image builder takes as it is (no daemon).
FAKE_BASE = "sha256:" + "ab" * 32


def fake_project(root: Path, name: str, config: str) -> Any:
    """A project for the drivers in this process (orchestrator.testing's fake backend and
    images): ``configs/config.yaml`` holding ``config``, an empty train.py, FAKE_BASE."""
    from orchestrator.compose.project import load_project

    (root / "configs").mkdir(parents=True)
    (root / "configs" / "config.yaml").write_text(config)
    (root / "train.py").write_text("")
    (root / "orch.yaml").write_text(yaml.safe_dump(
        {"name": name, "base_image": FAKE_BASE, "command": ["python3", "train.py"]}))
    return load_project(root)


def copy_demo(root: Path) -> dict[str, Any]:
    """Lay out the demo project in ``root``: configs/, train.py and its gitignored data/
    (written by scripts/demo-data.py, as ``make setup`` does for the repository).

    Returns the orch.yaml entries the copy needs besides name, base_image and command.
    """
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copy(REPO / "train.py", root / "train.py")
    subprocess.run([sys.executable, str(REPO / "scripts" / "demo-data.py"), str(root / "data")],
                   check=True, capture_output=True)
    (root / ".gitignore").write_text(".orch/\ndata/\n")
    return {"inputs": dict(DEMO_INPUTS)}


def git_commit_all(root: Path, message: str = "snapshot") -> str:
    """Commit everything in ``root``; returns the commit id."""
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", message, "--allow-empty"],
                   check=True, capture_output=True)
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def make_wheel(directory: Path, name: str, files: dict[str, tuple[bytes, int]],
               requires: tuple[str, ...] = (), version: str = "1.0") -> Path:
    """A minimal valid wheel: ``files`` maps archive paths to (content, mode)."""
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {line}\n" for line in requires)
    files = {
        **files,
        f"{dist_info}/METADATA": (metadata.encode(), 0o644),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            0o644,
        ),
    }
    record = io.StringIO()
    for path, (data, _) in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")
        record.write(f"{path},sha256={digest},{len(data)}\n")
    record.write(f"{dist_info}/RECORD,,\n")
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, (data, mode) in [
            *files.items(),
            (f"{dist_info}/RECORD", (record.getvalue().encode(), 0o644)),
        ]:
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, data)
    return wheel


#: A ``sitecustomize`` that hides the packages named in ORCH_TEST_HIDE as if they were not
#: installed: ``import`` fails with ModuleNotFoundError and ``find_spec`` answers None.
_HIDE = """
import os, sys
from importlib.machinery import PathFinder

HIDDEN = set(os.environ["ORCH_TEST_HIDE"].split(","))


class Hiding:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return PathFinder.find_spec(name, path, target)

    @classmethod
    def invalidate_caches(cls):
        PathFinder.invalidate_caches()


sys.meta_path[:] = [Hiding if finder is PathFinder else finder for finder in sys.meta_path]
"""


def hiding_env(tmp_path: Path, *packages: str) -> dict[str, str]:
    """Environment variables under which a Python process finds none of ``packages``."""
    sitedir = tmp_path / "hiding-site"
    sitedir.mkdir(exist_ok=True)
    (sitedir / "sitecustomize.py").write_text(_HIDE)
    return {"PYTHONPATH": str(sitedir), "ORCH_TEST_HIDE": ",".join(packages)}


SLEEPER = """\
import json, os, time
with open("/orch/config.json") as f:
    cfg = json.load(f)
# Sleep in tenths, counting them in $ORCH_CHECKPOINT: a run whose node died resumes there.
state = os.path.join(os.environ["ORCH_CHECKPOINT"], "tenths")
done = int(open(state).read()) if os.path.exists(state) else 0
out = os.environ["ORCH_OUTPUT"]
with open(os.path.join(out, "resumed_at.txt"), "w") as f:
    f.write(str(done))
for tenth in range(done, int(cfg["sleep"] * 10)):
    time.sleep(0.1)
    with open(state + ".tmp", "w") as f:
        f.write(str(tenth + 1))
    os.replace(state + ".tmp", state)
with open(os.path.join(out, "gpus.txt"), "w") as f:
    f.write(os.environ.get("NVIDIA_VISIBLE_DEVICES", ""))
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"seed": cfg["seed"], "score": cfg["seed"] * 0.5}, f)
"""


def sleeper_project(root: Path, base_image: str, sleep: float, **settings: Any) -> Path:
    """A committed project whose runs sleep ``sleep`` seconds (resuming from their
    checkpoint), then report the GPUs they were shown and their seed: a cluster's runs."""
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "config.yaml").write_text(f"seed: 0\nsleep: {sleep}\n")
    (root / "job.py").write_text(SLEEPER)
    data = {"name": root.name, "base_image": base_image, "config_dir": "conf",
            "command": ["python3", "job.py"], **settings}
    (root / "orch.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (root / ".gitignore").write_text(".orch/\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root, "initial")
    return root

