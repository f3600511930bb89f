"""Runs that print or write a lot: memory stays flat, a limit is a clear failure.

Logs and outputs go from the run's bind-mounted directory (and Docker's log stream) to
the store through files, in chunks; nothing of their size is held in memory. A run whose
outputs exceed ``ORCH_MAX_OUTPUT_BYTES`` is recorded as failed with that reason, its
claim released, and the sweep goes on.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import ORCH, StoreView, make_project, orch_env

pytestmark = [pytest.mark.faults, pytest.mark.docker]

#: Peak RSS of `orch sweep`, whatever a run prints or writes (the issue's goal).
RSS_LIMIT_MB = 300

JOB = """\
import json, os, sys
cfg = json.load(open("/orch/config.json"))
out = os.environ["ORCH_OUTPUT"]
mb = cfg["mb"]
if cfg["mode"] == "stdout":
    line = b"x" * 1023 + b"\\n"
    for _ in range(mb * 1024):
        sys.stdout.buffer.write(line)
elif cfg["mode"] == "artifact":
    with open(os.path.join(out, "big.bin"), "wb") as f:
        f.truncate(mb << 20)  # sparse: the size is real to every reader, the disk is spared
json.dump({"mb": mb}, open(os.path.join(out, "metrics.json"), "w"))
"""


#: Starts `orch sweep` from a small process and reports its peak RSS: a child forked from
#: pytest itself counts pytest's pages (hundreds of MB once a test module has imported
#: torch) in its peak until it execs, which is not orch's memory.
_LAUNCH = """\
import os, resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def sweep_rss(root: Path, env: dict[str, str], *overrides: str) -> tuple[int, int, str]:
    """(exit code, peak RSS in MB of the `orch sweep` process, stderr)."""
    err_path = root.parent / "err.txt"
    with err_path.open("wb") as err:
        out = subprocess.run(
            ["/usr/bin/python3", "-c", _LAUNCH, ORCH, "sweep", "-p", str(root), *overrides,
             "--json"],
            stdout=subprocess.PIPE, stderr=err, env=env, check=True, text=True,
        ).stdout.split()
    rss_kb, code = int(out[0]), int(out[1])
    return code, rss_kb // 1024, err_path.read_text()


@pytest.mark.parametrize(("mode", "mb"), [("stdout", 500), ("artifact", 1900)])
def test_memory_does_not_grow_with_what_a_run_produces(
    tmp_path: Path, base_image: str, mode: str, mb: int,
    record_property: Callable[[str, object], None],
) -> None:
    root = make_project(tmp_path / "proj", f"big-{mode}", base_image, job=JOB,
                        config="mode: none\nmb: 0\n")
    code, rss_mb, err = sweep_rss(root, orch_env(), f"mode={mode}", f"mb={mb}")
    assert code == 0, err
    (record,) = StoreView.directory(root / ".orch").recorded().values()
    run_dir = root / ".orch" / "runs" / record["run_id"]
    if mode == "stdout":
        assert (run_dir / "stdout.log").stat().st_size == mb << 20
    else:
        assert (run_dir / "output" / "big.bin").stat().st_size == mb << 20
    print(f"peak RSS of orch sweep, {mb} MB of {mode}: {rss_mb} MB")
    record_property(f"peak_rss_mb_{mode}_{mb}mb", rss_mb)
    assert rss_mb <= RSS_LIMIT_MB
    record_property("faults_survived", 1)


def test_outputs_over_the_limit_fail_the_run_and_the_sweep_goes_on(
    tmp_path: Path, base_image: str, record_property: Callable[[str, object], None],
) -> None:
    root = make_project(tmp_path / "proj", "big-limit", base_image, job=JOB,
                        config="mode: artifact\nmb: 1\n")
    env = orch_env(ORCH_MAX_OUTPUT_BYTES=str(2 << 30))
    code, _, err = sweep_rss(root, env, "mb=1,3072")
    assert code == 1, err
    records = StoreView.directory(root / ".orch").recorded()
    by_mb = {rec["config"]["mb"]: rec for rec in records.values()}
    assert by_mb[1]["status"] == "succeeded"
    over = by_mb[3072]
    assert over["status"] == "failed"
    assert "over the limit of 2147483648 (ORCH_MAX_OUTPUT_BYTES)" in over["reason"]
    assert over["outputs"]["files"] == 0
    run_dir = root / ".orch" / "runs" / over["run_id"]
    assert not (run_dir / "claim.json").exists()
    assert not (run_dir / "output").exists()
    # the re-submission is not wedged: it retries the run, which fails the same way
    code, _, err = sweep_rss(root, env, "mb=1,3072")
    assert code == 1, err
    assert json.loads((run_dir / "run.json").read_text())["attempt"] == 2
    record_property("faults_survived", 1)


MANY = """\
import json, os
cfg = json.load(open("/orch/config.json"))
out = os.environ["ORCH_OUTPUT"]
for i in range(cfg["files"]):
    folder = os.path.join(out, "many", str(i // 1000))
    if i % 1000 == 0:
        os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{i}.txt"), "w") as f:
        f.write(f"file {i}\\n")
json.dump({"files": cfg["files"]}, open(os.path.join(out, "metrics.json"), "w"))
"""
#: What 100,000 output files may add to the peak RSS of `orch sweep` over 10 files: the
#: per-file list goes to a manifest on disk and to the store as it is written, never
#: whole in memory (it took 250 MB more before).
MANY_MARGIN_MB = 40


def test_memory_does_not_grow_with_the_number_of_output_files(
    tmp_path: Path, base_image: str, record_property: Callable[[str, object], None],
) -> None:
    root = make_project(tmp_path / "proj", "many-files", base_image, job=MANY,
                        config="files: 0\n")
    env = orch_env()
    code, _, err = sweep_rss(root, env, "files=1")  # builds the environment: not measured
    assert code == 0, err
    code, few_mb, err = sweep_rss(root, env, "files=10")
    assert code == 0, err
    code, many_mb, err = sweep_rss(root, env, "files=100000")
    assert code == 0, err
    print(f"peak RSS of orch sweep: 10 output files {few_mb} MB, 100000 files {many_mb} MB")
    record_property("peak_rss_mb_100k_files", many_mb)
    assert many_mb <= few_mb + MANY_MARGIN_MB
    records = StoreView.directory(root / ".orch").recorded().values()
    (record,) = [r for r in records if r["config"]["files"] == 100000]
    assert record["status"] == "succeeded", record["reason"]
    assert record["outputs"]["files"] == 100000
    assert "artifacts" not in record and "artifact_files" not in record
    # the run's files, every one, back out of the store
    dest = tmp_path / "pulled"
    proc = subprocess.run([ORCH, "pull", record["run_id"], "-o", str(dest), "--store",
                           str(root / ".orch")], capture_output=True, text=True, env=env,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr
    pulled = sorted(p for p in (dest / "many").rglob("*.txt"))
    assert len(pulled) == 100000
    assert (dest / "many" / "99" / "99999.txt").read_text() == "file 99999\n"
    assert (dest / "many" / "0" / "0.txt").read_text() == "file 0\n"
    record_property("faults_survived", 1)
