"""Security: secrets stay out, runs stay confined, config values stay data, artifacts stay put.

* Secrets in orch's own environment (AWS keys, a GitHub token, anything) never reach an
  image layer, an image config, a record, a stored log or a report.
* A run is not root, not privileged, has no capabilities, no network unless the project
  opts in, and cannot write the project's code.
* Config values are never part of a shell string: shell syntax arrives verbatim.
* Artifacts: a symlink in $ORCH_OUTPUT is never followed and nothing lands outside the
  run's output/ in the store.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.faults]

Orch = Callable[..., subprocess.CompletedProcess[str]]


def sweep_json(orch: Orch, root: Path, *args: str, env: dict[str, str] | None = None,
               expect: int = 0) -> dict[str, Any]:
    proc = orch("sweep", "-p", str(root), *args, "--json", env=env, timeout=300)
    assert proc.returncode == expect, proc.stderr
    return json.loads(proc.stdout)


def run_dir(root: Path, run_id: str) -> Path:
    return root / ".orch" / "runs" / run_id


def stdout_json(root: Path, run_id: str) -> Any:
    return json.loads((run_dir(root, run_id) / "stdout.log").read_text())


@pytest.fixture
def cleanup_containers() -> Iterator[list[str]]:
    """Run ids whose containers (none should be left) are removed after the test."""
    run_ids: list[str] = []
    yield run_ids
    import docker

    client = docker.from_env()
    try:
        for item in client.api.containers(all=True, filters={"label": "org.orch.run_id"}):
            if (item.get("Labels") or {}).get("org.orch.run_id") in run_ids:
                client.api.remove_container(item["Id"], force=True)
    finally:
        client.close()


# --------------------------------------------------------------------------- secrets

ENV_PROBE = """\
import json, os
print(json.dumps(dict(os.environ), sort_keys=True))
with open(os.path.join(os.environ["ORCH_OUTPUT"], "env.json"), "w") as handle:
    json.dump(dict(os.environ), handle)
json.dump({"x": json.load(open("/orch/config.json"))["x"]},
          open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


def _secrets() -> dict[str, str]:
    token = secrets.token_hex(12)
    return {
        "AWS_ACCESS_KEY_ID": "AKIA" + token.upper()[:16],
        "AWS_SECRET_ACCESS_KEY": "wJalr" + secrets.token_urlsafe(30),
        "AWS_SESSION_TOKEN": "FwoGZX" + secrets.token_urlsafe(40),
        "GITHUB_TOKEN": "ghp_" + secrets.token_hex(18),
        "MY_SECRET": "my-secret-" + secrets.token_hex(16),
    }


def _scan_tar(data: bytes, where: str, needles: dict[str, bytes], found: list[str]) -> None:
    """Every member of a tar (recursing into layer tars), by name and by content."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar:
            for name, needle in needles.items():
                if needle in member.name.encode(errors="surrogateescape") or needle in (
                        member.linkname or "").encode(errors="surrogateescape"):
                    found.append(f"{name} in the name of {where}:{member.name}")
            if not member.isfile():
                continue
            handle = tar.extractfile(member)
            content = handle.read() if handle is not None else b""
            for name, needle in needles.items():
                if needle in content:
                    found.append(f"{name} in {where}:{member.name}")
            if member.name.endswith(".tar") or member.name.endswith("/layer.tar"):
                _scan_tar(content, f"{where}:{member.name}", needles, found)


def _scan_tree(root: Path, needles: dict[str, bytes], found: list[str]) -> int:
    count = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            count += 1
            data = path.read_bytes()
            if data[:2] == b"\x1f\x8b":  # a layer blob, stored compressed: read what it holds
                data += gzip.decompress(data)
            for name, needle in needles.items():
                if needle in data or needle in str(path).encode():
                    found.append(f"{name} in {path}")
    return count


def test_secrets_never_reach_images_records_logs_or_reports(
        make_project: Callable[..., Path], orch: Orch, tmp_path: Path,
        cleanup_containers: list[str]) -> None:
    root = make_project("secrets", files={"probe.py": ENV_PROBE, "configs/config.yaml": "x: 0\n"},
                        command=["python3", "probe.py"])
    values = _secrets()
    result = sweep_json(orch, root, "x=1,2", env=values)
    cleanup_containers.extend(r["run_id"] for r in result["runs"])
    assert {r["status"] for r in result["runs"]} == {"succeeded"}
    # the probe saw an environment, and it was orch's, not ours
    seen = stdout_json(root, result["runs"][0]["run_id"])
    assert seen["ORCH_RUN_ID"] == result["runs"][0]["run_id"]

    report = tmp_path / "report.html"
    proc = orch("report", result["sweep_id"], "-p", str(root), "-o", str(report), env=values)
    assert proc.returncode == 0, proc.stderr
    outputs = [
        orch("show", result["runs"][0]["run_id"], "-p", str(root), "--json", env=values),
        orch("results", result["sweep_id"], "-p", str(root), "--format", "json", env=values),
        orch("logs", result["runs"][1]["run_id"], "-p", str(root), env=values),
    ]

    needles = {name: value.encode() for name, value in values.items()}
    found: list[str] = []
    files = _scan_tree(root / ".orch", needles, found)
    assert files >= 2 * 6, "the store holds the runs' files"
    for name, needle in needles.items():
        if needle in report.read_bytes():
            found.append(f"{name} in the report")
        for proc in outputs:
            assert proc.returncode == 0, proc.stderr
            if needle.decode() in proc.stdout + proc.stderr:
                found.append(f"{name} in the output of {proc.args}")

    image_ids = sorted({r["image_id"] for r in result["runs"]})
    saved = tmp_path / "images.tar"
    subprocess.run(["docker", "save", "-o", str(saved), *image_ids], check=True,
                   capture_output=True, timeout=300)
    _scan_tar(saved.read_bytes(), "docker save", needles, found)
    saved.unlink()
    assert found == []


# --------------------------------------------------------------------------- confinement

CONFINEMENT_PROBE = """\
import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
facts = {name: status[name].strip() for name in
         ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}
facts["uid"], facts["gid"], facts["groups"] = os.getuid(), os.getgid(), os.getgroups()
facts["euid"] = os.geteuid()
facts["interfaces"] = sorted(os.listdir("/sys/class/net"))
routes = open("/proc/net/route").read().splitlines()[1:]
facts["default_route"] = any(line.split()[1] == "00000000" for line in routes)
facts["cwd"] = os.getcwd()
writes = {}
for path in ("/orch/code/new-file", "/orch/code/probe.py", "/orch/code/configs/x.yaml",
             "/orch/config.json", "/etc/passwd", "/usr/bin/python3"):
    try:
        with open(path, "a") as handle:
            handle.write("x")
        writes[path] = "written"
    except OSError as exc:
        writes[path] = exc.strerror
facts["writes"] = writes
try:
    os.chmod("/orch/code/probe.py", 0o777)
    facts["chmod"] = "changed"
except OSError as exc:
    facts["chmod"] = exc.strerror
facts["dev"] = sorted(os.listdir("/dev"))
facts["proc_sys_writable"] = os.access("/proc/sys/kernel", os.W_OK)
out = os.environ["ORCH_OUTPUT"]
open(os.path.join(out, "written.txt"), "w").write("output is writable")
print(json.dumps(facts, sort_keys=True))
json.dump({"ok": 1}, open(os.path.join(out, "metrics.json"), "w"))
"""


@pytest.fixture(scope="module")
def confined(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[dict[str, Any]]:
    """The probe's facts from a default project and from one with network: bridge."""
    import shutil
    import sys

    import yaml
    from conftest import REPO, git_commit_all

    exe = str(Path(sys.executable).with_name("orch"))
    facts: dict[str, Any] = {}
    run_ids: list[str] = []
    for network in ("none", "bridge"):
        root = tmp_path_factory.mktemp(f"net-{network}") / "proj"
        root.mkdir()
        shutil.copy(REPO / "train.py", root / "train.py")
        (root / "configs").mkdir()
        (root / "configs" / "config.yaml").write_text("x: 0\n")
        (root / "probe.py").write_text(CONFINEMENT_PROBE)
        settings: dict[str, Any] = {"name": f"confined-{network}", "base_image": base_image,
                                    "command": ["python3", "probe.py"]}
        if network == "bridge":
            settings["network"] = "bridge"
        (root / "orch.yaml").write_text(yaml.safe_dump(settings))
        (root / ".gitignore").write_text(".orch/\n")
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
        git_commit_all(root)
        proc = subprocess.run([exe, "sweep", "-p", str(root), "--json"], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        run = json.loads(proc.stdout)["runs"][0]
        run_ids.append(run["run_id"])
        facts[network] = {"facts": stdout_json(root, run["run_id"]), "root": root,
                          "run_id": run["run_id"]}
    yield facts
    import docker

    client = docker.from_env()
    for item in client.api.containers(all=True, filters={"label": "org.orch.run_id"}):
        if (item.get("Labels") or {}).get("org.orch.run_id") in run_ids:
            client.api.remove_container(item["Id"], force=True)
    client.close()


def test_runs_are_not_root(confined: dict[str, Any]) -> None:
    facts = confined["none"]["facts"]
    assert facts["uid"] == facts["euid"] == 65534
    assert facts["gid"] == 65534
    assert 0 not in facts["groups"]


def test_runs_have_no_capabilities_and_no_privilege(confined: dict[str, Any]) -> None:
    for network in ("none", "bridge"):
        facts = confined[network]["facts"]
        for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(facts[name], 16) == 0, (network, name, facts[name])
        assert facts["NoNewPrivs"] == "1"
        assert facts["Seccomp"] != "0", "the default seccomp profile applies (not privileged)"
        assert not facts["proc_sys_writable"]
        # a privileged container sees the host's devices
        assert not {"mem", "kmsg", "sda", "nvme0", "port"} & set(facts["dev"]), facts["dev"]


def test_create_arguments_ask_for_no_privilege() -> None:
    from orchestrator.runner.container import create_kwargs

    kwargs = create_kwargs(image_id="sha256:" + "a" * 64, command=["python3", "x.py"],
                           run_id="abc", cpus=1.0, memory=None, network="none", gpu_ids=[],
                           env={}, name="n")
    assert kwargs["privileged"] is False
    assert kwargs["cap_drop"] == ["ALL"] and "cap_add" not in kwargs
    assert "no-new-privileges" in kwargs["security_opt"]
    assert kwargs["user"] == "65534:65534"
    assert kwargs["network_mode"] == "none"
    assert not {"volumes", "mounts", "devices", "pid_mode", "ipc_mode", "userns_mode"} & set(kwargs)
    assert isinstance(kwargs["command"], list)


def test_network_only_when_the_project_opts_in(confined: dict[str, Any]) -> None:
    none, bridge = confined["none"]["facts"], confined["bridge"]["facts"]
    assert none["interfaces"] == ["lo"] and not none["default_route"]
    assert "eth0" in bridge["interfaces"] and bridge["default_route"]
    record = json.loads((run_dir(confined["bridge"]["root"], confined["bridge"]["run_id"])
                         / "run.json").read_text())
    assert record["network"] == "bridge"


def test_project_code_is_not_writable(confined: dict[str, Any]) -> None:
    facts = confined["none"]["facts"]
    assert facts["cwd"] == "/orch/code"
    for path in ("/orch/code/new-file", "/orch/code/probe.py", "/orch/code/configs/x.yaml",
                 "/orch/config.json", "/etc/passwd", "/usr/bin/python3"):
        assert facts["writes"][path] != "written", path
    assert facts["chmod"] != "changed"
    root, run_id = confined["none"]["root"], confined["none"]["run_id"]
    assert (run_dir(root, run_id) / "output" / "written.txt").read_text() == "output is writable"


# --------------------------------------------------------------------------- no shell

PAYLOADS = {
    "subst": "$(touch /tmp/pwned-{n}-subst)",
    "semicolon": "; touch /tmp/pwned-{n}-semi; rm -rf /",
    "backticks": "`touch /tmp/pwned-{n}-tick`",
    "pipe": "| touch /tmp/pwned-{n}-pipe",
    "and": "&& touch /tmp/pwned-{n}-and",
    "quotes": "'\"; touch /tmp/pwned-{n}-quote; echo \"'",
    "newline": "x\ntouch /tmp/pwned-{n}-newline",
    "glob": "/tmp/* ~ $HOME $PATH %PATH% \\$x",
}

ECHO_PROBE = """\
import glob, json, os
cfg = json.load(open("/orch/config.json"))
print(json.dumps({"config": cfg, "env": os.environ.get("INJECT"),
                  "pwned": sorted(glob.glob("/tmp/pwned-*") + glob.glob("/orch/code/pwned-*"))}))
json.dump({"ok": 1}, open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


def test_config_values_never_reach_a_shell(make_project: Callable[..., Path], orch: Orch,
                                           cleanup_containers: list[str]) -> None:
    import yaml

    n = secrets.token_hex(6)
    payloads = {key: value.format(n=n) for key, value in PAYLOADS.items()}
    config = {"payloads": payloads, "cli": "placeholder"}
    root = make_project(
        "noshell",
        files={"probe.py": ECHO_PROBE, "configs/config.yaml": yaml.safe_dump(config)},
        command=["python3", "probe.py"],
        env={"INJECT": f"$(touch /tmp/pwned-{n}-env)"},
    )
    cli_value = f"$(touch /tmp/pwned-{n}-cli);`touch /tmp/pwned-{n}-cli2`"
    result = sweep_json(orch, root, f"cli='{cli_value}'")
    run_id = result["runs"][0]["run_id"]
    cleanup_containers.append(run_id)
    seen = stdout_json(root, run_id)
    assert seen["config"]["payloads"] == payloads
    assert seen["config"]["cli"] == cli_value
    assert seen["env"] == f"$(touch /tmp/pwned-{n}-env)"
    assert seen["pwned"] == []
    assert not list(Path("/tmp").glob(f"pwned-{n}-*"))
    assert not list(root.glob("pwned-*"))
    record = json.loads((run_dir(root, run_id) / "run.json").read_text())
    assert record["config"]["payloads"] == payloads and record["config"]["cli"] == cli_value
    stored = yaml.safe_load((run_dir(root, run_id) / "config.yaml").read_text())
    assert stored["payloads"] == payloads


# --------------------------------------------------------------------------- artifacts

ARTIFACT_PROBE = """\
import json, os
out = os.environ["ORCH_OUTPUT"]
os.symlink("/etc/passwd", os.path.join(out, "passwd"))
os.symlink("/", os.path.join(out, "rootdir"))
os.symlink("..", os.path.join(out, "up"))
os.symlink("../../../../etc/shadow", os.path.join(out, "shadow"))
os.makedirs(os.path.join(out, "sub"))
os.symlink("/etc", os.path.join(out, "sub", "etc"))
for name in ("..weird", "...", "a..b", "..", "sub/.."):
    try:
        open(os.path.join(out, name), "w").write("dots " + name)
    except OSError:
        pass
open(os.path.join(out, "sub", "real.txt"), "w").write("a real artifact")
json.dump({"ok": 1}, open(os.path.join(out, "metrics.json"), "w"))
"""


def _all_entries(root: Path) -> list[Path]:
    return [Path(dirpath) / name for dirpath, dirnames, filenames in os.walk(root)
            for name in dirnames + filenames]


def test_artifact_links_are_not_followed_and_nothing_escapes(
        make_project: Callable[..., Path], orch: Orch, cleanup_containers: list[str]) -> None:
    root = make_project("artifacts", files={"probe.py": ARTIFACT_PROBE,
                                            "configs/config.yaml": "x: 0\n"},
                        command=["python3", "probe.py"])
    outside_before = sorted(p.name for p in root.parent.iterdir())
    result = sweep_json(orch, root)
    run_id = result["runs"][0]["run_id"]
    cleanup_containers.append(run_id)
    store = root / ".orch"
    entries = _all_entries(store)
    assert not [p for p in entries if p.is_symlink()], "no symlink is ever stored"
    run = run_dir(root, run_id)
    output = run / "output"
    stored = sorted(p.relative_to(output).as_posix() for p in _all_entries(output)
                    if p.is_file())
    assert stored == ["...", "..weird", "a..b", "sub/real.txt"]
    assert (output / "sub" / "real.txt").read_text() == "a real artifact"
    for path in _all_entries(store / "runs"):  # (blobs/ hold the base image's own files)
        if path.is_file():
            data = path.read_bytes()
            assert b"root:x:0:0:" not in data, f"{path} holds /etc/passwd"
    # only the layout's names at the top of the run's directory
    assert {p.name for p in run.iterdir()} <= {
        "run.json", "config.yaml", "metrics.json", "stdout.log", "stderr.log", "output",
        "outputs.jsonl"}
    assert {p.name for p in store.iterdir()} <= {"runs", "sweeps", "blobs", ".tmp", ".gitignore"}
    assert sorted(p.name for p in root.parent.iterdir()) == outside_before
    manifest = (run / "outputs.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["name"] for line in manifest) == sorted(stored)


BAD_NAMES_PROBE = """\
import json, os
out = os.environ["ORCH_OUTPUT"]
if json.load(open("/orch/config.json"))["mode"] == "backslash":
    open(os.path.join(out, "..\\\\..\\\\etc\\\\passwd"), "w").write("backslashes")
else:
    open(os.path.join(out.encode(), b"bad-\\xff-name"), "w").write("not utf-8")
open(os.path.join(out, "fine.txt"), "w").write("fine")
json.dump({"ok": 1}, open(os.path.join(out, "metrics.json"), "w"))
"""


@pytest.mark.parametrize("mode", [
    pytest.param("backslash"),
    pytest.param("badbytes"),
])
def test_odd_artifact_names_do_not_sink_the_sweep(
        make_project: Callable[..., Path], orch: Orch, mode: str,
        cleanup_containers: list[str]) -> None:
    root = make_project(f"names-{mode}", files={"probe.py": BAD_NAMES_PROBE,
                                                "configs/config.yaml": "mode: x\n"},
                        command=["python3", "probe.py"])
    proc = orch("sweep", "-p", str(root), f"mode={mode}", "--json", timeout=300)
    store = root / ".orch"
    run_ids = [p.name for p in (store / "runs").iterdir()] if (store / "runs").is_dir() else []
    cleanup_containers.extend(run_ids)
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    run_id = result["runs"][0]["run_id"]
    output = run_dir(root, run_id) / "output"
    assert (output / "fine.txt").read_text() == "fine"
    for path in _all_entries(store):
        assert "\\" not in path.name and "passwd" not in path.name, path


PASS_ENV_PROBE = """
import hashlib, json, os
value = os.environ.get("MY_SERVICE_TOKEN", "").encode()
# the value's digest, not the value: the code is baked, and must not hold the secret
expected = "e5bf47ca990f9d6d35e14e96da44b8e25f6fa5a65863d5f3210ad31aaf113852"
json.dump({"seen": float(hashlib.sha256(value).hexdigest() == expected)},
          open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


def test_pass_env_reaches_the_run_and_nothing_stores_it(make_project, orch) -> None:
    root = make_project("passenv", files={"probe.py": PASS_ENV_PROBE,
                                          "configs/config.yaml": "x: 1\n"},
                        command=["python3", "probe.py"], pass_env=["MY_SERVICE_TOKEN"],
                        env={"HF_TOKEN": "baked-on-purpose"})
    proc = orch("sweep", "-p", str(root), "--json", env={"MY_SERVICE_TOKEN": "s3cr3t-value-42"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runs"][0]["metrics"] == {"seen": 1.0}
    warning = [line for line in proc.stderr.splitlines() if "env.HF_TOKEN looks like" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: ")
    for path in (root / ".orch").rglob("*"):
        if path.is_file():
            assert b"s3cr3t-value-42" not in path.read_bytes(), path
    record = next((root / ".orch" / "runs").glob("*/run.json")).read_text()
    assert json.loads(record)["pass_env"] == ["MY_SERVICE_TOKEN"]
