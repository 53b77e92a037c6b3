"""PNG text chunks: write ``parameters`` + ``iga_metadata`` with Pillow, read them back with our own parser.

Reading does not use Pillow: images come from strangers, so the chunk walk is ours, with every size checked
before anything is read or inflated. Chunks that are not text are skipped with a seek, so memory and bytes read
stay bounded by the text limits below whatever the file size.

Limits (each breach is a ``ProvenanceError`` naming the chunk):
  - one text chunk: at most ``MAX_TEXT_CHUNK`` stored bytes and ``MAX_TEXT_INFLATED`` bytes after inflating;
  - all text chunks together: ``MAX_TEXT_TOTAL`` bytes stored and inflated;
  - at most ``MAX_CHUNKS`` chunks; an eXIf chunk at most ``MAX_EXIF_CHUNK`` bytes.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from iga.provenance.errors import ProvenanceError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_CHUNK = 8 * 1024 * 1024
MAX_TEXT_INFLATED = 8 * 1024 * 1024
MAX_TEXT_TOTAL = 32 * 1024 * 1024
MAX_EXIF_CHUNK = 8 * 1024 * 1024
MAX_CHUNKS = 1_000_000
_TEXT_TYPES = {b"tEXt", b"zTXt", b"iTXt"}

Source = str | os.PathLike[str] | bytes | IO[bytes]


@dataclass
class PngText:
    """What the PNG reader found: decoded text chunks and the image size."""

    texts: dict[str, str] = field(default_factory=dict)
    chunk_types: dict[str, str] = field(default_factory=dict)  # keyword -> "tEXt" | "zTXt" | "iTXt"
    skipped_keys: list[str] = field(default_factory=list)  # text keywords present but not decoded
    width: int = 0
    height: int = 0
    exif: bytes | None = None  # the eXIf chunk, if any (raw TIFF bytes)
    warnings: list[str] = field(default_factory=list)


@contextmanager
def open_source(source: Source) -> Iterator[IO[bytes]]:
    """A seekable binary stream for a path, bytes, or an already open binary file (left open)."""
    import io

    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        try:
            f = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ProvenanceError(f"cannot open {os.fspath(source)!r}: {exc.strerror or exc}") from exc
        try:
            yield f
        finally:
            f.close()
    else:
        yield source


def _stream_size(f: IO[bytes]) -> int:
    here = f.tell()
    end = f.seek(0, os.SEEK_END)
    f.seek(here)
    return end


def inflate_bounded(data: bytes, limit: int, where: str, too_big: str | None = None) -> bytes:
    """zlib-inflate at most ``limit`` bytes; a larger output is refused (``too_big`` overrides the message)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ProvenanceError(f"{where}: corrupt compressed data ({exc})") from exc
    if len(out) > limit or d.unconsumed_tail:
        raise ProvenanceError(too_big or f"{where}: inflates to more than {limit} bytes; refusing (a decompression "
                              "bomb, or text far larger than any generation metadata)")
    if not d.eof:
        raise ProvenanceError(f"{where}: compressed data is truncated")
    return out


def _decode_latin1_text(raw: bytes) -> str:
    # The PNG spec says Latin-1, but several tools put UTF-8 in tEXt; valid UTF-8 is almost never
    # accidental Latin-1, so prefer it.
    if raw.isascii():
        return raw.decode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _keyword(data: bytes, ctype: str, offset: int) -> tuple[str, int]:
    nul = data.find(b"\0", 0, 80)
    if nul < 1:
        raise ProvenanceError(f"{ctype} chunk at byte {offset}: malformed keyword (must be 1-79 bytes then NUL)")
    return data[:nul].decode("latin-1"), nul + 1


class _Budget:
    def __init__(self) -> None:
        self.stored = 0
        self.inflated = 0

    def inflate_limit(self, where: str) -> tuple[int, str, str | None]:
        """(limit, where, message) for inflating one chunk: the per-chunk cap or what is left of the total."""
        left = MAX_TEXT_TOTAL - self.inflated
        if left < MAX_TEXT_INFLATED:
            return left, where, f"{where}: text chunks together exceed {MAX_TEXT_TOTAL} bytes; refusing"
        return MAX_TEXT_INFLATED, where, None

    def take_inflated(self, n: int, where: str) -> None:
        self.inflated += n
        if self.inflated > MAX_TEXT_TOTAL:
            raise ProvenanceError(f"{where}: text chunks together exceed {MAX_TEXT_TOTAL} bytes; refusing")


def _decode_text_chunk(ctype: str, data: bytes, offset: int, budget: _Budget) -> tuple[str, str]:
    key, pos = _keyword(data, ctype, offset)
    where = f"{ctype} chunk {key!r}"
    if ctype == "tEXt":
        text = _decode_latin1_text(data[pos:])
        budget.take_inflated(len(data) - pos, where)
        return key, text
    if ctype == "zTXt":
        if pos >= len(data) or data[pos] != 0:
            raise ProvenanceError(f"{where}: unknown compression method (only 0 = zlib exists)")
        raw = inflate_bounded(data[pos + 1:], *budget.inflate_limit(where))
        budget.take_inflated(len(raw), where)
        return key, _decode_latin1_text(raw)
    # iTXt: keyword NUL, compression flag, method, language NUL, translated keyword NUL, UTF-8 text
    if pos + 2 > len(data):
        raise ProvenanceError(f"{where}: truncated header")
    flag, method = data[pos], data[pos + 1]
    pos += 2
    lang_end = data.find(b"\0", pos)
    tkey_end = data.find(b"\0", lang_end + 1) if lang_end >= 0 else -1
    if lang_end < 0 or tkey_end < 0:
        raise ProvenanceError(f"{where}: malformed header (language tag and translated keyword must end in NUL)")
    body = data[tkey_end + 1:]
    if flag == 1:
        if method != 0:
            raise ProvenanceError(f"{where}: unknown compression method {method}")
        body = inflate_bounded(body, *budget.inflate_limit(where))
    elif flag != 0:
        raise ProvenanceError(f"{where}: compression flag must be 0 or 1, found {flag}")
    budget.take_inflated(len(body), where)
    try:
        return key, body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProvenanceError(f"{where}: text is not valid UTF-8 (byte {exc.start}); the chunk is corrupt") from exc


def read_png_text(source: Source, keys: Collection[str] | None = None, *, check_crc: bool = True) -> PngText:
    """Read a PNG's text chunks defensively.

    ``keys``: decode only these keywords (others are listed in ``skipped_keys`` and never inflated); None decodes
    all. A duplicate keyword keeps the first occurrence and adds a warning. Raises ``ProvenanceError`` for a
    file that is not a PNG, is truncated or corrupt, or breaks a size limit.
    """
    result = PngText()
    budget = _Budget()
    with open_source(source) as f:
        size = _stream_size(f)
        start = f.tell()
        if f.read(8) != PNG_SIGNATURE:
            raise ProvenanceError("not a PNG file (bad signature)")
        count = 0
        while True:
            offset = f.tell() - start
            header = f.read(8)
            if len(header) < 8:
                raise ProvenanceError(f"truncated PNG: file ends at byte {offset} before the IEND chunk")
            length, raw_type = struct.unpack(">I4s", header)
            if not raw_type.isalpha() or not raw_type.isascii():
                raise ProvenanceError(f"corrupt PNG: invalid chunk type {raw_type!r} at byte {offset}")
            ctype = raw_type.decode("ascii")
            if length > 0x7FFFFFFF:
                raise ProvenanceError(f"corrupt PNG: {ctype} chunk at byte {offset} declares {length} bytes "
                                      "(the PNG limit is 2^31-1)")
            count += 1
            if count > MAX_CHUNKS:
                raise ProvenanceError(f"PNG has more than {MAX_CHUNKS} chunks; refusing")
            if count == 1 and raw_type != b"IHDR":
                raise ProvenanceError(f"corrupt PNG: first chunk is {ctype}, not IHDR")
            remaining = size - f.tell()
            if length + 4 > remaining:
                raise ProvenanceError(f"truncated PNG: {ctype} chunk at byte {offset} declares {length} bytes "
                                      f"but only {max(remaining - 4, 0)} remain")
            wanted = raw_type in (b"IHDR", b"eXIf", b"IEND") or raw_type in _TEXT_TYPES
            if raw_type in _TEXT_TYPES:
                if length > MAX_TEXT_CHUNK:
                    raise ProvenanceError(f"{ctype} chunk at byte {offset} is {length} bytes (limit {MAX_TEXT_CHUNK}); "
                                          "refusing an oversized text chunk")
                if keys is not None:
                    # peek at the keyword only, so unwanted chunks are never inflated
                    peek = f.read(min(length, 80))
                    nul = peek.find(b"\0")
                    key = peek[:nul].decode("latin-1") if nul > 0 else None
                    f.seek(-len(peek), os.SEEK_CUR)
                    if key not in keys:
                        wanted = False
                        if key:
                            result.skipped_keys.append(key)
                if wanted:
                    budget.stored += length
                    if budget.stored > MAX_TEXT_TOTAL:
                        raise ProvenanceError(f"text chunks together exceed {MAX_TEXT_TOTAL} stored bytes; refusing")
            elif raw_type == b"eXIf" and length > MAX_EXIF_CHUNK:
                raise ProvenanceError(f"eXIf chunk at byte {offset} is {length} bytes (limit {MAX_EXIF_CHUNK})")
            if not wanted:
                f.seek(length + 4, os.SEEK_CUR)
                continue
            data = f.read(length)
            crc = f.read(4)
            if len(data) < length or len(crc) < 4:
                raise ProvenanceError(f"truncated PNG inside the {ctype} chunk at byte {offset}")
            if check_crc and zlib.crc32(raw_type + data) != struct.unpack(">I", crc)[0]:
                raise ProvenanceError(f"corrupt PNG: CRC mismatch in the {ctype} chunk at byte {offset}")
            if raw_type == b"IHDR":
                if length != 13:
                    raise ProvenanceError(f"corrupt PNG: IHDR is {length} bytes, not 13")
                result.width, result.height = struct.unpack(">II", data[:8])
            elif raw_type == b"IEND":
                break
            elif raw_type == b"eXIf":
                if result.exif is None:
                    result.exif = data
            else:
                key, text = _decode_text_chunk(ctype, data, offset, budget)
                if key in result.texts:
                    result.warnings.append(f"duplicate {ctype} chunk {key!r}: kept the first one")
                else:
                    result.texts[key] = text
                    result.chunk_types[key] = ctype
    return result


def make_pnginfo(infotext: str | None, plan_json: str | None, extra: dict[str, str] | None = None) -> Any:
    """Pillow ``PngInfo`` with ``parameters`` (tEXt, or iTXt when not Latin-1, as A1111 writes it) and
    ``iga_metadata`` (always iTXt: UTF-8, any text is safe); ``extra``: other tools' text chunks to keep beside them
    (ComfyUI's ``prompt`` and ``workflow``), written as tEXt/iTXt like ``parameters``."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    extra = dict(extra or {})
    clash = sorted({"parameters", "iga_metadata"} & set(extra))
    if clash:
        raise ProvenanceError(f"extra PNG text {', '.join(clash)} would replace iga's own chunk; rename it")
    for key, text in (("parameters", infotext), ("iga_metadata", plan_json), *extra.items()):
        if text is not None and len(text.encode("utf-8")) > MAX_TEXT_CHUNK - 100:
            raise ProvenanceError(f"the {key} text is {len(text.encode('utf-8'))} bytes; iga stores at most "
                                  f"{MAX_TEXT_CHUNK - 100} per chunk (a longer one would be refused when read back)")
    if infotext is not None:
        info.add_text("parameters", infotext)
    if plan_json is not None:
        info.add_itxt("iga_metadata", plan_json, zip=False)
    for key, text in extra.items():
        info.add_text(key, text)
    return info
