"""Locks, the wheelhouse and the environment layer (orchestrator.image.wheels / envlayer)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from orchestrator.errors import ImageError
from orchestrator.image import envlayer, wheels
from orchestrator.image.envlayer import (
    env_image_settings,
    env_layer_entries,
    env_layer_key,
    write_env_layer,
)
from orchestrator.image.tarball import layer_bytes
from orchestrator.image.wheels import (
    Requirement,
    ensure_wheels,
    lock_digest,
    parse_lock,
    pip_download_args,
    target_platforms,
)

LOCKS = Path(__file__).parent / "data" / "lock"
SIX_WHEEL = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254"
PACKAGING_WHEEL = "5b8f2217dbdbd2f7f384c41c628544e6d52f2d0f53c6d0c3ea61aa5d1d7ff124"
PACKAGING_SDIST = "026ed72c8ed3fcce5bf8950572258698927fd1dbda10a5e981cdf0ac37f4f002"
ZEROS = "0" * 64


def write_lock(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "requirements.lock"
    path.write_text(text)
    return path


def lock_error(tmp_path: Path, text: str, **kwargs: str) -> str:
    with pytest.raises(ImageError) as info:
        parse_lock(write_lock(tmp_path, text), **kwargs)
    return str(info.value)


# -- parsing ------------------------------------------------------------------------


def test_parse_good_lock() -> None:
    reqs = parse_lock(LOCKS / "requirements.lock")
    assert reqs == [
        Requirement(
            "packaging", "24.1", (f"sha256:{PACKAGING_SDIST}", f"sha256:{PACKAGING_WHEEL}")
        ),
        Requirement("six", "1.16.0", (f"sha256:{SIX_WHEEL}",)),
    ]  # "Six" normalized; colorama is Windows-only


def test_digest_ignores_comments_order_and_spelling(tmp_path: Path) -> None:
    reordered = write_lock(
        tmp_path,
        f"SIX == 1.16.0 --hash sha256:{SIX_WHEEL.upper()}\n"
        "# another comment\n\n"
        f"packaging==24.1 --hash=sha256:{PACKAGING_WHEEL} --hash=sha256:{PACKAGING_SDIST}\n",
    )
    original = parse_lock(LOCKS / "requirements.lock")
    assert lock_digest(parse_lock(reordered)) == lock_digest(original)
    changed = [Requirement("six", "1.16.0", (f"sha256:{ZEROS}",)), original[0]]
    assert lock_digest(changed) != lock_digest(original)


def test_missing_hash_names_file_line_and_package(tmp_path: Path) -> None:
    text = f"six==1.16.0 --hash=sha256:{SIX_WHEEL}\n# numpy next\nnumpy==1.26.4\n"
    message = lock_error(tmp_path, text)
    assert message == (
        f"{tmp_path}/requirements.lock:3: 'numpy' has no --hash: pin it with hashes "
        "(pip-compile --generate-hashes / pip hash)"
    )


def test_continuation_lines_report_the_first_line(tmp_path: Path) -> None:
    text = (
        f"six==1.16.0 \\\n    --hash=sha256:{SIX_WHEEL}\nrequests==2.32.3 \\\n    --hash=md5:abc\n"
    )
    assert "requirements.lock:3: 'requests' has a md5 hash" in lock_error(tmp_path, text)


def test_continuation_with_trailing_comment(tmp_path: Path) -> None:
    text = f"six==1.16.0 \\\n    --hash=sha256:{SIX_WHEEL}  # pinned by hand\n"
    assert parse_lock(write_lock(tmp_path, text))[0].hashes == (f"sha256:{SIX_WHEEL}",)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("numpy>=1.26 --hash=sha256:" + ZEROS, "'numpy>=1.26' is not pinned"),
        ("numpy --hash=sha256:" + ZEROS, "'numpy' is not pinned"),
        ("numpy==1.* --hash=sha256:" + ZEROS, "'numpy==1.*' is not pinned"),
        ("numpy>=1,==1.26.4 --hash=sha256:" + ZEROS, "is not pinned"),
        ("-e ./src", "-e: editable requirements cannot be locked"),
        ("--editable=git+https://x/y.git#egg=y", "--editable: editable"),
        ("-r other.txt", "-r: includes are not supported"),
        ("-c constraints.txt", "-c: constraint files are not supported"),
        ("--index-url https://example.invalid/simple", "--index-url is not supported"),
        ("demo @ https://example.invalid/demo-1.0-py3-none-any.whl", "direct URL requirement"),
        ("https://example.invalid/demo-1.0-py3-none-any.whl", "cannot parse"),
        ("six==1.16.0 --hash=sha512:abcd", "orch needs sha256 hashes"),
        ("six==1.16.0 --hash=sha256:abcd", "malformed sha256 hash"),
        ("six==1.16.0 --config-settings=x=y --hash=sha256:" + ZEROS, "only --hash is allowed"),
        ("six==${SIX_VERSION} --hash=sha256:" + ZEROS, "environment variables"),
        ("--hash=sha256:" + ZEROS, "--hash must follow a requirement"),
    ],
)
def test_unsupported_forms_name_the_line(tmp_path: Path, line: str, expected: str) -> None:
    message = lock_error(tmp_path, f"# header\n{line}\n")
    assert message.startswith(f"{tmp_path}/requirements.lock:2: ")
    assert expected in message


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    text = f"six==1.16.0 --hash=sha256:{SIX_WHEEL}\nSix==1.15.0 --hash=sha256:{ZEROS}\n"
    assert "lock:2: 'six' is listed twice (also line 1)" in lock_error(tmp_path, text)


def test_markers_are_evaluated_for_the_target_python(tmp_path: Path) -> None:
    path = write_lock(
        tmp_path,
        f'tomli==2.0.1 ; python_version < "3.11" --hash=sha256:{ZEROS}\n'
        f'six==1.16.0 ; sys_platform == "linux" and platform_machine == "x86_64" '
        f"--hash=sha256:{SIX_WHEEL}\n",
    )
    assert [r.name for r in parse_lock(path, python_version="3.11")] == ["six"]
    assert [r.name for r in parse_lock(path, python_version="3.10")] == ["six", "tomli"]


def test_markers_the_target_cannot_answer_are_refused(tmp_path: Path) -> None:
    text = f'tomli==2.0.1 ; python_full_version < "3.11.1" --hash=sha256:{ZEROS}\n'
    assert "uses python_full_version" in lock_error(tmp_path, text)
    # ...unless the target's full version is given.
    assert parse_lock(tmp_path / "requirements.lock", python_version="3.11.2") == []


def test_missing_lock_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        parse_lock(tmp_path / "nope.lock")


def test_download_flags_cover_pure_and_manylinux_wheels() -> None:
    args = pip_download_args("3.11", "manylinux_2_36_x86_64")
    assert args[:9] == [
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
    ]
    platforms = target_platforms("manylinux_2_36_x86_64")
    assert platforms[0] == "manylinux_2_36_x86_64" and platforms[-1] == "manylinux1_x86_64"
    for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        assert tag in platforms
    assert target_platforms("manylinux2014_x86_64")[:2] == [
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
    ]


# -- pip errors, without a network ---------------------------------------------------


def test_pip_errors_become_one_line() -> None:
    reqs = [Requirement("foo", "1.0", (f"sha256:{ZEROS}",))]
    stderr = (
        "WARNING: Location 'file:///x/simple/foo/' is ignored\n"
        "ERROR: Could not find a version that satisfies the requirement foo==1.0 "
        "(from versions: none)\n"
        "ERROR: No matching distribution found for foo==1.0\n"
    )
    message = wheels._pip_error(stderr, reqs, "3.11", "manylinux_2_36_x86_64")
    assert message.startswith("no wheel for 'foo==1.0' for Python 3.11 on manylinux_2_36_x86_64")
    assert "sdist only?" in message
    assert wheels._pip_error("ERROR: boom\n", reqs, "3.11", "x").endswith(": boom")


def test_unreachable_index_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "1",  # pip reports connection errors only when it retries
    }.items():
        monkeypatch.setenv(name, value)
    reqs = [Requirement("six", "1.16.0", (f"sha256:{SIX_WHEEL}",))]
    with pytest.raises(ImageError) as info:
        ensure_wheels(reqs, tmp_path / "cache")
    assert str(info.value) == (
        "no wheel for 'six==1.16.0': pip could not reach the index "
        "([Errno 111] Connection refused): check the network, proxy and PIP_INDEX_URL"
    )


def test_downloaded_file_with_wrong_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
        out = Path(args[args.index("-d") + 1])
        out.mkdir()
        (out / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"not the real thing")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(wheels, "_run_pip", fake_pip)
    reqs = [Requirement("six", "1.16.0", (f"sha256:{SIX_WHEEL}",))]
    with pytest.raises(ImageError) as info:
        ensure_wheels(reqs, tmp_path / "cache")
    actual = hashlib.sha256(b"not the real thing").hexdigest()
    assert str(info.value).startswith("hash mismatch for 'six==1.16.0'")
    assert f"sha256:{SIX_WHEEL}" in str(info.value) and f"sha256:{actual}" in str(info.value)
    assert not (tmp_path / "cache" / "sha256").exists()


# -- real downloads ------------------------------------------------------------------


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """six and packaging wheels fetched once by a real pip download."""
    cache = tmp_path_factory.mktemp("wheelhouse")
    return cache, ensure_wheels(parse_lock(LOCKS / "requirements.lock"), cache)


def test_download_fills_a_content_addressed_cache(wheelhouse: tuple[Path, list[Path]]) -> None:
    cache, paths = wheelhouse
    assert [p.name for p in paths] == [
        "packaging-24.1-py3-none-any.whl",
        "six-1.16.0-py2.py3-none-any.whl",
    ]
    assert paths[0] == cache / "sha256" / PACKAGING_WHEEL / paths[0].name
    assert paths[1] == cache / "sha256" / SIX_WHEEL / paths[1].name
    assert hashlib.sha256(paths[1].read_bytes()).hexdigest() == SIX_WHEEL


def test_warm_cache_needs_no_network(
    wheelhouse: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, paths = wheelhouse
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("PIP_NO_INDEX", "1")

    def no_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
        raise AssertionError(f"pip ran on a warm cache: {args}")

    monkeypatch.setattr(wheels, "_run_pip", no_pip)
    assert ensure_wheels(parse_lock(LOCKS / "requirements.lock"), cache) == paths


def test_prefilled_wheelhouse_is_used_for_single_hash_pins(
    wheelhouse: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel copied into cache/sha256/<hex>/ is used when the lock allows only that file;
    with several allowed files only pip knows which one it would pick, so pip runs."""
    _, paths = wheelhouse
    cache = tmp_path / "cache"
    for path in paths:
        target = cache / "sha256" / path.parent.name / path.name
        target.parent.mkdir(parents=True)
        target.write_bytes(path.read_bytes())
    calls: list[str] = []

    def fake_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(Path(args[args.index("-r") + 1]).read_text())
        return subprocess.CompletedProcess(args, 1, "", "ERROR: offline\n")

    monkeypatch.setattr(wheels, "_run_pip", fake_pip)
    reqs = parse_lock(LOCKS / "requirements.lock")
    six = [r for r in reqs if r.name == "six"]
    assert ensure_wheels(six, cache) == [cache / "sha256" / SIX_WHEEL / paths[1].name]
    assert calls == []
    with pytest.raises(ImageError, match="pip download failed for packaging==24.1: offline"):
        ensure_wheels(reqs, cache)
    assert calls == [
        f"packaging==24.1 --hash=sha256:{PACKAGING_SDIST} --hash=sha256:{PACKAGING_WHEEL}\n"
    ]


def test_wrong_hash_from_the_index_names_the_package(tmp_path: Path) -> None:
    reqs = parse_lock(write_lock(tmp_path, f"six==1.16.0 --hash=sha256:{ZEROS}\n"))
    with pytest.raises(ImageError) as info:
        ensure_wheels(reqs, tmp_path / "cache")
    message = str(info.value)
    assert message.startswith("hash mismatch for 'six==1.16.0'")
    assert f"expects sha256:{ZEROS}" in message and f"sha256:{SIX_WHEEL}" in message
    assert "\n" not in message


# -- the environment layer -----------------------------------------------------------


def layer_names(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {member.name: member for member in tar.getmembers()}


def test_env_layer_is_deterministic(wheelhouse: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, paths = wheelhouse
    key = env_layer_key(paths)
    first, diff_a = write_env_layer(paths, tmp_path / "a", key)
    second, diff_b = write_env_layer(list(reversed(paths)), tmp_path / "b", key)
    assert diff_a == diff_b
    assert first.read_bytes() == second.read_bytes()
    assert first == tmp_path / "a" / "layers" / f"env-{key.removeprefix('sha256:')}.tar"
    members = layer_names(first)
    assert members["orch/env/lib/six.py"].mode == 0o644
    assert members["orch/env/lib/packaging/version.py"].isfile()
    installer = "orch/env/lib/six-1.16.0.dist-info/INSTALLER"
    with tarfile.open(first) as tar:
        assert tar.extractfile(installer).read() == b"orch"  # type: ignore[union-attr]
    assert not [name for name in members if name.endswith(".pyc")]


def test_warm_env_layer_is_not_rebuilt(
    wheelhouse: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, paths = wheelhouse
    built = write_env_layer(paths, tmp_path, "sha256:" + "ab" * 32)

    def fail(*args: object) -> str:
        raise AssertionError("rebuilt a cached layer")

    monkeypatch.setattr(envlayer, "write_layer_file", fail)
    assert write_env_layer(paths, tmp_path, "sha256:" + "ab" * 32) == built
    # A different SOURCE_DATE_EPOCH means different tar bytes: not a cache hit.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    with pytest.raises(AssertionError, match="rebuilt"):
        write_env_layer(paths, tmp_path, "sha256:" + "ab" * 32)


def test_staged_large_files_give_the_same_layer(
    wheelhouse: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_env_layer stages big files on disk; the bytes are those of the in-memory entries."""
    _, paths = wheelhouse
    _, in_memory = layer_bytes(env_layer_entries(paths))
    monkeypatch.setattr(envlayer, "_SPILL_BYTES", 100)
    path, diff_id = write_env_layer(paths, tmp_path, env_layer_key(paths))
    assert diff_id == in_memory
    assert not [p for p in (tmp_path / "layers").iterdir() if p.name.startswith(".stage-")]


def test_empty_env_layer(tmp_path: Path) -> None:
    path, diff_id = write_env_layer([], tmp_path / "a", env_layer_key([]))
    assert write_env_layer([], tmp_path / "b", env_layer_key([]))[1] == diff_id
    assert sorted(layer_names(path)) == ["orch", "orch/env", "orch/env/bin", "orch/env/lib"]


def test_env_image_settings() -> None:
    assert env_image_settings() == {
        "Env": ["PYTHONPATH=/orch/env/lib", "PYTHONDONTWRITEBYTECODE=1"],
        "PathPrefix": "/orch/env/bin",
    }


def make_wheel(directory: Path, name: str, files: dict[str, tuple[bytes, int]]) -> Path:
    """A minimal valid wheel: ``files`` maps archive paths to (content, mode)."""
    dist_info = f"{name}-1.0.dist-info"
    files = {
        **files,
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
            0o644,
        ),
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
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, (data, mode) in [
            *files.items(),
            (f"{dist_info}/RECORD", (record.getvalue().encode(), 0o644)),
        ]:
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, data)
    return wheel


def test_scripts_data_headers_and_modes(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path,
        "demo",
        {
            "demo/__init__.py": (b"def main():\n    print('demo')\n", 0o644),
            "demo/run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
            "demo-1.0.data/scripts/demo-tool": (b"#!python\nprint('tool')\n", 0o644),
            "demo-1.0.data/headers/demo.h": (b"int demo;\n", 0o644),
            "demo-1.0.data/data/share/demo/notes.txt": (b"notes\n", 0o644),
            "demo-1.0.dist-info/entry_points.txt": (
                b"[console_scripts]\ndemo = demo:main\n",
                0o644,
            ),
        },
    )
    entries = {entry.path: entry for entry in env_layer_entries([wheel])}
    assert entries["orch/env/lib/demo/__init__.py"].mode == 0o644
    assert entries["orch/env/lib/demo/run.sh"].mode == 0o755
    tool = entries["orch/env/bin/demo-tool"]
    assert tool.mode == 0o755 and tool.data == b"#!/usr/bin/python3\nprint('tool')\n"
    launcher = entries["orch/env/bin/demo"]
    assert launcher.mode == 0o755 and launcher.data is not None
    assert (
        launcher.data.startswith(b"#!/usr/bin/python3\n")
        and b"from demo import main" in launcher.data
    )
    assert entries["orch/env/include/demo.h"].data == b"int demo;\n"
    assert entries["orch/env/share/demo/notes.txt"].data == b"notes\n"
    record = entries["orch/env/lib/demo-1.0.dist-info/RECORD"].data
    assert record is not None
    lines = record.decode().splitlines()
    assert any(line.startswith("../bin/demo,sha256=") for line in lines)
    assert "demo-1.0.dist-info/RECORD,," in lines
    # The same wheel gives the same entries, byte for byte.
    assert env_layer_entries([wheel]) == list(entries.values())


def test_conflicting_files_are_refused(tmp_path: Path) -> None:
    one = make_wheel(tmp_path, "one", {"shared/x.py": (b"a = 1\n", 0o644)})
    two = make_wheel(tmp_path, "two", {"shared/x.py": (b"a = 2\n", 0o644)})
    same = make_wheel(tmp_path, "three", {"shared/x.py": (b"a = 1\n", 0o644)})
    env_layer_entries([one, same])  # identical content (namespace __init__ files) is fine
    with pytest.raises(ImageError, match="one-1.0-py3-none-any.whl and two-1.0-py3-none-any.whl"):
        env_layer_entries([one, two])


def test_path_escaping_the_prefix_is_refused(tmp_path: Path) -> None:
    evil = make_wheel(tmp_path, "evil", {"evil-1.0.data/data/../../../etc/passwd": (b"x", 0o644)})
    with pytest.raises(ImageError, match="evil-1.0-py3-none-any.whl"):
        env_layer_entries([evil])


@pytest.mark.docker
def test_layer_is_importable(wheelhouse: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """Extract the layer and import from it with nothing but PYTHONPATH (no site-packages)."""
    _, paths = wheelhouse
    layer, _ = write_env_layer(paths, tmp_path / "cache", env_layer_key(paths))
    root = tmp_path / "root"
    with tarfile.open(layer) as tar:
        tar.extractall(root, filter="tar")
    env = {**os.environ, "PYTHONPATH": str(root / "orch/env/lib"), "PYTHONDONTWRITEBYTECODE": "1"}
    code = "import six, packaging.version; print(six.__file__); print(packaging.version.__file__)"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == [
        str(root / "orch/env/lib/six.py"),
        str(root / "orch/env/lib/packaging/version.py"),
    ]
    assert not list(root.rglob("*.pyc"))
