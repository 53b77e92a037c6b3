"""Hashes against hashlib over the same bytes, and the hash cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from test_checkpoint_support import isolated_cache, write_reference  # noqa: F401

import iga.checkpoint as ck
from iga.checkpoint import hashing


def _model(path: Path, seed: int = 0, n: int = 1000) -> bytes:
    blobs = write_reference(path, [("a", "F32", [n]), ("b", "U8", [37]), ("z", "F16", [0])], {"k": "v"}, seed=seed)
    return blobs["a"] + blobs["b"]


@pytest.mark.parametrize("buffer_size", [7, 64, 8 * 1024 * 1024])
def test_hashes_match_hashlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, buffer_size: int) -> None:
    monkeypatch.setattr(hashing, "HASH_BUFFER_SIZE", buffer_size)  # chunk boundaries inside header and data
    path = tmp_path / "m.safetensors"
    data = _model(path)
    raw = path.read_bytes()
    assert raw.endswith(data)
    w = hashlib.sha256(data).hexdigest()
    f = hashlib.sha256(raw).hexdigest()
    both = ck.compute_hashes(path, use_cache=False)
    assert (both.weights_sha256, both.file_sha256) == (w, f)
    assert (both.autov2, both.autov3) == (f[:10], w[:12])
    assert ck.weights_sha256(path, use_cache=False) == w
    assert ck.file_sha256(path, use_cache=False) == f
    assert ck.autov2(path) == f[:10] and ck.autov3(path) == w[:12]


def test_weights_hash_ignores_metadata_edits(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    _model(path)
    w, f = ck.weights_sha256(path), ck.file_sha256(path)
    ck.embed_recipe(path, {"iga_version": "1.0.0"})
    assert ck.weights_sha256(path, use_cache=False) == w
    assert ck.file_sha256(path) != f


def test_file_sha256_works_on_any_file(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"  # not a safetensors file: the whole-file hash does not parse it
    p.write_bytes(b"hello")
    assert ck.file_sha256(p) == hashlib.sha256(b"hello").hexdigest()


def _count_streams(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"n": 0}
    real = hashing._stream_hashes

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(hashing, "_stream_hashes", counting)
    return calls


def test_cache_hit_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> None:
    calls = _count_streams(monkeypatch)
    path = tmp_path / "m.safetensors"
    data = _model(path)
    w = ck.weights_sha256(path)
    assert calls["n"] == 1
    assert ck.weights_sha256(path) == w and calls["n"] == 1  # cached
    assert (isolated_cache / "hashes.json").is_file()
    ck.file_sha256(path)
    assert calls["n"] == 2  # a different kind is its own entry

    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert ck.weights_sha256(path) == w and calls["n"] == 3  # mtime changed: recomputed

    data2 = _model(path, seed=1, n=1001)  # size changes
    assert ck.weights_sha256(path) == hashlib.sha256(data2).hexdigest() != hashlib.sha256(data).hexdigest()
    assert calls["n"] == 4

    # same size and content but a new inode (file replaced): recomputed
    copy = tmp_path / "copy"
    copy.write_bytes(path.read_bytes())
    os.utime(copy, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns))
    os.replace(copy, path)
    ck.weights_sha256(path)
    assert calls["n"] == 5


def test_same_content_different_paths_are_separate_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_streams(monkeypatch)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _model(a)
    b.write_bytes(a.read_bytes())
    assert ck.weights_sha256(a) == ck.weights_sha256(b)
    assert calls["n"] == 2
    link = tmp_path / "link.safetensors"
    link.symlink_to(a)
    ck.weights_sha256(link)  # resolved to the real path: cached
    assert calls["n"] == 2


def test_corrupt_or_foreign_cache_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> None:
    path = tmp_path / "m.safetensors"
    data = _model(path)
    good = hashlib.sha256(data).hexdigest()
    for junk in (b"\x00garbage{", b"[]", json.dumps({"version": 99, "entries": {}}).encode(),
                 json.dumps({"version": 1, "entries": {"x": 5}}).encode()):
        (isolated_cache / "hashes.json").write_bytes(junk)
        assert ck.weights_sha256(path) == good
        assert json.loads((isolated_cache / "hashes.json").read_bytes())["version"] == ck.hashing.CACHE_VERSION
    # a poisoned entry with a wrong stat is not trusted
    real = os.path.realpath(path)
    (isolated_cache / "hashes.json").write_text(json.dumps({"version": 1, "entries": {
        f"weights\0{real}": {"size": 1, "mtime_ns": 1, "inode": 1, "sha256": "0" * 64}}}))
    assert ck.weights_sha256(path) == good


def test_changed_bytes_behind_an_unchanged_stat_are_not_hidden_by_the_cache(tmp_path: Path, isolated_cache: Path) -> None:
    """`touch -r` keeps size and mtime; the cache's sampled-block fingerprint still sees the new bytes."""
    path = tmp_path / "m.safetensors"
    data = _model(path)
    assert ck.weights_sha256(path) == hashlib.sha256(data).hexdigest()
    st = os.stat(path)
    with open(path, "r+b") as f:  # flip the last tensor byte in place (a sampled block), then restore the times
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = path.read_bytes()
    header_len = 8 + int.from_bytes(changed[:8], "little")
    assert ck.weights_sha256(path) == hashlib.sha256(changed[header_len:]).hexdigest()


def test_unwritable_cache_dir_still_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("IGA_CACHE_DIR", str(blocker / "sub"))
    path = tmp_path / "m.safetensors"
    data = _model(path)
    assert ck.weights_sha256(path) == hashlib.sha256(data).hexdigest()


def test_own_header_edits_carry_the_weights_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_streams(monkeypatch)
    path = tmp_path / "m.safetensors"
    _model(path)
    w = ck.weights_sha256(path)
    ck.embed_recipe(path, {"iga_version": "1.0.0"})  # rewrite
    ck.embed_recipe(path, {"iga_version": "1.0.1"})  # in place
    assert ck.weights_sha256(path) == w
    assert calls["n"] == 1  # not recomputed after either edit
    ck.file_sha256(path)
    assert calls["n"] == 2


def test_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> None:
    monkeypatch.setattr(hashing, "MAX_CACHE_ENTRIES", 3)
    for i in range(5):
        p = tmp_path / f"m{i}.safetensors"
        _model(p, seed=i)
        ck.weights_sha256(p)
    entries = json.loads((isolated_cache / "hashes.json").read_text())["entries"]
    assert len(entries) == 3
    assert any(k.endswith("m4.safetensors") for k in entries)


def test_file_changing_during_hashing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    _model(path)
    real_fstat = os.fstat

    def later(fd):
        st = real_fstat(fd)
        return os.stat_result((*st[:8], st.st_mtime + 5, st.st_ctime))

    monkeypatch.setattr(os, "fstat", later)
    with pytest.raises(ck.CheckpointFileError, match="changed"):
        ck.compute_hashes(path, use_cache=False)
