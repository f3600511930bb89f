"""Runs that attack or outgrow their checkpoint directory, and one that checkpoints at once.

The checkpoint saver reads, as root, a directory the run writes at the same moment:

- a run swapping a directory of ``$ORCH_CHECKPOINT`` for a link to a root-only host
  directory, over and over while saves run, gets nothing of the host into any stored
  ``checkpoint.tar`` (every version the store held is read while the run runs);
- a checkpoint over ``ORCH_MAX_OUTPUT_BYTES`` is not stored, and the run is recorded;
- a file written in the run's first milliseconds, before the saver started, is saved and
  restored into the next attempt.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import StoreView, make_project, orch_env, remove_containers, run_orch

from orchestrator.runner import checkpoint
from orchestrator.store import MemoryStore, RunStore

pytestmark = pytest.mark.faults

SECRET = b"HOSTSECRET-only-root-may-read-this"

SWAPPER = """\
import ctypes, json, os, time
cfg = json.load(open("/orch/config.json"))
ck = os.environ["ORCH_CHECKPOINT"]
real, link, d = (os.path.join(ck, n).encode() for n in ("real", "link", "d"))
os.makedirs(real)
for i in range(200):
    with open(os.path.join(real, b"f%03d.txt" % i), "w") as f:
        f.write("run's own file %d\\n" % i)
os.symlink(cfg["host_dir"], link)
os.rename(real, d)
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
def exchange():  # atomic: d is always there, a directory or a link to the host
    if libc.renameat2(AT_FDCWD, d, AT_FDCWD, link, RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
end, swaps = time.time() + cfg["seconds"], 0
while time.time() < end:
    exchange()
    time.sleep(0.0005)
    exchange()
    swaps += 1
    if swaps % 20 == 0:
        with open(os.path.join(ck, "step"), "w") as f:  # a change to save
            f.write(str(swaps))
json.dump({"swaps": swaps}, open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


@pytest.mark.docker
def test_links_swapped_in_during_saves_read_nothing_of_the_host(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    host_dir = tmp_path / "root-only"
    host_dir.mkdir(mode=0o700)
    for i in range(200):
        path = host_dir / f"f{i:03d}.txt"
        path.write_bytes(SECRET + b"\n")
        path.chmod(0o600)
    root = make_project(tmp_path / "proj", "ckpt-swap", base_image, job=SWAPPER,
                        config=f"host_dir: {host_dir}\nseconds: 4\nx: 0\n")
    seen: list[bytes] = []
    done = threading.Event()

    def watch() -> None:  # every version of checkpoint.tar the store held
        last: dict[Path, int] = {}
        while not done.is_set():
            for path in (root / ".orch" / "runs").glob("*/checkpoint.tar"):
                try:
                    stamp = path.stat().st_mtime_ns
                    if last.get(path) != stamp:
                        seen.append(path.read_bytes())
                        last[path] = stamp
                except FileNotFoundError:
                    pass
            done.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    proc = run_orch(["sweep", "-p", str(root), "x=1", "--json"],
                    orch_env(ORCH_CHECKPOINT_S="0.2"), timeout=180)
    done.set()
    watcher.join()
    try:
        assert proc.returncode == 0, proc.stderr
        (record,) = StoreView.directory(root / ".orch").recorded().values()
        assert record["status"] == "succeeded" and record["metrics"]["swaps"] > 0
        final = (root / ".orch" / "runs" / record["run_id"] / "checkpoint.tar").read_bytes()
        seen.append(final)
        assert len(seen) >= 3, "the saver saved too rarely to test anything"
        for version in seen:
            assert SECRET not in version
            with tarfile.open(fileobj=io.BytesIO(version)) as tar:
                for member in tar.getmembers():
                    assert member.isfile(), member.name
        record_property("faults_survived", 1)
    finally:
        remove_containers(r["run_id"] for r in json.loads(proc.stdout or '{"runs": []}')["runs"])


BIG_CHECKPOINT = """\
import json, os, time
cfg = json.load(open("/orch/config.json"))
with open(os.path.join(os.environ["ORCH_CHECKPOINT"], "model.bin"), "wb") as f:
    f.truncate(cfg["mb"] << 20)  # sparse: real to every reader, light on the disk
time.sleep(1)
json.dump({"mb": cfg["mb"]}, open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


@pytest.mark.docker
def test_checkpoint_over_the_output_limit_is_not_stored(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    root = make_project(tmp_path / "proj", "ckpt-big", base_image, job=BIG_CHECKPOINT,
                        config="mb: 1\n")
    env = orch_env(ORCH_CHECKPOINT_S="0.3", ORCH_MAX_OUTPUT_BYTES=str(1 << 20))
    proc = run_orch(["sweep", "-p", str(root), "mb=300", "--json"], env, timeout=180)
    try:
        assert proc.returncode == 0, proc.stderr
        (record,) = StoreView.directory(root / ".orch").recorded().values()
        assert record["status"] == "succeeded"
        run_dir = root / ".orch" / "runs" / record["run_id"]
        assert not (run_dir / "checkpoint.tar").exists()
        assert "ORCH_MAX_OUTPUT_BYTES" in proc.stderr
        record_property("faults_survived", 1)
    finally:
        remove_containers(r["run_id"] for r in json.loads(proc.stdout or '{"runs": []}')["runs"])


EARLY = """\
import json, os, sys
ck = os.path.join(os.environ["ORCH_CHECKPOINT"], "epoch.txt")
if os.environ["ORCH_ATTEMPT"] == "1":
    open(ck, "w").write("1\\n")  # at once, then fail
    sys.exit(3)
print("restored:", open(ck).read().strip() if os.path.exists(ck) else "nothing", flush=True)
json.dump({"restored": int(os.path.exists(ck))},
          open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


@pytest.mark.docker
def test_a_checkpoint_written_at_once_reaches_the_next_attempt(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    root = make_project(tmp_path / "proj", "ckpt-early", base_image, job=EARLY)
    args = ["sweep", "-p", str(root), "x=1", "--json"]
    first = run_orch(args, orch_env(), timeout=120)
    second = run_orch(args, orch_env(), timeout=120)
    try:
        assert first.returncode == 1, first.stderr
        assert second.returncode == 0, second.stderr
        (record,) = StoreView.directory(root / ".orch").recorded().values()
        assert record["attempt"] == 2 and record["resumed_from_attempt"] == 1, record
        assert record["metrics"] == {"restored": 1}
        record_property("faults_survived", 1)
    finally:
        remove_containers(r["run_id"] for r in json.loads(second.stdout or '{"runs": []}')["runs"])


def test_saver_compares_with_what_the_attempt_started_with(tmp_path: Path) -> None:
    """The saver starts after the container: what the run wrote before then is a change
    (nothing was restored), unlike what restore() unpacked."""
    runs = RunStore(MemoryStore())
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "early.pt").write_bytes(b"written in the first 100 ms")
    with checkpoint.Saver(runs, "aaaa00000001", fresh, 1, interval_s=3600, max_bytes=1 << 30):
        pass
    target = tmp_path / "got.tar"
    assert runs.get_checkpoint("aaaa00000001", target) == 1
    with tarfile.open(target) as tar:
        assert tar.getnames() == ["early.pt"]

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    assert checkpoint.restore(runs, "aaaa00000001", resumed, os.getuid()) == 1
    with checkpoint.Saver(runs, "aaaa00000001", resumed, 2, interval_s=3600, max_bytes=1 << 30):
        pass  # the run changed nothing: attempt 1's checkpoint stays attempt 1's
    assert runs.get_checkpoint("aaaa00000001", target) == 1
