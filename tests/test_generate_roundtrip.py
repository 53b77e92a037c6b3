"""generate -> save -> show -> replay, through the Python API and the `iga` CLI, for PNG, JPEG and WebP;
replay's exit codes when a pixel or the model differs; batch images equal their seeds generated alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

import iga  # noqa: E402
from iga.guard import Plan  # noqa: E402
from iga.models import clear_cache  # noqa: E402
from iga.provenance import read_provenance, save_image  # noqa: E402
from test_generate_support import (  # noqa: E402
    one_thread,
    PROMPT, TINY_RECIPE, a1111_fields, cli, cli_json, file_sha256, pixel_sha, tiny_with_recipe,
)

FORMATS = ["png", "jpg", "webp"]


pytestmark = pytest.mark.usefixtures("offline_audit")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, other): a tiny SD1 file with a recipe, and one with other weights and the same recipe."""
    root = tmp_path_factory.mktemp("roundtrip")
    yield tiny_with_recipe(root, "tiny-sd1", seed=31), tiny_with_recipe(root, "tiny-sd1-other", seed=32)
    clear_cache()


@pytest.fixture(scope="module")
def model(tiny):
    return iga.load(tiny[0])


def _user_comment(path) -> str:
    """EXIF UserComment (A1111 infotext in JPEG/WebP), read with piexif's helper as A1111 reads it."""
    import piexif.helper

    with Image.open(path) as im:
        raw = im.getexif().get_ifd(0x8769)[0x9286]
    return piexif.helper.UserComment.load(raw)


def _stored_pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_api_round_trip(model, tiny, tmp_path, fmt):
    [img] = model.generate(PROMPT, seed=5)
    plan = img.plan
    assert (plan.sampler, plan.schedule, plan.steps, plan.cfg, plan.width) == ("euler", "karras", 4, 6.0, 64)
    assert plan.pixels_sha256 == pixel_sha(img.pixels)
    path = save_image(img.image, plan.to_dict(), tmp_path, fmt=fmt)
    assert path.suffix == f".{fmt}"

    # iga's own reading: the whole plan back, and the normalised fields
    prov = read_provenance(path)
    assert prov.source == "iga" and prov.warnings == []
    assert Plan.from_dict(prov.plan) == plan
    assert (prov.seed, prov.steps, prov.cfg, prov.sampler, prov.schedule) == (5, 4, 6.0, "euler", "karras")
    model_hash = file_sha256(tiny[0])[:10]
    assert prov.model_hash == model_hash

    # what A1111 / Civitai read: `parameters` (PNG text) or EXIF UserComment, read here without iga
    if fmt == "png":
        with Image.open(path) as im:
            text, stored_plan = im.text["parameters"], json.loads(im.text["iga_metadata"])
        assert Plan.from_dict(stored_plan) == plan
    else:
        text = _user_comment(path)
    assert text.splitlines()[0] == PROMPT
    f = a1111_fields(text)
    assert f["Steps"] == "4" and f["Sampler"] == "Euler" and f["Schedule type"] == "Karras"
    assert float(f["CFG scale"]) == 6.0 and f["Seed"] == "5" and f["Size"] == "64x64"
    assert f["Model hash"] == model_hash

    stored = _stored_pixels(path)
    if fmt == "png":
        assert np.array_equal(stored, img.pixels)
    else:  # lossy: the file is close, the plan's hash records the exact pixels before encoding
        assert not np.array_equal(stored, img.pixels)
        corr = np.corrcoef(stored.ravel().astype(float), img.pixels.ravel().astype(float))[0, 1]
        assert corr > 0.9  # noise-like tiny-model images lose a lot to chroma subsampling, but it is the image

    res = cli(["replay", path, "--json"])
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["identical"] is True and report["pixels_sha256_match"] is True
    assert report["lossy_format"] is (fmt != "png")
    assert (report["file_max_abs"] == 0) is (fmt == "png")


def test_cli_generate_show_replay(tiny, tmp_path):
    out = tmp_path / "out"
    gen = cli_json(["generate", PROMPT, "--model", tiny[0], "--seed", 7, "--out", out])
    [image] = gen["images"]
    assert gen["schema"] == "iga.generate/1" and gen["nfe"] == 4
    assert set(gen["timing"]) == {"resolve_s", "load_s", "sample_s", "save_s"}
    assert sorted(p.name for p in out.iterdir()) == [image.rsplit("/", 1)[-1]]  # no temp file left behind

    shown = cli_json(["show", image])
    assert shown["source"] == "iga" and shown["plan"] == gen["plans"][0]
    assert (shown["seed"], shown["steps"], shown["sampler"], shown["schedule"]) == (7, 4, "euler", "karras")
    assert shown["model_hash"] == file_sha256(tiny[0])[:10]
    assert a1111_fields(shown["raw"]["parameters"])["Seed"] == "7"

    plan = cli_json(["plan", PROMPT, "--model", tiny[0], "--seed", 7])["plan"]
    for key in ("sampler", "schedule", "steps", "cfg", "sigmas", "seed", "width", "height", "model"):
        assert plan[key] == gen["plans"][0][key], key

    res = cli(["replay", image])
    assert res.exit_code == 0 and "identical" in res.stdout
    # the regenerated image, saved, has exactly the stored pixels
    again = tmp_path / "again.png"
    assert cli(["replay", image, "--save", again]).exit_code == 0
    assert np.array_equal(_stored_pixels(again), _stored_pixels(image))


def _tampered(src, dst, fmt, **changes):
    """A copy of an iga image whose stored plan has ``changes`` (pixels re-encoded unchanged for PNG)."""
    prov = read_provenance(src)
    plan = {**prov.plan, **changes}
    with Image.open(src) as im:
        im.load()
        return save_image(im.convert("RGB"), plan, dst, fmt=fmt)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_replay_exits_1_when_a_pixel_differs(model, tmp_path, fmt):
    [img] = model.generate(PROMPT, seed=11)
    path = save_image(img.image, img.plan.to_dict(), tmp_path / "ok", fmt=fmt)
    assert cli(["replay", path]).exit_code == 0

    wrong_seed = _tampered(path, tmp_path / "seed", fmt, seed=12, seeds=[12])
    res = cli(["replay", wrong_seed, "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["identical"] is False

    wrong_hash = _tampered(path, tmp_path / "hash", fmt, pixels_sha256="0" * 64)
    res = cli(["replay", wrong_hash, "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["pixels_sha256_match"] is False


def test_png_without_pixel_hash_is_compared_to_the_file(model, tmp_path):
    """Older plans carry no pixels_sha256: a PNG is then compared pixel for pixel with the file itself."""
    [img] = model.generate(PROMPT, seed=13)
    plan = {**img.plan.to_dict(), "pixels_sha256": None}
    ok = save_image(img.image, plan, tmp_path / "ok")
    assert cli(["replay", ok]).exit_code == 0
    px = img.pixels.copy()
    px[0, 0, 0] ^= 1  # one channel of one pixel, off by one
    bad = save_image(Image.fromarray(px, "RGB"), plan, tmp_path / "bad")
    res = cli(["replay", bad, "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["file_max_abs"] == 1


def test_replay_refuses_other_weights_unless_forced(model, tiny, tmp_path):
    [img] = model.generate(PROMPT, seed=5)
    path = save_image(img.image, img.plan.to_dict(), tmp_path)
    res = cli(["replay", path, "--model", tiny[1]])
    assert res.exit_code == 2 and "--force" in res.stderr and "different model" in res.stderr
    forced = cli(["replay", path, "--model", tiny[1], "--force", "--json"])
    assert forced.exit_code == 1 and json.loads(forced.stdout)["identical"] is False
    assert cli(["replay", path, "--model", tiny[0]]).exit_code == 0


def test_batch_images_equal_their_seeds_alone(model, tiny, tmp_path):
    out = tmp_path / "batch"
    gen = cli_json(["generate", PROMPT, "--model", tiny[0], "-n", 3, "--seed", 10, "--out", out])
    assert len(gen["images"]) == 3
    seen = set()
    for k, (path, plan) in enumerate(zip(gen["images"], gen["plans"])):
        assert (plan["seed"], plan["seeds"], plan["batch_index"]) == (10 + k, [10 + k], k)
        [alone] = model.generate(PROMPT, seed=10 + k)
        batch_px = _stored_pixels(path)
        diff = np.abs(batch_px.astype(int) - alone.pixels.astype(int)).max()
        assert diff == 0, f"image {k} of the batch differs from seed {10 + k} alone by {diff}/255"
        assert plan["pixels_sha256"] == alone.plan.pixels_sha256
        seen.add(plan["pixels_sha256"])
        assert cli(["replay", path]).exit_code == 0  # each image replays alone from its own plan
    assert len(seen) == 3  # three different seeds, three different images


def test_refused_request_writes_nothing(tiny, tmp_path):
    out = tmp_path / "out"
    res = cli(["generate", PROMPT, "--model", tiny[0], "--steps", 30, "--out", out])
    assert res.exit_code == 3 and "steps" in res.stderr
    assert not out.exists()
    assert TINY_RECIPE["cfg"]["max"] < 10
    res = cli(["generate", PROMPT, "--model", tiny[0], "--cfg", 10, "--out", out])
    assert res.exit_code == 3 and not out.exists()
    res = cli(["generate", PROMPT, "--model", tiny[0], "--cfg", 10, "--override", "cfg", "--out", out, "--json"])
    assert res.exit_code == 0
    [override] = json.loads(res.stdout)["plans"][0]["overrides"]
    assert (override["field"], override["recipe_value"], override["requested_value"]) == ("cfg", 6.0, 10.0)
    assert len(list(out.iterdir())) == 1


def test_replay_with_another_vae_works_from_any_directory(tiny, tmp_path, monkeypatch):
    from iga.models import testing

    folder = tmp_path / "vaes"
    folder.mkdir()
    vae = testing.save_vae(testing.tiny_vae(seed=7), folder / "my-vae.safetensors")
    monkeypatch.chdir(folder)  # the VAE given as a relative path
    gen = cli_json(["generate", PROMPT, "--model", tiny[0], "--vae", "my-vae.safetensors", "--override", "vae",
                    "--out", tmp_path / "out"])
    [image], [plan] = gen["images"], gen["plans"]
    assert plan["vae"]["source"] == "file" and plan["vae"]["path"] is None  # no local path in shared images
    monkeypatch.chdir(tmp_path)
    assert cli(["replay", image]).exit_code == 0
    vae.unlink()  # the VAE is gone: one clear error line, exit 2, no traceback
    res = cli(["replay", image])
    assert res.exit_code == 2 and "VAE not found" in res.stderr
