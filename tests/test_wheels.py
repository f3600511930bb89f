"""Locks and the wheelhouse (orchestrator.image.lock / wheels); the layers: test_envlayers."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.errors import ImageError
from orchestrator.image import wheels
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
    def fake_pip(args: list[str], stop: object) -> subprocess.CompletedProcess[str]:
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

    def no_pip(args: list[str], stop: object) -> subprocess.CompletedProcess[str]:
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

    def fake_pip(args: list[str], stop: object) -> subprocess.CompletedProcess[str]:
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
