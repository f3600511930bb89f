"""Layers are stored gzip-compressed under their diff IDs (orchestrator.image.compress and
the store's encoded blobs): the same bytes every time, smaller, checked on the way."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from orchestrator.errors import StoreError
from orchestrator.image import compress
from orchestrator.image.tarball import Entry, layer_bytes, write_layer_file
from orchestrator.image.transport import store_layer
from orchestrator.store import DirStore, RunStore


def _layer(tmp_path: Path) -> tuple[Path, str]:
    # Text-like content that compresses, and random bytes that do not, over several chunks.
    entries = [
        Entry(f"pkg/mod{i}.py", data=(f"def f{i}(x):\n    return x + {i}\n" * 4000).encode())
        for i in range(20)
    ]
    entries.append(Entry("pkg/blob.bin", data=os.urandom(3 << 20)))
    tar = tmp_path / "layer.tar"
    return tar, write_layer_file(entries, tar)


def test_the_encoding_is_deterministic_and_decodes_to_the_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compress, "CHUNK", 1 << 20)  # several gzip members
    tar, diff_id = _layer(tmp_path)
    one = compress.gzip_file(tar, tmp_path / "one.gz", workers=1).read_bytes()
    four = compress.gzip_file(tar, tmp_path / "four.gz", workers=4).read_bytes()
    assert one == four  # the thread count changes nothing
    assert one[:2] == b"\x1f\x8b" and len(one) < tar.stat().st_size
    decoded = gzip.decompress(one)  # a standard reader takes every member
    assert "sha256:" + hashlib.sha256(decoded).hexdigest() == diff_id
    assert compress.gzip_bytes(tar.read_bytes()) == one
    # The cached copy beside a layer tar is written once and reused.
    copy = compress.compressed_copy(tar)
    assert copy.name == "layer.tar.gz" and copy.read_bytes() == one
    mtime = copy.stat().st_mtime_ns
    assert compress.compressed_copy(tar).stat().st_mtime_ns == mtime


def test_layers_go_to_the_store_compressed_once_and_are_verified(tmp_path: Path) -> None:
    runs = RunStore(DirStore(tmp_path / "store"))
    tar, diff_id = _layer(tmp_path)
    assert store_layer(runs.blobs, diff_id, tar) is True
    assert store_layer(runs.blobs, diff_id, tar) is False  # each blob once
    key = tmp_path / "store" / "blobs" / "sha256" / diff_id.split(":")[1]
    assert key.read_bytes()[:2] == b"\x1f\x8b" and key.stat().st_size < tar.stat().st_size
    # A reader gets the stored (encoded) bytes, checked against the decoded content.
    runs.blobs.get_file(diff_id, tmp_path / "out")
    assert gzip.decompress((tmp_path / "out").read_bytes()) == tar.read_bytes()
    # In-memory layers (code, config) too; an encoding of other content is refused.
    small, small_id = layer_bytes([Entry("orch/config.yaml", data=b"lr: 0.1\n")])
    assert store_layer(runs.blobs, small_id, small) is True
    other, _ = layer_bytes([Entry("orch/config.yaml", data=b"lr: 0.2\n")])
    fake = "sha256:" + "1" * 64
    with pytest.raises(StoreError, match="decodes to sha256:"):
        runs.blobs.put_encoded(fake, compress.gzip_bytes(other))
    with pytest.raises(StoreError, match="not gzip-encoded"):
        runs.blobs.put_encoded(fake, other)
    # A corrupt encoded blob is named as corrupt by a verifying reader.
    key.write_bytes(key.read_bytes()[:-100])
    with pytest.raises(StoreError, match="corrupt"):
        runs.blobs.get_file(diff_id, tmp_path / "bad")


def test_blobs_stored_uncompressed_still_read(tmp_path: Path) -> None:
    """A store written before layers were compressed: its plain blobs verify and load."""
    runs = RunStore(DirStore(tmp_path / "store"))
    layer, diff_id = layer_bytes([Entry("orch/hello.txt", data=b"hello")])
    assert runs.blobs.put(diff_id, layer) is True  # as earlier versions stored them
    assert store_layer(runs.blobs, diff_id, layer) is False  # not stored a second time
    runs.blobs.get_file(diff_id, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == layer
