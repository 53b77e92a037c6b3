"""save_image / read_provenance: what lands in PNG, JPEG and WebP files, read by other tools' readers too;
atomic, never-overwriting publication."""

from __future__ import annotations

import json
import os
import struct
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import piexif
import piexif.helper
import pytest
from PIL import Image

from iga.provenance import ProvenanceError, format_infotext, read_provenance, save_image
from iga.provenance.read import fields_from_plan

NOW = datetime(2024, 1, 2, 3, 4, 5)


def make_plan(**kw):
    plan = {
        "schema": "iga.plan/1", "prompt": "a red fox, (detailed:1.2)\nsecond line", "negative_prompt": "blurry",
        "seed": 42, "seeds": [42], "batch_index": 0, "sampler": "euler_ancestral", "schedule": "karras",
        "steps": 20, "cfg": 6.5, "cfg_variant": "cfg", "cfg_rescale": 0.0, "eta": None, "width": 48,
        "height": 32, "clip_skip": 1,
        "model": {"name": "tiny", "path": "/m/tiny.safetensors", "architecture": "sd1",
                  "weights_sha256": "ab" * 32, "file_sha256": "cd" * 32, "autov2": "cdcdcdcdcd"},
        "vae": None, "sigmas": [14.61, 7.0, 2.5, 0.9, 0.0], "prediction_type": "eps", "nfe": 20,
        "overrides": [{"field": "steps", "recipe_value": 28, "requested_value": 20, "mode": "guarded"}],
        "iga_version": "0.1.0", "future_field": {"kept": [1, 2, 3]},
    }
    plan.update(kw)
    return plan


def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), "RGB")


def chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, by a plain walk (independent of the code under test)."""
    data = path.read_bytes()
    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def test_png_carries_parameters_and_the_plan(tmp_path):
    plan = make_plan()
    img = image()
    path = save_image(img, plan, tmp_path, "png", now=NOW)
    assert path.name == "20240102-030405-42-tiny-euler_ancestral-karras-20-cfg6.5.png"
    with Image.open(path) as im:  # Pillow, as A1111's PNG Info reads it
        assert im.text["parameters"] == format_infotext(plan)
        stored = json.loads(im.text["iga_metadata"])
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(img))
    assert stored == plan and next(iter(stored)) == "schema"
    types = {d.split(b"\0")[0]: t for t, d in chunks(path) if t in (b"tEXt", b"iTXt", b"zTXt")}
    assert types == {b"parameters": b"tEXt", b"iga_metadata": b"iTXt"}


def test_non_latin1_infotext_goes_to_itxt(tmp_path):
    path = save_image(image(), make_plan(prompt="猫 ✓"), tmp_path, "png", now=NOW)
    types = {d.split(b"\0")[0]: t for t, d in chunks(path) if t in (b"tEXt", b"iTXt")}
    assert types[b"parameters"] == b"iTXt"
    assert read_provenance(path).prompt == "猫 ✓"


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_round_trip_every_format(tmp_path, fmt):
    plan = make_plan(prompt="unicode ✓ 猫, commas: colons", negative_prompt="")
    path = save_image(image(), plan, tmp_path, fmt, now=NOW)
    assert path.suffix == "." + fmt
    prov = read_provenance(path)
    assert prov.source == "iga" and prov.plan == plan and prov.warnings == []
    assert prov.format == {"jpg": "jpeg"}.get(fmt, fmt)
    assert (prov.image_width, prov.image_height) == (48, 32)
    assert (prov.prompt, prov.negative_prompt, prov.seed, prov.steps, prov.cfg) == (
        "unicode ✓ 猫, commas: colons", "", 42, 20, 6.5)
    assert (prov.sampler, prov.schedule, prov.model_name, prov.model_hash) == (
        "euler_ancestral", "karras", "tiny", "cdcdcdcdcd")


def test_jpeg_exif_is_what_a1111_reads(tmp_path):
    plan = make_plan(prompt="猫, a cat")
    path = save_image(image(), plan, tmp_path, "jpg", now=NOW)
    exif = piexif.load(str(path))  # A1111's reader: piexif + UserComment.load
    assert exif["Exif"][piexif.ExifIFD.UserComment].startswith(b"UNICODE\0")
    assert piexif.helper.UserComment.load(exif["Exif"][piexif.ExifIFD.UserComment]) == format_infotext(plan)
    description = exif["0th"][piexif.ImageIFD.ImageDescription]
    assert description.isascii() and json.loads(description) == plan
    assert exif["0th"][piexif.ImageIFD.Software] == b"iga 0.1.0"


def test_webp_exif_readable_by_pillow(tmp_path):
    plan = make_plan()
    path = save_image(image(), plan, tmp_path, "webp", now=NOW)
    with Image.open(path) as im:
        exif = im.getexif()
        assert json.loads(exif[0x010E]) == plan
        comment = exif.get_ifd(0x8769)[0x9286]
    assert comment[:8] == b"UNICODE\0" and comment[8:].decode("utf-16-be") == format_infotext(plan)


def test_jpeg_with_a_long_prompt_packs_the_plan_and_refuses_when_impossible(tmp_path):
    words = " ".join(f"word{i}" for i in range(2700))  # 23 KB: UTF-16 infotext + plain plan > 64 KiB
    plan = make_plan(prompt=words)
    path = save_image(image(), plan, tmp_path, "jpg", now=NOW)
    exif = piexif.load(str(path))
    assert exif["0th"][piexif.ImageIFD.ImageDescription].startswith(b"iga.plan+zlib+base64:")
    assert read_provenance(path).plan == plan
    huge = make_plan(prompt="x" * 40_000)  # the UTF-16 infotext alone exceeds a JPEG segment
    with pytest.raises(ProvenanceError, match="PNG or WebP"):
        save_image(image(), huge, tmp_path, "jpg", now=NOW)
    assert read_provenance(save_image(image(), huge, tmp_path, "webp", now=NOW)).plan == huge
    assert not list(tmp_path.glob(".iga-*"))


def test_rgba_to_jpeg_and_pydantic_like_plans(tmp_path):
    class FakeModel:  # anything with model_dump(mode="json"), as pydantic models have
        def model_dump(self, mode="python"):
            assert mode == "json"
            return make_plan()

    rgba = Image.new("RGBA", (8, 8), (1, 2, 3, 4))
    path = save_image(rgba, FakeModel(), tmp_path, "jpeg", now=NOW)
    assert path.suffix == ".jpg" and read_provenance(path).plan == make_plan()


def test_plan_from_the_guard_round_trips(tmp_path):
    plan_mod = pytest.importorskip("iga.guard.plan")
    plan = plan_mod.Plan.model_validate({
        "schema": "iga.plan/1", "iga_version": "0.1.0", "created": "2024-01-02T03:04:05Z", "mode": "guarded",
        "model": {"name": "tiny", "weights_sha256": "ab" * 32, "autov2": "0123456789"}, "prompt": "p",
        "seed": 3, "seeds": [3], "prediction_type": "eps", "sampler": "dpmpp_2m", "schedule": "karras",
        "schedule_params": {"rho": 7.0}, "steps": 4, "sigmas": [14.6, 3.0, 1.0, 0.3, 0.0], "cfg": 7.5,
        "width": 48, "height": 32})
    path = save_image(image(), plan.to_dict(), tmp_path, now=NOW)
    back = read_provenance(path)
    assert plan_mod.Plan.from_dict(back.plan) == plan
    with Image.open(path) as im:
        assert "Schedule rho: 7," in im.text["parameters"]


def test_never_overwrites_and_numbers_names(tmp_path):
    plan = make_plan()
    first = save_image(image(), plan, tmp_path, now=NOW)
    first_bytes = first.read_bytes()
    second = save_image(Image.new("RGB", (48, 32)), plan, tmp_path, now=NOW)
    third = save_image(Image.new("RGB", (48, 32)), plan, tmp_path, now=NOW)
    assert second.name == first.stem + "-1.png" and third.name == first.stem + "-2.png"
    assert first.read_bytes() == first_bytes
    assert not list(tmp_path.glob(".iga-*"))


def test_publishes_without_hard_links_too(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    plan = make_plan()
    a = save_image(image(), plan, tmp_path, now=NOW)
    b = save_image(image(), plan, tmp_path, now=NOW)
    assert a != b and read_provenance(a).plan == plan and read_provenance(b).plan == plan
    assert not list(tmp_path.glob(".iga-*"))


def test_concurrent_saves_get_distinct_files(tmp_path):
    plan = make_plan()
    paths: list[Path] = []
    lock = threading.Lock()

    def work():
        p = save_image(image(), plan, tmp_path, now=NOW)
        with lock:
            paths.append(p)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 8 and all(read_provenance(p).plan == plan for p in paths)


def test_failed_encode_leaves_nothing(tmp_path):
    with pytest.raises(AttributeError):
        save_image(object(), make_plan(), tmp_path, now=NOW)
    with pytest.raises(ProvenanceError, match="unknown image format"):
        save_image(image(), make_plan(), tmp_path, "gif", now=NOW)
    with pytest.raises(ProvenanceError, match=r"plan\.sigmas\[0\]"):
        save_image(image(), make_plan(sigmas=[float("inf"), 0.0]), tmp_path, now=NOW)
    assert list(tmp_path.iterdir()) == []


def test_no_provenance_is_an_answer_not_an_error(tmp_path):
    p = tmp_path / "plain.png"
    Image.new("RGB", (5, 4)).save(p)
    prov = read_provenance(p)
    assert prov.source == "none" and prov.plan is None and prov.prompt is None
    assert (prov.image_width, prov.image_height) == (5, 4)
    j = tmp_path / "plain.jpg"
    Image.new("RGB", (5, 4)).save(j)
    assert read_provenance(j).source == "none" and read_provenance(j).image_width == 5


def test_edited_parameters_are_flagged(tmp_path):
    plan = make_plan()
    info = Image.new("RGB", (4, 4))
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", format_infotext(plan).replace("Seed: 42", "Seed: 43"))
    meta.add_itxt("iga_metadata", json.dumps(plan))
    path = tmp_path / "edited.png"
    info.save(path, pnginfo=meta)
    prov = read_provenance(path)
    assert prov.source == "iga" and prov.seed == 42
    assert any("disagrees" in w and "seed" in w for w in prov.warnings)


def test_untrusted_plan_fields_are_type_checked():
    fields = fields_from_plan({"prompt": 5, "seed": "x", "steps": 20.0, "cfg": "7", "model": "m"})
    assert fields["prompt"] is None and fields["seed"] is None and fields["steps"] == 20 and fields["cfg"] == 7.0
    assert len(fields["warnings"]) == 3


@pytest.mark.parametrize("lossless", [False, True])
def test_webp_size_without_exif(tmp_path, lossless):
    p = tmp_path / "w.webp"
    Image.new("RGB", (37, 21), (9, 9, 9)).save(p, "WEBP", lossless=lossless)  # VP8L or VP8, no VP8X
    prov = read_provenance(p)
    assert prov.source == "none" and (prov.image_width, prov.image_height) == (37, 21)


@pytest.mark.parametrize("description", ["A photo of a cat", '{"title": "not ours"}', '{"schema": "other/1"}'])
def test_someone_elses_image_description_is_not_a_plan(tmp_path, description):
    exif = Image.Exif()
    exif[0x010E] = description
    p = tmp_path / "d.jpg"
    Image.new("RGB", (4, 4)).save(p, "JPEG", exif=exif.tobytes())
    prov = read_provenance(p)
    assert prov.source == "none" and prov.raw["EXIF ImageDescription"] == description
