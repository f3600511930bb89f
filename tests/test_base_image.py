"""The default base image: reproducible recipe, and what the built image holds.

The unit tests need no daemon; the ``docker`` ones use the image that ``images/build_base.py``
builds (via the ``base_image`` fixture of conftest.py: about a minute the first time on a
machine, a fraction of a second after).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ImageError
from orchestrator.image import base_image as base
from orchestrator.image.tarball import DEFAULT_MTIME

REPO = Path(__file__).resolve().parent.parent
PACKAGES_FILE = REPO / "images" / "bookworm-python.packages.txt"
DIFF_ID = "sha256:" + "ab" * 32


# --- recipe (no daemon) ------------------------------------------------------------------


def test_mirror_comes_from_the_deb822_stanza_of_the_suite(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert base.apt_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_a_one_line_sources_list_else_the_default(tmp_path: Path) -> None:
    assert base.apt_mirror(tmp_path) == base.DEFAULT_MIRROR
    (tmp_path / "sources.list").write_text(
        "deb http://sec.example/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://old.example/debian bookworm main\n"
    )
    assert base.apt_mirror(tmp_path) == "http://old.example/debian"


def test_image_config_is_canonical_and_fixed_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    config = base.image_config(DIFF_ID, "python3 3.11.2-1+b1 amd64\n", "amd64")
    parsed = json.loads(config)
    assert config == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    assert parsed["created"] == "2000-01-01T00:00:00Z"
    assert parsed["history"] == [{"created": "2000-01-01T00:00:00Z", "created_by": base.RECIPE}]
    assert parsed["rootfs"] == {"type": "layers", "diff_ids": [DIFF_ID]}
    assert parsed["config"]["Cmd"] == ["python3"]
    assert "LANG=C.UTF-8" in parsed["config"]["Env"]
    assert parsed["config"]["Labels"][base.LABEL_PACKAGES] == "python3 3.11.2-1+b1 amd64\n"
    assert base.image_id(config) == "sha256:" + hashlib.sha256(config).hexdigest()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(DEFAULT_MTIME + 86400))
    assert json.loads(base.image_config(DIFF_ID, "", "amd64"))["created"] == (
        "2000-01-02T00:00:00Z"
    )


def _fake_rootfs(root: Path) -> Path:
    files = {
        "etc/shadow": "root:*:20784:0:99999:7:::\nnobody:*:20001:0:99999:7:::\n",
        "etc/shadow-": "root:*:20784:0:99999:7:::\n",
        "etc/hostname": "buildhost\n",
        "etc/resolv.conf": "nameserver 10.0.0.1\n",
        "etc/apt/sources.list": "deb http://mirror.example/debian bookworm main\n",
        "var/log/dpkg.log": "2026-11-27 23:01:10 install ...\n",
        "var/log/apt/history.log": "Start-Date: 2026-11-27\n",
        "var/cache/ldconfig/aux-cache": "inodes",
        "var/cache/apt/pkgcache.bin": "cache",
        "var/lib/apt/lists/deb.debian.org_Release": "release",
        "var/lib/dpkg/status-old": "old",
        "usr/lib/python3.11/os.py": "# source\n",
        "usr/lib/python3.11/__pycache__/os.cpython-311.pyc": "bytecode",
        "dev/null": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_normalize_removes_or_fixes_what_varies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    root = _fake_rootfs(tmp_path / "rootfs")
    base.normalize_rootfs(root)
    base.normalize_rootfs(root)  # idempotent
    day = str(DEFAULT_MTIME // 86400)
    assert (root / "etc/shadow").read_text() == (
        f"root:*:{day}:0:99999:7:::\nnobody:*:{day}:0:99999:7:::\n"
    )
    assert (root / "etc/hostname").read_text() == "localhost\n"
    assert (root / "etc/resolv.conf").read_text() == ""
    assert "mirror.example" not in (root / "etc/apt/sources.list").read_text()
    assert (root / "usr/lib/python3.11/os.py").exists()
    for gone in (
        "etc/shadow-",
        "var/log/dpkg.log",
        "var/cache/ldconfig/aux-cache",
        "var/cache/apt/pkgcache.bin",
        "var/lib/apt/lists/deb.debian.org_Release",
        "var/lib/dpkg/status-old",
        "usr/lib/python3.11/__pycache__",
        "dev/null",
    ):
        assert not (root / gone).exists(), gone
    assert sorted(p.name for p in (root / "var/log").iterdir()) == [
        "apt",
        "btmp",
        "lastlog",
        "wtmp",
    ]
    assert not any((root / "var/log/apt").iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_layer_entries_keep_owners(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/shadow").write_text("root:*:1:::::\n")
    os.chown(tmp_path / "etc/shadow", 0, 42)
    by_path = {entry.path: entry for entry in base.rootfs_entries(tmp_path)}
    assert (by_path["etc/shadow"].uid, by_path["etc/shadow"].gid) == (0, 42)


def test_base_layer_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ORCH_CACHE", raising=False)  # it would take precedence
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert base.layer_cache_dir() == tmp_path / "orch" / "layers"
    assert base.base_layer_path(DIFF_ID) is None
    base.layer_cache_dir().mkdir(parents=True)
    (base.layer_cache_dir() / f"{'ab' * 32}.tar").write_bytes(b"")
    assert base.base_layer_path(DIFF_ID) == base.layer_cache_dir() / f"{'ab' * 32}.tar"
    with pytest.raises(ImageError, match="invalid diff id"):
        base.base_layer_path("sha256:../../etc/passwd")


def test_packages_file_is_recorded() -> None:
    lines = PACKAGES_FILE.read_text().splitlines()
    assert lines == sorted(lines)
    assert any(line.startswith("python3 ") for line in lines)
    assert all(len(line.split()) == 3 for line in lines)


# --- the built image ---------------------------------------------------------------------


@pytest.mark.docker
def test_base_image_is_tagged(docker_client: Any, base_image: str) -> None:
    assert docker_client.images.get(base.TAG).id == base_image


@pytest.mark.docker
def test_runs_python_as_a_non_root_user(docker_client: Any, base_image: str) -> None:
    out = docker_client.containers.run(
        base_image,
        ["python3", "-c", "import os, sys; print(os.getuid(), os.getgid(), sys.version_info[0])"],
        user="65534:65534",
        network_mode="none",
        remove=True,
    )
    assert out.decode().split() == ["65534", "65534", "3"]


@pytest.mark.docker
def test_image_id_is_the_hash_of_the_cached_config(docker_client: Any, base_image: str) -> None:
    image = base.cached_image(PACKAGES_FILE.read_text())
    assert image is not None, "no cached build for the recorded package set"
    assert image.image_id == base.image_id(image.config) == base_image
    assert docker_client.images.get(base_image).attrs["RootFS"]["Layers"] == [image.diff_id]
    layer = base.base_layer_path(image.diff_id)
    assert layer is not None
    digest = hashlib.sha256()
    with layer.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert "sha256:" + digest.hexdigest() == image.diff_id


@pytest.mark.docker
def test_packages_file_matches_the_image(docker_client: Any, base_image: str) -> None:
    recorded = PACKAGES_FILE.read_text()
    labels = docker_client.images.get(base_image).labels
    assert labels[base.LABEL_PACKAGES] == recorded
    out = docker_client.containers.run(
        base_image,
        ["dpkg-query", "-W", "-f=${Package} ${Version} ${Architecture}\\n"],
        network_mode="none",
        remove=True,
    )
    assert "".join(line + "\n" for line in sorted(out.decode().splitlines())) == recorded
