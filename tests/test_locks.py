"""Locks as tools write them (pip-compile, uv, PEP 751) and the completeness check
(orchestrator.image.lock / pylock / closure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_wheel

from orchestrator.errors import ImageError
from orchestrator.image.closure import check_closure
from orchestrator.image.lock import Requirement, read_lock

LOCKS = Path(__file__).parent / "data" / "lock"
PINS = ["importlib-metadata==8.5.0", "packaging==24.1", "setuptools==75.8.0", "six==1.16.0",
        "zipp==4.1.2"]
ZEROS = "0" * 64


def pins(path: Path) -> list[str]:
    return [req.pin() for req in read_lock(path, "3.11.2").requirements]


@pytest.mark.parametrize("name", ["pip-compile.txt", "uv.txt", "pylock.toml"])
def test_each_tool_gives_the_same_pins(name: str) -> None:
    """pip-compile, uv pip compile --generate-hashes and a PEP 751 lock of one input."""
    lock = read_lock(LOCKS / name, "3.11.2")
    assert pins(LOCKS / name) == PINS
    assert lock.digest == read_lock(LOCKS / "uv.txt", "3.11.2").digest
    assert all(len(req.hashes) == 2 for req in lock.requirements)  # the wheel and the sdist


def test_index_lines_are_for_downloading_not_identity(tmp_path: Path) -> None:
    lock = read_lock(LOCKS / "pip-compile.txt")
    assert lock.pip_options == ("--index-url", "https://pypi.org/simple", "--find-links", "wheels")
    # A find-links folder next to the lock is found from anywhere, as pip finds it.
    (tmp_path / "wheels").mkdir()
    text = (LOCKS / "pip-compile.txt").read_text()
    company = text.replace(
        "--index-url https://pypi.org/simple",
        "--extra-index-url https://pypi.example.invalid/simple\n--trusted-host pypi.example.invalid"
        "\n--no-index",
    )
    (tmp_path / "requirements.txt").write_text(company)
    other = read_lock(tmp_path / "requirements.txt")
    assert other.pip_options == (
        "--extra-index-url", "https://pypi.example.invalid/simple",
        "--trusted-host", "pypi.example.invalid",
        "--no-index",
        "--find-links", str(tmp_path / "wheels"),
    )
    assert other.digest == lock.digest


def test_uv_export_project_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(f"-e .\nsix==1.16.0 --hash=sha256:{ZEROS}\n")
    with pytest.raises(ImageError, match=r"requirements.txt:1: -e: editable requirements"):
        read_lock(path)


def test_pylock_markers_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "pylock.toml"
    wheel = f'wheels = [{{ name = "x-1-py3-none-any.whl", hashes = {{ sha256 = "{ZEROS}" }} }}]'
    path.write_text(
        'lock-version = "1.0"\ndefault-groups = ["dev"]\n'
        f'[[packages]]\nname = "Tomli"\nversion = "2.0.1"\nmarker = "python_version < \'3.11\'"\n'
        f"{wheel}\n"
        f'[[packages]]\nname = "pytest"\nversion = "8.0"\n'
        f"marker = \"'dev' in dependency_groups\"\nindex = \"https://pypi.org/simple\"\n{wheel}\n"
        f'[[packages]]\nname = "cuda-only"\nversion = "1"\nmarker = "\'gpu\' in extras"\n{wheel}\n'
    )
    lock = read_lock(path, "3.11.2")
    assert [r.pin() for r in lock.requirements] == ["pytest==8.0"]
    assert lock.pip_options == ("--extra-index-url", "https://pypi.org/simple")
    assert [r.name for r in read_lock(path, "3.10.4").requirements] == ["pytest", "tomli"]

    path.write_text('lock-version = "1.0"\n[[packages]]\nname = "mine"\n'
                    'vcs = { type = "git", url = "https://example.invalid/mine.git" }\n')
    with pytest.raises(ImageError, match=r"'mine'\): a vcs package cannot be fetched"):
        read_lock(path)
    path.write_text('lock-version = "2.0"\n')
    with pytest.raises(ImageError, match="lock-version 2.0 is not supported"):
        read_lock(path)
    path.write_text('lock-version = "1.0"\nrequires-python = ">=3.12"\n[[packages]]\n')
    with pytest.raises(ImageError, match="excludes the base image's Python 3.11.2"):
        read_lock(path, "3.11.2")


# -- completeness -----------------------------------------------------------------------


def req(name: str, version: str = "1.0", extras: tuple[str, ...] = ()) -> Requirement:
    return Requirement(name, version, (f"sha256:{ZEROS}",), extras)


def closure_error(reqs: list[Requirement], wheels: list[Path]) -> str:
    with pytest.raises(ImageError) as info:
        check_closure(reqs, wheels, "3.11.2", "manylinux_2_36_x86_64", "requirements.lock")
    return str(info.value)


def test_missing_dependency_names_who_requires_it(tmp_path: Path) -> None:
    app = make_wheel(tmp_path, "app", {}, requires=("typing-extensions>=4.6", "six"))
    six = make_wheel(tmp_path, "six", {})
    assert closure_error([req("app"), req("six")], [app, six]) == (
        "requirements.lock is incomplete: app==1.0 requires 'typing-extensions>=4.6', which the "
        "lock does not pin: add it to the lock (re-run pip-compile / uv pip compile with "
        "--generate-hashes)"
    )


def test_markers_are_evaluated_for_the_target(tmp_path: Path) -> None:
    app = make_wheel(tmp_path, "app", {}, requires=(
        'tomli; python_version < "3.11"',
        'pywin32; sys_platform == "win32"',
        'exceptiongroup; python_full_version < "3.11.0"',
        'uvloop; platform_machine == "x86_64"',
    ))
    uvloop = make_wheel(tmp_path, "uvloop", {})
    check_closure([req("app"), req("uvloop")], [app, uvloop], "3.11.2", "manylinux_2_36_x86_64")
    assert "requires 'uvloop'" in closure_error([req("app")], [app])


def test_extras_are_followed(tmp_path: Path) -> None:
    app = make_wheel(tmp_path, "app", {}, requires=('fastlib; extra == "fast"', "lib[cli]"))
    lib = make_wheel(tmp_path, "lib", {}, requires=('click>=8; extra == "cli"',))
    # Without the extra asked for, fastlib is not needed; lib[cli] needs click.
    message = closure_error([req("app"), req("lib")], [app, lib])
    assert "lib[cli]==1.0 requires 'click>=8'" in message
    message = closure_error([req("app", extras=("fast",)), req("lib")], [app, lib])
    assert "requires 'fastlib'" in message or "requires 'click>=8'" in message


def test_conflicting_pin_is_refused(tmp_path: Path) -> None:
    app = make_wheel(tmp_path, "app", {}, requires=("six>=1.16",))
    six = make_wheel(tmp_path, "six", {}, version="1.15.0")
    assert closure_error([req("app"), req("six", "1.15.0")], [app, six]) == (
        "requirements.lock is inconsistent: app==1.0 requires 'six>=1.16', but the lock pins "
        "six==1.15.0: re-resolve the lock"
    )
