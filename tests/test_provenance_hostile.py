"""Hostile and broken files: every one is a clear ProvenanceError, in bounded memory and time.

Files are built by hand (test_provenance_support) and read through the public entry points.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib

import pytest
from PIL import Image

from iga.provenance import ProvenanceError, read_provenance
from iga.provenance.png import MAX_TEXT_CHUNK, read_png_text
from test_provenance_support import (
    chunk,
    idat,
    ihdr,
    itxt,
    jpeg_with_app1,
    png_file,
    text,
    tiff_block,
    zlib_bomb,
    ztxt,
    PNG_SIG,
)

PEAK_LIMIT = 64 * 1024 * 1024


def read_bounded(path, fn=read_provenance, match=None, seconds=10.0):
    """Call fn(path); expect ProvenanceError matching ``match``; check peak Python memory and time."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ProvenanceError, match=match) as exc:
            fn(path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.1f} MiB"
    assert time.perf_counter() - t0 < seconds
    return str(exc.value)


def write(tmp_path, data: bytes, name="f.png"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ---------------------------------------------------------------- PNG
def test_huge_text_chunk(tmp_path):
    p = write(tmp_path, png_file(text("parameters", "x" * (MAX_TEXT_CHUNK + 1))))
    msg = read_bounded(p, match="oversized text chunk")
    assert "tEXt" in msg


@pytest.mark.parametrize("length,match", [(0x7FFFFFFF, "truncated"), (0xFFFFFFFF, "2\\^31-1")])
def test_declared_lengths_beyond_the_file(tmp_path, length, match):
    data = PNG_SIG + ihdr() + struct.pack(">I", length) + b"tEXt" + b"parameters\0abc"
    read_bounded(write(tmp_path, data), match=match)


def test_ztxt_decompression_bomb_of_one_gib(tmp_path):
    p = write(tmp_path, png_file(ztxt("parameters", zlib_bomb(1024))))
    assert p.stat().st_size < 2 * 1024 * 1024  # ~1 MB on disk for 1 GiB of text
    msg = read_bounded(p, match="decompression bomb")
    assert "zTXt chunk 'parameters'" in msg


def test_itxt_decompression_bomb(tmp_path):
    bomb = zlib_bomb(256)
    data = chunk(b"iTXt", b"iga_metadata\0\x01\x00\0\0" + bomb)
    read_bounded(write(tmp_path, png_file(data)), match="iTXt chunk 'iga_metadata'.*decompression bomb")


def test_total_text_budget(tmp_path):
    # each chunk under the per-chunk limits, together over the total
    seven = zlib.compress(b"a" * (7 * 2**20), 9)
    data = png_file(*(ztxt(f"k{i}", seven) for i in range(5)))
    read_bounded(write(tmp_path, data), fn=read_png_text, match="together exceed")


def test_unwanted_bombs_are_never_inflated(tmp_path):
    params = text("parameters", "p\nSteps: 1, Seed: 2, CFG scale: 3")
    p = write(tmp_path, png_file(ztxt("Comment", zlib_bomb(512)), params))
    tracemalloc.start()
    prov = read_provenance(p)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert prov.source == "a1111" and prov.steps == 1 and peak < PEAK_LIMIT
    read_bounded(p, fn=read_png_text, match="decompression bomb")  # asked for everything: refused


@pytest.mark.parametrize("payload,match", [
    (itxt("iga_metadata", "{not json"), "'iga_metadata' chunk: invalid JSON"),
    (itxt("iga_metadata", "[" * 50_000), "'iga_metadata' chunk: JSON nested more than 64 levels deep"),
    (itxt("iga_metadata", "[" * 500 + "]" * 500), "'iga_metadata' chunk: JSON nested more than 64 levels deep"),
    (itxt("iga_metadata", "[" + "{}," * 250_000 + "{}]"), "250002 objects/arrays"),
    (itxt("iga_metadata", '{"a": "' + "x" * (5 * 2**20) + '"}'), "characters of JSON"),
    (itxt("iga_metadata", "[1, 2]"), "expected a JSON object"),
    (itxt("iga_metadata", b'{"schema": "iga.plan/1", "prompt": "\xff\xfe"}'), "iTXt chunk 'iga_metadata'.*UTF-8"),
    (itxt("invokeai_metadata", '{"seed": '), "'invokeai_metadata' chunk: invalid JSON"),
    (ztxt("parameters", b"\x78\x9c garbage"), "corrupt compressed data"),
    (ztxt("parameters", zlib.compress(b"x" * 1000)[:-6]), "truncated"),
    (chunk(b"zTXt", b"parameters\0\x05" + zlib.compress(b"x")), "compression method"),
    (chunk(b"iTXt", b"parameters\0\x00\x00nolangterminator"), "malformed header"),
])
def test_corrupt_metadata_is_a_clear_error(tmp_path, payload, match):
    read_bounded(write(tmp_path, png_file(payload)), match=match)


def test_chunk_without_keyword(tmp_path):
    p = write(tmp_path, png_file(chunk(b"tEXt", b"\0no keyword")))
    assert read_provenance(p).source == "none"  # not a chunk any tool's metadata lives in: skipped
    read_bounded(p, fn=read_png_text, match="malformed keyword")  # decoding everything: an error


def test_wrong_crc(tmp_path):
    bad = chunk(b"tEXt", b"parameters\0hello", crc=12345)
    read_bounded(write(tmp_path, png_file(bad)), match="CRC mismatch in the tEXt chunk")


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.8, 0.97])
def test_truncated_png(tmp_path, cut):
    good = tmp_path / "good.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(good)
    data = png_file(text("parameters", "p\nSteps: 1, Seed: 2, CFG scale: 3" + "x" * 3000), width=64, height=64)
    for source in (good.read_bytes(), data):
        n = max(34, int(len(source) * cut))  # past signature + IHDR (33 bytes)
        read_bounded(write(tmp_path, source[:n], "cut.png"), match="truncated PNG")


@pytest.mark.parametrize("data,match", [
    (b"", "not a PNG, JPEG or WebP"),
    (b"hello world, this is text", "not a PNG, JPEG or WebP"),
    (PNG_SIG + chunk(b"tEXt", b"a\0b") + ihdr(), "first chunk is tEXt"),
    (PNG_SIG + ihdr() + chunk(b"t3Xt", b"a\0b"), "invalid chunk type"),
    (PNG_SIG + chunk(b"IHDR", b"\0" * 12), "IHDR is 12 bytes"),
])
def test_not_a_valid_png(tmp_path, data, match):
    read_bounded(write(tmp_path, data), match=match)


def test_png_quirks_that_are_fine(tmp_path):
    params = "p\nSteps: 1, Seed: 2, CFG scale: 3"
    # text after IDAT, duplicates (first kept), UTF-8 in tEXt, compressed iTXt, trailing bytes after IEND
    data = png_file(text("parameters", params), after=(
        text("parameters", "other\nSteps: 9, Seed: 9, CFG scale: 9"),
        chunk(b"tEXt", "Title\0caf\u00e9 ✓".encode("utf-8")),
        itxt("workflow", "{}", compressed=True))) + b"junk after IEND"
    png = read_png_text(data)
    assert png.texts["parameters"] == params and png.texts["Title"] == "café ✓" and png.texts["workflow"] == "{}"
    assert png.chunk_types == {"parameters": "tEXt", "Title": "tEXt", "workflow": "iTXt"}
    assert any("duplicate" in w for w in png.warnings) and (png.width, png.height) == (2, 2)
    assert read_provenance(data).seed == 2


def test_png_exif_chunk_is_read(tmp_path):
    comment = b"UNICODE\0" + "a\nSteps: 5, Seed: 6, CFG scale: 7".encode("utf-16-be")
    block = tiff_block([], [(0x9286, 7, len(comment), comment)])
    data = PNG_SIG + ihdr() + chunk(b"eXIf", block) + idat() + chunk(b"IEND", b"")
    prov = read_provenance(data)
    assert prov.source == "a1111" and (prov.steps, prov.seed) == (5, 6)


# ---------------------------------------------------------------- EXIF inside JPEG / WebP
COMMENT = b"UNICODE\0" + "x\nSteps: 5, Seed: 6, CFG scale: 7".encode("utf-16-be")


@pytest.mark.parametrize("block,match", [
    (b"XX*\0" + b"\0" * 20, "not a TIFF block"),
    (b"MM\0*\0\0", "truncated"),
    (b"MM\0*" + struct.pack(">I", 10_000), "IFD0 offset 10000 is outside"),
    (b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 5000) + b"\0" * 20, "5000 entries"),
    (b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 20) + b"\0" * 20, "runs past the end"),
    (tiff_block([(0x010E, 2, 100, 0x7FFF0000)]), "tag 0x010E points to bytes"),
    (tiff_block([], [(0x9286, 7, 0xFFFFFFFF, 16)]), "tag 0x9286 points to bytes"),
    (tiff_block([], [(0x9286, 7, len(COMMENT), COMMENT)], exif_at=8), "loops back to offset 8"),
    (tiff_block([], [(0x9286, 7, len(COMMENT), COMMENT)], exif_at=1 << 30), "Exif IFD offset"),
    (tiff_block([(0x8769, 4, 2, 26)]), "expected one LONG"),
])
def test_hostile_exif_in_jpeg(tmp_path, block, match):
    p = write(tmp_path, jpeg_with_app1(b"Exif\0\0" + block), "h.jpg")
    read_bounded(p, match=match)


def test_hostile_exif_in_webp(tmp_path):
    p = tmp_path / "h.webp"
    Image.new("RGB", (8, 8)).save(p, "WEBP", exif=tiff_block([], [(0x9286, 7, len(COMMENT), COMMENT)], exif_at=8))
    read_bounded(p, match="loops back")


def test_exif_little_and_big_endian_both_read(tmp_path):
    for big in (True, False):
        block = tiff_block([(0x0131, 2, 5, b"tool\0")], [(0x9286, 7, len(COMMENT), COMMENT)], big_endian=big)
        prov = read_provenance(write(tmp_path, jpeg_with_app1(b"Exif\0\0" + block), "e.jpg"))
        assert prov.source == "a1111" and prov.seed == 6 and prov.raw["EXIF Software"] == "tool"


def app1_len(jpeg: bytes) -> int:
    return struct.unpack(">H", jpeg[4:6])[0]


@pytest.mark.parametrize("mutate,match", [
    (lambda j: j[: j.index(b"\xff\xda")], "truncated JPEG"),
    (lambda j: j[:4 + app1_len(j)] + b"\x00\x00" + j[4 + app1_len(j):], "expected a marker"),
    (lambda j: j[:2] + b"\xff\xe1\x00\x01" + j[2:], "has length 1"),
    (lambda j: j[:6], "truncated JPEG"),
    (lambda j: j[:2] + b"\xff" * 70_000 + j[2:], "fill bytes"),
])
def test_broken_jpeg(tmp_path, mutate, match):
    block = tiff_block([], [(0x9286, 7, len(COMMENT), COMMENT)])
    read_bounded(write(tmp_path, mutate(jpeg_with_app1(b"Exif\0\0" + block)), "b.jpg"), match=match)


def test_broken_webp(tmp_path):
    p = tmp_path / "ok.webp"
    Image.new("RGB", (8, 8)).save(p, "WEBP", exif=tiff_block([], [(0x9286, 7, len(COMMENT), COMMENT)]))
    data = p.read_bytes()
    assert read_provenance(p).seed == 6
    read_bounded(write(tmp_path, data[:-10], "t.webp"), match="truncated WebP")
    # a chunk that claims more than the RIFF holds
    i = data.index(b"EXIF")
    bad = data[:i + 4] + struct.pack("<I", 10**8) + data[i + 8:]
    read_bounded(write(tmp_path, bad, "c.webp"), match="truncated WebP: chunk")
    huge = tmp_path / "huge.webp"
    Image.new("RGB", (8, 8)).save(huge, "WEBP", exif=b"II*\0" + b"\0" * (9 * 2**20))
    read_bounded(huge, match="WebP EXIF chunk is")


# ---------------------------------------------------------------- JSON where A1111 infotext is expected
# (Fooocus and SwarmUI put JSON in the 'parameters' chunk; anything that is not their JSON is read as infotext)
@pytest.mark.parametrize("params, scheme", [
    ("{red|blue} cat\nNegative prompt: x\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3", None),
    ("{not json at all", "fooocus"),
    ('{"sui_image_params": ' * 200 + "1" + "}" * 200, None),  # deeper than the JSON limit
    ('{"a": [' + "[]," * 200_001 + "[]]}", "fooocus"),  # more containers than the JSON limit
    ('{"prompt": "x"}', None),  # JSON of no known tool
    ("[1, 2, 3]", "fooocus"),
])
def test_parameters_that_start_like_json_are_read_as_infotext(tmp_path, params, scheme):
    chunks = text("parameters", params) + (text("fooocus_scheme", scheme) if scheme else b"")
    p = write(tmp_path, png_file(chunks))
    t0 = time.perf_counter()
    prov = read_provenance(p)
    assert time.perf_counter() - t0 < 5
    assert prov.source in ("a1111", "fooocus") and prov.prompt is not None
    if scheme == "fooocus":
        assert any("fooocus_scheme" in w for w in prov.warnings)


@pytest.mark.parametrize("record", [
    {"sui_image_params": None},
    {"sui_image_params": {"seed": [1], "steps": {"a": 1}, "width": 1e400, "cfgscale": "nan", "sampler": 5,
                          "clipstopatlayer": "x", "model": ["a"]}, "sui_models": "x"},
    {"sui_image_params": {}, "sui_models": [None, {"param": "model", "hash": 7}] * 100},
    {"metadata_scheme": "fooocus", "resolution": "(" + "9" * 5000 + ", 1)", "seed": "1" * 5000, "steps": True,
     "base_model": {"x": 1}, "guidance_scale": "inf", "scheduler": ["karras"]},
    {"version": "Fooocus v9", "resolution": [1, 2, 3]},
    {"metadata_scheme": "fooocus", **{f"k{i}": i for i in range(1000)}},
])
def test_odd_fooocus_and_swarmui_records_are_warnings(tmp_path, record):
    import json

    prov = read_provenance(write(tmp_path, png_file(text("parameters", json.dumps(record)))))
    assert prov.source in ("fooocus", "swarmui") and prov.warnings
    for value in (prov.seed, prov.steps, prov.width, prov.cfg):
        assert value is None or isinstance(value, (int, float))


@pytest.mark.parametrize("tail", [
    "Civitai resources: [",
    "Civitai resources: [{" + '"a":[' * 100 + "1" + "]" * 100 + "}]",
    "Civitai resources: [" + "1," * 30_000 + "1]",  # long, but under the parameter-line limit
    "Civitai resources: not json",
    'Civitai resources: [{"type":"checkpoint","modelName":7}]',
])
def test_broken_civitai_resources_are_warnings(tmp_path, tail):
    params = f"cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3, {tail}"
    prov = read_provenance(write(tmp_path, png_file(text("parameters", params))))
    assert prov.source == "a1111" and prov.seed == 3 and prov.model_name is None
