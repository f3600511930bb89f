"""A real PyTorch stack end to end: torch 2.13.0 (CPU) and numpy, locked by pip-compile.

The lock is ``bench/torch/requirements.lock`` (``pip-compile --generate-hashes
--allow-unsafe`` of ``torch==2.13.0+cpu`` and ``numpy``, as its header says), the one the
``torch`` bench section measures. One sweep of two runs into a real S3 store (SeaweedFS)
is shared by every test here; it checks what a user of such a stack would: torch imports
and trains, every module it imports comes from the bytecode in the layers (none compiled
or written at run time), setuptools' ``distutils-precedence.pth`` is honoured, the
layers sit in the store gzip-compressed, a rerun on an empty second daemon from those
blobs gives the same metrics, and that daemon, building the environment itself (its own
bytecode compilation), arrives at the same image IDs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, git_commit_all
from seaweed import admin_client, fresh_bucket, s3_env, shared_seaweed

pytestmark = [pytest.mark.docker, pytest.mark.s3, pytest.mark.slow]

LOCK = REPO / "bench" / "torch" / "requirements.lock"
SITE = "/usr/local/lib/python3.11/dist-packages"
TRAIN = f"""\
import json, math, os, subprocess, sys
import numpy, torch
import distutils

SITE = {SITE!r}
cfg = json.load(open("/orch/config.json"))
torch.manual_seed(0)
torch.set_num_threads(1)
x = torch.randn(256, 8)
y = x @ torch.arange(8.0) + 0.5
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
for _ in range(50):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
    loss.backward()
    opt.step()

# Where each module of the site dir came from: "code object from '<...>.pyc'" is a
# cached load, "code object from <...>.py" a compile; writing a .pyc is logged as well.
verbose = subprocess.run([sys.executable, "-v", "-c", "import torch, numpy"],
                         capture_output=True, text=True).stderr.splitlines()
from_pyc = [l for l in verbose if l.startswith("# code object from '" + SITE)]
from_source = [l for l in verbose if l.startswith("# code object from " + SITE)]
writes = [l for l in verbose if l.startswith(("# wrote ", "# could not create "))]
loaded = [m for m in list(sys.modules.values()) if (getattr(m, "__file__", None) or "")
          .startswith(SITE) and m.__file__.endswith(".py")]
metrics = {{
    "loss": loss.item(),
    "torch_2_13_cpu": int(torch.__version__ == "2.13.0+cpu"),
    "numpy_interop": int(torch.from_numpy(numpy.arange(4.0)).sum().item() == 6.0),
    "distutils_from_setuptools": int(
        distutils.__file__ == SITE + "/setuptools/_distutils/__init__.py"),
    "modules_from_pyc": len(from_pyc),
    "modules_compiled": len(from_source),
    "pyc_writes": len(writes),
    "loaded_with_cache": sum(os.path.exists(m.__cached__) for m in loaded),
    "loaded": len(loaded),
    "dont_write_bytecode": int(sys.flags.dont_write_bytecode),
}}
assert math.isfinite(metrics["loss"])
json.dump(metrics, open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""
NAME = "torchstack"
FIRST_DAEMON = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
SWEEP = ("lr=0.05,0.1",)


def orch_cli(*args: str, env: dict[str, str], timeout: float = 1200) -> Any:
    exe = Path(sys.executable).with_name("orch")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def docker(host: str, *args: str) -> list[str]:
    proc = subprocess.run(["docker", "-H", host, *args], capture_output=True, text=True)
    return proc.stdout.split()


def empty(host: str) -> None:
    """Remove every container and image of a daemon: it has never seen anything."""
    containers = docker(host, "ps", "-aq")
    if containers:
        docker(host, "rm", "-f", *containers)
    images = docker(host, "images", "-aq")
    if images:
        docker(host, "rmi", "-f", *sorted(set(images)))
    assert docker(host, "images", "-aq") == []


def remove_project_images(host: str) -> None:
    images = docker(host, "images", "-aq", "--filter", f"label=org.orch.project={NAME}")
    if images:
        docker(host, "rmi", "-f", *sorted(set(images)))


@pytest.fixture(scope="session")
def torch_stack(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[dict]:
    """The torch project swept once (2 runs) into a fresh bucket, from a cold cache."""
    endpoint = shared_seaweed(tmp_path_factory.getbasetemp())
    work = tmp_path_factory.mktemp("torch")
    root = work / NAME
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "config.yaml").write_text("lr: 0.05\n")
    (root / "train.py").write_text(TRAIN)
    shutil.copy(LOCK, root / "requirements.lock")
    (root / "orch.yaml").write_text(yaml.safe_dump({
        "name": NAME, "base_image": base_image, "command": ["python3", "train.py"],
        "requirements": "requirements.lock", "resources": {"cpus": 1, "gpus": 0},
    }, sort_keys=False))
    (root / ".gitignore").write_text(".orch/\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root, "torch project")
    bucket = fresh_bucket(endpoint)
    store = f"s3://{bucket}/torch"
    env = {**s3_env(endpoint), "ORCH_CACHE": str(work / "cache")}
    try:
        result = orch_cli("sweep", "-p", str(root), *SWEEP, "--store", store, "--jobs", "2",
                          "--json", env=env)
        yield {"root": root, "work": work, "bucket": bucket, "store": store, "env": env,
               "endpoint": endpoint, "result": result}
    finally:
        remove_project_images(FIRST_DAEMON)


def test_torch_trains_from_bytecode_in_the_layers_with_pth_honoured(torch_stack: dict) -> None:
    runs = torch_stack["result"]["runs"]
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], runs
    assert len({r["image_id"] for r in runs}) == 2  # a config layer each
    for run in runs:
        m = run["metrics"]
        assert m["torch_2_13_cpu"] == 1 and m["numpy_interop"] == 1
        assert m["distutils_from_setuptools"] == 1  # setuptools' .pth, as pip has it
        # Every module torch and numpy import from the site dir is loaded from its
        # .pyc (hundreds of them), none compiled, none written.
        assert m["modules_from_pyc"] > 500, m
        assert m["modules_compiled"] == 0 and m["pyc_writes"] == 0, m
        assert m["loaded_with_cache"] == m["loaded"] > 500, m
        assert m["dont_write_bytecode"] == 0
    losses = sorted(r["metrics"]["loss"] for r in runs)
    assert losses[0] < losses[1]  # two learning rates, two different results


def _layer_sizes(cache: Path) -> dict[str, int]:
    """diff ID -> uncompressed size of every environment layer in the cache."""
    sizes = {}
    for meta in (cache / "layers").glob("pkg-*.json"):
        record = json.loads(meta.read_text())
        sizes[record["diff_id"]] = record["size"]
    return sizes


def test_layers_are_stored_gzip_compressed_under_their_diff_ids(torch_stack: dict) -> None:
    client = admin_client(torch_stack["endpoint"])
    bucket, prefix = torch_stack["bucket"], "torch/blobs/sha256/"
    stored = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        stored.update({item["Key"][len(prefix):]: item["Size"] for item in page["Contents"]})
    sizes = _layer_sizes(Path(torch_stack["env"]["ORCH_CACHE"]))
    # The standard library's bytecode, the lock's 11 wheels, torch's and numpy's payloads.
    assert len(sizes) == 14
    for diff_id, size in sizes.items():
        key = prefix + diff_id.split(":")[1]
        head = client.get_object(Bucket=bucket, Key=key, Range="bytes=0-1")["Body"].read()
        assert head == b"\x1f\x8b", diff_id
        assert stored[diff_id.split(":")[1]] < size, diff_id
    total_stored = sum(stored[d.split(":")[1]] for d in sizes)
    assert total_stored < 0.6 * sum(sizes.values()), (total_stored, sum(sizes.values()))


def test_every_layer_holds_what_its_package_installs(torch_stack: dict) -> None:
    """Each file in the layers has the content its wheel's RECORD gives it, and torch's
    libraries sit in a payload layer of their own, its sources and bytecode apart."""
    cache = Path(torch_stack["env"]["ORCH_CACHE"]) / "layers"
    checked = 0
    payloads = {}
    for meta in cache.glob("pkg-*.json"):
        record = json.loads(meta.read_text())
        if meta.name.endswith("-payload.json"):
            payloads[record["wheels"][0].split("-")[0]] = meta.with_suffix(".tar")
            continue
        listing = dict(record["files"])
        tars = [meta.with_suffix(".tar")]
        if record.get("payload"):
            tars.append(meta.with_name(meta.stem + "-payload.tar"))
        for tar_path in tars:
            with tarfile.open(tar_path) as tar:
                for member in tar:
                    if member.isfile() and member.name in listing:
                        data = tar.extractfile(member).read()  # type: ignore[union-attr]
                        assert hashlib.sha256(data).hexdigest() == listing.pop(member.name)
                        checked += 1
        assert not listing, sorted(listing)[:3]  # every installed file is in a layer
    assert checked > 15_000
    assert sorted(payloads) == ["numpy", "torch"]
    with tarfile.open(payloads["torch"]) as tar:
        names = tar.getnames()
    assert f"{SITE[1:]}/torch/lib/libtorch_cpu.so" in names
    assert not [n for n in names if n.endswith((".py", ".pyc"))]


def test_rerun_on_an_empty_daemon_from_the_compressed_blobs(
    torch_stack: dict, second_docker_host: str
) -> None:
    empty(second_docker_host)
    env = {**torch_stack["env"], "DOCKER_HOST": second_docker_host}
    run = torch_stack["result"]["runs"][0]
    result = orch_cli("rerun", run["run_id"], "--store", torch_stack["store"], "--json", env=env)
    assert result["identical"] is True, result
    assert result["image_id"] == run["image_id"]
    assert result["metrics"] == run["metrics"]
    assert docker(second_docker_host, "image", "inspect", "-f", "{{.Id}}",
                  run["image_id"]) == [run["image_id"]]


def test_the_second_daemon_builds_the_same_images_itself(
    torch_stack: dict, second_docker_host: str, base_image: str
) -> None:
    """A fresh layer cache on another daemon: unpacked, compiled there, same bytes."""
    from services import copy_image

    if not docker(second_docker_host, "image", "inspect", "-f", "{{.Id}}", base_image):
        copy_image(FIRST_DAEMON, second_docker_host, base_image)
    work = torch_stack["work"]
    cache2 = work / "cache2"
    # The wheelhouse only (downloads are not what this checks); no layer, no bytecode.
    shutil.copytree(Path(torch_stack["env"]["ORCH_CACHE"]) / "wheels", cache2 / "wheels",
                    copy_function=os.link)
    env = {"ORCH_CACHE": str(cache2), "DOCKER_HOST": second_docker_host}
    try:
        second = orch_cli("sweep", "-p", str(torch_stack["root"]), *SWEEP, "--store",
                          str(work / "store2"), "--jobs", "2", "--json", env=env)
        first = torch_stack["result"]["runs"]
        assert [(r["run_id"], r["image_id"]) for r in second["runs"]] == [
            (r["run_id"], r["image_id"]) for r in first]
        assert [r["metrics"] for r in second["runs"]] == [r["metrics"] for r in first]
        assert _layer_sizes(cache2) == _layer_sizes(Path(torch_stack["env"]["ORCH_CACHE"]))
    finally:
        remove_project_images(second_docker_host)
