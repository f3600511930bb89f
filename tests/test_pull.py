"""``orch pull``: a real run's outputs out of a directory store and a SeaweedFS store.

One small project whose run writes a few outputs in nested directories (and, in the S3
sweep, a second run with a 200 MB file), swept once into each kind of store. Every pull
is checked file by file; the store is corrupted on purpose, a download is broken mid-way
and a pull is stopped with SIGINT, and nothing half-written may remain under a final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from helpers import REPO, git_commit_all
from seaweed import admin_client, fresh_bucket, s3_env, shared_seaweed

import orchestrator
from orchestrator.cli import cli
from orchestrator.errors import StoreError
from orchestrator.schema.record import RunRecord
from orchestrator.store import RunStore, open_store

pytestmark = [pytest.mark.docker]

ORCH = str(Path(sys.executable).with_name("orch"))
#: What the run writes under $ORCH_OUTPUT besides metrics.json (which is its metrics).
OUTPUTS = {
    "model.txt": "weights\n",
    "ckpt/epoch1.ckpt": "1" * 1000,
    "ckpt/epoch2.ckpt": "2" * 2000,
    "csv/metrics.csv": "step,loss\n0,1.0\n1,0.5\n",
    "csv/sub/deep.csv": "a,b\n1,2\n",
}
BIG_MB = 200
WRITER = """\
import json, os, pathlib
out = pathlib.Path(os.environ["ORCH_OUTPUT"])
cfg = json.load(open("/orch/config.json"))
for name, text in json.loads(pathlib.Path("outputs.json").read_text()).items():
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(text)
if cfg["big_mb"]:
    with open(out / "big.bin", "wb") as handle:
        for _ in range(cfg["big_mb"]):
            handle.write(os.urandom(1 << 20))
json.dump({"loss": 0.25}, open(out / "metrics.json", "w"))
"""


@dataclass
class Case:
    """A store holding the project's runs, and how to reach it."""

    kind: str
    uri: str
    env: dict[str, str]
    run_id: str
    big_run_id: str | None = None

    def runs(self) -> RunStore:
        return RunStore(open_store(self.uri, project_dir=Path("."),
                                   s3_endpoint=self.env.get("AWS_ENDPOINT_URL")))


def sweep(root: Path, store: str, env: dict[str, str], *overrides: str) -> dict[str, Any]:
    proc = subprocess.run([ORCH, "sweep", "-p", str(root), "--store", store, "--json",
                           *overrides], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert all(run["status"] == "succeeded" for run in result["runs"]), result
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Path:
    root = tmp_path_factory.mktemp("pullproj") / "pullproj"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "config.yaml").write_text("big_mb: 0\n")
    (root / "writer.py").write_text(WRITER)
    (root / "outputs.json").write_text(json.dumps(OUTPUTS))
    (root / ".gitignore").write_text(".orch/\n")
    (root / "orch.yaml").write_text(yaml.safe_dump(
        {"name": "pullproj", "base_image": base_image, "command": ["python3", "writer.py"]}))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root)
    return root


@pytest.fixture(scope="module")
def dir_case(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Case:
    store = tmp_path_factory.mktemp("dirstore") / "store"
    result = sweep(project, str(store), {}, "big_mb=0")
    return Case("dir", str(store), {}, result["runs"][0]["run_id"])


@pytest.fixture(scope="module")
def s3_case(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Case:
    endpoint = shared_seaweed(tmp_path_factory.getbasetemp())
    bucket = fresh_bucket(endpoint)
    env = s3_env(endpoint)
    result = sweep(project, f"s3://{bucket}/team", env, f"big_mb=0,{BIG_MB}")
    by_size = {run["overrides"][0]: run["run_id"] for run in result["runs"]}
    return Case("s3", f"s3://{bucket}/team", env, by_size["big_mb=0"],
                by_size[f"big_mb={BIG_MB}"])


@pytest.fixture(params=["dir", "s3"])
def case(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Case:
    value: Case = request.getfixturevalue(f"{request.param}_case")
    for name, env_value in value.env.items():  # for the test's own store calls
        monkeypatch.setenv(name, env_value)
    return value


@pytest.fixture
def s3(s3_case: Case, monkeypatch: pytest.MonkeyPatch) -> Case:
    for name, value in s3_case.env.items():
        monkeypatch.setenv(name, value)
    return s3_case


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env=env)
    return result.exit_code, result.stdout, result.stderr


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) by its relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def expected(*names: str) -> dict[str, bytes]:
    return {name: OUTPUTS[name].encode() for name in names or OUTPUTS}


def one_error(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- what the commit records ---------------------------------------------------------------


def test_the_commit_records_size_and_sha256_of_every_output(case: Case) -> None:
    runs = case.runs()
    record = runs.read_run(case.run_id)
    described = {name: (f.size, f.sha256) for name, f in runs.outputs(record) if f is not None}
    assert described == {
        name: (len(text), hashlib.sha256(text.encode()).hexdigest())
        for name, text in OUTPUTS.items()
    }
    # run.json names the manifest beside it (count, bytes, digest), never the list itself
    data = json.loads(runs.read_file(case.run_id, "run.json"))
    manifest = runs.read_file(case.run_id, "outputs.jsonl")
    assert data["outputs"] == {"files": len(OUTPUTS),
                               "bytes": sum(len(text) for text in OUTPUTS.values()),
                               "manifest": "outputs.jsonl",
                               "sha256": hashlib.sha256(manifest).hexdigest()}
    assert "artifacts" not in data and "artifact_files" not in data


# -- pulling ------------------------------------------------------------------------------


def test_pull_everything_into_a_directory(case: Case, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "run"  # made as needed
    code, out, err = invoke(["pull", case.run_id, "-o", str(dest), "--store", case.uri],
                            case.env)
    assert code == 0, err
    assert tree(dest) == expected()
    size = sum(len(text) for text in OUTPUTS.values())
    assert out.strip() == f"pulled 5 files ({size / 1000:.1f} KB) of run {case.run_id} into {dest}"
    assert err == ""


@pytest.mark.parametrize(
    ("patterns", "names"),
    [
        (["**/*.ckpt"], ["ckpt/epoch1.ckpt", "ckpt/epoch2.ckpt"]),
        (["csv"], ["csv/metrics.csv", "csv/sub/deep.csv"]),  # a directory: all under it
        (["csv/*.csv"], ["csv/metrics.csv"]),
        (["csv/**/*.csv"], ["csv/metrics.csv", "csv/sub/deep.csv"]),
        (["ckpt/epoch2.ckpt"], ["ckpt/epoch2.ckpt"]),
        (["model.txt", "ckpt/epoch?.ckpt"], ["model.txt", "ckpt/epoch1.ckpt",
                                             "ckpt/epoch2.ckpt"]),
        (["./ckpt/"], ["ckpt/epoch1.ckpt", "ckpt/epoch2.ckpt"]),
    ],
)
def test_pull_only_what_is_asked(case: Case, tmp_path: Path, patterns: list[str],
                                 names: list[str]) -> None:
    code, out, err = invoke(["pull", case.run_id[:8], *patterns, "-o", str(tmp_path),
                             "--store", case.uri], case.env)
    assert code == 0, err
    assert tree(tmp_path) == expected(*names)
    assert out.startswith(f"pulled {len(names)} file")


def test_the_library_and_the_console_script(dir_case: Case, tmp_path: Path) -> None:
    result = orchestrator.pull(dir_case.run_id, "model.txt", tmp_path / "lib",
                               store=dir_case.uri)
    assert [(f.name, f.fetched, f.checked) for f in result.files] == [("model.txt", True, True)]
    assert result.fetched_bytes == len(OUTPUTS["model.txt"])
    assert tree(tmp_path / "lib") == expected("model.txt")
    # The console script, into the working directory by default, with --json.
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run([ORCH, "pull", dir_case.run_id, "csv", "--store", dir_case.uri,
                           "--json"], capture_output=True, text=True, cwd=work, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert tree(work) == expected("csv/metrics.csv", "csv/sub/deep.csv")
    data = json.loads(proc.stdout)
    assert data["fetched"] == 2 and data["unchanged"] == 0 and data["unchecked"] == 0
    assert {f["name"] for f in data["files"]} == {"csv/metrics.csv", "csv/sub/deep.csv"}
    assert all(f["sha256"] == hashlib.sha256(OUTPUTS[f["name"]].encode()).hexdigest()
               for f in data["files"])
    mode = (work / "csv" / "metrics.csv").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask()


def test_a_second_pull_keeps_identical_files_and_replaces_changed_ones(
    dir_case: Case, tmp_path: Path
) -> None:
    args = ["pull", dir_case.run_id, "-o", str(tmp_path), "--store", dir_case.uri]
    assert invoke(args)[0] == 0
    inode = (tmp_path / "ckpt" / "epoch1.ckpt").stat().st_ino
    (tmp_path / "model.txt").write_text("edited locally\n")
    code, out, err = invoke(args)
    assert code == 0, err
    assert tree(tmp_path) == expected()
    assert out.strip().endswith("; 4 already there and identical")
    assert out.startswith(f"pulled 1 file ({len(OUTPUTS['model.txt'])} bytes)")
    assert (tmp_path / "ckpt" / "epoch1.ckpt").stat().st_ino == inode  # not rewritten


# -- the digest check, atomicity ---------------------------------------------------------


def _corrupt(case: Case, name: str, data: bytes) -> bytes:
    """Replace a stored output's bytes behind orch's back; returns the old bytes."""
    runs = case.runs()
    old = runs.read_file(case.run_id, f"output/{name}")
    if case.kind == "dir":
        (Path(case.uri) / "runs" / case.run_id / "output" / name).write_bytes(data)
    else:
        bucket, _, prefix = case.uri[len("s3://"):].partition("/")
        admin_client(case.env["AWS_ENDPOINT_URL"]).put_object(
            Bucket=bucket, Key=f"{prefix}/runs/{case.run_id}/output/{name}", Body=data)
    return old


def leftovers(root: Path) -> list[str]:
    """Temporary files of a pull (or of a store's download) left anywhere under root."""
    return [p.name for p in root.rglob("*") if "orch-pull" in p.name or p.name.endswith(".tmp")]


def test_a_corrupt_object_is_refused_and_not_left_in_place(case: Case, tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "epoch2.ckpt").write_text("my own older copy")
    old = _corrupt(case, "ckpt/epoch2.ckpt", b"3" * 2000)  # same size, other bytes
    old_model = _corrupt(case, "model.txt", b"weights, truncated")  # another size
    try:
        code, out, err = invoke(["pull", case.run_id, "-o", str(tmp_path), "--store",
                                 case.uri], case.env)
    finally:
        _corrupt(case, "ckpt/epoch2.ckpt", old)
        _corrupt(case, "model.txt", old_model)
    assert code == 2
    line = one_error(err, "2 output(s) do not match", "ckpt/epoch2.ckpt: sha256",
                     "model.txt: 18 bytes, recorded 8", "3 other files are in place")
    assert "corrupt" in line
    assert out.startswith("pulled 3 files")
    assert (tmp_path / "ckpt" / "epoch2.ckpt").read_text() == "my own older copy"
    assert not (tmp_path / "model.txt").exists()
    assert tree(tmp_path) == {**expected("ckpt/epoch1.ckpt", "csv/metrics.csv",
                                         "csv/sub/deep.csv"),
                              "ckpt/epoch2.ckpt": b"my own older copy"}
    assert leftovers(tmp_path) == []


def test_a_record_without_digests_is_pulled_unchecked_and_says_so(
    dir_case: Case, tmp_path: Path
) -> None:
    store = tmp_path / "old-store"
    shutil.copytree(dir_case.uri, store)
    record = store / "runs" / dir_case.run_id / "run.json"
    data = json.loads(record.read_text())
    del data["outputs"]  # as orch wrote records before it kept sizes: names only, inline
    data["artifacts"] = sorted(OUTPUTS)
    record.write_text(json.dumps(data))
    (record.parent / "outputs.jsonl").unlink()
    assert RunRecord.from_json(data).artifact_files == {}
    code, out, err = invoke(["pull", dir_case.run_id, "-o", str(tmp_path / "out"),
                             "--store", str(store)])
    assert code == 0, err
    assert tree(tmp_path / "out") == expected()
    assert err.startswith("warning: 5 file(s) not checked: ")
    assert "older than the sizes and SHA-256" in err
    assert out.startswith("pulled 5 files")


class _BreakingBody:
    """A response body whose connection drops after two chunks, as botocore reports it."""

    def __init__(self, body: Any) -> None:
        self.body = body

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        from botocore.exceptions import ResponseStreamingError

        for index, chunk in enumerate(self.body.iter_chunks(size)):
            if index == 2:
                self.body.close()
                raise ResponseStreamingError(error="Connection reset by peer (test)")
            yield chunk


class _FlakyClient:
    """A boto3 client whose downloads of ``big.bin`` always break mid-way."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_object(self, **kwargs: Any) -> Any:
        response = self.inner.get_object(**kwargs)
        if kwargs["Key"].endswith("/big.bin"):
            response["Body"] = _BreakingBody(response["Body"])
        return response


def test_a_record_listing_its_outputs_inline_is_pulled_checked(
    dir_case: Case, tmp_path: Path
) -> None:
    """Records written before manifests kept each output's size and SHA-256 in run.json."""
    store = tmp_path / "old-store"
    shutil.copytree(dir_case.uri, store)
    record = store / "runs" / dir_case.run_id / "run.json"
    data = json.loads(record.read_text())
    del data["outputs"]
    data["artifacts"] = sorted(OUTPUTS)
    data["artifact_files"] = {name: {"size": len(text),
                                     "sha256": hashlib.sha256(text.encode()).hexdigest()}
                              for name, text in OUTPUTS.items()}
    record.write_text(json.dumps(data))
    (record.parent / "outputs.jsonl").unlink()
    code, out, err = invoke(["pull", dir_case.run_id, "-o", str(tmp_path / "out"),
                             "--store", str(store)])
    assert code == 0, err
    assert tree(tmp_path / "out") == expected()
    assert "not checked" not in err and out.startswith("pulled 5 files")


def test_a_manifest_that_is_not_the_recorded_one_is_refused(
    dir_case: Case, tmp_path: Path
) -> None:
    store = tmp_path / "tampered"
    shutil.copytree(dir_case.uri, store)
    manifest = store / "runs" / dir_case.run_id / "outputs.jsonl"
    manifest.write_text(manifest.read_text().replace("model.txt", "other.txt"))
    code, _, err = invoke(["pull", dir_case.run_id, "-o", str(tmp_path / "out"),
                           "--store", str(store)])
    assert code == 2
    one_error(err, "corrupt manifest", "outputs.jsonl")
    assert not (tmp_path / "out").exists()


def test_a_download_that_breaks_mid_way_leaves_nothing_under_its_name(
    s3: Case, tmp_path: Path
) -> None:
    from orchestrator.store.s3 import S3Store, make_client

    bucket, _, prefix = s3.uri[len("s3://"):].partition("/")
    client = _FlakyClient(make_client(s3.env["AWS_ENDPOINT_URL"], max_attempts=1))
    store = S3Store(client, bucket, prefix, retry_budget_s=1.0)  # type: ignore[arg-type]
    (tmp_path / "big.bin").write_bytes(b"an older big.bin")
    with pytest.raises(StoreError, match="big.bin") as info:
        orchestrator.pull(s3.big_run_id or "", dest=tmp_path, store=store)
    assert "cannot download output 'big.bin'" in str(info.value)  # after retrying for 1 s
    assert (tmp_path / "big.bin").read_bytes() == b"an older big.bin"
    assert leftovers(tmp_path) == []


def test_ctrl_c_during_a_big_download_leaves_no_partial_file(
    s3_case: Case, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    proc = subprocess.Popen(
        [ORCH, "pull", s3_case.big_run_id or "", "big.bin", "-o", str(dest), "--store",
         s3_case.uri], env={**os.environ, **s3_case.env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        # as a terminal's foreground job: a suite run in the background (``&``) passes
        # SIGINT on ignored, and orch would never see the Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any(dest.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)  # until the download's temporary file appears
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    one_error(err, "interrupted")
    # No temporary file is left, and nothing half-written under its name. On a busy
    # machine the Ctrl-C can land just after the file was checked and renamed into place:
    # that file is whole, and kept (finished work is not thrown away).
    left = {p.relative_to(dest).as_posix(): p.stat().st_size for p in dest.rglob("*")}
    assert left in ({}, {"big.bin": BIG_MB << 20}), left


# -- ownership ----------------------------------------------------------------------------


def test_stored_outputs_belong_to_the_user_running_orch(dir_case: Case) -> None:
    """Run outputs are written by uid 65534 in the container; the store holds copies."""
    run_dir = Path(dir_case.uri) / "runs" / dir_case.run_id
    owners = {p.relative_to(run_dir).as_posix(): p.stat().st_uid for p in run_dir.rglob("*")}
    assert "output/ckpt/epoch1.ckpt" in owners
    assert set(owners.values()) == {os.geteuid()}, owners


def _user(name: str = "orchpulltest") -> pwd.struct_passwd:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to make a user")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
        return pwd.getpwnam(name)


def test_under_sudo_the_store_and_pulled_files_are_the_invoking_users(
    project: Path, tmp_path: Path
) -> None:
    user = _user()
    sudo = {"SUDO_UID": str(user.pw_uid), "SUDO_GID": str(user.pw_gid), "SUDO_USER": "x"}
    store = tmp_path / "sudo-store"
    result = sweep(project, str(store), sudo, "big_mb=0")
    owners = {p.relative_to(store).as_posix(): (p.stat().st_uid, p.stat().st_gid)
              for p in [store, *store.rglob("*")]}
    assert set(owners.values()) == {(user.pw_uid, user.pw_gid)}, owners
    dest = tmp_path / "pulled" / "here"
    proc = subprocess.run([ORCH, "pull", result["runs"][0]["run_id"], "-o", str(dest),
                           "--store", str(store)], capture_output=True, text=True,
                          env={**os.environ, **sudo}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert tree(dest) == expected()
    made = [dest.parent, dest, *dest.rglob("*")]
    assert {p.stat().st_uid for p in made} == {user.pw_uid}


def test_a_user_who_is_not_root_pulls_files_of_their_own(dir_case: Case) -> None:
    user = _user()
    python = shutil.which("python3", path="/usr/bin:/bin")
    runuser = shutil.which("runuser")
    if python is None or runuser is None:
        pytest.skip("needs runuser and a system python3 (the venv's lives under /root)")
    shared = Path(tempfile.mkdtemp(prefix="orch-pull-user-"))
    try:
        shared.chmod(0o755)
        store = shared / "store"
        shutil.copytree(dir_case.uri, store)  # root's files, readable by all
        dest = shared / "dest"
        dest.mkdir()
        os.chown(dest, user.pw_uid, user.pw_gid)
        site = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
        code = ("import sys; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; "
                "from orchestrator.cli import main; main()")
        proc = subprocess.run(
            [runuser, "-u", user.pw_name, "--", python, "-c", code, str(REPO), str(site),
             "pull", dir_case.run_id, "-o", str(dest / "out"), "--store", str(store)],
            capture_output=True, text=True, timeout=120, cwd=shared,
            env={"PATH": "/usr/bin:/bin", "HOME": str(shared)})
        assert proc.returncode == 0, proc.stderr
        assert tree(dest / "out") == expected()
        assert {p.stat().st_uid for p in (dest / "out").rglob("*")} == {user.pw_uid}
        assert {p.stat().st_uid for p in store.rglob("*")} == {0}  # the store is untouched
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# -- bad input ----------------------------------------------------------------------------


def test_an_unknown_run_is_one_error_line(case: Case, tmp_path: Path) -> None:
    code, out, err = invoke(["pull", "0123456789ab", "-o", str(tmp_path), "--store",
                             case.uri], case.env)
    assert code == 2 and out == ""
    one_error(err, "no run matching '0123456789ab'")
    proc = subprocess.run([ORCH, "pull", "nothex!", "--store", case.uri], capture_output=True,
                          text=True, env={**os.environ, **case.env}, timeout=120)
    assert proc.returncode == 2
    one_error(proc.stderr, "'nothex!' is not a valid run id")
    assert list(tmp_path.iterdir()) == []


def test_a_path_that_selects_nothing_names_it_and_what_there_is(
    dir_case: Case, tmp_path: Path
) -> None:
    code, out, err = invoke(["pull", dir_case.run_id, "model.txt", "nope/*.ckpt", "*.bin",
                             "-o", str(tmp_path), "--store", dir_case.uri])
    assert code == 2 and out == ""
    one_error(err, "'nope/*.ckpt', '*.bin'", "its outputs: ckpt/epoch1.ckpt, ckpt/epoch2.ckpt,")
    assert list(tmp_path.iterdir()) == []  # nothing pulled, not even model.txt
    proc = subprocess.run([ORCH, "pull", dir_case.run_id, "../model.txt", "--store",
                           dir_case.uri], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2
    one_error(proc.stderr, "relative to the run's output directory")


# -- the bench section --------------------------------------------------------------------


def test_the_bench_section_runs_at_a_tiny_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench/run.py --only pull`` end to end (SeaweedFS, a sweep, both downloads), with
    a 2 MB file and 20 small ones: no timing goal, only that every figure comes out."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import pull_bench
    from common import Janitor
    from context import Ctx

    monkeypatch.setattr(pull_bench, "BIG_BYTES", 2_000_000)
    monkeypatch.setattr(pull_bench, "SMALL_FILES", 20)
    monkeypatch.setattr(pull_bench, "SMALL_BYTES", 100)
    janitor = Janitor()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM,
                                                         signal.SIGHUP)}
    try:
        figures = pull_bench.pull(Ctx(janitor=janitor, quick=True))
    finally:
        janitor.cleanup()  # it ignores signals while it cleans up: give pytest its own back
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert figures["pull_files"] == 21
    assert figures["pull_bytes"] == 2_000_000 + 20 * 100
    assert figures["pull_s"] > 0 and figures["pull_boto3_s"] > 0
    assert figures["pull_ratio"] == figures["pull_s"] / figures["pull_boto3_s"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
