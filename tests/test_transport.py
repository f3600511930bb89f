"""Images from the store's blobs onto a daemon: layers are not hashed on the way (the
daemon checks each against its diff ID), so a corrupt blob must still be refused, by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator.errors import ImageError
from orchestrator.image.imageconfig import make_config
from orchestrator.image.tarball import Entry, layer_bytes
from orchestrator.image.transport import ensure_image, store_layer
from orchestrator.store import DirStore, RunStore


def _image_on(base: dict[str, object], layer: bytes, diff_id: str) -> tuple[str, bytes]:
    config = make_config(
        architecture=str(base["Architecture"]),
        os_name=str(base["Os"]),
        diff_ids=[*base["RootFS"]["Layers"], diff_id],  # type: ignore[index]
        env=[],
        cmd=["true"],
        labels={"org.orch.project": "transport-test"},
    )
    return config.image_id, config.raw


def test_a_run_image_comes_from_the_store_and_a_corrupt_layer_is_named(
    docker_client: object, base_image: str, tmp_path: Path
) -> None:
    client = docker_client
    base = client.api.inspect_image(base_image)  # type: ignore[attr-defined]
    layer, diff_id = layer_bytes([Entry("orch/hello.txt", data=tmp_path.name.encode())])
    image_id, raw = _image_on(base, layer, diff_id)
    runs = RunStore(DirStore(tmp_path / "store"))
    runs.blobs.put(image_id, raw)
    runs.blobs.put(diff_id, layer)
    try:
        assert ensure_image(client, runs.blobs, image_id, prefixes=(base["Id"], "", "")) == "store"
        assert client.api.inspect_image(image_id)["Id"] == image_id  # type: ignore[attr-defined]
    finally:
        client.api.remove_image(image_id, force=True)  # type: ignore[attr-defined]

    # The same layer's name, other bytes: the daemon refuses it, orch says what to do.
    bad_layer, bad_diff_id = layer_bytes([Entry("orch/hello.txt", data=b"other")])
    image_id, raw = _image_on(base, bad_layer, bad_diff_id)
    runs.blobs.put(image_id, raw)
    key = f"blobs/sha256/{bad_diff_id.split(':')[1]}"
    runs.store.put(key, bad_layer.replace(b"other", b"OTHER"))
    assert hashlib.sha256(runs.store.get(key)).hexdigest() != bad_diff_id.split(":")[1]
    with pytest.raises(ImageError, match="invalid diffID.*corrupt"):
        ensure_image(client, runs.blobs, image_id, prefixes=(base["Id"], "", ""))


def test_a_compressed_layer_loads_with_the_same_image_id_and_a_corrupt_one_is_named(
    docker_client: object, base_image: str, tmp_path: Path
) -> None:
    client = docker_client
    base = client.api.inspect_image(base_image)  # type: ignore[attr-defined]
    text = (f"# {tmp_path.name}\n" + "x = 1\n" * 50000).encode()
    layer, diff_id = layer_bytes([Entry("orch/big.py", data=text)])
    image_id, raw = _image_on(base, layer, diff_id)
    runs = RunStore(DirStore(tmp_path / "store"))
    runs.blobs.put(image_id, raw)
    assert store_layer(runs.blobs, diff_id, layer)
    key = f"blobs/sha256/{diff_id.split(':')[1]}"
    stored = runs.store.get(key)
    assert stored[:2] == b"\x1f\x8b" and len(stored) < len(layer) / 10
    try:
        assert ensure_image(client, runs.blobs, image_id, prefixes=(base["Id"], "", "")) == "store"
        assert client.api.inspect_image(image_id)["Id"] == image_id  # type: ignore[attr-defined]
    finally:
        client.api.remove_image(image_id, force=True)  # type: ignore[attr-defined]

    # Damaged in transit or on disk: the daemon's gzip reader refuses it, orch names it.
    runs.store.put(key, stored[: len(stored) // 2] + bytes(64) + stored[len(stored) // 2 + 64 :])
    with pytest.raises(ImageError, match="corrupt: delete it from the store"):
        ensure_image(client, runs.blobs, image_id, prefixes=(base["Id"], "", ""))


def test_a_run_image_on_its_code_image_sends_one_layer_without_listing_the_daemon(
    docker_client: object, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node's every run after its first: the code image is there, so only the run's own
    layer travels, and the daemon's image list (seconds on one with thousands of images)
    is not asked for."""
    from orchestrator.image.archive import ThinArchive

    client = docker_client
    base = client.api.inspect_image(base_image)  # type: ignore[attr-defined]
    code_layer, code_diff = layer_bytes([Entry("orch/code.py", data=tmp_path.name.encode())])
    run_layer, run_diff = layer_bytes([Entry("orch/config.json", data=b"{}")])
    code = make_config(architecture=str(base["Architecture"]), os_name=str(base["Os"]),
                       diff_ids=[*base["RootFS"]["Layers"], code_diff], env=[], cmd=["true"],
                       labels={"org.orch.project": "transport-test"})
    run = make_config(architecture=str(base["Architecture"]), os_name=str(base["Os"]),
                      diff_ids=[*code.diff_ids, run_diff], env=[], cmd=["true"],
                      labels={"org.orch.project": "transport-test"})
    archive = ThinArchive()
    archive.add_layer(code_diff, data=code_layer)
    archive.add_image(code)
    archive.load(client)  # type: ignore[arg-type]
    # The store has the run image's config and its own layer only: the code layer
    # cannot come from there.
    runs = RunStore(DirStore(tmp_path / "store"))
    runs.blobs.put(run.image_id, run.raw)
    runs.blobs.put(run_diff, run_layer)
    listed: list[object] = []
    images = client.api.images  # type: ignore[attr-defined]
    monkeypatch.setattr(client.api, "images", lambda *a, **k: listed.append(k) or images(*a, **k))
    try:
        where = ensure_image(client, runs.blobs, run.image_id,  # type: ignore[arg-type]
                             prefixes=(base["Id"], "", code.image_id))
        assert where == "store"
        loaded = client.api.inspect_image(run.image_id)  # type: ignore[attr-defined]
        assert loaded["RootFS"]["Layers"] == run.diff_ids
        assert listed == []
    finally:
        for image_id in (run.image_id, code.image_id):
            client.api.remove_image(image_id, force=True)  # type: ignore[attr-defined]
