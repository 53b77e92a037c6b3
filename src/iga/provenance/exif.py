"""EXIF for JPEG and WebP: a minimal TIFF/IFD writer and a bounds-checked reader, plus the containers' walkers.

What iga writes (one TIFF block, little-endian):
  - Exif IFD ``UserComment`` (0x9286): the A1111 infotext as ``b"UNICODE\\0"`` + UTF-16BE, exactly what A1111
    (through piexif) writes and what A1111, Forge and Civitai read.
  - IFD0 ``ImageDescription`` (0x010E): the Plan JSON, written with ``ensure_ascii`` so the field is the
    7-bit ASCII the TIFF spec requires; every EXIF tool keeps it intact and no charset guessing is needed.
    Chosen over XPComment (Windows-only, UTF-16LE) and MakerNote (vendor-private; editors often drop or
    relocate it). When the whole block would not fit a JPEG APP1 segment (64 KiB), the Plan is stored as
    ``iga.plan+zlib+base64:<data>``.
  - IFD0 ``Software`` (0x0131): ``iga <version>``.

No piexif: the subset needed is small, and our reader must reject hostile offsets and loops, which piexif does
not check. Limits: an EXIF block of at most ``MAX_EXIF_BYTES``, ``MAX_IFD_ENTRIES`` entries per IFD, every
offset and length inside the block, each IFD visited once.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import IO

from iga.provenance.errors import ProvenanceError
from iga.provenance.png import MAX_TEXT_INFLATED, inflate_bounded

MAX_EXIF_BYTES = 8 * 1024 * 1024
MAX_IFD_ENTRIES = 1024
JPEG_MAX_EXIF = 65533 - 6  # APP1 payload limit, minus the "Exif\0\0" header
PACKED_PLAN_PREFIX = "iga.plan+zlib+base64:"
EXIF_HEADER = b"Exif\x00\x00"

TAG_IMAGE_DESCRIPTION = 0x010E
TAG_SOFTWARE = 0x0131
TAG_EXIF_IFD = 0x8769
TAG_EXIF_VERSION = 0x9000
TAG_USER_COMMENT = 0x9286
TAG_XP_COMMENT = 0x9C9C

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_ASCII, _LONG, _UNDEFINED = 2, 4, 7


# ---------------------------------------------------------------- UserComment
def encode_user_comment(text: str) -> bytes:
    """EXIF UserComment bytes as A1111/piexif write them: ``UNICODE\\0`` + UTF-16BE."""
    return b"UNICODE\x00" + text.encode("utf-16-be", "surrogatepass")


def _utf16_order(body: bytes) -> str:
    """'be' or 'le' for UTF-16 without a BOM: ASCII-heavy text has its zero bytes on one side."""
    sample = body[:4096]
    zeros_even = sample[0::2].count(0)
    zeros_odd = sample[1::2].count(0)
    if zeros_odd > zeros_even:
        return "le"
    if zeros_even > zeros_odd:
        return "be"
    # no ASCII to go by (e.g. all CJK): the one that decodes without lone surrogates, BE (the standard) first
    for order in ("be", "le"):
        try:
            body.decode(f"utf-16-{order}")
            return order
        except UnicodeDecodeError:
            continue
    return "be"


def decode_user_comment(raw: bytes) -> tuple[str, list[str]]:
    """Text of an EXIF UserComment; accepts UNICODE (BE per piexif, or LE/BOM as some tools write), ASCII
    (read as UTF-8 when valid), undefined and JIS headers, and a headerless UTF-8 blob (A1111's fallback)."""
    warnings: list[str] = []
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            order, body = ("be" if body[:2] == b"\xfe\xff" else "le"), body[2:]
        else:
            order = _utf16_order(body)
            if order == "le":
                warnings.append("UserComment is UTF-16 little-endian (A1111 writes big-endian); read as LE")
        if len(body) % 2:
            warnings.append("UserComment has an odd number of UTF-16 bytes; the last byte was dropped")
            body = body[:-1]
        text = body.decode(f"utf-16-{order}", "replace")
    elif prefix == b"JIS\x00\x00\x00\x00\x00":
        text = body.decode("shift_jis", "replace")
    elif prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = body.decode("latin-1")
    else:
        text = raw.decode("utf-8", "replace")
        warnings.append("UserComment has no character-code header; read as UTF-8")
    return text.rstrip("\x00"), warnings


# ---------------------------------------------------------------- writer
def _ifd(entries: list[tuple[int, int, int, bytes]], start: int) -> bytes:
    """One little-endian IFD at offset ``start``: entries (tag, type, count, value bytes), values after it."""
    entries = sorted(entries)
    data_at = start + 2 + 12 * len(entries) + 4
    head = [struct.pack("<H", len(entries))]
    data = bytearray()
    for tag, typ, count, value in entries:
        if len(value) <= 4:
            head.append(struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\x00"))
        else:
            head.append(struct.pack("<HHII", tag, typ, count, data_at + len(data)))
            data += value
            if len(data) % 2:
                data += b"\x00"  # values start on a word boundary
    head.append(struct.pack("<I", 0))  # no next IFD
    return b"".join(head) + bytes(data)


def build_exif(user_comment: str | None = None, image_description: str | None = None,
               software: str | None = None) -> bytes:
    """A TIFF block (no ``Exif\\0\\0`` header) with ImageDescription/Software in IFD0 and UserComment in the
    Exif IFD. ``image_description`` and ``software`` must be ASCII."""
    ifd0: list[tuple[int, int, int, bytes]] = []
    for tag, text in ((TAG_IMAGE_DESCRIPTION, image_description), (TAG_SOFTWARE, software)):
        if text is not None:
            try:
                value = text.encode("ascii") + b"\x00"
            except UnicodeEncodeError as exc:
                raise ProvenanceError(f"EXIF tag 0x{tag:04X} must be ASCII; encode the text first") from exc
            ifd0.append((tag, _ASCII, len(value), value))
    exif_entries: list[tuple[int, int, int, bytes]] = [(TAG_EXIF_VERSION, _UNDEFINED, 4, b"0232")]
    if user_comment is not None:
        uc = encode_user_comment(user_comment)
        exif_entries.append((TAG_USER_COMMENT, _UNDEFINED, len(uc), uc))
    # IFD0 size is known before the Exif IFD offset is, because the pointer is a fixed 4-byte value
    ifd0_size = len(_ifd([*ifd0, (TAG_EXIF_IFD, _LONG, 1, b"\x00" * 4)], 8))
    exif_at = 8 + ifd0_size + (ifd0_size % 2)
    ifd0.append((TAG_EXIF_IFD, _LONG, 1, struct.pack("<I", exif_at)))
    block0 = _ifd(ifd0, 8)
    block0 += b"\x00" * (exif_at - 8 - len(block0))
    return b"II*\x00" + struct.pack("<I", 8) + block0 + _ifd(exif_entries, exif_at)


def pack_plan(plan_json_ascii: str) -> str:
    """The compact fallback form of a plan for small EXIF budgets: prefix + base64(zlib(JSON))."""
    return PACKED_PLAN_PREFIX + base64.b64encode(zlib.compress(plan_json_ascii.encode("ascii"), 9)).decode("ascii")


def unpack_plan(text: str, where: str) -> str:
    """Inverse of ``pack_plan`` (bounded inflate)."""
    try:
        packed = base64.b64decode(text[len(PACKED_PLAN_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProvenanceError(f"{where}: packed iga plan is not valid base64") from exc
    raw = inflate_bounded(packed, MAX_TEXT_INFLATED, where)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProvenanceError(f"{where}: packed iga plan is not valid UTF-8") from exc


def exif_for(infotext: str, plan_json_ascii: str, software: str, max_bytes: int | None) -> bytes:
    """The EXIF block for an image: infotext + plan, packing the plan if needed to fit ``max_bytes``."""
    tiff = build_exif(infotext, plan_json_ascii, software)
    if max_bytes is not None and len(tiff) > max_bytes:
        tiff = build_exif(infotext, pack_plan(plan_json_ascii), software)
        if len(tiff) > max_bytes:
            raise ProvenanceError(f"the metadata needs {len(tiff)} bytes of EXIF but a JPEG holds at most {max_bytes} "
                                  "(the prompt is very long); save as PNG or WebP instead")
    return tiff


# ---------------------------------------------------------------- reader
@dataclass
class ExifText:
    """The text fields iga reads from an EXIF block."""

    user_comment: str | None = None
    image_description: str | None = None
    software: str | None = None
    xp_comment: str | None = None
    warnings: list[str] = field(default_factory=list)


class _Tiff:
    def __init__(self, buf: bytes):
        self.buf = buf
        if buf[:4] == b"II*\x00":
            self.bo = "<"
        elif buf[:4] == b"MM\x00*":
            self.bo = ">"
        else:
            raise ProvenanceError("EXIF: not a TIFF block (byte-order mark must be 'II*' or 'MM*')")

    def u16(self, at: int) -> int:
        return int(struct.unpack_from(self.bo + "H", self.buf, at)[0])

    def u32(self, at: int) -> int:
        return int(struct.unpack_from(self.bo + "I", self.buf, at)[0])

    def ifd(self, at: int, name: str) -> dict[int, tuple[int, int, int]]:
        """Entries of the IFD at ``at``: tag -> (type, count, value position), all bounds-checked."""
        n = len(self.buf)
        if at < 8 or at + 2 > n:
            raise ProvenanceError(f"EXIF: {name} offset {at} is outside the {n}-byte block")
        count = self.u16(at)
        if count > MAX_IFD_ENTRIES:
            raise ProvenanceError(f"EXIF: {name} claims {count} entries (limit {MAX_IFD_ENTRIES})")
        if at + 2 + 12 * count > n:
            raise ProvenanceError(f"EXIF: {name} at {at} with {count} entries runs past the end of the block")
        out: dict[int, tuple[int, int, int]] = {}
        for i in range(count):
            e = at + 2 + 12 * i
            tag, typ, cnt = struct.unpack_from(self.bo + "HHI", self.buf, e)
            if typ in _TYPE_SIZES and tag not in out:
                out[tag] = (typ, cnt, e + 8)
        return out

    def value(self, entry: tuple[int, int, int], tag: int) -> bytes:
        typ, cnt, pos = entry
        size = _TYPE_SIZES[typ] * cnt
        if size <= 4:
            return self.buf[pos:pos + size]
        off = self.u32(pos)
        if off + size > len(self.buf):
            raise ProvenanceError(f"EXIF: tag 0x{tag:04X} points to bytes {off}..{off + size}, "
                                  f"outside the {len(self.buf)}-byte block")
        return self.buf[off:off + size]


def _ascii_text(raw: bytes) -> str:
    raw = raw.split(b"\x00", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_exif(block: bytes) -> ExifText:
    """Read UserComment, ImageDescription, Software and XPComment from an EXIF/TIFF block (optionally with
    the ``Exif\\0\\0`` header). Raises ``ProvenanceError`` on out-of-range offsets, loops or oversize blocks."""
    if block.startswith(EXIF_HEADER):
        block = block[len(EXIF_HEADER):]
    if len(block) > MAX_EXIF_BYTES:
        raise ProvenanceError(f"EXIF block is {len(block)} bytes (limit {MAX_EXIF_BYTES}); refusing")
    if len(block) < 8:
        raise ProvenanceError("EXIF block is truncated (shorter than a TIFF header)")
    tiff = _Tiff(block)
    out = ExifText()
    ifd0_at = tiff.u32(4)
    visited = {ifd0_at}
    ifd0 = tiff.ifd(ifd0_at, "IFD0")
    if TAG_IMAGE_DESCRIPTION in ifd0:
        out.image_description = _ascii_text(tiff.value(ifd0[TAG_IMAGE_DESCRIPTION], TAG_IMAGE_DESCRIPTION))
    if TAG_SOFTWARE in ifd0:
        out.software = _ascii_text(tiff.value(ifd0[TAG_SOFTWARE], TAG_SOFTWARE))
    if TAG_XP_COMMENT in ifd0:
        raw = tiff.value(ifd0[TAG_XP_COMMENT], TAG_XP_COMMENT)
        out.xp_comment = raw[: len(raw) // 2 * 2].decode("utf-16-le", "replace").rstrip("\x00")
    if TAG_EXIF_IFD in ifd0:
        typ, cnt, pos = ifd0[TAG_EXIF_IFD]
        if typ not in (_LONG, 13) or cnt != 1:
            raise ProvenanceError(f"EXIF: the Exif IFD pointer has type {typ} and count {cnt} (expected one LONG)")
        exif_at = tiff.u32(pos)
        if exif_at in visited:
            raise ProvenanceError(f"EXIF: the Exif IFD pointer loops back to offset {exif_at}")
        visited.add(exif_at)
        exif_ifd = tiff.ifd(exif_at, "Exif IFD")
        if TAG_USER_COMMENT in exif_ifd:
            raw = tiff.value(exif_ifd[TAG_USER_COMMENT], TAG_USER_COMMENT)
            out.user_comment, warnings = decode_user_comment(raw)
            out.warnings += warnings
    return out


# ---------------------------------------------------------------- containers
@dataclass
class ContainerExif:
    """EXIF bytes and pixel size found in a JPEG or WebP file."""

    exif: bytes | None
    width: int | None
    height: int | None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
MAX_SEGMENTS = 10_000
MAX_FILL_BYTES = 65_536


def read_jpeg_exif(f: IO[bytes]) -> ContainerExif:
    """Walk JPEG marker segments up to the scan: first APP1 ``Exif`` payload and the SOF frame size."""
    if f.read(2) != b"\xff\xd8":
        raise ProvenanceError("not a JPEG file (no SOI marker)")
    exif: bytes | None = None
    width = height = None
    for _ in range(MAX_SEGMENTS):
        b = f.read(1)
        if b != b"\xff":
            if b == b"":
                raise ProvenanceError("truncated JPEG: file ends before the image data")
            raise ProvenanceError(f"corrupt JPEG: expected a marker at byte {f.tell() - 1}, found {b!r}")
        b = f.read(1)
        for _fill in range(MAX_FILL_BYTES):  # 0xFF fill bytes may precede a marker
            if b != b"\xff":
                break
            b = f.read(1)
        else:
            raise ProvenanceError(f"corrupt JPEG: more than {MAX_FILL_BYTES} fill bytes before a marker")
        if b == b"":
            raise ProvenanceError("truncated JPEG: file ends before the image data")
        marker = b[0]
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no metadata after this for us
            return ContainerExif(exif, width, height)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # no length field
        raw_len = f.read(2)
        if len(raw_len) < 2:
            raise ProvenanceError("truncated JPEG inside a segment header")
        length = struct.unpack(">H", raw_len)[0]
        if length < 2:
            raise ProvenanceError(f"corrupt JPEG: segment 0x{marker:02X} has length {length}")
        if (marker == 0xE1 and exif is None) or marker in _JPEG_SOF:
            payload = f.read(length - 2)
            if len(payload) < length - 2:
                raise ProvenanceError(f"truncated JPEG inside segment 0x{marker:02X}")
            if marker == 0xE1 and payload.startswith(EXIF_HEADER):
                exif = payload[len(EXIF_HEADER):]
            elif marker in _JPEG_SOF and len(payload) >= 5:
                height, width = struct.unpack(">HH", payload[1:5])
        else:
            f.seek(length - 2, os.SEEK_CUR)
    raise ProvenanceError(f"JPEG has more than {MAX_SEGMENTS} segments before the image data; refusing")


def read_webp_exif(f: IO[bytes]) -> ContainerExif:
    """Walk WebP RIFF chunks: the ``EXIF`` chunk and the canvas size (VP8X, VP8 or VP8L)."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise ProvenanceError("not a WebP file (no RIFF/WEBP header)")
    riff_end = 8 + struct.unpack("<I", head[4:8])[0]
    here = f.tell()
    file_end = f.seek(0, os.SEEK_END)
    f.seek(here)
    if riff_end > file_end:
        raise ProvenanceError(f"truncated WebP: the RIFF header declares {riff_end} bytes, the file has {file_end}")
    exif: bytes | None = None
    width = height = None
    pos = 12
    for _ in range(MAX_SEGMENTS):
        if pos + 8 > riff_end:
            return ContainerExif(exif, width, height)
        f.seek(pos)
        fourcc, size = struct.unpack("<4sI", f.read(8))
        if pos + 8 + size > riff_end:
            raise ProvenanceError(f"truncated WebP: chunk {fourcc!r} at byte {pos} declares {size} bytes past the end")
        if fourcc == b"EXIF" and exif is None:
            if size > MAX_EXIF_BYTES:
                raise ProvenanceError(f"WebP EXIF chunk is {size} bytes (limit {MAX_EXIF_BYTES}); refusing")
            exif = f.read(size)
        elif fourcc in (b"VP8X", b"VP8 ", b"VP8L") and width is None:
            data = f.read(min(size, 30))
            if fourcc == b"VP8X" and len(data) >= 10:
                width = 1 + int.from_bytes(data[4:7], "little")
                height = 1 + int.from_bytes(data[7:10], "little")
            elif fourcc == b"VP8 " and len(data) >= 10 and data[3:6] == b"\x9d\x01\x2a":
                width = struct.unpack("<H", data[6:8])[0] & 0x3FFF
                height = struct.unpack("<H", data[8:10])[0] & 0x3FFF
            elif fourcc == b"VP8L" and len(data) >= 5 and data[0] == 0x2F:
                bits = int.from_bytes(data[1:5], "little")
                width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        pos += 8 + size + (size & 1)
    raise ProvenanceError(f"WebP has more than {MAX_SEGMENTS} chunks; refusing")
