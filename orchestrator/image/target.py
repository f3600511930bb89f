"""The target a lock is resolved for: a CPython version and a platform tag.

orch builds images for another machine than the host (the base image's interpreter and
glibc), so nothing of the host may leak into which requirements apply (environment
markers) or which wheels fit (tags): both are computed here from ``"3.11"`` and
``"manylinux_2_36_x86_64"`` alone, as pip would on the target.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from packaging.markers import EvaluateContext, InvalidMarker, Marker, UndefinedComparison
from packaging.tags import Tag, compatible_tags, cpython_tags

from ..errors import ImageError

#: Debian 12 (the base image) has glibc 2.36: any manylinux wheel up to 2.36 runs there.
DEFAULT_PLATFORM = "manylinux_2_36_x86_64"
DEFAULT_PYTHON = "3.11"

_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)")
_LEGACY_MANYLINUX = {
    "manylinux1": (2, 5),
    "manylinux2010": (2, 12),
    "manylinux2014": (2, 17),
}
_LEGACY_BY_GLIBC = {glibc: name for name, glibc in _LEGACY_MANYLINUX.items()}
# Marker variables whose target value orch cannot know from "3.11" and a platform tag.
_PATCH_MARKERS = ("python_full_version", "implementation_version")
_HOST_MARKERS = ("platform_release", "platform_version")


def split_platform(platform: str) -> tuple[tuple[int, int] | None, str]:
    """(glibc version, arch) of a manylinux platform tag; (None, arch) for others."""
    match = _MANYLINUX.fullmatch(platform)
    if match:
        return (int(match.group(1)), int(match.group(2))), match.group(3)
    legacy, _, arch = platform.partition("_")
    if legacy in _LEGACY_MANYLINUX and arch:
        return _LEGACY_MANYLINUX[legacy], arch
    _, _, arch = platform.partition("_")
    return None, arch or platform


def target_platforms(platform: str) -> list[str]:
    """Every platform tag a target ``platform`` accepts, best first.

    pip takes ``--platform`` literally (``manylinux_2_36`` does not imply
    ``manylinux_2_17``), so a glibc target is spelled out down to manylinux_2_5,
    with the legacy aliases (manylinux2014/2010/1) next to their PEP 600 names.
    """
    glibc, arch = split_platform(platform)
    if glibc is None or glibc[0] != 2:
        return [platform]
    result: list[str] = []
    for minor in range(glibc[1], 4, -1):
        result.append(f"manylinux_2_{minor}_{arch}")
        if (2, minor) in _LEGACY_BY_GLIBC:
            result.append(f"{_LEGACY_BY_GLIBC[(2, minor)]}_{arch}")
    return result


def python_tuple(python_version: str) -> tuple[int, int]:
    match = re.fullmatch(r"3\.(\d+)(\.\d+)?", python_version)
    if not match:
        raise ImageError(
            f"unsupported target Python version {python_version!r}: use e.g. '3.11' or '3.11.2'"
        )
    return 3, int(match.group(1))


def marker_environment(python_version: str, platform: str) -> dict[str, str]:
    major, minor = python_tuple(python_version)
    full = python_version if python_version.count(".") == 2 else f"{major}.{minor}.0"
    _, arch = split_platform(platform)
    # Every key is given so that nothing of the host leaks into the evaluation.
    return {
        "python_version": f"{major}.{minor}",
        "python_full_version": full,
        "implementation_version": full,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": arch,
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def marker_applies(
    marker: Marker,
    where: str,
    environment: Mapping[str, str | AbstractSet[str]],
    python_version: str,
    context: EvaluateContext = "metadata",
) -> bool:
    """Evaluate ``marker`` for the target; ``context`` as packaging's (``"lock_file"`` for
    PEP 751 markers, whose ``extras`` and ``dependency_groups`` are sets)."""
    text = str(marker)
    unknown = list(_HOST_MARKERS)
    if python_version.count(".") < 2:
        unknown += _PATCH_MARKERS
    for variable in unknown:
        if re.search(rf"\b{variable}\b", text):
            raise ImageError(
                f"{where}: marker '{text}' uses {variable}, which orch cannot know for the "
                "target: use python_version, sys_platform or platform_machine markers"
            )
    try:
        return marker.evaluate(environment, context=context)
    except (InvalidMarker, UndefinedComparison, ValueError) as exc:
        raise ImageError(f"{where}: cannot evaluate marker '{text}': {exc}") from exc


def supported_tags(python_version: str, platform: str) -> list[Tag]:
    version = python_tuple(python_version)
    abi = f"cp{version[0]}{version[1]}"
    platforms = target_platforms(platform)
    return [
        *cpython_tags(version, abis=[abi], platforms=platforms),
        *compatible_tags(version, interpreter=abi, platforms=platforms),
    ]


def tag_ranks(python_version: str, platform: str) -> dict[Tag, int]:
    """Each supported tag with its preference (0 is best), as pip ranks them."""
    ranks: dict[Tag, int] = {}
    for rank, tag in enumerate(supported_tags(python_version, platform)):
        ranks.setdefault(tag, rank)
    return ranks


def pip_download_args(
    python_version: str = DEFAULT_PYTHON, platform: str = DEFAULT_PLATFORM
) -> list[str]:
    """The target flags of ``pip download``: binary only, no resolution, hashes checked."""
    major, minor = python_tuple(python_version)
    args = [
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--python-version",
        f"{major}.{minor}",
        "--implementation",
        "cp",
        "--abi",
        f"cp{major}{minor}",
    ]
    for tag in target_platforms(platform):
        args += ["--platform", tag]
    return args
