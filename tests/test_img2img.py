"""img2img, inpainting and hires fix on the bundled demo model: how steps and denoise choose the sigmas under each
tool's convention, the guard's checks, bad input, the CLI's dry run, replay and the A1111 infotext."""

from __future__ import annotations

import numpy as np
import pytest

import iga
from iga.guard import GuardRefused
from iga.guard.img2img import grid_and_start
from test_generate_support import cli, cli_json, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("offline_audit")
PROMPT = "a yellow star on a black background"


@pytest.fixture(scope="module")
def demo():
    return iga.load()


@pytest.fixture(scope="module")
def images(tmp_path_factory, demo):
    from PIL import Image

    root = tmp_path_factory.mktemp("inputs")
    base = demo.generate("a red circle on a blue background", seed=1)[0]
    base.image.save(root / "init.png")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))
    mask.save(root / "mask.png")
    Image.new("L", (64, 64), 255).save(root / "big_mask.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return {"root": root, "init": root / "init.png", "mask": root / "mask.png", "base": base.pixels,
            "big_mask": root / "big_mask.png", "broken": root / "broken.png"}


@pytest.mark.parametrize("convention, steps, denoise, grid, run", [
    ("diffusers", 20, 0.6, 20, 12), ("a1111", 20, 0.6, 20, 13), ("comfyui", 20, 0.6, 33, 20),
    ("diffusers", 8, 0.6, 8, 4), ("a1111", 10, 1.0, 10, 10), ("comfyui", 10, 1.0, 10, 10),
    ("diffusers", 10, 0.05, 10, 0),
])
def test_each_convention_cuts_the_grid_as_its_tool_does(convention, steps, denoise, grid, run):
    g, start = grid_and_start(convention, steps, denoise)
    assert (g, g - start) == (grid, run)


def test_img2img_runs_the_tail_of_the_recipe_grid_and_records_the_init_image(demo, images):
    full = demo.plan(PROMPT, seed=2)
    plan = demo.plan(PROMPT, seed=2, init_image=str(images["init"]), denoise=0.5)
    assert plan.sigmas == full.sigmas[full.steps // 2:]
    import hashlib

    assert plan.img2img.init_image.sha256 == hashlib.sha256(images["init"].read_bytes()).hexdigest()
    assert (plan.width, plan.height) == (32, 32) and plan.img2img.denoise == 0.5


def test_denoise_changes_how_far_the_image_moves_from_its_start(demo, images):
    moved = [np.abs(demo.generate(PROMPT, seed=2, init_image=str(images["init"]), denoise=d)[0].pixels.astype(int)
                    - images["base"]).mean() for d in (0.2, 0.9)]
    assert moved[0] < moved[1]


def test_the_comfyui_convention_grid_must_satisfy_the_recipe_step_range(demo, images):
    with pytest.raises(GuardRefused) as e:
        demo.plan(PROMPT, seed=2, init_image=str(images["init"]), denoise=0.3, denoise_steps="comfyui", steps=20)
    assert any(f.field == "steps" and "grid" in f.reason for f in e.value.findings)
    ok = demo.plan(PROMPT, seed=2, init_image=str(images["init"]), denoise=0.3, denoise_steps="comfyui", steps=20,
                   overrides=["steps"], reason="test")
    assert ok.img2img.grid_steps == 66 and len(ok.sigmas) == 21


def test_masked_sampling_leaves_the_unmasked_region_exactly_as_it_was(demo, images):
    out = demo.generate(PROMPT, seed=2, init_image=str(images["init"]), mask=str(images["mask"]), mask_blur=0,
                        denoise=1.0)[0]
    diff = np.abs(out.pixels.astype(int) - images["base"])
    assert diff[:, 16:].max() == 0 and diff[:, :16].mean() > 5


def test_only_masked_pastes_the_repainted_crop_back_into_the_untouched_picture(demo, images, tmp_path):
    from PIL import Image

    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (4, 4, 12, 12))
    mask.save(tmp_path / "small.png")
    out = demo.generate(PROMPT, seed=3, init_image=str(images["init"]), mask=str(tmp_path / "small.png"),
                        mask_blur=0, inpaint_area="only_masked", inpaint_padding=4, denoise=1.0)[0]
    diff = np.abs(out.pixels.astype(int) - images["base"])
    assert diff[16:, 16:].max() == 0 and diff[4:12, 4:12].mean() > 5


def test_hires_fix_renders_at_the_scaled_size_and_counts_both_passes(demo):
    plan = demo.plan(PROMPT, seed=4, hires=2, hires_steps=14, hires_denoise=0.5)
    assert (plan.hires.width, plan.hires.height) == (64, 64) and len(plan.hires.sigmas) == 15
    out = demo.generate(plan=plan)[0]
    assert out.image.size == (64, 64) and out.nfe == (plan.nfe or 0) + plan.hires.nfe


@pytest.mark.parametrize("upscaler", ["latent", "latent-nearest", "lanczos"])
def test_every_upscaler_gives_a_replayable_hires_image(demo, upscaler):
    plan = demo.plan(PROMPT, seed=5, hires=1.5, hires_steps=14, hires_upscaler=upscaler)
    first, again = demo.generate(plan=plan)[0], demo.generate(plan=plan)[0]
    assert first.image.size == (48, 48) and np.array_equal(first.pixels, again.pixels)


def test_img2img_and_hires_images_replay_bit_for_bit_from_their_files(images, tmp_path):
    init, mask = images["init"], images["mask"]
    runs = [["--init-image", init, "--denoise", "0.6", "--mask", mask, "--inpaint-area", "only_masked"],
            ["--hires", "2", "--hires-steps", "14", "--hires-upscaler", "Latent (bicubic)"]]
    for k, extra in enumerate(runs):
        out = tmp_path / str(k)
        r = cli(["generate", PROMPT, "--seed", "6", "-o", out, *extra])
        assert r.exit_code == 0, r.output
        [png] = out.glob("*.png")
        r = cli(["replay", png])
        assert r.exit_code == 0 and "identical" in r.output, r.output


def test_plan_is_a_faithful_dry_run_of_generate(images, tmp_path):
    args = ["--seed", "7", "--init-image", images["init"], "--denoise", "0.4", "--denoise-steps", "a1111"]
    planned = cli_json(["plan", PROMPT, *args, "--json"])["plan"]
    made = cli_json(["generate", PROMPT, *args, "-o", tmp_path, "--json"])
    made_plan = made["plans"][0]
    for key in ("sigmas", "img2img", "hires", "steps", "width", "height"):
        assert planned[key] == made_plan[key], key


def test_the_infotext_carries_a1111_fields_that_iga_show_reads_back(images, tmp_path):
    r = cli(["generate", PROMPT, "--seed", "8", "-o", tmp_path, "--hires", "2", "--hires-steps", "14",
             "--hires-denoise", "0.45"])
    assert r.exit_code == 0, r.output
    [png] = tmp_path.glob("*.png")
    from PIL import Image

    text = Image.open(png).text["parameters"]
    for field in ("Denoising strength: 0.45", "Hires upscale: 2", "Hires steps: 14", "Hires upscaler: Latent"):
        assert field in text
    a1111 = tmp_path / "a1111.png"
    Image.open(png).save(a1111, pnginfo=_only_parameters(text))
    shown = cli_json(["show", a1111, "--json"])
    assert shown["source"] == "a1111" and shown["hires_scale"] == 2 and shown["hires_steps"] == 14
    assert shown["denoise"] == 0.45 and shown["hires_upscaler"] == "latent"


def _only_parameters(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    return info


@pytest.mark.parametrize("args, message", [
    (["--init-image", "{init}", "--denoise", "1.5"], "outside [0, 1]"),
    (["--denoise", "0.5"], "needs an init image"),
    (["--init-image", "{broken}"], "not an image iga can read"),
    (["--init-image", "{missing}"], "cannot be read"),
    (["--init-image", "{init}", "--mask", "{big_mask}"], "must have the init image's size"),
    (["--hires", "0.5"], "must be above 1"),
    (["--hires", "2", "--hires-upscaler", "esrgan"], "unknown hires upscaler"),
    (["--init-image", "{init}", "--denoise-steps", "forge"], "choose diffusers or a1111 or comfyui"),
])
def test_bad_input_is_one_clear_line_and_exit_2(images, tmp_path, args, message):
    paths = {**{k: str(v) for k, v in images.items() if k != "base"}, "missing": str(tmp_path / "nope.png")}
    r = cli(["generate", PROMPT, "-o", tmp_path, *[a.format(**paths) for a in args]])
    assert r.exit_code == 2 and message in r.output, r.output
    assert len([line for line in r.output.strip().splitlines() if line.strip()]) == 1, r.output
    assert not list(tmp_path.glob("*.png"))


def test_replay_finds_a_moved_init_image_given_with_input(images, tmp_path, monkeypatch):
    import shutil

    moved = tmp_path / "elsewhere.png"
    shutil.copy(images["init"], tmp_path / "init.png")
    r = cli(["generate", PROMPT, "--seed", "9", "-o", tmp_path / "out", "--init-image", tmp_path / "init.png"])
    assert r.exit_code == 0, r.output
    [png] = (tmp_path / "out").glob("*.png")
    (tmp_path / "init.png").rename(moved)
    monkeypatch.setenv("IGA_MODEL_INDEX", str(tmp_path / "fresh-index.json"))  # another machine: nothing known
    r = cli(["replay", png])
    assert r.exit_code == 2 and "init image" in r.output and "--input FILE" in r.output, r.output
    r = cli(["replay", png, "--input", moved])
    assert r.exit_code == 0 and "identical" in r.output, r.output


def test_previews_count_both_hires_passes_as_one_image(demo):
    from iga.diagnostics.preview import PreviewStream
    from iga.generate import passes_per_image, steps_run

    plan = demo.plan(PROMPT, seed=1, batch=2, hires=1.5, hires_steps=14)
    stream = PreviewStream(demo.backend_for(plan), total=steps_run(plan), passes=passes_per_image(plan))
    demo.generate(plan=plan, callback=stream)
    assert passes_per_image(plan) == 2 and {f.image for f in stream.frames} == {0, 1}
    assert [f.step for f in stream.frames if f.image == 0] == list(range(1, steps_run(plan) + 1))
    assert all(f.total == steps_run(plan) for f in stream.frames)
