"""Runs whose metrics.jsonl is a trap: a FIFO, a link to /dev/zero or to a host file, an
endless sparse file. orch follows a run's step metrics while it runs and reads them once
more at the end, as root: none of these may hang the sweep, leak a host file's numbers
into the record, or keep a cancel from winning.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import (
    StoreView,
    make_project,
    orch_env,
    remove_containers,
    run_orch,
    start_orch,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.docker]

TRAPS = """\
import json, os, time
cfg = json.load(open("/orch/config.json"))
out = os.environ["ORCH_OUTPUT"]
path = os.path.join(out, "metrics.jsonl")
mode = cfg["mode"]
if mode == "fifo":
    os.mkfifo(path)
elif mode == "devzero":
    os.symlink("/dev/zero", path)
elif mode == "hostlink":
    os.symlink(cfg["host_file"], path)
elif mode == "endless":
    # a regular file that grows faster than anyone reads it, by a TiB in seconds (sparse:
    # no disk is used), and never holds a newline
    with open(path, "wb") as f:
        for gib in range(1, cfg["tib"] * 1024 + 1):
            f.truncate(gib << 30)
            time.sleep(0.001)
print("trap set:", mode, flush=True)
time.sleep(cfg["sleep"])
json.dump({"ok": 1}, open(os.path.join(out, "metrics.json"), "w"))
"""


def test_metrics_traps_neither_hang_nor_leak(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    secret_dir = tmp_path / "root-only"
    secret_dir.mkdir(mode=0o700)
    host_file = secret_dir / "numbers.jsonl"
    host_file.write_text('{"step": 1, "leaked": 31337}\n{"step": 2, "leaked": 31338}\n')
    host_file.chmod(0o600)
    root = make_project(tmp_path / "proj", "metrics-traps", base_image, job=TRAPS,
                        config=f"mode: none\nhost_file: {host_file}\ntib: 1\nsleep: 2\n")
    proc = run_orch(["sweep", "-p", str(root), "mode=fifo,devzero,hostlink,endless",
                     "--jobs", "2", "--json"], orch_env(ORCH_LIVE_S="0.2"), timeout=240)
    try:
        assert proc.returncode in (0, 1), proc.stderr
        records = StoreView.directory(root / ".orch").recorded()
        by_mode = {rec["config"]["mode"]: rec for rec in records.values()}
        assert set(by_mode) == {"fifo", "devzero", "hostlink", "endless"}
        for mode in ("fifo", "devzero", "hostlink"):
            assert by_mode[mode]["status"] == "succeeded", by_mode[mode]
            assert by_mode[mode]["metrics"] == {"ok": 1}, by_mode[mode]
            assert "metrics.jsonl" in by_mode[mode]["dropped_outputs"], by_mode[mode]
        for rec in records.values():
            assert "leaked" not in json.dumps(rec)
            stored = root / ".orch" / "runs" / rec["run_id"] / "metrics.jsonl"
            assert not stored.exists() or b"31337" not in stored.read_bytes()
        # a TiB of outputs is over the limit: a failed run, recorded, not a hung sweep
        assert by_mode["endless"]["status"] == "failed", by_mode["endless"]
        assert "ORCH_MAX_OUTPUT_BYTES" in by_mode["endless"]["reason"]
        record_property("faults_survived", 4)
    finally:
        remove_containers(r["run_id"] for r in json.loads(proc.stdout or '{"runs": []}')["runs"])


def test_cancel_wins_over_an_endless_metrics_file(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    root = make_project(tmp_path / "proj", "metrics-cancel", base_image, job=TRAPS,
                        config="mode: endless\nhost_file: none\ntib: 8\nsleep: 600\nx: 0\n")
    proc = start_orch(["sweep", "-p", str(root), "x=1", "--json"],
                      orch_env(ORCH_LIVE_S="0.2"), tmp_path, "sweep")
    try:
        # the run has started and its file is growing: the live reader is at work on it
        wait_for(lambda: bool(list((root / ".orch").glob("runs/*/live.json"))), 120,
                 "the run to start")
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("SIGTERM did not stop orch sweep: the reader held it") from None
        assert code != 0
        records = StoreView.directory(root / ".orch").recorded()
        for rec in records.values():
            assert rec["status"] in ("cancelled", "failed"), rec
        record_property("faults_survived", 1)
    finally:
        if proc.poll() is None:
            proc.kill()
        run_ids = [p.name for p in (root / ".orch" / "runs").glob("*")] if (
            root / ".orch" / "runs").is_dir() else []
        remove_containers(run_ids)


BOMB = """\
import json, os
out = os.environ["ORCH_OUTPUT"]
os.makedirs(os.path.join(out, ".hydra"))
lines = ["a0: &a0 [" + ", ".join(["x"] * 9) + "]"]
lines += ["a%d: &a%d [%s]" % (i, i, ", ".join(["*a%d" % (i - 1)] * 9)) for i in range(1, 10)]
open(os.path.join(out, ".hydra", "config.yaml"), "w").write("\\n".join(lines) + "\\n")
json.dump({"ok": 1}, open(os.path.join(out, "metrics.json"), "w"))
"""


def test_a_yaml_bomb_in_what_hydra_saved_is_a_failed_run(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    """orch compares the config a Hydra application saved with the recorded one: the
    run wrote that file, so it is read bounded (aliases expanded at most so far). Before,
    the comparison stopped at the first differing key, so this bomb did not go off; a
    reader of the whole document (any later check) would have."""
    root = make_project(tmp_path / "proj", "hydra-bomb", base_image, job=BOMB)
    proc = run_orch(["sweep", "-p", str(root), "x=1", "--json"], orch_env(), timeout=120)
    try:
        assert proc.returncode == 1, proc.stderr
        (record,) = StoreView.directory(root / ".orch").recorded().values()
        assert record["status"] == "failed"
        assert ".hydra/config.yaml" in record["reason"], record["reason"]
        record_property("faults_survived", 1)
    finally:
        remove_containers(r["run_id"] for r in json.loads(proc.stdout or '{"runs": []}')["runs"])
