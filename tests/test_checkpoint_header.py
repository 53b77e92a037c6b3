"""Header reading: interoperability with the official safetensors library, every error class, and fuzzing."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_checkpoint_support import NP_DTYPES, data_region, isolated_cache, raw_file, write_reference  # noqa: F401

import iga.checkpoint as ck
from iga.checkpoint import errors as E
from iga.checkpoint.header import build_header_json, pad_header, parse_header_bytes

U8 = {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}


def _tensor_hdr(**entries: dict) -> str:
    return json.dumps(entries)


# --- interoperability ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [None, {}, {"a": "b", "ünï": "çødé\x00", "json": '{"x": [1, 2]}'}])
def test_reads_files_written_by_official_library(tmp_path: Path, metadata: dict | None) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {
        "w.bf16": torch.randn(3, 5, dtype=torch.float32).to(torch.bfloat16),
        "w.f16": torch.randn(4, dtype=torch.float16),
        "w.f32": torch.randn(2, 3, 4, dtype=torch.float32),
        "empty": torch.zeros(0, 7, dtype=torch.float32),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "flag": torch.tensor([True, False, True]),
        "i64": torch.arange(5, dtype=torch.int64),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    h = ck.read_header(path)
    assert dict(h.metadata) == (metadata or {})
    assert {t.name for t in h.tensors} == set(tensors)
    expect_dtype = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float64: "F64",
                    torch.bool: "BOOL", torch.int64: "I64"}
    raw = path.read_bytes()
    for t in h.tensors:
        src = tensors[t.name]
        assert t.dtype == expect_dtype[src.dtype]
        assert t.shape == tuple(src.shape)
        begin, end = t.data_offsets
        stored = raw[h.data_start + begin : h.data_start + end]
        assert stored == src.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
    assert h.header_len % 8 == 0
    assert h.file_size == len(raw)
    # file order: strictly by data offset
    assert [t.data_offsets for t in h.tensors] == sorted(t.data_offsets for t in h.tensors)


def test_header_cost_does_not_read_data(tmp_path: Path) -> None:
    # A sparse 64 GB file: reading the header must not touch (or allocate) the data.
    path = tmp_path / "huge.safetensors"
    write_reference(path, [("big", "U8", [64 * 1024**3])], {"k": "v"}, sparse=True)
    h = ck.read_header(path)
    assert h.data_len == 64 * 1024**3 and h.metadata == {"k": "v"}


# --- every rejection is a specific CheckpointError -----------------------------------------------------------------


CASES = [
    ("short file", b"\x01\x02\x03", None, E.HeaderTooSmallError),
    ("empty file", b"", None, E.HeaderTooSmallError),
    ("N too large", struct.pack("<Q", 100_000_001) + b"{}", None, E.HeaderTooLargeError),
    ("N huge", b"\xff" * 8 + b"{}", None, E.HeaderTooLargeError),
    ("N past EOF", struct.pack("<Q", 50) + b"{}", None, E.HeaderTruncatedError),
    ("bad utf8", '{"__metadata__":{"a":"\xff"}}'.encode("latin-1"), "raw", E.HeaderEncodingError),
    ("not {", ' {"a":' + json.dumps(U8) + "}", b"xx", E.HeaderStartError),
    ("bom", "\ufeff{}", b"", E.HeaderStartError),
    ("invalid json", '{"a":', b"", E.HeaderSyntaxError),
    ("trailing garbage", "{}x", b"", E.HeaderSyntaxError),
    ("nan", '{"__metadata__":{"a":NaN}}', b"", E.HeaderSyntaxError),
    ("lone surrogate", '{"__metadata__":{"a":"\\ud800"}}', b"", E.HeaderSyntaxError),
    ("dup top level", '{"__metadata__":{},"__metadata__":{}}', b"", E.DuplicateKeyError),
    ("dup tensor", '{"a":' + json.dumps(U8) + ',"a":' + json.dumps(U8) + "}", b"xx", E.DuplicateKeyError),
    ("dup in metadata", '{"__metadata__":{"k":"1","k":"2"}}', b"", E.DuplicateKeyError),
    ("dup in entry", '{"a":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"xx", E.DuplicateKeyError),
    ("metadata int value", '{"__metadata__":{"k":5}}', b"", E.MetadataError),
    ("metadata nested", '{"__metadata__":{"k":{"x":"y"}}}', b"", E.MetadataError),
    ("metadata is string", '{"__metadata__":"x"}', b"", E.MetadataError),
    ("entry is list", '{"a":[1]}', b"", E.TensorEntryError),
    ("missing offsets", '{"a":{"dtype":"U8","shape":[2]}}', b"xx", E.TensorEntryError),
    ("three offsets", '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,1,2]}}', b"xx", E.TensorEntryError),
    ("unknown dtype", '{"a":{"dtype":"u8","shape":[2],"data_offsets":[0,2]}}', b"xx", E.UnknownDtypeError),
    ("dtype not str", '{"a":{"dtype":8,"shape":[2],"data_offsets":[0,2]}}', b"xx", E.UnknownDtypeError),
    ("negative dim", '{"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}}', b"xx", E.ShapeError),
    ("minus zero dim", '{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}}', b"", E.ShapeError),
    ("float dim", '{"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}', b"xx", E.ShapeError),
    ("bool dim", '{"a":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}', b"x", E.ShapeError),
    ("shape not list", '{"a":{"dtype":"U8","shape":2,"data_offsets":[0,2]}}', b"xx", E.ShapeError),
    ("overflow", '{"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}}', b"", E.ShapeError),
    ("size mismatch", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,2]}}', b"xx", E.TensorSizeError),
    ("subbyte misaligned", '{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', b"xx", E.TensorSizeError),
    ("end before begin", '{"a":{"dtype":"U8","shape":[0],"data_offsets":[2,0]}}', b"xx", E.DataOffsetsError),
    ("hole", '{"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', b"xxx", E.DataOffsetsError),
    (
        "overlap",
        '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}',
        b"xxx",
        E.DataOffsetsError,
    ),
    ("past EOF", '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}', b"xx", E.DataOffsetsError),
    ("trailing bytes", '{"a":' + json.dumps(U8) + "}", b"xxx", E.TrailingBytesError),
    ("trailing bytes, no tensors", "{}", b"x", E.TrailingBytesError),
    ("deep nesting", '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":' + "[" * 100000 + "]" * 100000 + "}}",
     b"xx", E.HeaderSyntaxError),
]


@pytest.mark.parametrize(("label", "header", "data", "error"), CASES, ids=[c[0] for c in CASES])
def test_malformed_headers_raise_specific_errors(tmp_path: Path, label: str, header, data, error) -> None:
    path = tmp_path / "bad.safetensors"
    if data is None:
        path.write_bytes(header)
    elif data == "raw":
        raw_file(path, header)
    else:
        raw_file(path, header, data)
    with pytest.raises(error) as info:
        ck.read_header(path)
    assert isinstance(info.value, ck.CheckpointError)
    assert str(path) in str(info.value)  # says where


def test_the_official_library_rejects_what_we_reject_for_format_reasons(tmp_path: Path) -> None:
    # Our rejections are a subset-check against the reference; the three documented stricter cases aside.
    from safetensors import SafetensorError, safe_open

    stricter = {"not {", "dup tensor", "dup in metadata", "dup top level", "minus zero dim"}
    for label, header, data, _ in CASES:
        path = tmp_path / "bad.safetensors"
        if data is None:
            path.write_bytes(header)
        elif data == "raw":
            raw_file(path, header)
        else:
            raw_file(path, header, data)
        try:
            with safe_open(str(path), "numpy") as f:
                f.metadata()
            official_ok = True
        except (SafetensorError, Exception):
            official_ok = False
        if label in stricter:
            continue
        assert not official_ok, f"official library accepts {label!r} but iga rejects it"


def test_valid_edge_cases_are_accepted(tmp_path: Path) -> None:
    path = raw_file(
        tmp_path / "ok.safetensors",
        '{"e":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],'
        '"extra":[-1,"x"]},"s":{"dtype":"F4","shape":[4],"data_offsets":[2,4]},"__metadata__":null}  \t\n',
        b"abcd",
    )
    h = ck.read_header(path)
    assert [t.name for t in h.tensors] == ["e", "a", "s"]
    assert h.tensor_map()["a"].extra == {"extra": [-1, "x"]}
    assert h.metadata == {} and h.has_metadata_key
    assert h.json_len == h.header_len - 4


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin", ".CKPT"])
def test_pickle_suffixes_are_refused_without_opening(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"  # not even created: the suffix alone decides
    with pytest.raises(E.PickleFormatError, match="convert|Convert"):
        ck.read_header(path)


@pytest.mark.parametrize(
    "magic",
    [b"PK\x03\x04" + b"\x00" * 60, b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01" + b"\x00" * 40, b"\x80\x04\x95" + b"\x00" * 60],
)
def test_pickle_payload_in_safetensors_name_is_detected(tmp_path: Path, magic: bytes) -> None:
    path = tmp_path / "renamed.safetensors"
    path.write_bytes(magic)
    with pytest.raises(E.PickleFormatError, match="not a safetensors file"):
        ck.read_header(path)


def test_torch_save_zip_renamed_is_detected(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(3)}, str(path))
    with pytest.raises(E.PickleFormatError):
        ck.read_header(path)


def test_directory_and_missing_file_errors(tmp_path: Path) -> None:
    with pytest.raises(E.CheckpointFileError, match="directory"):
        ck.read_header(tmp_path)
    with pytest.raises(E.CheckpointFileError, match="no such file"):
        ck.read_header(tmp_path / "nope.safetensors")


# --- property tests ------------------------------------------------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda s: s != "__metadata__"
)
meta_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
metadata_st = st.one_of(st.none(), st.dictionaries(meta_text, meta_text, max_size=5))
shape_st = st.lists(st.integers(0, 4), max_size=3)
tensor_specs = st.lists(st.tuples(names, st.sampled_from(sorted(NP_DTYPES)), shape_st), max_size=6, unique_by=lambda t: t[0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=tensor_specs, metadata=metadata_st, seed=st.integers(0, 1000))
def test_official_files_round_trip_through_our_parser(specs, metadata, seed) -> None:
    from safetensors.numpy import save_file

    # safetensors 0.8.0 writes `{},"__metadata__":{}}` for no tensors + empty metadata, which it cannot read back.
    assume(specs or metadata != {})
    rng = np.random.default_rng(seed)
    arrays = {n: (rng.integers(0, 255, size=shape).astype(NP_DTYPES[d])) for n, d, shape in specs}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        save_file(arrays, str(path), metadata=metadata)
        h = ck.read_header(path)
        data = data_region(path)
    assert dict(h.metadata) == (metadata or {})
    assert {t.name: (t.dtype, t.shape) for t in h.tensors} == {n: (d, tuple(s)) for n, d, s in specs}
    for t in h.tensors:
        assert data[t.data_offsets[0] : t.data_offsets[1]] == arrays[t.name].tobytes()


@settings(max_examples=60, deadline=None)
@given(specs=tensor_specs, metadata=metadata_st, seed=st.integers(0, 1000), extra_pad=st.integers(0, 40))
def test_our_headers_round_trip_and_open_in_the_official_library(specs, metadata, seed, extra_pad) -> None:
    from safetensors import safe_open

    with tempfile.TemporaryDirectory() as d:
        ref = Path(d) / "ref.safetensors"
        blobs = write_reference(ref, specs, metadata, seed=seed)
        h = ck.read_header(ref)
        rebuilt = build_header_json(h.metadata, [h.tensor_map()[n] for n in h.header_order])
        n = (len(rebuilt) + 7) // 8 * 8 + extra_pad * 8
        padded = pad_header(rebuilt, n)
        data = b"".join(blobs[name] for name, _, _ in specs)
        again = parse_header_bytes(padded, 8 + n + len(data))
        assert again.tensors == h.tensors and dict(again.metadata) == dict(h.metadata)
        out = Path(d) / "ours.safetensors"
        out.write_bytes(struct.pack("<Q", n) + padded + data)
        with safe_open(str(out), "numpy") as f:
            assert (f.metadata() or {}) == (metadata or {})
            for name, _dtype, shape in specs:
                arr = f.get_tensor(name)
                assert tuple(arr.shape) == tuple(shape)
                assert arr.tobytes() == blobs[name]


def _official_accepts(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "numpy") as f:
            f.metadata()
            for k in f.keys():
                f.get_slice(k).get_shape()
        return True
    except Exception:
        return False


@st.composite
def mutated_files(draw):
    specs = draw(tensor_specs)
    metadata = draw(metadata_st)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.safetensors"
        write_reference(p, specs, metadata, seed=1)
        raw = bytearray(p.read_bytes())
    ops = draw(st.lists(st.tuples(st.sampled_from(["set", "insert", "delete", "truncate", "len"]),
                                  st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
    for op, pos, val in ops:
        if not raw:
            break
        i = pos % len(raw)
        if op == "set":
            raw[i] = val
        elif op == "insert":
            raw.insert(i, val)
        elif op == "delete":
            del raw[i]
        elif op == "truncate":
            del raw[i:]
        else:
            raw[0:8] = struct.pack("<Q", (struct.unpack("<Q", bytes(raw[0:8]).ljust(8, b"\0"))[0] + val - 128) % 2**64)
    return bytes(raw)


@settings(max_examples=300, deadline=None)
@given(blob=mutated_files())
def test_mutated_files_raise_only_checkpoint_errors_and_agree_with_official(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.safetensors"
        p.write_bytes(blob)
        try:
            ck.read_header(p)
            ours = True
        except ck.CheckpointError as e:
            ours = False
            kind = type(e)
        official = _official_accepts(p)
    if ours:
        assert official, "iga accepted a file the official library rejects"
    elif official:
        # Only our documented stricter rules may reject what the reference accepts.
        assert kind in (E.DuplicateKeyError, E.HeaderStartError, E.ShapeError), kind


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    assume(len(data) >= 0)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.safetensors"
        p.write_bytes(data)
        try:
            ck.read_header(p)
        except ck.CheckpointError:
            pass


# --- the fast duplicate-key proof never hides a duplicate, and never invents one ------------------------------------

_E = '{"dtype":"U8","shape":[2],"data_offsets":[0,2]}'


@pytest.mark.parametrize(
    "header",
    [
        '{"a" :' + _E + ',"a":' + _E + "}",  # whitespace before the colon of one copy
        '{"__metadata__":{"k" : "1","k":"2"}}',
        '{"__metadata__":{"x":"a\\":b","k":"1","k":"2"}}',  # an escaped \": in a string and a real duplicate
        '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":{"y":1,"y":2}}}',  # nested in an extra field
        '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":[{"y":1,"y":2}]}}',
    ],
)
def test_duplicates_found_in_every_form(tmp_path: Path, header: str) -> None:
    with pytest.raises(E.DuplicateKeyError):
        ck.read_header(raw_file(tmp_path / "d.safetensors", header, b"xx" if '"a"' in header else b""))


@pytest.mark.parametrize(
    "metadata",
    [
        {"json": '{"a": 1, "b": {"c": 2}}'},  # escaped quotes and colons inside a string
        {"date": "2024-01-05", "base": "sdxl_base_v1-0", "odd": "[-0]", "colon": '" : "'},
        {"k\n": "v\t", "ключ": "значение"},
    ],
)
def test_no_false_duplicates(tmp_path: Path, metadata: dict) -> None:
    from safetensors.numpy import save_file

    p = tmp_path / "m.safetensors"
    save_file({"t": np.zeros(3, np.float32)}, str(p), metadata=metadata)
    assert dict(ck.read_header(p).metadata) == metadata
