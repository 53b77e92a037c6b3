"""Builders for hand-made image files used by the provenance tests (PNG chunks, TIFF/EXIF blocks, zlib bombs).

Written from the format specifications (PNG 1.2 chunk layout and CRC, TIFF 6 IFDs, RFC 1950/1951), not with
the code under test. The tests at the bottom check the builders themselves against Pillow and zlib.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def chunk(ctype: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 over type+data (or the given, possibly wrong, CRC)."""
    if crc is None:
        crc = zlib.crc32(ctype + data)
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", crc & 0xFFFFFFFF)


def ihdr(width: int = 2, height: int = 2) -> bytes:
    """IHDR for an 8-bit RGB image."""
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def idat(width: int = 2, height: int = 2) -> bytes:
    """IDAT of an all-black 8-bit RGB image (filter byte 0 per row)."""
    raw = b"".join(b"\x00" + b"\x00" * 3 * width for _ in range(height))
    return chunk(b"IDAT", zlib.compress(raw))


def png_file(*text_chunks: bytes, after: tuple[bytes, ...] = (), width: int = 2, height: int = 2) -> bytes:
    """A complete PNG: IHDR, the given chunks, IDAT, chunks in ``after``, IEND."""
    return (PNG_SIG + ihdr(width, height) + b"".join(text_chunks) + idat(width, height) + b"".join(after)
            + chunk(b"IEND", b""))


def text(key: str, value: str) -> bytes:
    """tEXt chunk (Latin-1)."""
    return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))


def ztxt(key: str, compressed: bytes) -> bytes:
    """zTXt chunk around already-compressed bytes."""
    return chunk(b"zTXt", key.encode("latin-1") + b"\0\0" + compressed)


def itxt(key: str, value: bytes | str, compressed: bool = False) -> bytes:
    """iTXt chunk (UTF-8; value may be raw bytes to make it invalid on purpose)."""
    body = value.encode("utf-8") if isinstance(value, str) else value
    if compressed:
        body = zlib.compress(body)
    return chunk(b"iTXt", key.encode("latin-1") + b"\0" + bytes([1 if compressed else 0, 0]) + b"\0\0" + body)


def zlib_bomb(mib: int) -> bytes:
    """A valid zlib stream that inflates to ``mib`` MiB of zeros, built in ~1 KiB per MiB without ever
    holding the inflated data: a full flush resets the deflate state, so every 1 MiB segment is identical."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1 << 20)
    segment = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()
    n = mib << 20
    adler = ((n % 65521) << 16) | 1  # Adler-32 of n zero bytes: a stays 1, b = n mod 65521
    return b"\x78\xda" + segment * mib + tail + struct.pack(">I", adler)


def tiff_block(ifd0: list[tuple[int, int, int, bytes | int]], exif_ifd: list[tuple[int, int, int, bytes | int]]
               | None = None, big_endian: bool = True, exif_at: int | None = None) -> bytes:
    """A TIFF block with IFD0 (and an Exif IFD when given). Entries are (tag, type, count, value): bytes
    are stored after the IFDs (or inline when <= 4 bytes), an int is written verbatim as the value/offset
    field (to make hostile offsets). ``exif_at`` overrides the Exif IFD pointer."""
    bo = ">" if big_endian else "<"
    head = b"MM\x00*" if big_endian else b"II*\x00"

    def layout(entries: list[tuple[int, int, int, bytes | int]], start: int) -> bytes:
        data_at = start + 2 + 12 * len(entries) + 4
        out = struct.pack(bo + "H", len(entries))
        data = b""
        for tag, typ, count, value in entries:
            if isinstance(value, int):
                out += struct.pack(bo + "HHII", tag, typ, count, value)
            elif len(value) <= 4:
                out += struct.pack(bo + "HHI", tag, typ, count) + value.ljust(4, b"\0")
            else:
                out += struct.pack(bo + "HHII", tag, typ, count, data_at + len(data))
                data += value + (b"\0" if len(value) % 2 else b"")
        return out + struct.pack(bo + "I", 0) + data

    entries0 = list(ifd0)
    if exif_ifd is not None:
        entries0.append((0x8769, 4, 1, 0))  # placeholder, patched below
    first = layout(entries0, 8)
    real_exif_at = 8 + len(first)
    pointer = exif_at if exif_at is not None else real_exif_at
    if exif_ifd is not None:
        entries0[-1] = (0x8769, 4, 1, pointer)
        first = layout(entries0, 8)
        return head + struct.pack(bo + "I", 8) + first + layout(exif_ifd, real_exif_at)
    return head + struct.pack(bo + "I", 8) + first


def jpeg_with_app1(payload: bytes) -> bytes:
    """A small JPEG (made by Pillow, no metadata) with an APP1 segment carrying ``payload`` after SOI."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "JPEG")
    jpg = buf.getvalue()
    return jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpg[2:]


# ------------------------------------------------------------------ checks of the builders themselves
def test_png_builder_makes_a_png_pillow_reads():
    data = png_file(text("a", "b"), itxt("c", "ü"), width=3, height=2)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.size == (3, 2)
        assert im.text == {"a": "b", "c": "ü"}


def test_zlib_bomb_inflates_to_the_promised_size():
    out = zlib.decompress(zlib_bomb(3))  # verifies the Adler-32 too
    assert out == bytes(3 << 20)


def test_tiff_builder_is_read_by_pillow():
    block = tiff_block([(0x010E, 2, 6, b"hello\0")], [(0x9286, 7, 12, b"ASCII\0\0\0abcd")])
    exif = Image.Exif()
    exif.load(block)
    assert exif[0x010E] == "hello"
    assert exif.get_ifd(0x8769)[0x9286] == b"ASCII\0\0\0abcd"
