"""Recipe embedding: in place and streamed rewrite, interoperability, crash and failure safety."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_checkpoint_support import (  # noqa: F401
    data_region,
    header_bytes,
    isolated_cache,
    list_dir,
    official_read,
    temp_leftovers,
    write_reference,
)

import iga.checkpoint as ck
from iga.checkpoint import _io
from iga.checkpoint import journal

RECIPE = {
    "iga_version": "1.0.0",
    "architecture": "sd1",
    "prediction_type": "eps",
    "clip_skip": 2,
    "resolution": {"preferred": ["512x768", "512x512"]},
    "sampler": {"name": "euler_ancestral"},
    "hashes": {"weights_sha256": "AB" * 32, "metadata_sha256": "cd" * 32},
}


def _official_model(path: Path, metadata: dict[str, str] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {
        "b.weight": rng.standard_normal((8, 16)).astype(np.float16),
        "a.bias": rng.standard_normal(16).astype(np.float32),
        "scalar": np.array(2.5, dtype=np.float64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    save_file(tensors, str(path), metadata=metadata)
    return tensors


def _check_interop(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str], data: bytes) -> None:
    meta, loaded = official_read(path)
    assert meta == metadata
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and np.array_equal(loaded[k], v)
    assert data_region(path) == data  # every tensor byte, in the same order
    hb = header_bytes(path)
    assert hb.startswith(b'{"__metadata__"') and len(hb) % 8 == 0
    assert hb.rstrip(b" ") == hb.rstrip()  # padding is spaces only


def test_first_embed_rewrites_with_slack_then_edits_in_place(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    tensors = _official_model(path, {"ss_network_dim": "4", "title": "x"})
    data = data_region(path)
    r1 = ck.embed_recipe(path, RECIPE)
    assert r1.mode == "rewrite" and r1.new_header_len % 8 == 0 and r1.slack >= 16 * 1024
    expected = {
        "ss_network_dim": "4",
        "title": "x",
        "iga.recipe": json.dumps(RECIPE, sort_keys=True, separators=(",", ":")),
        "modelspec.prediction_type": "epsilon",
        "modelspec.resolution": "512x768",
        "modelspec.encoder_layer": "2",
        "modelspec.hash_sha256": "0x" + "ab" * 32,
    }
    _check_interop(path, tensors, expected, data)
    assert ck.read_recipe_dict(path) == RECIPE

    inode, size = os.stat(path).st_ino, os.stat(path).st_size
    r2 = ck.embed_recipe(path, {**RECIPE, "prediction_type": "v", "clip_skip": 1})
    assert r2.mode == "in_place" and r2.bytes_written == r1.new_header_len
    assert (os.stat(path).st_ino, os.stat(path).st_size) == (inode, size)
    assert ck.read_recipe_dict(path)["prediction_type"] == "v"
    meta, _ = official_read(path)
    assert meta["modelspec.prediction_type"] == "v" and meta["modelspec.encoder_layer"] == "1"
    assert data_region(path) == data
    assert temp_leftovers(tmp_path) == []


def test_official_file_with_slack_is_edited_in_place(tmp_path: Path) -> None:
    # An official file whose header has room (a long recipe already there) takes a shorter one in place.
    path = tmp_path / "m.safetensors"
    big = json.dumps({"iga_version": "1.0.0", "notes": "n" * 5000})
    tensors = _official_model(path, {"iga.recipe": big, "keep": "me"})
    data, before = data_region(path), os.stat(path)
    r = ck.embed_recipe(path, {"iga_version": "1.0.0", "prediction_type": "v"})
    assert r.mode == "in_place"
    after = os.stat(path)
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    expected = {"keep": "me", "iga.recipe": '{"iga_version":"1.0.0","prediction_type":"v"}',
                "modelspec.prediction_type": "v"}
    _check_interop(path, tensors, expected, data)


def test_out_writes_new_file_and_leaves_input_untouched(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.safetensors", tmp_path / "sub" / "out.safetensors"
    dst.parent.mkdir()
    tensors = _official_model(src)
    original = src.read_bytes()
    r = ck.embed_recipe(src, RECIPE, out=dst)
    assert r.mode == "rewrite" and r.path == str(dst)
    assert src.read_bytes() == original
    assert ck.read_recipe_dict(dst) == RECIPE
    _check_interop(dst, tensors, dict(official_read(dst)[0]), data_region(src))
    # out= pointing at the input itself is an ordinary in-place edit
    r2 = ck.embed_recipe(dst, {"iga_version": "1.0.0"}, out=dst)
    assert r2.mode == "in_place"


def test_remove_recipe_keeps_everything_else(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    tensors = _official_model(path, {"other": "1"})
    data = data_region(path)
    ck.embed_recipe(path, RECIPE)
    r = ck.remove_recipe(path)
    assert r.mode == "in_place"
    assert ck.read_recipe_dict(path) is None
    meta, _ = official_read(path)
    assert "iga.recipe" not in meta and meta["other"] == "1"
    assert meta["modelspec.prediction_type"] == "epsilon"  # mirrors stay (documented)
    _check_interop(path, tensors, meta, data)
    assert ck.remove_recipe(path).mode == "unchanged"


def test_unaligned_header_is_realigned_by_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "old.safetensors"
    blobs = write_reference(path, [("t", "U8", [5])], {"a": "b"}, pad_to=None)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    # Rebuild with an odd header length (older writers did not align).
    text = raw[8 : 8 + n].rstrip() + b"   "
    assert len(text) % 8 != 0
    path.write_bytes(struct.pack("<Q", len(text)) + text + blobs["t"])
    r = ck.embed_recipe(path, {"iga_version": "1.0.0"})
    assert r.mode == "rewrite" and r.new_header_len % 8 == 0
    assert data_region(path) == blobs["t"]


def test_recipe_size_limits(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    _official_model(path)
    with pytest.raises(ck.RecipeTooLargeError):
        ck.embed_recipe(path, {"blob": "x" * (1024 * 1024)})
    # a too-large recipe written by another tool is refused on read
    _official_model(path, {"iga.recipe": json.dumps({"blob": "x" * (1024 * 1024)})})
    with pytest.raises(ck.RecipeTooLargeError, match="1,048,576"):
        ck.read_recipe_dict(path)
    _official_model(path, {"iga.recipe": "[1, 2]"})
    with pytest.raises(ck.RecipeDecodeError, match="object"):
        ck.read_recipe_dict(path)
    _official_model(path, {"iga.recipe": '{"a": 1, "a": 2}'})
    with pytest.raises(ck.RecipeDecodeError, match="duplicate"):
        ck.read_recipe_dict(path)


def test_modelspec_mirror_only_for_defined_keys() -> None:
    assert ck.modelspec_mirror({"prediction_type": "x0", "clip_skip": None, "resolution": {}}) == {}
    assert ck.modelspec_mirror({"prediction_type": "flow", "hashes": {"weights_sha256": "short"}}) == {}
    assert ck.modelspec_mirror({"resolution": {"preferred": [[1024, 768]]}}) == {"modelspec.resolution": "1024x768"}


# --- property test: random metadata and recipe sizes --------------------------------------------------------------

meta_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=40, deadline=None)
@given(
    metadata=st.dictionaries(meta_text.filter(lambda k: k != "iga.recipe"), meta_text, max_size=6),
    sizes=st.lists(st.integers(0, 40_000), min_size=1, max_size=4),
    seed=st.integers(0, 100),
)
def test_embed_round_trips(metadata: dict[str, str], sizes: list[int], seed: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        tensors = _official_model(path, metadata or None, seed=seed)
        data = data_region(path)
        for size in sizes:
            recipe = {"iga_version": "1.0.0", "notes": "é" * size}
            before = ck.read_header(path)
            text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            same = before.metadata.get("iga.recipe") == text
            r = ck.embed_recipe(path, recipe)
            fits = r.header_json_len <= before.header_len
            assert r.mode == ("unchanged" if same else "in_place" if fits else "rewrite")
            _check_interop(path, tensors, {**metadata, "iga.recipe": text}, data)
            assert ck.read_recipe_dict(path) == recipe
        assert temp_leftovers(Path(d)) == []


# --- failure injection ---------------------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_interrupted_rewrite_leaves_original_and_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    _official_model(path, {"k": "v"})
    original = path.read_bytes()
    names_before = list_dir(tmp_path)
    monkeypatch.setattr(_io, "COPY_CHUNK", 64)  # many chunks, so we can stop after each one
    data_len = len(data_region(path))
    chunks = -(-data_len // 64)
    real_chunk = _io.copy_chunk
    for k in range(chunks):
        calls = {"n": 0}

        def failing(*args, _k=k, _calls=calls):
            if _calls["n"] == _k:
                raise Boom(f"after {_k} chunks")
            _calls["n"] += 1
            return real_chunk(*args)

        monkeypatch.setattr(_io, "copy_chunk", failing)
        with pytest.raises(Boom):
            ck.embed_recipe(path, RECIPE)
        assert path.read_bytes() == original
        assert list_dir(tmp_path) == names_before
    monkeypatch.setattr(_io, "copy_chunk", real_chunk)

    for target in ("replace", "fsync"):
        def fail(*a, _target=target, **k):
            raise OSError(5, f"injected {_target} failure")

        with monkeypatch.context() as m:
            m.setattr(os, target, fail)
            with pytest.raises(OSError, match="injected"):
                ck.embed_recipe(path, RECIPE)
        assert path.read_bytes() == original
        assert list_dir(tmp_path) == names_before

    # and the same edit succeeds once nothing fails
    assert ck.embed_recipe(path, RECIPE).mode == "rewrite"
    assert ck.read_recipe_dict(path) == RECIPE


def test_interrupted_copy_to_out_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    _official_model(src)
    original = src.read_bytes()

    def fail(*a):
        raise Boom

    monkeypatch.setattr(_io, "copy_chunk", fail)
    with pytest.raises(Boom):
        ck.embed_recipe(src, RECIPE, out=dst)
    assert not dst.exists() and src.read_bytes() == original and temp_leftovers(tmp_path) == []


def test_failed_in_place_write_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    _official_model(path)
    ck.embed_recipe(path, RECIPE)  # now there is slack
    original = path.read_bytes()
    real = _io.pwrite_all
    state = {"n": 0}

    def torn(fd, data, offset):
        if offset == 8 and state["n"] == 0:  # the header write: half of it, then an error
            state["n"] += 1
            real(fd, bytes(data)[: len(data) // 2], offset)
            raise Boom
        real(fd, data, offset)

    monkeypatch.setattr(_io, "pwrite_all", torn)
    with pytest.raises(Boom):
        ck.embed_recipe(path, {"iga_version": "1.0.0", "other": "z" * 3000})
    assert path.read_bytes() == original
    assert temp_leftovers(tmp_path) == []


def test_crash_mid_header_write_is_recovered_from_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    tensors = _official_model(path, {"keep": "1"})
    ck.embed_recipe(path, RECIPE)
    original = path.read_bytes()
    meta_before, _ = official_read(path)
    real = _io.pwrite_all

    dead = {"yes": False}

    def dies(fd, data, offset):
        if dead["yes"]:  # a dead process writes nothing more (so the rollback cannot happen either)
            raise KeyboardInterrupt
        if offset == 8:  # torn header write, then the process "dies"
            real(fd, bytes(data)[: len(bytes(data).rstrip()) // 2], offset)  # tear inside the JSON
            dead["yes"] = True
            raise KeyboardInterrupt
        real(fd, data, offset)

    monkeypatch.setattr(_io, "pwrite_all", dies)
    with pytest.raises(KeyboardInterrupt):
        ck.embed_recipe(path, {"iga_version": "1.0.0", "prediction_type": "v" * 5000})
    monkeypatch.setattr(_io, "pwrite_all", real)
    jp = journal.armed_journal(path)
    assert jp is not None and not os.path.basename(jp).startswith(".")  # in the cache folder, not beside the model
    assert path.read_bytes() != original  # torn
    with pytest.raises(ck.InterruptedEditError, match="iga recover"):
        ck.read_header(path)
    assert ck.recover_interrupted_edit(path) == "restored"
    assert path.read_bytes() == original
    assert journal.armed_journal(path) is None
    _check_interop(path, tensors, meta_before, data_region(path))
    assert ck.embed_recipe(path, {"iga_version": "1.0.0"}).mode == "in_place"  # and editing works again


@pytest.mark.parametrize("state", ["new", "old", "torn_journal", "replaced_file"])
@pytest.mark.parametrize("beside", [False, True])
def test_recovery_outcomes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str, beside: bool) -> None:
    path = tmp_path / "m.safetensors"
    _official_model(path)
    ck.embed_recipe(path, RECIPE)
    if beside:  # cache folder not writable: the journal goes next to the file
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("")
        monkeypatch.setenv("IGA_CACHE_DIR", str(blocker))
    h = ck.read_header(path)
    old = header_bytes(path)
    new = ck.build_header_json({"iga.recipe": "{}"}, list(h.tensor_map().values()))
    new = new + b" " * (len(old) - len(new))
    armed = journal.arm(str(path), old, new, h.file_size)
    os.close(armed.fd)  # the process "dies" here, before or after writing the header
    jp = journal.armed_journal(path)
    assert jp == armed.path and os.path.basename(jp).startswith(".") == beside
    if state == "new":
        with open(path, "r+b") as f:
            f.seek(8)
            f.write(new)
        assert ck.recover_interrupted_edit(path) == "completed"
        assert header_bytes(path) == new
    elif state == "old":
        assert ck.recover_interrupted_edit(path) == "unchanged"
        assert header_bytes(path) == old
    elif state == "torn_journal":
        blob = Path(jp).read_bytes()
        Path(jp).write_bytes(blob[:-10])  # the journal itself was cut short: the header was never touched
        assert ck.recover_interrupted_edit(path) == "discarded"
        assert header_bytes(path) == old
    else:
        with open(path, "ab") as f:
            f.write(b"x")
        with pytest.raises(ck.InterruptedEditError, match="replaced"):
            ck.recover_interrupted_edit(path)
        return
    assert journal.armed_journal(path) is None
    assert ck.recover_interrupted_edit(path) == "none"
    assert temp_leftovers(tmp_path) == []


def test_journal_is_reused_not_recreated(tmp_path: Path, isolated_cache: Path) -> None:
    path = tmp_path / "m.safetensors"
    _official_model(path)
    ck.embed_recipe(path, RECIPE)
    ck.embed_recipe(path, {"iga_version": "1.0.0"})
    journals = list((isolated_cache / "journal").iterdir())
    assert len(journals) == 1 and journals[0].read_bytes().startswith(journal.DONE)
    inode = journals[0].stat().st_ino
    ck.embed_recipe(path, {"iga_version": "1.0.1"})
    assert journals[0].stat().st_ino == inode
    assert temp_leftovers(tmp_path) == []


def test_concurrent_edit_is_refused(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "m.safetensors"
    _official_model(path)
    with open(path, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ck.FileBusyError):
            ck.embed_recipe(path, RECIPE)


def test_not_enough_space_is_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    path = tmp_path / "m.safetensors"
    _official_model(path)
    original = path.read_bytes()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 100, 10))
    with pytest.raises(ck.CheckpointWriteError, match="free space"):
        ck.embed_recipe(path, RECIPE)
    assert path.read_bytes() == original and temp_leftovers(tmp_path) == []


def test_kernel_copy_fallbacks_give_identical_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.safetensors"
    tensors = _official_model(src)
    data = data_region(src)
    for mode in ("sendfile", "userspace"):
        monkeypatch.setitem(_io._kernel_copy_ok, "copy_file_range", False)
        monkeypatch.setitem(_io._kernel_copy_ok, "sendfile", mode == "sendfile")
        monkeypatch.setattr(_io, "BUFFER_SIZE", 7)
        dst = tmp_path / f"{mode}.safetensors"
        ck.embed_recipe(src, RECIPE, out=dst)
        _check_interop(dst, tensors, dict(official_read(dst)[0]), data)
