"""Hostile-input reliability of the safetensors header reader: a seeded fuzzer and a differential check.

The fuzzer starts from valid files and damages them the ways real corruption and deliberate attacks do (byte flips,
truncations, deep nesting, huge lengths and numbers, bad UTF-8, surrogate escapes, duplicate keys, bad or
overlapping offsets). Every outcome must be a parsed header or one of iga's typed errors; and whatever iga accepts,
the official ``safetensors`` library must accept too (iga reads a subset of the format).

bench/bench_fuzz.py runs the same generator at 100,000 inputs.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import iga.checkpoint as ck
from iga.checkpoint.header import MAX_DEPTH, read_header_from_file

# --- generating inputs ---------------------------------------------------------------------------------------------

_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "I8": 1, "U8": 1, "F64": 8, "BOOL": 1}
_HUGE_NUMBERS = ("18446744073709551616", "18446744073709551615", "9" * 30, "9" * 5000, "1e999", "-1e999", "1e308",
                 "1.7976931348623157e308", "-0", "-1", "1.0", "0e0", "123456789012345678901234567890")
_BAD_UTF8 = (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80", b"\xf0\x9f\x98")
_SURROGATES = ("\\ud800", "\\udc00", "\\ud83d\\ude00", "\\uD800\\u0041", "\\udbff\\udfff", "\\ud83d", "\\u0000")


def valid_file(rng: random.Random) -> tuple[dict, bytes]:
    """A valid header (as a dict, mutations edit it) and its data buffer."""
    header: dict = {}
    if rng.random() < 0.6:
        header["__metadata__"] = {f"k{i}": rng.choice(["v", "", "ü ✓", '{"a": [1]}', "[[["]) for i in range(3)}
    offset = 0
    for i in range(rng.randint(0, 5)):
        dtype = rng.choice(list(_DTYPES))
        shape = [rng.randint(0, 4) for _ in range(rng.randint(0, 3))]
        n = _DTYPES[dtype]
        for d in shape:
            n *= d
        header[f"layer.{i}.weight"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    return header, bytes(rng.getrandbits(8) for _ in range(offset))


def encode(header: dict | str | bytes, data: bytes, *, pad: int = 0, n: int | None = None) -> bytes:
    """The whole file: 8-byte length, header JSON (space-padded), data."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    text = header.encode("utf-8", "surrogatepass") if isinstance(header, str) else header
    text += b" " * pad
    return struct.pack("<Q", len(text) if n is None else n) + text + data


def _tensor_names(header: dict) -> list[str]:
    return [k for k in header if k != "__metadata__"]


def _nest(rng: random.Random, depth: int, *, closed: bool = True) -> str:
    """``depth`` levels of arrays/objects around a leaf; ``closed=False`` leaves them unclosed."""
    kinds = [rng.choice("[{") for _ in range(depth)]
    leaf = rng.choice(['1', '"x"', '"\\ud83d\\ude00"', "[]", "{}", '"[{"'])
    opening = "".join("[" if k == "[" else '{"a":' for k in kinds)
    closing = "".join("]" if k == "[" else "}" for k in reversed(kinds)) if closed else ""
    return opening + leaf + closing


def _deep_depth(rng: random.Random) -> int:
    """Depths around the reference limit (entries sit 2 levels deep), around Python's recursion limit (where the
    decoder succeeds but a later recursive walk fails, depending on how deep the caller's stack already is), and far
    past it."""
    near = MAX_DEPTH - 2
    return rng.choice([rng.randint(1, 200), near - 1, near, near + 1, near + 2, rng.randint(850, 1000),
                       rng.randint(850, 1000), 5000, 100_000])


# Structural mutations edit the header dict (or its text) and return (header text, data, pad, n).


def mut_deep_extra(rng: random.Random, header: dict, data: bytes) -> tuple:
    names = _tensor_names(header)
    text = json.dumps(header, separators=(",", ":"))
    nested = _nest(rng, _deep_depth(rng), closed=rng.random() < 0.9)
    if names and rng.random() < 0.8:
        target = json.dumps(rng.choice(names)) + ":{"
        text = text.replace(target, target + '"x":' + nested + ",", 1)
    else:
        text = "{" + '"deep":' + nested + ("," if len(text) > 2 else "") + text[1:]
    return text, data, 0, None


def mut_huge_number(rng: random.Random, header: dict, data: bytes) -> tuple:
    names = _tensor_names(header)
    number = rng.choice(_HUGE_NUMBERS)
    if not names:
        return json.dumps(header)[:-1] + ('"n":' + number) + "}", data, 0, None
    entry = header[rng.choice(names)]
    where = rng.choice(["shape", "begin", "end", "extra"])
    text_entry = json.dumps(entry, separators=(",", ":"))
    if where == "extra":
        new = text_entry[:-1] + ',"x":' + number + "}"
    elif where == "shape":
        new = text_entry.replace('"shape":[', '"shape":[' + number + ",", 1)
    else:
        begin, end = entry["data_offsets"]
        new = text_entry.replace(f"[{begin},{end}]", f"[{number},{end}]" if where == "begin" else f"[{begin},{number}]")
    text = json.dumps(header, separators=(",", ":")).replace(text_entry, new, 1)
    return text, data, 0, None


def mut_huge_length(rng: random.Random, header: dict, data: bytes) -> tuple:
    text = json.dumps(header, separators=(",", ":"))
    size = len(text) + len(data)
    n = rng.choice([2**64 - 1, 2**63, 100_000_001, 100_000_000, size, size + 1, len(text) - 1, 0, 1, 7])
    return text, data, 0, n


def mut_bad_utf8(rng: random.Random, header: dict, data: bytes) -> tuple:
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    quotes = [i for i, b in enumerate(raw) if b == 0x22] or [len(raw)]
    i = rng.choice(quotes)
    return raw[:i] + rng.choice(_BAD_UTF8) + raw[i:], data, 0, None


def mut_surrogate(rng: random.Random, header: dict, data: bytes) -> tuple:
    text = json.dumps(header, separators=(",", ":"))
    quotes = [i for i, c in enumerate(text) if c == '"']
    if not quotes:
        return text, data, 0, None
    i = rng.choice(quotes[1::2]) if len(quotes) > 1 else quotes[0]  # just before a closing quote
    return text[:i] + rng.choice(_SURROGATES) + text[i:], data, 0, None


def mut_duplicate_key(rng: random.Random, header: dict, data: bytes) -> tuple:
    text = json.dumps(header, separators=(",", ":"))
    names = _tensor_names(header)
    choice = rng.random()
    if names and choice < 0.4:
        name = rng.choice(names)
        piece = json.dumps(name) + ":" + json.dumps(header[name], separators=(",", ":"))
        return "{" + piece + "," + text[1:], data, 0, None
    if names and choice < 0.8:
        field = rng.choice(['"dtype":"F32"', '"shape":[]', '"data_offsets":[0,0]'])
        target = json.dumps(rng.choice(names)) + ":{"
        spacer = rng.choice(["", " "])  # '" :' defeats the fast duplicate proof and exercises the exact decoder
        return text.replace(target, target + field.replace('":', '"' + spacer + ":", 1) + ",", 1), data, 0, None
    return '{"__metadata__":{},' + text[1:], data, 0, None


def mut_bad_offsets(rng: random.Random, header: dict, data: bytes) -> tuple:
    names = _tensor_names(header)
    if names:
        entry = header[rng.choice(names)]
        begin, end = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([
            [begin + 1, end + 1], [begin, end + 1], [end, begin], [begin - 1, end], [begin], [begin, end, end],
            [str(begin), end], [float(begin), end], [begin, None], {"b": begin}, [begin, end - 1],
        ])
    return json.dumps(header, separators=(",", ":")), data, 0, None


def mut_overlap(rng: random.Random, header: dict, data: bytes) -> tuple:
    names = _tensor_names(header)
    if len(names) >= 2:
        a, b = rng.sample(names, 2)
        header[b] = dict(header[b], data_offsets=list(header[a]["data_offsets"]), dtype=header[a]["dtype"],
                         shape=list(header[a]["shape"]))
    return json.dumps(header, separators=(",", ":")), data, 0, None


def mut_benign(rng: random.Random, header: dict, data: bytes) -> tuple:
    """Changes every reader must accept (padding, whitespace, extra fields, escapes): keeps the differential honest."""
    text = json.dumps(header, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5)
    names = _tensor_names(header)
    if names and rng.random() < 0.5:
        target = json.dumps(rng.choice(names)) + ": {"
        extra = rng.choice(['"x":' + _nest(rng, rng.randint(0, MAX_DEPTH - 3)), '"x":-0', '"x":1e-999',
                            '"x":"\\ud83d\\ude00"', '"x":123456789012345678901234567890', '"x":null'])
        text = text.replace(target, target + extra + ",", 1)
    return text, data, rng.choice([0, 1, 7, 64]), None


STRUCTURAL: tuple[Callable[..., tuple], ...] = (
    mut_deep_extra, mut_huge_number, mut_huge_length, mut_bad_utf8, mut_surrogate, mut_duplicate_key,
    mut_bad_offsets, mut_overlap, mut_benign,
)


def flip_bytes(rng: random.Random, blob: bytes) -> bytes:
    raw = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        if raw:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(256)
    return bytes(raw)


def truncate(rng: random.Random, blob: bytes) -> bytes:
    return blob[: rng.randrange(len(blob) + 1)]


def insert_bytes(rng: random.Random, blob: bytes) -> bytes:
    i = rng.randrange(8, len(blob) + 1) if len(blob) > 8 else len(blob)
    piece = rng.choice([b"[", b"]", b"{", b"}", b'"', b"\\", b",", b":", b"\x00", b"-0", b"1e999", b'\\u'])
    return blob[:i] + piece * rng.choice([1, 1, 2, 200]) + blob[i:]


BYTE_LEVEL: tuple[Callable[[random.Random, bytes], bytes], ...] = (flip_bytes, truncate, insert_bytes)


def hostile_files(seed: int, count: int) -> Iterator[bytes]:
    """``count`` whole files, deterministic for a seed: one structural mutation, then sometimes byte-level damage."""
    rng = random.Random(seed)
    for _ in range(count):
        header, data = valid_file(rng)
        text, data, pad, n = rng.choice(STRUCTURAL)(rng, header, data)
        blob = encode(text, data, pad=pad, n=n)
        if rng.random() < 0.3:
            blob = rng.choice(BYTE_LEVEL)(rng, blob)
        yield blob


# --- running inputs ------------------------------------------------------------------------------------------------


class Scratch:
    """One in-memory file reused for every input: the real read path (fstat, seek, read) without disk writes."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("iga-fuzz")
        self.file = open(self.fd, "r+b", buffering=0)  # noqa: SIM115 - closed in close()
        self.path = f"/proc/self/fd/{self.fd}"

    def load(self, blob: bytes) -> None:
        self.file.seek(0)
        self.file.truncate(0)
        self.file.write(blob)

    def close(self) -> None:
        self.file.close()


def iga_outcome(scratch: Scratch) -> str:
    """``parsed``, the name of iga's typed error, or ``other:<exception>`` (a bug)."""
    try:
        read_header_from_file(scratch.file)
    except ck.CheckpointError as e:
        return type(e).__name__
    except Exception as e:  # noqa: BLE001 - anything else is what this probe hunts for
        return f"other:{type(e).__name__}"
    return "parsed"


def official_accepts(path: str) -> bool:
    """Whether safetensors opens the file and lists its keys and metadata."""
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            list(f.keys())
            f.metadata()
    except BaseException as e:  # noqa: BLE001 - its Rust panics surface as BaseException subclasses
        if isinstance(e, KeyboardInterrupt):
            raise
        return False
    return True


def run(seed: int, count: int, *, differential_every: int = 0) -> tuple[Counter, Counter]:
    """Outcome counts, and differential counts on every ``differential_every``-th input (0: none)."""
    outcomes: Counter = Counter()
    differential: Counter = Counter()
    scratch = Scratch()
    try:
        for i, blob in enumerate(hostile_files(seed, count)):
            scratch.load(blob)
            outcome = iga_outcome(scratch)
            outcomes[outcome] += 1
            if differential_every and i % differential_every == 0:
                differential[_agreement(outcome, official_accepts(scratch.path))] += 1
    finally:
        scratch.close()
    return outcomes, differential


IGA_ACCEPTS_OFFICIAL_REJECTS = "iga accepts, safetensors rejects"


def _agreement(outcome: str, official: bool) -> str:
    """Differential bucket; iga-only rejections name their error, so each can be checked against the documented
    stricter rules."""
    if outcome == "parsed":
        return "iga accepts, safetensors accepts" if official else IGA_ACCEPTS_OFFICIAL_REJECTS
    return f"iga rejects ({outcome}), safetensors accepts" if official else "iga rejects, safetensors rejects"


# --- tests ---------------------------------------------------------------------------------------------------------


def test_every_hostile_header_ends_in_a_parsed_header_or_a_typed_error() -> None:
    outcomes, _ = run(seed=7, count=5000)
    others = {k: v for k, v in outcomes.items() if k.startswith("other:")}
    assert not others, others
    assert outcomes["parsed"] > 250, outcomes  # the generator must keep valid files in the mix
    assert len(outcomes) >= 8, outcomes  # and reach many distinct rejections


def test_whatever_iga_accepts_the_official_library_accepts_too() -> None:
    _, differential = run(seed=11, count=600, differential_every=1)
    assert differential[IGA_ACCEPTS_OFFICIAL_REJECTS] == 0, differential
    assert differential["iga accepts, safetensors accepts"] >= 60, differential  # not vacuous
    stricter = {k for k in differential if k.startswith("iga rejects (")}
    # only the documented stricter rules: duplicate keys, and numbers near the f64 limit (HeaderSyntaxError)
    assert stricter <= {"iga rejects (DuplicateKeyError), safetensors accepts",
                        "iga rejects (HeaderSyntaxError), safetensors accepts"}, differential


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH])
def test_nesting_up_to_the_reference_limit_is_read(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.safetensors"
    path.write_bytes(encode(_entry_nested_to(depth), b""))
    assert ck.read_header(path).tensors[0].extra
    assert official_accepts(str(path))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 976, 100_000])
@pytest.mark.parametrize("leaf", ["1", '"\\ud83d\\ude00"', '"\\ud800"'])
def test_nesting_past_the_reference_limit_is_a_syntax_error_never_a_recursion_error(
    tmp_path: Path, depth: int, leaf: str
) -> None:
    path = tmp_path / "deep.safetensors"
    path.write_bytes(encode(_entry_nested_to(depth, leaf), b""))
    with pytest.raises(ck.HeaderSyntaxError, match="nests deeper"):
        ck.read_header(path)
    assert not official_accepts(str(path))


@pytest.mark.parametrize("container", ["[", '{"a":'])
@pytest.mark.parametrize("leaf", ["1", '"\\ud83d\\ude00"'])
def test_no_depth_around_the_recursion_limit_lets_a_recursion_error_escape(container: str, leaf: str) -> None:
    # The old failure sat in a window of a few levels where the decoder still succeeds but a later recursive walk
    # does not; where that window lies depends on how deep the caller's stack already is, so sweep both.
    scratch = Scratch()
    outcomes: Counter = Counter()
    try:
        for depth in range(850, 1000, 3):
            scratch.load(encode(_entry_nested_to(depth, leaf, container), b""))
            for extra_frames in range(0, 120, 7):
                outcomes[_with_frames(extra_frames, lambda: iga_outcome(scratch))] += 1
    finally:
        scratch.close()
    assert set(outcomes) == {"HeaderSyntaxError"}, outcomes


def _with_frames(count: int, fn: Callable[[], str]) -> str:
    """``fn()`` called ``count`` Python frames deeper than here."""
    return fn() if count == 0 else _with_frames(count - 1, fn)


@pytest.mark.parametrize("opening", ["[", '{"a":', '["]",', '["\\\\\\"[",'])
def test_unclosed_deep_nesting_is_a_syntax_error(tmp_path: Path, opening: str) -> None:
    path = tmp_path / "open.safetensors"
    path.write_bytes(encode('{"t":' + opening * 50_000, b""))
    with pytest.raises(ck.HeaderSyntaxError):
        ck.read_header(path)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "0.1e310"])
def test_a_number_beyond_the_float_range_is_rejected_like_the_reference(tmp_path: Path, number: str) -> None:
    path = tmp_path / "inf.safetensors"
    path.write_bytes(encode('{"t":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":' + number + "}}", b""))
    with pytest.raises(ck.HeaderSyntaxError, match="out of range"):
        ck.read_header(path)
    assert not official_accepts(str(path))


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    brackets = "[" * 500 + "{" * 500 + '\\"' + "]" * 3
    header = {"__metadata__": {"a": brackets}, "t": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}
    path = tmp_path / "strings.safetensors"
    path.write_bytes(encode(json.dumps(header), b""))
    assert ck.read_header(path).metadata["a"] == json.loads(json.dumps(brackets))


def _entry_nested_to(depth: int, leaf: str = "1", container: str = "[") -> str:
    """A one-tensor header whose extra field brings the total nesting (top-level object = 1) to ``depth``."""
    inner = depth - 2  # the top-level object and the tensor entry
    closing = "]" if container == "[" else "}"
    entry = '{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":'
    return '{"t":' + entry + container * inner + leaf + closing * inner + "}}"
