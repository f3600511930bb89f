"""The base image's root filesystem: debootstrap it, then remove or fix what varies.

``debootstrap --variant=minbase --include=python3`` from the host's Debian mirror gives
the tree; what differs between two debootstraps of the same packages (logs, caches, the
host's hostname and resolv.conf, password-change dates in shadow, compiled bytecode,
device nodes, the mirror URL) is then removed or fixed by :func:`normalize_rootfs`, and
:func:`read_packages` lists what was installed. :mod:`.base_image` turns the tree into an image.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..errors import ImageError
from .tarball import fixed_mtime

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

Log = Callable[[str], None]


def quiet(_message: str) -> None:
    return None


def apt_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror: the first ``deb`` source for a plain suite, else the default.

    Reads deb822 ``*.sources`` files first, then one-line ``sources.list`` files.
    """
    for sources in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", read_or_empty(sources)):
            fields = _deb822_fields(stanza)
            suites = fields.get("suites", "").split()
            if "deb" in fields.get("types", "").split() and SUITE in suites:
                uris = fields.get("uris", "").split()
                if uris:
                    return uris[0].rstrip("/")
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for sources in one_line:
        for line in read_or_empty(sources).splitlines():
            match = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if match and match.group(2) == SUITE:
                return match.group(1).rstrip("/")
    return DEFAULT_MIRROR


def read_or_empty(path: Path) -> str:
    """The text of ``path``, or "" when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0].isspace() and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


def debootstrap(rootfs: Path, mirror: str, suite: str = SUITE, log: Log = quiet) -> None:
    """Create ``rootfs`` with debootstrap unless it is already there.

    Debootstrap runs into a sibling directory that is renamed at the end, so a rootfs that
    exists is complete. (A directory, so not :func:`~orchestrator._util.files.atomic_writer`,
    which publishes one file.)
    """
    if rootfs.is_dir():
        return
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed: run scripts/ensure-docker.sh (as root)")
    work = rootfs.with_name(rootfs.name + ".partial")
    remove_tree(work)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {suite} from {mirror} into {rootfs} (about a minute)")
    cmd = ["debootstrap", "--variant=minbase", "--include=python3", suite, str(work), mirror]
    # A fixed umask and locale: files that debootstrap's scripts create take their modes and
    # contents from them.
    env = {**os.environ, "LC_ALL": "C", "LANGUAGE": "", "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, umask=0o022
    )
    if result.returncode != 0:
        tail = "; ".join(result.stdout.strip().splitlines()[-3:])
        remove_tree(work)
        raise ImageError(f"debootstrap failed (exit {result.returncode}): {tail}")
    os.replace(work, rootfs)


def remove_tree(path: Path) -> None:
    """``rm -rf path``, after unmounting anything left mounted below it (proc, sys)."""
    if not path.exists():
        return
    for mount in sorted(_mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise ImageError(f"could not remove {path}")


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    mounts = []
    for line in read_or_empty(Path("/proc/self/mountinfo")).splitlines():
        fields = line.split()
        if len(fields) > 4:
            target = fields[4].replace("\\040", " ")
            if (target + "/").startswith(prefix):
                mounts.append(target)
    return mounts


def normalize_rootfs(rootfs: Path) -> None:
    """Remove or fix what differs between two debootstraps of the same packages.

    Idempotent. Checked by building twice into two directories and diffing contents and
    ``find -printf '%p %y %m %U %G %s %l'`` listings.
    """
    for pattern in (
        "var/cache/apt/*",
        "var/lib/apt/lists/*",
        "var/cache/ldconfig/aux-cache",  # records inode numbers and ctimes
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
        "etc/*-",  # passwd-/shadow- backups, written with the build date
        "dev/*",  # device nodes and /proc links: Docker provides /dev at run time
        "var/log/*",
    ):
        for path in rootfs.glob(pattern):
            _remove(path)
    # The login records are expected to exist (with their group and mode), but empty.
    for name, mode, gid in (("lastlog", 0o664, 43), ("wtmp", 0o664, 43), ("btmp", 0o660, 43)):
        _write(rootfs / "var/log" / name, b"", mode, gid)
    (rootfs / "var/log/apt").mkdir(mode=0o755, exist_ok=True)
    _remove_bytecode(rootfs)
    # Copied from the host by debootstrap; Docker bind-mounts its own at run time.
    _write(rootfs / "etc/hostname", b"localhost\n", 0o644)
    _write(rootfs / "etc/resolv.conf", b"", 0o644)
    if (rootfs / "etc/machine-id").exists():
        _write(rootfs / "etc/machine-id", b"", 0o444)
    # Names the mirror used for the build, which must not change the image.
    _write(rootfs / "etc/apt/sources.list", f"deb {DEFAULT_MIRROR} {SUITE} main\n".encode(), 0o644)
    _fix_shadow_dates(rootfs / "etc/shadow")


def _remove_bytecode(rootfs: Path) -> None:
    """Bytecode embeds source mtimes, which the layer replaces by one fixed mtime."""
    for dirpath, dirnames, filenames in os.walk(rootfs):
        if "__pycache__" in dirnames:
            shutil.rmtree(Path(dirpath, "__pycache__"))
            dirnames.remove("__pycache__")
        for name in filenames:
            if name.endswith(".pyc"):
                Path(dirpath, name).unlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _write(path: Path, data: bytes, mode: int, gid: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    if gid is not None:
        os.chown(path, 0, gid)


def _fix_shadow_dates(shadow: Path) -> None:
    """Set the "last password change" field (days since 1970) to the fixed build date."""
    if not shadow.is_file():
        return
    day = str(fixed_mtime() // 86400)
    lines = []
    for line in shadow.read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2]:
            fields[2] = day
        lines.append(":".join(fields))
    st = shadow.stat()
    shadow.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.chown(shadow, st.st_uid, st.st_gid)
    os.chmod(shadow, st.st_mode & 0o7777)


def read_packages(rootfs: Path) -> str:
    """The installed packages of ``rootfs``, one ``name version arch`` a line, sorted."""
    cmd = [
        "dpkg-query",
        f"--admindir={rootfs / 'var/lib/dpkg'}",
        "-W",
        "-f=${Package} ${Version} ${Architecture}\\n",
    ]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageError(f"cannot list the packages of {rootfs}: {exc}") from exc
    return "".join(line + "\n" for line in sorted(out.splitlines()) if line)
