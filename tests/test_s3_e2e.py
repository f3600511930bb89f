"""A sweep into a real S3 server (SeaweedFS); exact reruns on an empty daemon.

The store alone (or the registry) carries everything: a fresh daemon that has never
seen the image, nor even the base, reruns a run by id, by image ID and by repo digest.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from seaweed import ACCESS_KEY, SECRET_KEY, admin_client, fresh_bucket, s3_env, shared_seaweed

pytestmark = [pytest.mark.docker, pytest.mark.s3]

SECRET_TOKEN = "ghp_orchTestTokenThatMustNeverBeStored0001"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_seaweed(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def s3_sweep(endpoint: str, tmp_path_factory: pytest.TempPathFactory, base_image: str,
             registry_host: str) -> dict:
    from helpers import copy_demo, git_commit_all

    root = tmp_path_factory.mktemp("s3proj") / "s3proj"
    data = {"name": "s3proj", "base_image": base_image, "command": ["python3", "train.py"],
            **copy_demo(root)}
    (root / "orch.yaml").write_text(yaml.safe_dump(data))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root)
    bucket = fresh_bucket(endpoint)
    store = f"s3://{bucket}/team/exp1"
    env = {**s3_env(endpoint), "GITHUB_TOKEN": SECRET_TOKEN}
    import os
    import sys

    orch = Path(sys.executable).with_name("orch")
    proc = subprocess.run(
        [str(orch), "sweep", "-p", str(root), "optimizer=SGD,adam", "model=lstm,bi_lstm",
         "--store", store, "--registry", f"{registry_host}/orch/s3proj", "--jobs", "2", "--json"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "bucket": bucket, "store": store, "env": env,
            "registry": f"{registry_host}/orch/s3proj",
            "result": json.loads(proc.stdout)}


def all_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    client = admin_client(endpoint)
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_layout_is_readable_with_plain_boto3(s3_sweep: dict, endpoint: str) -> None:
    objects = all_objects(endpoint, s3_sweep["bucket"])
    sweep_id = s3_sweep["result"]["sweep_id"]
    assert f"team/exp1/sweeps/{sweep_id}.json" in objects
    for run in s3_sweep["result"]["runs"]:
        prefix = f"team/exp1/runs/{run['run_id']}/"
        for name in ("run.json", "config.yaml", "metrics.json", "stdout.log", "stderr.log"):
            assert prefix + name in objects, name
        record = json.loads(objects[prefix + "run.json"])
        assert record["metrics"] == run["metrics"] == json.loads(objects[prefix + "metrics.json"])
        assert record["repo_digest"].startswith(s3_sweep["registry"] + "@sha256:")
        assert f"team/exp1/blobs/sha256/{record['image_id'].split(':')[1]}" in objects
    blobs = [k for k in objects if "/blobs/sha256/" in k]
    assert len(blobs) == len(set(blobs))


def test_no_credential_in_any_stored_object(s3_sweep: dict, endpoint: str) -> None:
    for key, data in all_objects(endpoint, s3_sweep["bucket"]).items():
        if data[:2] == b"\x1f\x8b":  # a layer blob, stored compressed: read what it holds
            data += gzip.decompress(data)
        for secret in (SECRET_KEY, ACCESS_KEY, SECRET_TOKEN):
            assert secret.encode() not in data, (secret, key)


def test_results_from_s3(s3_sweep: dict, orch) -> None:
    proc = orch("results", s3_sweep["result"]["sweep_id"], "--store", s3_sweep["store"],
                "--format", "json", env=s3_sweep["env"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["run_id"] for r in json.loads(proc.stdout)) == sorted(
        r["run_id"] for r in s3_sweep["result"]["runs"])


def empty_daemon(docker_host: str) -> None:
    """Remove every container and image: the daemon has never seen anything."""
    def docker(*args: str) -> str:
        return subprocess.run(["docker", "-H", docker_host, *args], capture_output=True,
                              text=True, check=True).stdout

    containers = docker("ps", "-aq").split()
    if containers:
        docker("rm", "-f", *containers)
    images = docker("images", "-aq").split()
    if images:
        subprocess.run(["docker", "-H", docker_host, "rmi", "-f", *set(images)],
                       capture_output=True)
    assert docker("images", "-aq").strip() == ""


@pytest.mark.parametrize("how", ["run_id", "image_id", "repo_digest"])
def test_rerun_on_an_empty_daemon(s3_sweep: dict, orch, second_docker_host: str,
                                  how: str) -> None:
    run = s3_sweep["result"]["runs"][0]
    record = json.loads(all_objects_one(s3_sweep, run["run_id"]))
    target = record[how]
    empty_daemon(second_docker_host)
    proc = orch("rerun", target, "--store", s3_sweep["store"], "--json",
                env={**s3_sweep["env"], "DOCKER_HOST": second_docker_host})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = json.loads(proc.stdout)
    assert result["identical"] is True
    assert result["rerun_of"] == run["run_id"]
    assert result["image_id"] == run["image_id"]


def all_objects_one(s3_sweep: dict, run_id: str) -> bytes:
    client = admin_client(s3_sweep["env"]["AWS_ENDPOINT_URL"])
    key = f"team/exp1/runs/{run_id}/run.json"
    return client.get_object(Bucket=s3_sweep["bucket"], Key=key)["Body"].read()


def test_missing_bucket_is_one_clear_error(endpoint: str, orch, tmp_path: Path) -> None:
    proc = orch("results", "abc123", "--store", "s3://no-such-bucket-orch/x",
                "-p", str(tmp_path), env=s3_env(endpoint))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "no-such-bucket-orch" in proc.stderr
