"""EXIF: UserComment encodings seen in the wild, our TIFF writer read back by independent readers."""

from __future__ import annotations

import piexif
import piexif.helper
import pytest
from PIL import Image

from iga.provenance.exif import build_exif, decode_user_comment, encode_user_comment, parse_exif
from test_provenance_support import tiff_block

TEXT = "a cat, 猫 ✓\nNegative prompt: \nSteps: 20, Seed: 1"


def test_encode_matches_piexif_unicode():
    assert encode_user_comment(TEXT) == piexif.helper.UserComment.dump(TEXT, encoding="unicode")


@pytest.mark.parametrize("raw,expect_warning", [
    (b"UNICODE\0" + TEXT.encode("utf-16-be"), False),  # A1111 / piexif
    (b"UNICODE\0" + TEXT.encode("utf-16-le"), True),  # tools that follow the TIFF byte order
    (b"UNICODE\0" + b"\xff\xfe" + TEXT.encode("utf-16-le"), False),  # with a BOM
    (b"UNICODE\0" + b"\xfe\xff" + TEXT.encode("utf-16-be"), False),
    (b"ASCII\0\0\0" + TEXT.encode("utf-8"), False),  # UTF-8 under an ASCII header, common in practice
    (b"\0" * 8 + TEXT.encode("utf-8"), False),  # undefined character code
    (TEXT.encode("utf-8"), True),  # no header at all (A1111's fallback reads UTF-8)
    (b"UNICODE\0" + TEXT.encode("utf-16-be") + b"\0\0\0", True),  # NUL padding, odd length
])
def test_user_comment_variants(raw, expect_warning):
    text, warnings = decode_user_comment(raw)
    assert text == TEXT
    assert bool(warnings) == expect_warning


def test_ascii_header_with_latin1_body():
    assert decode_user_comment(b"ASCII\0\0\0caf\xe9")[0] == "café"


def test_build_exif_read_by_piexif_and_pillow():
    block = build_exif(TEXT, '{"schema":"iga.plan/1"}', "iga 0.1.0")
    exif = piexif.load(b"Exif\0\0" + block)
    assert piexif.helper.UserComment.load(exif["Exif"][piexif.ExifIFD.UserComment]) == TEXT
    assert exif["0th"][piexif.ImageIFD.ImageDescription] == b'{"schema":"iga.plan/1"}'
    assert exif["Exif"][piexif.ExifIFD.ExifVersion] == b"0232"
    pil = Image.Exif()
    pil.load(block)
    assert pil[0x0131] == "iga 0.1.0"
    parsed = parse_exif(b"Exif\0\0" + block)
    assert (parsed.user_comment, parsed.image_description, parsed.software) == (
        TEXT, '{"schema":"iga.plan/1"}', "iga 0.1.0")


def test_build_exif_refuses_non_ascii_fields():
    from iga.provenance import ProvenanceError

    with pytest.raises(ProvenanceError, match="ASCII"):
        build_exif(TEXT, "猫", None)


def test_parse_exif_written_by_piexif_big_endian_and_xp_comment():
    block = tiff_block([(0x9C9C, 1, len("hi ✓".encode("utf-16-le")) + 2, "hi ✓".encode("utf-16-le") + b"\0\0")],
                       [(0x9286, 7, 8 + 2 * len(TEXT), b"UNICODE\0" + TEXT.encode("utf-16-be"))], big_endian=True)
    parsed = parse_exif(block)
    assert parsed.user_comment == TEXT and parsed.xp_comment == "hi ✓" and parsed.warnings == []
    exif = piexif.dump({"0th": {piexif.ImageIFD.ImageDescription: b"desc"},
                        "Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump("x", encoding="unicode")}})
    parsed = parse_exif(exif)
    assert (parsed.image_description, parsed.user_comment) == ("desc", "x")
