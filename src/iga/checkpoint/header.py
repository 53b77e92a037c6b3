"""Read and build safetensors headers without touching tensor data.

Layout: 8 bytes little-endian u64 ``N``; ``N`` bytes of UTF-8 JSON (``{"__metadata__": {str: str}, name: {"dtype",
"shape", "data_offsets"}, ...}``, right-padded with spaces); then the byte buffer, which the tensors cover exactly,
with no overlap, no hole and no trailing byte. ``data_offsets`` are relative to the start of the buffer (``8 + N``).

The parser treats the file as untrusted. It reads at most ``8 + min(N, file size)`` bytes, with ``N`` capped at
100,000,000 like the reference implementation, and it accepts a subset of what the official ``safetensors`` library
accepts (tested differentially), so anything it accepts, every other reader accepts too. It is stricter in three
places, on purpose: duplicate keys (the official reader silently keeps the last copy), a header that does not start
with ``{`` (A1111 and its forks assert the header starts with ``{"``), and a ``-0`` integer; also, at the edges of
the number range, integers of more than 4,300 digits and floats beyond +-1e308. Like the reference, it rejects
nesting deeper than 127 levels, checked before decoding so no input can make the decoder recurse deeper.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from types import MappingProxyType
from typing import Any, NamedTuple

from iga.checkpoint.errors import (
    CheckpointFileError,
    DataOffsetsError,
    DuplicateKeyError,
    HeaderEncodingError,
    HeaderStartError,
    HeaderSyntaxError,
    HeaderTooLargeError,
    HeaderTooSmallError,
    HeaderTruncatedError,
    InterruptedEditError,
    MetadataError,
    PickleFormatError,
    ShapeError,
    TensorEntryError,
    TensorSizeError,
    TrailingBytesError,
    UnknownDtypeError,
)

MAX_HEADER_SIZE = 100_000_000
"""Largest header length N the reference implementation accepts (decimal 100 MB)."""

METADATA_KEY = "__metadata__"

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
"""Bit size of every dtype of the safetensors format (0.8.0)."""

PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
"""File name suffixes of pickle-based checkpoints, which iga refuses to open."""

_U64_LIMIT = 1 << 64
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_TENSOR_FIELDS = ("dtype", "shape", "data_offsets")


class TensorInfo(NamedTuple):
    """One tensor entry: name, dtype, shape and its [begin, end) byte range relative to the data buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]
    extra: Mapping[str, Any] = _NO_EXTRA
    """Unknown fields of the entry, kept so a rewrite does not drop them (the official reader ignores them)."""

    @property
    def nbytes(self) -> int:
        """Size of the tensor data in bytes."""
        return self.data_offsets[1] - self.data_offsets[0]

    @property
    def numel(self) -> int:
        """Number of elements (1 for a 0-rank tensor)."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    def to_entry(self) -> dict[str, Any]:
        """The JSON object of this tensor in a header."""
        entry: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "data_offsets": list(self.data_offsets)}
        if self.extra:
            entry.update(self.extra)
        return entry


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    """Everything the header of a safetensors file says, plus where the data lives; no tensor bytes."""

    path: str | None
    header_len: int
    """N, the header length declared in the first 8 bytes (includes trailing padding)."""
    json_len: int
    """Length of the JSON text without its trailing whitespace; ``header_len - json_len`` is free slack."""
    tensors: tuple[TensorInfo, ...]
    """Tensors in file order (by data offset)."""
    header_order: tuple[str, ...]
    """Tensor names in the order the JSON header lists them."""
    metadata: Mapping[str, str]
    """The ``__metadata__`` map (empty when absent)."""
    has_metadata_key: bool
    file_size: int

    @property
    def data_start(self) -> int:
        """Absolute offset of the data buffer: 8 + N."""
        return 8 + self.header_len

    @property
    def data_len(self) -> int:
        """Length of the data buffer in bytes."""
        return self.file_size - self.data_start

    @property
    def slack(self) -> int:
        """Padding bytes after the JSON text, available for in-place edits."""
        return self.header_len - self.json_len

    def tensor_map(self) -> dict[str, TensorInfo]:
        """Tensors by name, in header order."""
        by_name = {t.name: t for t in self.tensors}
        return {name: by_name[name] for name in self.header_order}

    def dtype_summary(self) -> dict[str, dict[str, int]]:
        """Count and bytes per dtype, sorted by dtype name."""
        out: dict[str, dict[str, int]] = {}
        for t in self.tensors:
            s = out.setdefault(t.dtype, {"count": 0, "bytes": 0})
            s["count"] += 1
            s["bytes"] += t.nbytes
        return dict(sorted(out.items()))


# --- reading -------------------------------------------------------------------------------------------------------


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate the header of a safetensors file; cost depends on the header size only, not the file's."""
    p = os.fspath(path)
    _refuse_pickle_suffix(p)
    try:
        with open(p, "rb", buffering=0) as f:
            return read_header_from_file(f, p)
    except IsADirectoryError:
        raise CheckpointFileError(
            "is a directory, not a .safetensors file",
            path=p,
            hint="For a diffusers folder, inspect unet/diffusion_pytorch_model.safetensors; its recipe lives in "
            "<folder>/iga.json.",
        ) from None
    except FileNotFoundError:
        raise CheckpointFileError("no such file", path=p, hint="Check the path.") from None
    except PermissionError:
        raise CheckpointFileError("permission denied", path=p, hint="Check the file's permissions.") from None


def read_header_from_file(f: Any, path: str | None = None) -> SafetensorsHeader:
    """Read and validate the header from an open binary file object (positioned anywhere)."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    prefix = _read_exactly(f, 8)
    if len(prefix) < 8:
        raise HeaderTooSmallError(
            f"file is {size} bytes, shorter than the 8-byte header-length prefix of a safetensors file", path=path
        )
    n = struct.unpack("<Q", prefix)[0]
    sniff = _sniff_pickle(prefix)
    if sniff and (n > MAX_HEADER_SIZE or 8 + n > size or _peek(f, 8) != b"{"):
        raise PickleFormatError(f"this is a {sniff}, not a safetensors file (despite its name)", path=path)
    if n > MAX_HEADER_SIZE:
        raise HeaderTooLargeError(
            f"header length N={n} (bytes 0-7) exceeds the {MAX_HEADER_SIZE:,}-byte limit of the safetensors format",
            path=path,
        )
    if 8 + n > size:
        raise HeaderTruncatedError(
            f"header length N={n} (bytes 0-7) runs past the end of the {size}-byte file (the file is truncated)",
            path=path,
            hint="The download or copy was probably cut short; download it again.",
        )
    f.seek(8)
    raw = _read_exactly(f, n)
    try:
        return parse_header_bytes(raw, size, path=path)
    except Exception:
        from iga.checkpoint.journal import armed_journal

        jp = armed_journal(path) if path is not None else None
        if jp is not None:
            raise InterruptedEditError(
                f"the header is damaged and an interrupted iga header edit left its undo journal {jp}",
                path=path,
                hint="Run `iga recover PATH` (or iga.checkpoint.recover_interrupted_edit) to restore the previous "
                "header.",
            ) from None
        raise


def parse_header_bytes(raw: bytes, file_size: int, *, path: str | None = None) -> SafetensorsHeader:
    """Validate the N header bytes of a file of ``file_size`` bytes (N = len(raw)) and return the parsed header."""
    n = len(raw)
    if n > MAX_HEADER_SIZE:
        raise HeaderTooLargeError(f"header length N={n} exceeds the {MAX_HEADER_SIZE:,}-byte limit", path=path)
    if 8 + n > file_size:
        raise HeaderTruncatedError(f"header length N={n} runs past the end of the {file_size}-byte file", path=path)
    if raw[:1] != b"{":
        first = raw[:1].hex() or "end of header"
        raise HeaderStartError(
            f"header does not start with '{{' (first byte at offset 8 is 0x{first})",
            path=path,
            hint="Leading padding is not allowed (A1111 and its forks assert the header starts with '{\"'); "
            "re-export the file with safetensors.",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HeaderEncodingError(f"header is not valid UTF-8 at byte offset {8 + e.start}", path=path) from None
    _check_depth(raw, path)
    obj = _decode(text, path)
    if not isinstance(obj, dict):  # pragma: no cover - a text starting with '{' that json accepts is an object
        raise HeaderSyntaxError("header JSON is not an object", path=path)
    if "\\u" in text and _LONE_SURROGATE_ESCAPE.search(text):
        _check_no_lone_surrogates(obj, path)
    json_len = len(raw.rstrip(b" \t\r\n"))
    return _validate(obj, n, json_len, file_size, path)


def _decode(text: str, path: str | None) -> Any:
    """JSON -> Python with the format's rules: no duplicate keys, no NaN/Infinity, no ``-0`` integers.

    Fast path: the C decoder into plain dicts, then a proof that no key was lost to a duplicate: every key token in
    the text ends with ``"`` + optional whitespace + ``:``, so counting those sequences gives an upper bound on the
    number of keys written; if it equals the number of keys parsed, no key was written twice. Only when the count
    differs (a real duplicate, or ``\\":`` inside a string) or a ``-0`` may be present does the exact (slower) decoder
    with per-object duplicate checks run.
    """
    exact = "-0" in text and _has_minus_zero_literal(text)
    if not exact:
        try:
            obj = _FAST_DECODER.decode(text)
        except (json.JSONDecodeError, RecursionError, ValueError):
            exact = True  # let the exact decoder produce the precise error
        else:
            if isinstance(obj, dict) and _count_keys(obj) == _count_key_tokens(text):
                return obj
            exact = True
    try:
        return _DECODER.decode(text)
    except _DuplicateKey as e:
        raise DuplicateKeyError(
            f"header repeats the key {e.key!r} {e.where}",
            path=path,
            hint="The format forbids duplicate keys and readers disagree on which copy wins; re-export the file.",
        ) from None
    except json.JSONDecodeError as e:
        raise HeaderSyntaxError(
            f"header is not valid JSON: {e.msg} at character {e.pos} of the header (line {e.lineno}, column "
            f"{e.colno})",
            path=path,
        ) from None
    except RecursionError:
        raise HeaderSyntaxError("header JSON nests too deeply", path=path) from None
    except ValueError as e:  # e.g. NaN/Infinity, or an integer literal with thousands of digits
        raise HeaderSyntaxError(f"header is not valid JSON: {e}", path=path) from None


MAX_DEPTH = 127
"""Deepest nesting of arrays/objects (the top-level object counts as 1) the reference reader accepts. serde_json
starts a budget of 128 and fails when entering a level brings it to 0, so 127 levels pass. Measured against
safetensors 0.8.0: depth 127 opens, depth 128 fails with "recursion limit exceeded"."""


def _check_depth(raw: bytes, path: str | None) -> None:
    """Reject nesting deeper than ``MAX_DEPTH`` before any recursive code (json, repr, our tree walks) sees it.

    Rejecting what the reference reader rejects keeps iga's accepted set a subset of safetensors', and a bound far
    below Python's recursion limit means no RecursionError can escape later. Linear: C-speed bytes passes, with an
    exact count (numpy, imported only then) for headers the cheap proof cannot settle.
    """
    marks = _unescaped(raw).translate(None, _NOT_QUOTE_OR_BRACKET)
    if marks.count(b"[") + marks.count(b"{") <= MAX_DEPTH:
        return  # depth never exceeds the number of opening brackets
    brackets = _brackets_outside_strings(marks, raw)
    depth = _peel_depth(brackets)
    if depth is None:
        depth = _max_running_depth(brackets)
    if depth > MAX_DEPTH:
        raise HeaderSyntaxError(
            f"header JSON nests deeper than {MAX_DEPTH} levels, the limit of the safetensors reader", path=path
        )


def _unescaped(raw: bytes) -> bytes:
    """``raw`` without ``\\\\`` pairs, then without ``\\"``: what is left of escapes cannot end a string.

    ``raw`` is valid UTF-8, so every byte below 0x80 is the character itself. Pairs go left to right, as JSON reads
    escapes inside strings; outside strings a backslash is an error the decoder stops at, so nothing after it
    matters.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"")
        if b"\\" in raw:
            raw = raw.replace(b'\\"', b"")
    return raw


def _brackets_outside_strings(marks: bytes, raw: bytes) -> bytes:
    """The brackets of ``raw`` outside JSON strings, in order, as the decoder sees them up to where it may fail.

    ``marks`` holds the quotes and brackets of the unescaped text. Removing adjacent quote pairs in one left-to-right
    pass leaves no quote only if the pairs removed were exactly the strings and none held a bracket (the cheap,
    common case). Otherwise cut the strings out of ``raw`` with the JSON string grammar (an unterminated string
    stays, and the decoder fails there).
    """
    marks = marks.replace(b'""', b"")
    if b'"' not in marks:
        return marks
    return _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET)


def _peel_depth(brackets: bytes) -> int | None:
    """Depth of a properly nested, shallow bracket sequence (ordinary headers nest 3 deep), else ``None``.

    One ``replace`` removes only pairs adjacent before it runs, so each call lowers any pair's height by at most
    one: emptying the sequence in ``k`` calls proves depth <= ``k``. The small budget keeps this cheap on inputs it
    cannot settle (deep or malformed), which go to the exact count.
    """
    for calls in range(_PEEL_CALLS):
        if not brackets:
            return calls
        brackets = brackets.replace(b"[]" if calls % 2 == 0 else b"{}", b"")
    return None if brackets else _PEEL_CALLS


def _max_running_depth(brackets: bytes) -> int:
    """Highest count of open brackets over any prefix, counting any closer against any opener.

    Until the decoder fails, its stack depth is exactly this running count, so the maximum bounds how deep it can
    recurse on any input, and equals the nesting depth of valid JSON. Chunks keep memory small on a 100 MB header.
    """
    import numpy as np

    steps = brackets.translate(_OPEN_ONE_CLOSE_MINUS_ONE)
    deepest = level = 0
    for i in range(0, len(steps), _CHUNK):
        running = np.cumsum(np.frombuffer(steps, np.int8, count=min(_CHUNK, len(steps) - i), offset=i), dtype=np.int64)
        deepest = max(deepest, level + int(running.max()))
        level += int(running[-1])
    return deepest


_PEEL_CALLS = 8
_CHUNK = 1 << 22
_NOT_QUOTE_OR_BRACKET = bytes(c for c in range(256) if c not in b'"[]{}')
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_OPEN_ONE_CLOSE_MINUS_ONE = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _count_key_tokens(text: str) -> int:
    """Upper bound on key tokens: occurrences of ``":`` plus of ``"`` + whitespace + ``:``."""
    return text.count('":') + len(_WS_COLON.findall(text))


def _has_minus_zero_literal(text: str) -> bool:
    """Whether ``-0`` may appear as a number (after ``[``, ``,`` or ``:``) rather than inside a string like a date."""
    for m in _MINUS_ZERO_TAIL.finditer(text):
        j = m.start() - 1
        while j >= 0 and text[j] in " \t\r\n":
            j -= 1
        if j >= 0 and text[j] in "[,:":
            return True
    return False


def _count_keys(obj: dict[str, Any]) -> int:
    """A lower bound on the keys in all objects of a parsed header (exact unless a 3-key object nests objects).

    Undercounting is safe: it can only make the duplicate proof in ``_decode`` fail and fall back to the exact
    decoder. Skipping the nested scan of 3-key objects (every ordinary tensor entry) keeps this fast.
    """
    total = len(obj)
    for v in obj.values():
        if type(v) is dict:
            total += len(v)
            if len(v) != 3:
                total += _count_nested(v)
        elif type(v) is list:
            total += _count_nested(v)
    return total


def _count_nested(v: Any) -> int:
    """Keys in objects nested below ``v`` (not counting v's own keys)."""
    total = 0
    children = v.values() if type(v) is dict else v
    for x in children:
        if type(x) is dict:
            total += len(x) + _count_nested(x)
        elif type(x) is list:
            total += _count_nested(x)
    return total


def _validate(obj: dict[str, Any], n: int, json_len: int, file_size: int, path: str | None) -> SafetensorsHeader:
    has_meta = METADATA_KEY in obj
    meta_obj = obj.pop(METADATA_KEY, None)
    if meta_obj is None:
        metadata: dict[str, str] = {}
    elif not isinstance(meta_obj, dict):
        raise MetadataError(
            f"__metadata__ must be an object of strings, found {_json_type(meta_obj)}",
            path=path,
            hint="Re-save the metadata as {str: str} (JSON-encode structured values into strings).",
        )
    else:
        for k, v in meta_obj.items():
            if not isinstance(v, str):
                raise MetadataError(
                    f"__metadata__[{k!r}] is {_json_type(v)}, but the format allows strings only",
                    path=path,
                    hint="Re-save the metadata with that value JSON-encoded into a string.",
                )
        metadata = meta_obj

    tensors: list[TensorInfo] = []
    for name, entry in obj.items():
        tensors.append(_tensor_info(name, entry, path))

    data_len = file_size - 8 - n
    ordered = sorted(tensors, key=_by_offsets)  # stable: ties keep header order
    expected = 0
    for t in ordered:
        begin, end = t.data_offsets
        if begin != expected:
            what = "overlaps the previous tensor" if begin < expected else f"leaves a hole of {begin - expected} bytes"
            raise DataOffsetsError(
                f"tensor {t.name!r} data_offsets [{begin}, {end}] {what} (expected it to start at {expected}); "
                "tensors must cover the data buffer contiguously",
                path=path,
            )
        if end > data_len:
            raise DataOffsetsError(
                f"tensor {t.name!r} data_offsets [{begin}, {end}] end past the data buffer, which is {data_len} "
                f"bytes (file size {file_size}, data starts at {8 + n})",
                path=path,
                hint="The file is truncated or corrupt; download it again.",
            )
        expected = end
    if expected != data_len:
        raise TrailingBytesError(
            f"{data_len - expected} bytes follow the last tensor (data ends at offset {8 + n + expected}, file size "
            f"{file_size}); the format forbids trailing bytes",
            path=path,
            hint="Something appended data to the file; re-download it or re-export it with safetensors.",
        )
    return SafetensorsHeader(
        path=path,
        header_len=n,
        json_len=json_len,
        tensors=tuple(ordered),
        header_order=tuple(t.name for t in tensors),
        metadata=metadata,
        has_metadata_key=has_meta,
        file_size=file_size,
    )


_by_offsets = itemgetter(3)
_tuple_new = tuple.__new__  # builds a TensorInfo without the Python-level NamedTuple constructor (hot path)


def _tensor_info(name: str, entry: Any, path: str | None) -> TensorInfo:
    if type(entry) is not dict:
        raise TensorEntryError(
            f"entry of tensor {name!r} is {_json_type(entry)}, expected an object with dtype, shape, data_offsets",
            path=path,
        )
    try:
        dtype = entry["dtype"]
        shape = entry["shape"]
        offsets = entry["data_offsets"]
    except KeyError as e:
        raise TensorEntryError(f"tensor {name!r} has no {e.args[0]!r} field", path=path) from None
    bits = DTYPE_BITS.get(dtype) if type(dtype) is str else None
    if bits is None:
        raise UnknownDtypeError(
            f"tensor {name!r} has unknown dtype {dtype!r}; known dtypes: {', '.join(DTYPE_BITS)}",
            path=path,
            hint="The file may come from a newer safetensors version; upgrade iga, or re-export with a known dtype.",
        )
    if type(shape) is not list:
        raise ShapeError(f"tensor {name!r} has shape {shape!r}, expected a list of non-negative integers", path=path)
    numel = 1
    for d in shape:
        if type(d) is not int or d < 0 or d >= _U64_LIMIT:
            raise ShapeError(
                f"tensor {name!r} has shape {shape!r}, expected a list of non-negative integers", path=path
            )
        numel *= d
        if numel >= _U64_LIMIT:
            raise ShapeError(f"tensor {name!r} shape {shape!r} has more than 2**64 elements", path=path)
    if type(offsets) is not list or len(offsets) != 2:
        raise TensorEntryError(
            f"tensor {name!r} has data_offsets {offsets!r}, expected [begin, end] with non-negative integers",
            path=path,
        )
    begin, end = offsets
    if type(begin) is not int or type(end) is not int or begin < 0 or end >= _U64_LIMIT or begin >= _U64_LIMIT:
        raise TensorEntryError(
            f"tensor {name!r} has data_offsets {offsets!r}, expected [begin, end] with non-negative integers",
            path=path,
        )
    if end < begin:
        raise DataOffsetsError(f"tensor {name!r} data_offsets [{begin}, {end}] end before they begin", path=path)
    total_bits = numel * bits
    if total_bits & 7:
        raise TensorSizeError(
            f"tensor {name!r} ({dtype}, shape {shape}) does not fill a whole number of bytes", path=path
        )
    if end - begin != total_bits >> 3:
        raise TensorSizeError(
            f"tensor {name!r} data_offsets [{begin}, {end}] span {end - begin} bytes, but {dtype} with shape "
            f"{shape} needs {total_bits >> 3}",
            path=path,
        )
    if len(entry) == 3:
        return _tuple_new(TensorInfo, (name, dtype, tuple(shape), (begin, end), _NO_EXTRA))
    extra = {k: v for k, v in entry.items() if k not in _TENSOR_FIELDS}
    return TensorInfo(name, dtype, tuple(shape), (begin, end), extra)


class _DuplicateKey(ValueError):
    def __init__(self, key: str, where: str) -> None:
        super().__init__(key)
        self.key = key
        self.where = where


class _NegativeInt(int):
    """An integer literal written with a minus sign (``-0`` included): never a valid shape or offset."""


def _parse_int(s: str) -> int:
    return _NegativeInt(s) if s[:1] == "-" else int(s)


def _parse_float(s: str) -> float:
    """Reject a number the reference reader cannot hold: serde_json fails on literals beyond the f64 range (1e999),
    where Python would read infinity. The margin below f64's maximum keeps clear of rounding differences at the
    edge; stricter is safe (iga accepts a subset)."""
    value = float(s)
    if not -1e308 <= value <= 1e308:
        raise ValueError(f"number {s[:40]} is out of range")
    return value


def _reject_constant(s: str) -> Any:
    raise ValueError(f"{s} is not valid JSON")


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                if k == METADATA_KEY:
                    where = "at the top level"
                elif all(isinstance(v, str) for _, v in pairs):
                    where = "inside __metadata__ (or another object of strings)"
                elif k in _TENSOR_FIELDS:
                    where = "inside a tensor entry"
                else:
                    where = "(a tensor name listed twice, or a repeated key in a nested object)"
                raise _DuplicateKey(k, where)
            seen.add(k)
    return d


def _check_no_lone_surrogates(obj: Any, path: str | None) -> None:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HeaderSyntaxError(
            "header contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not valid Unicode",
            path=path,
        ) from None


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_no_duplicates,
    parse_constant=_reject_constant,
    parse_int=_parse_int,
    parse_float=_parse_float,
)
_FAST_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)
_MINUS_ZERO_TAIL = re.compile(r"-0(?![0-9.eE])")
_WS_COLON = re.compile(r'"[ \t\r\n]+:')


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({json.dumps(v)})"
    if isinstance(v, int | float):
        return f"a number ({v!r})"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _read_exactly(f: Any, n: int) -> bytes:
    chunks = []
    remaining = n
    while remaining > 0:
        b = f.read(remaining)
        if not b:
            break
        chunks.append(b)
        remaining -= len(b)
    return b"".join(chunks)


def _peek(f: Any, offset: int) -> bytes:
    f.seek(offset)
    return f.read(1)


def _sniff_pickle(prefix: bytes) -> str | None:
    if prefix[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip archive (a PyTorch pickle checkpoint)"
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "Python pickle"
    return None


def _refuse_pickle_suffix(path: str) -> None:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in PICKLE_SUFFIXES:
        raise PickleFormatError(f"{suffix} files are pickle-based", path=path)


# --- building ------------------------------------------------------------------------------------------------------


def build_header_json(metadata: Mapping[str, str] | None, tensors: Iterable[TensorInfo]) -> bytes:
    """Compact JSON header: ``__metadata__`` first (omitted when empty, unless there are no tensors), then tensors."""
    obj: dict[str, Any] = {}
    tensor_list = list(tensors)
    if metadata or not tensor_list:
        for k, v in (metadata or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise MetadataError(
                    f"metadata key {k!r} has a {type(v).__name__} value; safetensors metadata holds strings only",
                    hint="JSON-encode structured values into strings.",
                )
        obj[METADATA_KEY] = dict(metadata or {})
    for t in tensor_list:
        obj[t.name] = t.to_entry()
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def pad_header(json_bytes: bytes, header_len: int) -> bytes:
    """Right-pad header JSON with spaces to exactly ``header_len`` bytes."""
    if len(json_bytes) > header_len:
        raise ValueError(f"header JSON is {len(json_bytes)} bytes, longer than {header_len}")
    return json_bytes + b" " * (header_len - len(json_bytes))


def round_up8(n: int) -> int:
    """Smallest multiple of 8 that is >= n."""
    return (n + 7) & ~7
