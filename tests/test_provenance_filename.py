"""File names: the pattern language, sanitising hostile values, length bounds, and O_EXCL reservation."""

from __future__ import annotations

import os
import unicodedata
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iga.provenance import ProvenanceError, format_filename, unique_path
from iga.provenance.filename import MAX_NAME_BYTES, TOKENS

NOW = datetime(2024, 1, 2, 3, 4, 5)
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def plan(**kw):
    p = {"seed": 42, "seeds": [42], "batch_index": 0, "sampler": "dpmpp_2m", "schedule": "karras", "steps": 20,
         "cfg": 6.5, "width": 512, "height": 768, "model": {"name": "mymodel", "autov2": "0123456789"},
         "prompt": "A red fox, in the snow: (detailed:1.2)", "nfe": 39}
    p.update(kw)
    return p


def assert_safe(name: str) -> None:
    stem = name.rsplit(".", 1)[0]
    assert name == os.path.basename(name) and "/" not in name and "\\" not in name
    assert not name.startswith(".") and not stem.endswith((" ", "."))
    assert not any(c in '<>:"|?*' for c in name)
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert stem.split(".")[0].upper() not in WINDOWS_RESERVED


def test_default_pattern():
    assert format_filename(plan(), now=NOW) == "20240102-030405-42-mymodel-dpmpp_2m-karras-20-cfg6.5.png"
    assert format_filename(plan(cfg=7.0), ext="webp", now=NOW).endswith("-20-cfg7.webp")


def test_tokens_case_insensitive_and_extension_replaced():
    name = format_filename(plan(), "[DATE]_[Seed]_[model_hash]_[width]x[height]_[nfe]_[prompt_words].png",
                           ext="jpg", now=NOW)
    assert name == "2024-01-02_42_0123456789_512x768_39_A red fox in the snow detailed 1.jpg"  # 8 words


def test_every_listed_token_renders():
    for token in TOKENS:
        assert_safe(format_filename(plan(), f"x-[{token}]", now=NOW))


def test_missing_values_render_as_none():
    assert format_filename({"seed": 1}, "[seed]-[sampler]", now=NOW) == "1-none.png"


@pytest.mark.parametrize("pattern,message", [("[nope]", "unknown token"), ("[seed", "never closed"),
                                             ("seed]", "stray"), ("[]", "unknown token")])
def test_bad_patterns_are_clear_errors(pattern, message):
    with pytest.raises(ProvenanceError, match=message) as exc:
        format_filename(plan(), pattern, now=NOW)
    if "unknown" in message:
        assert "known tokens: " in str(exc.value) and "checkpoint_name" in str(exc.value)


def test_literal_brackets():
    assert format_filename(plan(), "[[[seed]]]", now=NOW) == "[42].png"


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\windows\\system32", "a/b\\c", "x\x00y\x1b[31m",
                                  "evil\u202egnp.exe", ".hidden", "...", "trailing. ", "CON", "nul", "com1.tar",
                                  "a:b*c?d\"e<f>g|h", "\n\r\t"])
def test_hostile_model_names_are_sanitised(name, tmp_path):
    out = format_filename(plan(model={"name": name}), "[checkpoint_name]", now=NOW)
    assert_safe(out)
    (tmp_path / out).write_bytes(b"x")  # and it is creatable, inside the folder
    assert (tmp_path / out).parent == tmp_path


def test_reserved_whole_name_gets_prefixed():
    assert format_filename(plan(model={"name": "CON"}), "[checkpoint_name]", now=NOW) == "_CON.png"
    assert format_filename(plan(), "aux", now=NOW) == "_aux.png"


def test_length_bounded_in_utf8_bytes_with_extension_kept():
    long = "猫" * 300
    out = format_filename(plan(model={"name": long}, prompt=long), "[checkpoint_name]-[prompt_words]-" + "y" * 300,
                          ext="webp", now=NOW)
    assert out.endswith(".webp") and len(out.encode("utf-8")) <= MAX_NAME_BYTES
    out.encode("utf-8").decode("utf-8")  # no split multi-byte character


@settings(max_examples=200, deadline=None)
@given(value=st.text(min_size=0, max_size=300), literal=st.text(alphabet=st.characters(blacklist_characters="[]"),
                                                                 max_size=60))
def test_any_value_gives_a_safe_name(value, literal):
    out = format_filename(plan(model={"name": value}), literal + "[checkpoint_name]" + literal, now=NOW)
    assert_safe(out)
    assert out.endswith(".png")


def test_unique_path_reserves_and_numbers(tmp_path):
    a = unique_path(tmp_path, "img.png")
    b = unique_path(tmp_path, "img.png")
    (tmp_path / "img-2.png").write_bytes(b"keep")
    c = unique_path(tmp_path, "img.png")
    assert [p.name for p in (a, b, c)] == ["img.png", "img-1.png", "img-3.png"]
    assert a.exists() and a.stat().st_size == 0 and (tmp_path / "img-2.png").read_bytes() == b"keep"


def test_unique_path_keeps_the_length_bound(tmp_path):
    name = "a" * (MAX_NAME_BYTES - 4) + ".png"
    unique_path(tmp_path, name)
    second = unique_path(tmp_path, name)
    assert second.name.endswith("-1.png") and len(second.name.encode()) <= MAX_NAME_BYTES


@pytest.mark.parametrize("bad", ["../x.png", "a/b.png", "", "..", "."])
def test_unique_path_refuses_directories(tmp_path, bad):
    with pytest.raises(ProvenanceError):
        unique_path(tmp_path, bad)
