"""Input manifests and digests, the stat cache, the walk's refusals, declarations.

No Docker, no S3: an input's digest is a pure function of its files' relative paths,
sizes, execute bits and bytes, and the stat cache only ever saves work.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.inputs import (
    FileEntry,
    HostCache,
    Manifest,
    ScanStats,
    StatCache,
    names_in_config,
    names_in_tree,
    parse_inputs,
    resolve_input,
    run_inputs,
    scan,
)
from orchestrator.inputs.decl import InputDecl
from orchestrator.inputs.transfer import materialize, upload
from orchestrator.schema.record import InputRef
from orchestrator.store import MemoryStore, RunStore

SHA = "0" * 64
#: The module (the package re-exports its function of the same name).
scanmod = importlib.import_module("orchestrator.inputs.scan")


def entry(path: str, data: bytes = b"x", exec: bool = False) -> FileEntry:
    return FileEntry(path, len(data), hashlib.sha256(data).hexdigest(), exec)


def old(path: Path) -> None:
    """Back-date a file so the stat cache trusts it (it distrusts racily fresh files)."""
    then = time.time() - 3600
    os.utime(path, (then, then))


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        old(path)
    return root


# -- the manifest and its digest ----------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1,
                max_size=8).filter(lambda s: s not in (".", ".."))
file_sets = st.dictionaries(
    st.lists(names, min_size=1, max_size=3).map("/".join),
    st.tuples(st.binary(max_size=16), st.booleans()),
    max_size=8,
).filter(lambda files: not any(
    other.startswith(path + "/") for path in files for other in files))


@given(file_sets, st.randoms())
def test_the_digest_does_not_depend_on_listing_order(files: dict, rnd: object) -> None:
    entries = [entry(path, data, exec) for path, (data, exec) in files.items()]
    shuffled = list(entries)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = Manifest.build("dir", entries), Manifest.build("dir", shuffled)
    assert a.to_bytes() == b.to_bytes() and a.digest == b.digest
    assert Manifest.from_bytes(a.to_bytes(), "test") == a
    assert a.digest == "sha256:" + hashlib.sha256(a.to_bytes()).hexdigest()


@given(file_sets.filter(bool), st.data())
def test_a_name_a_mode_or_a_byte_changes_the_digest(files: dict, data: st.DataObject) -> None:
    entries = [entry(path, blob, exec) for path, (blob, exec) in files.items()]
    base = Manifest.build("dir", entries).digest
    i = data.draw(st.integers(0, len(entries) - 1))
    victim = entries[i]
    renamed = FileEntry(victim.path + "~", victim.size, victim.sha256, victim.exec)
    flipped = FileEntry(victim.path, victim.size, victim.sha256, not victim.exec)
    edited = entry(victim.path, b"changed" + bytes(victim.size), victim.exec)
    for changed in (renamed, flipped, edited):
        others = entries[:i] + entries[i + 1 :]
        if any(e.path.startswith(changed.path + "/") for e in others):
            continue
        assert Manifest.build("dir", [*others, changed]).digest != base
    assert Manifest.build("dir", entries[:i] + entries[i + 1 :]).digest != base


def test_the_manifest_format_is_exactly_as_documented() -> None:
    manifest = Manifest.build("dir", [entry("b/c.bin", b"abc", True), entry("a.txt", b"")])
    empty, abc = hashlib.sha256(b"").hexdigest(), hashlib.sha256(b"abc").hexdigest()
    assert manifest.to_bytes() == (
        '{"files":[{"exec":false,"path":"a.txt","sha256":"' + empty + '","size":0},'
        '{"exec":true,"path":"b/c.bin","sha256":"' + abc + '","size":3}],'
        '"kind":"dir","orch_input":1}'
    ).encode()
    single = Manifest.build("file", [entry("", b"abc")])
    assert single.files[0].path == "" and single.kind == "file"
    assert single.digest != Manifest.build("dir", [entry("x", b"abc")]).digest


@pytest.mark.parametrize("bad", [
    b"not json", b"{}", b'{"files":[],"kind":"dir","orch_input":2}',
    b'{"files":[{"exec":false,"path":"../x","sha256":"%s","size":1}],"kind":"dir",'
    b'"orch_input":1}' % SHA.encode(),
    b'{"orch_input":1,"kind":"dir","files":[]}',  # valid content, not canonical
])
def test_a_stored_manifest_that_is_not_canonical_is_refused(bad: bytes) -> None:
    with pytest.raises(InputError, match="corrupt input manifest"):
        Manifest.from_bytes(bad, "blob x")


@pytest.mark.parametrize("paths", [["a", "a"], ["a", "a/b"], ["/abs"], ["a//b"], ["a/./b"]])
def test_paths_that_cannot_be_laid_out_are_refused(paths: list[str]) -> None:
    with pytest.raises(ValueError):
        Manifest.build("dir", [entry(path) for path in paths])


# -- scanning a local input and the stat cache --------------------------------------------


def test_a_scan_digests_what_the_manifest_describes(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {"a.txt": b"a", "sub/b.bin": b"bb", "sub/deeper/c": b""})
    (root / "sub/b.bin").chmod(0o755)
    manifest = scan("d", root, None).manifest()
    assert [(e.path, e.size, e.exec) for e in manifest.files] == [
        ("a.txt", 1, False), ("sub/b.bin", 2, True), ("sub/deeper/c", 0, False)]
    assert manifest.files[1].sha256 == hashlib.sha256(b"bb").hexdigest()
    # A copy elsewhere, with other times and read permissions, has the same digest.
    copy = tree(tmp_path / "copy", {"a.txt": b"a", "sub/b.bin": b"bb", "sub/deeper/c": b""})
    (copy / "sub/b.bin").chmod(0o700)
    (copy / "a.txt").chmod(0o400)
    assert scan("copy", copy, None).digest == manifest.digest


def test_a_file_input_is_named_by_its_content_not_its_name(tmp_path: Path) -> None:
    (tmp_path / "one.npz").write_bytes(b"data")
    (tmp_path / "two.npz").write_bytes(b"data")
    one, two = scan("x", tmp_path / "one.npz", None), scan("x", tmp_path / "two.npz", None)
    assert one.digest == two.digest and one.manifest().kind == "file"


def test_unchanged_files_are_not_hashed_again(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {f"f{i}": bytes([i]) * 100 for i in range(20)})
    cache = StatCache(tmp_path / "cache")
    first, second, third = ScanStats(), ScanStats(), ScanStats()
    digest = scan("d", root, cache, stats=first).digest
    assert scan("d", root, cache, stats=second).digest == digest
    assert (first.hashed, second.hashed) == (20, 0)
    (root / "f3").write_bytes(b"new")  # a new size and mtime
    old(root / "f3")
    changed = scan("d", root, cache, stats=third)
    assert third.hashed == 1 and changed.digest != digest
    assert changed.manifest().digest == changed.digest


def test_a_same_size_edit_with_the_old_mtime_is_still_seen(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {"f": b"aaaa"})
    cache = StatCache(tmp_path / "cache")
    digest = scan("d", root, cache).digest
    st_before = os.stat(root / "f")
    (root / "f").write_bytes(b"bbbb")
    os.utime(root / "f", ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    assert scan("d", root, cache).digest != digest  # ctime moved: hashed again


def test_racily_fresh_files_are_not_trusted_from_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "fresh").write_bytes(b"1")
    cache = StatCache(tmp_path / "cache")
    scan("d", root, cache)
    stats = ScanStats()
    scan("d", root, cache, stats=stats)
    assert stats.hashed == 1


def test_the_fast_path_still_gives_the_full_manifest(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {"a": b"1", "b/c": b"22"})
    cache = StatCache(tmp_path / "cache")
    full = scan("d", root, cache).manifest()
    fast = scan("d", root, cache)
    assert fast.manifest() == full and fast.readers()


def test_a_file_that_changes_while_it_is_hashed_is_an_error(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    root = tree(tmp_path / "d", {"big.bin": b"x" * 4096})
    real_fstat = os.fstat
    calls = {"n": 0}

    def fstat(fd: int) -> os.stat_result:
        calls["n"] += 1
        if calls["n"] == 2:  # after the bytes were read: someone appended meanwhile
            with open(root / "big.bin", "ab") as handle:
                handle.write(b"more")
        return real_fstat(fd)

    monkeypatch.setattr(scanmod.os, "fstat", fstat)
    with pytest.raises(InputError, match="'d'.*big.bin changed while it was being hashed"):
        scan("d", root, None)


def test_a_file_replaced_between_walk_and_hash_is_an_error(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {"f": b"one"})
    _, found = scanmod.walk("d", root)
    (root / "f").write_bytes(b"other content")
    with pytest.raises(InputError, match="changed while it was being hashed"):
        scanmod.hash_file("d", found[0])


# -- what the walk refuses ----------------------------------------------------------------


def refused(name: str, path: Path) -> str:
    with pytest.raises(InputError) as info:
        scan(name, path, None)
    message = str(info.value)
    assert message.startswith(f"input {name!r}: ") and "\n" not in message
    return message


def test_a_missing_path(tmp_path: Path) -> None:
    assert "does not exist" in refused("gone", tmp_path / "nope")


def test_a_socket_inside(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {"a": b"1"})
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "s.sock"))
        assert "s.sock is a socket" in refused("d", root)
    assert "is a socket" in refused("s", root / "s.sock")


def test_a_fifo_and_a_device(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {"a": b"1"})
    os.mkfifo(root / "pipe")
    assert "pipe is a FIFO" in refused("d", root)
    assert "is a device" in refused("null", Path("/dev/null"))


def test_symlinks_that_leave_loop_or_dangle(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text("s")
    for link, target, why in [("out", outside, "leaves the input"),
                              ("loop", Path("loop"), "loops"),
                              ("up", Path(".."), "leaves the input"),
                              ("dangling", Path("nothing"), "dangles")]:
        root = tree(tmp_path / f"d-{link}", {"a": b"1"})
        (root / link).symlink_to(target)
        assert why in refused("d", root), link
    root = tree(tmp_path / "d-cycle", {"sub/a": b"1"})
    (root / "sub" / "back").symlink_to("..")
    assert "loops" in refused("d", root)


def test_symlinks_inside_the_input_count_as_their_targets(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {"real/a": b"1"})
    (root / "alias").symlink_to("real")
    (root / "b").symlink_to("real/a")
    paths = [e.path for e in scan("d", root, None).manifest().files]
    assert paths == ["alias/a", "b", "real/a"]
    link = tmp_path / "link-to-d"
    link.symlink_to(root)  # the declared path itself may be a link
    assert scan("d", link, None).digest == scan("d", root, None).digest


def test_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {"a": b"1"})
    with open(os.fsencode(root) + b"/bad\xff", "wb") as handle:
        handle.write(b"x")
    assert "not a UTF-8 name" in refused("d", root)


# -- declarations and which runs read what -----------------------------------------------


@pytest.mark.parametrize("value, message", [
    ({"2fast": "d"}, "is not an identifier"),
    ({"my-data": "d"}, "is not an identifier"),
    ({"data": "d", "DATA": "e"}, "clashes with input"),
    ({"d": ""}, "must be a path"),
    ({"d": 3}, "must be a path"),
    ({"d": "http://x/y"}, "only paths and s3://"),
    ({"d": "s3://A_/x"}, "invalid bucket"),
    ({"d": {"source": "s3://bkt/x", "region": "x"}}, "unknown"),
    ({"d": {"source": "data", "endpoint": "http://h:1"}}, "only for an s3:// source"),
    (["d"], "must be a mapping"),
])
def test_bad_declarations_name_the_input(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_inputs(value, "orch.yaml")


def test_a_config_depends_on_the_inputs_it_names(tmp_path: Path) -> None:
    decls = parse_inputs({"canadian": "a", "all": "b", "extra": "c"}, "orch.yaml")
    configs = tmp_path / "configs"
    (configs / "dataset").mkdir(parents=True)
    (configs / "dataset" / "canadian.yaml").write_text("path: ${orch.input:canadian}\n")
    (configs / "dataset" / "all.yaml").write_text("path: ${ orch.input: all }/x.csv\n")
    assert names_in_tree(configs) == {"canadian", "all"}
    cfg = {"dataset": {"path": resolve_input("canadian")}, "n": [1, "/orch/inputs/canadianx"]}
    assert names_in_config(cfg) == {"canadian", "canadianx"}
    assert run_inputs(decls, {"p": "/orch/inputs/all/x.csv"}, {"canadian", "all"}) == (
        "all", "extra")  # `extra` is named by no config: every run mounts it
    with pytest.raises(ValueError, match="names input 'nope'.*declared: all, canadian, extra"):
        run_inputs(decls, {"p": resolve_input("nope")}, {"canadian", "all"})
    with pytest.raises(ValueError, match="not an input name"):
        resolve_input("no-dash")


# -- the host cache and the store ---------------------------------------------------------


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file_sets)
def test_materialize_lays_out_exactly_the_manifest(tmp_path_factory: pytest.TempPathFactory,
                                                   files: dict) -> None:
    base = tmp_path_factory.mktemp("m")
    store = RunStore(MemoryStore())
    cache = HostCache(base / "driver")
    entries = []
    for path, (data, exec) in files.items():
        item = entry(path, data, exec)
        entries.append(item)
        src = base / "src" / hashlib.sha256(path.encode()).hexdigest()
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        cache.add_from_file("x", item, str(src))
    manifest = Manifest.build("dir", entries)
    upload("x", store.blobs, cache, manifest)
    mounts = materialize(store.blobs, {"x": InputRef(manifest.digest)}, base / "node")
    root = mounts["x"]
    laid = {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}
    assert sorted(laid) == sorted(files)
    for path, (data, exec) in files.items():
        assert laid[path].read_bytes() == data
        mode = laid[path].stat().st_mode
        assert mode & 0o444 == 0o444 and not mode & 0o222
        assert bool(mode & 0o100) == exec


def test_a_second_version_uploads_only_the_changed_file(tmp_path: Path) -> None:
    store = RunStore(MemoryStore())
    root = tree(tmp_path / "d", {f"f{i:03d}": bytes([i]) * 10 for i in range(100)})
    from orchestrator.inputs import pin, stage

    first = stage(pin([InputDecl("d", str(root))], tmp_path, tmp_path / "c"), store.blobs,
                  tmp_path / "c")
    (root / "f050").write_bytes(b"changed")
    second = stage(pin([InputDecl("d", str(root))], tmp_path, tmp_path / "c"), store.blobs,
                   tmp_path / "c")
    again = stage(pin([InputDecl("d", str(root))], tmp_path, tmp_path / "c"), store.blobs,
                  tmp_path / "c")
    assert (first["d"].files, second["d"].files, again["d"].files) == (100, 1, 0)


def test_a_file_edited_after_it_was_hashed_never_reaches_the_cache(tmp_path: Path) -> None:
    from orchestrator.inputs import pin, stage

    root = tree(tmp_path / "d", {"a": b"one"})
    pinned = pin([InputDecl("d", str(root))], tmp_path, tmp_path / "c")
    (root / "a").write_bytes(b"two")
    with pytest.raises(InputError, match="'d': a changed after it was hashed"):
        stage(pinned, RunStore(MemoryStore()).blobs, tmp_path / "c")
    assert not list((tmp_path / "c" / "inputs" / "objects").iterdir())


def test_an_input_missing_from_the_store_is_one_clear_error(tmp_path: Path) -> None:
    digest = "sha256:" + "a" * 64
    with pytest.raises(InputError) as info:
        materialize(RunStore(MemoryStore()).blobs, {"canadian": InputRef(digest)}, tmp_path)
    assert str(info.value) == (
        f"input 'canadian' ({digest}) cannot be had exactly: its manifest is not in the store")


def test_a_tampered_cache_file_is_replaced_on_a_verified_materialize(tmp_path: Path) -> None:
    from orchestrator.inputs import pin, stage

    store = RunStore(MemoryStore())
    root = tree(tmp_path / "d", {"a": b"good", "b": b"also"})
    pinned = pin([InputDecl("d", str(root))], tmp_path, tmp_path / "c")
    stage(pinned, store.blobs, tmp_path / "c")
    ref = {"d": pinned["d"].ref}
    mount = materialize(store.blobs, ref, tmp_path / "c")["d"]
    victim = mount / "a"
    victim.chmod(0o644)
    victim.write_bytes(b"evil")
    mount = materialize(store.blobs, ref, tmp_path / "c", verify=True)["d"]
    assert (mount / "a").read_bytes() == b"good"


class FlakyStore(MemoryStore):
    """Fails every file upload after the first ``ok`` ones (a store that went away)."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    def put_file(self, key: str, path: Path) -> None:
        if self.ok <= 0:
            from orchestrator.errors import StoreError

            raise StoreError(f"cannot write {key}: connection reset")
        self.ok -= 1
        super().put_file(key, path)


def test_an_interrupted_upload_leaves_nothing_a_reader_trusts(tmp_path: Path) -> None:
    from orchestrator.errors import StoreError
    from orchestrator.inputs import pin, stage

    root = tree(tmp_path / "d", {f"f{i}": bytes([i]) * 50 for i in range(10)})
    flaky = FlakyStore(ok=4)
    store = RunStore(flaky)
    pinned = pin([InputDecl("d", str(root))], tmp_path, tmp_path / "c")
    with pytest.raises(StoreError, match="input 'd'"):
        stage(pinned, store.blobs, tmp_path / "c")
    assert not store.blobs.has(pinned["d"].digest)  # no manifest: the input is not there
    with pytest.raises(InputError, match="its manifest is not in the store"):
        materialize(store.blobs, {"d": pinned["d"].ref}, tmp_path / "node")
    flaky.ok = 100
    assert stage(pinned, store.blobs, tmp_path / "c")["d"].files == 6  # only the rest
    assert materialize(store.blobs, {"d": pinned["d"].ref}, tmp_path / "node")
