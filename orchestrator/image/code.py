"""The code layer: the project's git-tracked files at HEAD, under /orch/code.

``code:`` in orch.yaml, when given, is an allowlist: only the paths (or globs) it names, and
what lies under them, make the layer; a file elsewhere neither enters the layer nor makes
the tree dirty. ``exclude:`` then leaves out parts of what it names.

A dirty tree is refused unless asked for; then the working tree is baked, the record
says ``dirty: true`` and the diff is kept next to the run.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._util.git import git, git_text, git_try
from ..errors import ImageError
from .tarball import Entry, layer_bytes, tree_entries

CODE_PREFIX = "orch/code"
ALWAYS_EXCLUDED = (".orch", ".orch/**", ".git", ".git/**")


@dataclass(frozen=True)
class CodeSnapshot:
    """What the code layer holds and where it came from."""

    layer: bytes
    diff_id: str
    git_commit: str | None
    git_tree: str | None
    dirty: bool
    diff: bytes  # `git diff HEAD` plus untracked files' names when dirty, else b""
    files: tuple[str, ...]


def excluded(path: str, patterns: Iterable[str], code: tuple[str, ...] = ()) -> bool:
    """``path`` (relative to the project) matches a pattern, or lies under a matching dir;
    or ``code`` is an allowlist that does not hold it."""
    if code and not matches(path, code):
        return True
    return matches(path, (*ALWAYS_EXCLUDED, *patterns))


def matches(path: str, patterns: Iterable[str]) -> bool:
    """``path`` matches a pattern, or lies under a directory that matches one."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, bare) for prefix in prefixes):
            return True
    return False


def _skip_path(root: Path, rel: str, patterns: tuple[str, ...], code: tuple[str, ...]) -> bool:
    """For a walk of the tree: a directory stays when a ``code`` entry may lie under it."""
    if matches(rel, (*ALWAYS_EXCLUDED, *patterns)):
        return True
    if not code or matches(rel, code):
        return False
    if not (root / rel).is_dir() or (root / rel).is_symlink():
        return True
    parts = rel.split("/")
    return not any(
        len(pattern.split("/")) > len(parts) and all(
            fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, pattern.split("/"),
                                                                  strict=False))
        for pattern in code
    )


def _head(root: Path) -> tuple[Path | None, str | None, str | None]:
    """The repository's top, its HEAD commit and the tree of ``root`` at HEAD, in one git
    call when all three exist (the usual case: every git call costs a few ms of a sweep)."""
    answer = git_try(root, "rev-parse", "--show-toplevel", "HEAD", "HEAD:./")
    if answer is not None:
        top, commit, tree = answer.splitlines()
        return Path(top).resolve(), commit, tree
    repo = git_try(root, "rev-parse", "--show-toplevel")
    if repo is None:
        return None, None, None
    head = git_try(root, "rev-parse", "--verify", "-q", "HEAD")
    return Path(repo).resolve(), head, git_text(root, "rev-parse", "HEAD:./") if head else None


def snapshot(
    root: Path, exclude: Iterable[str] = (), allow_dirty: bool = False, inputs: Iterable[str] = (),
    config_files: Iterable[Path] = (), code: Iterable[str] = (),
) -> CodeSnapshot:
    """Snapshot the project's code at ``root`` into a deterministic layer; ``inputs``
    (patterns, like ``exclude``) are data inputs inside the project, left out as well.

    ``config_files`` are the files the runs' composition read: one git does not track (a
    gitignored ``configs/local/default.yaml``) shaped the configs although a checkout of
    the commit lacks it, so it counts as an uncommitted change (baked, and named in the
    diff, with ``allow_dirty``). ``code`` (patterns) is the allowlist of ``code:``.
    """
    excludes = tuple(exclude)
    allow = tuple(code)
    patterns = (*excludes, *inputs)
    repo, commit, tree = _head(root)
    if repo is None:
        if not allow_dirty:
            raise ImageError(
                f"{root} is not a git repository: commit the project (git init && git add -A && "
                f"git commit) so runs are pinned to a commit, or pass --allow-dirty"
            )
        entries = tree_entries(
            root, CODE_PREFIX, skip=lambda rel: _skip_path(root, rel, patterns, allow)
        )
        data, diff_id = layer_bytes(entries)
        files = tuple(e.path for e in entries if e.kind != "dir")
        _check_code(root, files, allow)
        return CodeSnapshot(data, diff_id, None, None, True, b"", files)

    sub = root.resolve().relative_to(repo).as_posix()
    sub = "" if sub == "." else sub
    has_head = commit is not None
    changed = _changed_files(root, sub, patterns, allow) if has_head else ["(no commit yet)"]
    ignored = _ignored_reads(root, config_files)
    if ignored and not allow_dirty:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more"
                                          if len(ignored) > 5 else "")
        raise ImageError(
            f"{shown}: read by the config's composition but not tracked by git (ignored), so "
            "a checkout of the commit composes other configs: commit it, remove it, or pass "
            "--allow-dirty (it is then baked and the run recorded dirty)"
        )
    changed = sorted({*changed, *ignored})
    if changed and not allow_dirty:
        shown = ", ".join(changed[:10]) + (
            f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        )
        raise ImageError(
            f"uncommitted changes in {root}: {shown}: commit them, add them to 'exclude' in "
            f"orch.yaml, or pass --allow-dirty"
        )
    if changed:
        entries = _worktree_entries(root, patterns, ignored, allow)
        diff = git(root, "diff", "HEAD", "--binary", "--", ".") if has_head else b""
        untracked = git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", ".")
        names = sorted({*(n for n in untracked.decode().split("\0") if n), *ignored})
        if names:
            diff += (
                b"\n# untracked files baked into the image:\n"
                + "".join(f"#   {n}\n" for n in names).encode()
            )
    else:
        entries = _head_entries(root, sub, patterns, allow)
        diff = b""
    files = tuple(e.path for e in entries if e.kind != "dir")
    _check_files(root, files, excludes)
    _check_code(root, files, allow)
    data, diff_id = layer_bytes(entries)
    return CodeSnapshot(data, diff_id, commit, tree, bool(changed), diff, files)


def _check_files(root: Path, files: tuple[str, ...], patterns: tuple[str, ...]) -> None:
    """Refuse what would bake something other than the user's code without a word."""
    if not files and patterns:
        raise ImageError(
            f"orch.yaml exclude {list(patterns)!r} leaves no file of {root} in the code "
            "layer: exclude less (the command's script must be in the image)"
        )
    rels = [f[len(CODE_PREFIX) + 1 :] for f in files]
    out = git(root, "check-attr", "-z", "--stdin", "filter", input="\0".join(rels).encode())
    fields = out.decode(errors="replace").split("\0")
    lfs = sorted({fields[i] for i in range(0, len(fields) - 2, 3) if fields[i + 2] == "lfs"})
    if lfs:
        shown = ", ".join(lfs[:5]) + (" ..." if len(lfs) > 5 else "")
        raise ImageError(
            f"{shown}: tracked by git-lfs, whose files are pointers in the git tree (and "
            "their content only in a working copy), so a run would not be pinned to what "
            "it read: declare such data as an input in orch.yaml (inputs:) or exclude it"
        )


def _check_code(root: Path, files: tuple[str, ...], code: tuple[str, ...]) -> None:
    """A ``code:`` entry that names nothing is a typo, not an empty directory."""
    rels = [f[len(CODE_PREFIX) + 1 :] for f in files]
    for pattern in code:
        if not any(matches(rel, (pattern,)) for rel in rels):
            raise ImageError(
                f"orch.yaml code: {pattern!r} names no file of {root} that git tracks: "
                "fix the path, or commit the files"
            )


def _changed_files(
    root: Path, sub: str, patterns: tuple[str, ...], code: tuple[str, ...] = ()
) -> list[str]:
    out = git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", ".")
    changed = []
    records = out.decode(errors="replace").split("\0")
    index = 0
    while index < len(records):
        record = records[index]
        index += 1
        if len(record) < 4:
            continue
        status, path = record[:2], record[3:]
        if status[0] in "RC":
            index += 1  # the next field is the rename's source
        rel = path[len(sub) + 1 :] if sub and path.startswith(sub + "/") else path
        if not excluded(rel, patterns, code):
            changed.append(rel)
    return sorted(changed)


def _head_entries(
    root: Path, sub: str, patterns: tuple[str, ...], code: tuple[str, ...] = ()
) -> list[Entry]:
    listing = git(root, "ls-tree", "-r", "-z", "--full-tree", "HEAD", "--", sub or ".")
    wanted: list[tuple[str, str, str]] = []
    for record in listing.decode().split("\0"):
        if not record:
            continue
        meta, path = record.split("\t", 1)
        mode, kind, sha = meta.split()
        rel = path[len(sub) + 1 :] if sub else path
        if kind != "blob" or excluded(rel, patterns, code):
            continue  # submodules (commits) are not part of the snapshot
        wanted.append((mode, sha, rel))
    contents = _cat_blobs(root, [sha for _, sha, _ in wanted])
    entries = []
    for mode, sha, rel in wanted:
        path = f"{CODE_PREFIX}/{rel}"
        if mode == "120000":
            entries.append(Entry(path, "symlink", target=contents[sha].decode(), mode=0o777))
        else:
            entries.append(
                Entry(path, data=contents[sha], mode=0o755 if mode == "100755" else 0o644)
            )
    return entries


def _cat_blobs(root: Path, shas: list[str]) -> dict[str, bytes]:
    if not shas:
        return {}
    unique = sorted(set(shas))
    out = git(root, "cat-file", "--batch", input="".join(f"{sha}\n" for sha in unique).encode())
    result: dict[str, bytes] = {}
    pos = 0
    for _ in unique:
        header_end = out.index(b"\n", pos)
        sha, _kind, size = out[pos:header_end].decode().split()
        start = header_end + 1
        result[sha] = out[start : start + int(size)]
        pos = start + int(size) + 1
    return result


def _ignored_reads(root: Path, files: Iterable[Path]) -> list[str]:
    """The project-relative names of ``files`` inside ``root`` that git ignores."""
    top = root.resolve()
    rels = sorted({f.resolve().relative_to(top).as_posix() for f in files
                   if f.resolve().is_relative_to(top)})
    if not rels:
        return []
    out = git(root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--", *rels)
    return sorted(n for n in out.decode().split("\0") if n)


def _worktree_entries(
    root: Path, patterns: tuple[str, ...], ignored: Iterable[str] = (), code: tuple[str, ...] = ()
) -> list[Entry]:
    listing = git(root, "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", ".")
    entries = []
    for rel in sorted({*(n for n in listing.decode().split("\0") if n), *ignored}):
        full = root / rel
        if excluded(rel, patterns, code) or not (full.is_file() or full.is_symlink()):
            continue  # deleted in the working tree, or a submodule dir
        if full.is_symlink():
            entries.append(
                Entry(f"{CODE_PREFIX}/{rel}", "symlink", target=str(full.readlink()), mode=0o777)
            )
        else:
            executable = full.stat().st_mode & 0o111
            entries.append(
                Entry(
                    f"{CODE_PREFIX}/{rel}",
                    data=full.read_bytes(),
                    mode=0o755 if executable else 0o644,
                )
            )
    return entries
