"""Restoring a checkpoint on a Python without tarfile's extraction filters (Debian 12's own
python3 is 3.11.2; the filters came in 3.11.4): the same rules, no crash."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from orchestrator.runner.checkpoint import _extract_data


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r:")


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    return info


@pytest.mark.parametrize("filters", [True, False])
def test_only_files_inside_the_directory_are_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filters: bool
) -> None:
    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    link = _member("evil", tarfile.SYMTYPE)
    link.linkname = "/etc/passwd"
    tar = _tar([
        (_member("state/model.pt"), b"weights"),
        (_member("state/run.sh", mode=0o4755), b"#!/bin/sh\n"),
        (link, b""),
        (_member("../outside.txt"), b"no"),
    ])
    root = tmp_path / "ckpt"
    root.mkdir()
    try:
        _extract_data(tar, root)
    except tarfile.FilterError:
        assert filters  # 3.11.4+'s filter refuses the whole archive's bad member loudly
    assert (root / "state" / "model.pt").read_bytes() == b"weights"
    assert not (tmp_path / "outside.txt").exists()
    assert not (root / "evil").is_symlink()
    assert not (root / "state" / "run.sh").stat().st_mode & 0o4000  # no setuid
