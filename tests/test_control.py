"""ControlNet adapters: read defensively, checked against the base model's UNet, run like diffusers'
StableDiffusionControlNetPipeline (strength, start/end window), judged against the recipe's `control` section,
recorded in the plan and the A1111 infotext, replayed bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import iga  # noqa: E402
from iga.checkpoint.embed import embed_recipe_with_hashes  # noqa: E402
from iga.guard import GuardRefused, Plan  # noqa: E402
from iga.guard.plan import ControlRequest  # noqa: E402
from iga.models import clear_cache, testing  # noqa: E402
from test_generate_support import PROMPT, TINY_RECIPE, cli, cli_json, one_thread  # noqa: E402,F401

SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")
STEPS, CFG = 8, 6.0
# TINY_RECIPE (steps 2..8) validated with the adapter "edges" at strength 0.5..1.0
CONTROL_RECIPE = {**TINY_RECIPE, "iga_version": "1.4.0",
                  "control": [{"id": "edges", "kind": "canny", "strength": {"default": 0.8, "min": 0.5, "max": 1.0}}]}

pytestmark = pytest.mark.usefixtures("offline_audit")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(tiny, single file with CONTROL_RECIPE, diffusers folder, ControlNet folder "edges", control image, root)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("control")
    tiny = testing.build_tiny("sd1", seed=71)
    single = testing.save_single_file(tiny, root / "tiny-sd1.safetensors")
    embed_recipe_with_hashes(single, CONTROL_RECIPE)
    folder = testing.save_folder(tiny, root / "tiny-sd1")
    net = testing.build_tiny_controlnet(tiny, root / "edges", seed=3)
    yy, xx = np.mgrid[0:64, 0:64]
    edges = (((xx // 8 + yy // 8) % 2) * 255).astype(np.uint8)  # a checkerboard "edge map"
    image = root / "edges.png"
    Image.fromarray(np.stack([edges, 255 - edges, edges], -1), "RGB").save(image)
    yield tiny, single, folder, net, image, root
    clear_cache()


@pytest.fixture(scope="module")
def model(base):
    return iga.load(base[1])


def _control(base, strength: float | None = 0.8, start: float = 0.0, end: float = 1.0, net=None) -> ControlRequest:
    return ControlRequest(path=str(net or base[3]), image=str(base[4]), strength=strength, start=start, end=end)


def _plan(model, seed: int, *controls, **fields) -> Plan:
    return model.plan(PROMPT, sampler="euler", schedule="karras", steps=STEPS, cfg=CFG, seed=seed, size="64x64",
                      controls=list(controls), **fields)


def _diffusers_image(base, seed: int, strength: float, start: float, end: float) -> np.ndarray:
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionControlNetPipeline
    from PIL import Image

    net = ControlNetModel.from_pretrained(str(base[3]), local_files_only=True)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(str(base[2]), controlnet=net, local_files_only=True,
                                                             safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")
    with torch.inference_mode():
        out = pipe(PROMPT, image=Image.open(base[4]), num_inference_steps=STEPS, guidance_scale=CFG, height=64,
                   width=64, controlnet_conditioning_scale=strength, control_guidance_start=start,
                   control_guidance_end=end, generator=torch.Generator("cpu").manual_seed(seed),
                   output_type="np").images[0]
    return (out * 255.0).round().astype(np.uint8)


@pytest.mark.parametrize("window", [(0.0, 1.0), (0.25, 0.75)])
def test_a_controlnet_image_matches_diffusers_own_controlnet_pipeline(base, model, window):
    start, end = window
    plan = _plan(model, 4, _control(base, 0.8, start, end))
    ours = model.generate(plan=plan)[0].pixels
    theirs = _diffusers_image(base, 4, 0.8, start, end)
    plain = model.generate(plan=_plan(model, 4))[0].pixels
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 2, (window, int(diff.max()), float(diff.mean()))
    assert np.abs(ours.astype(int) - plain.astype(int)).max() > 20  # the adapter really steers the image


def test_an_sdxl_controlnet_image_matches_diffusers_own_sdxl_controlnet_pipeline(tmp_path):
    """SDXL: the adapter also reads the pooled text and size ids; the image (96x80) is resized to the plan's size."""
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline
    from PIL import Image

    tiny = testing.build_tiny("sdxl", seed=5)
    folder = testing.save_folder(tiny, tmp_path / "xl")
    net = testing.build_tiny_controlnet(tiny, tmp_path / "xl-edges", seed=3)
    image = tmp_path / "edges.png"
    Image.fromarray((np.indices((80, 96)).sum(0) % 16 * 16).astype(np.uint8)).convert("RGB").save(image)
    model = iga.load(folder)
    control = ControlRequest(path=str(net), image=str(image), strength=0.7, start=0.0, end=0.8)
    ours = model.generate(PROMPT, sampler="euler", schedule="karras", steps=6, cfg=5.0, seed=2, size="64x64",
                          negative_prompt="blurry", controls=[control])[0].pixels
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
        str(folder), controlnet=ControlNetModel.from_pretrained(str(net), local_files_only=True),
        local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True,
                                                        timestep_spacing="linspace")
    with torch.inference_mode():
        out = pipe(PROMPT, negative_prompt="blurry", image=Image.open(image), num_inference_steps=6,
                   guidance_scale=5.0, height=64, width=64, controlnet_conditioning_scale=0.7,
                   control_guidance_start=0.0, control_guidance_end=0.8,
                   generator=torch.Generator("cpu").manual_seed(2), output_type="np").images[0]
    theirs = (out * 255.0).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2
    clear_cache()


def test_a_window_that_excludes_every_step_gives_the_plain_image(base, model):
    # 8 steps: step i is active when i/8 >= 0.5 and (i+1)/8 <= 0.55: no step qualifies
    none = model.generate(plan=_plan(model, 5, _control(base, 1.0, 0.5, 0.55)))[0].pixels
    plain = model.generate(plan=_plan(model, 5))[0].pixels
    assert np.array_equal(none, plain)


def test_the_step_of_each_call_follows_diffusers_window_rule():
    from iga.models.control import ActiveControl, ControlledModel

    ts = torch.tensor([900.0, 700.0, 500.0, 300.0, 0.0])
    cm = ControlledModel(None, [], ts)
    assert [cm.step_of(torch.tensor([t])) for t in (900.0, 800.0, 700.0, 300.0, 10.0)] == [0, 0, 1, 3, 3]
    c = ActiveControl(None, None, 1.0, 0.25, 0.75)
    assert [c.active(i, 4) for i in range(4)] == [False, True, True, False]


def test_strength_outside_the_recipes_range_is_refused_then_accepted_as_a_control_override(base, model):
    with pytest.raises(GuardRefused) as e:
        _plan(model, 1, _control(base, 1.5))
    [f] = [f for f in e.value.findings if f.outcome == "refused"]
    assert f.field == "control" and "0.5..1" in f.reason and "--override control" in f.suggestion
    plan = _plan(model, 1, _control(base, 1.5), overrides=["control"], reason="stronger edges")
    assert plan.controls[0].strength == 1.5
    assert [(o.field, o.requested_value, o.reason) for o in plan.overrides] == [("control", 1.5, "stronger edges")]


def test_the_recipes_strength_applies_when_none_is_asked(base, model):
    plan = _plan(model, 1, _control(base, None))
    use = plan.controls[0]
    assert (use.name, use.strength, use.start, use.end, use.path) == ("edges", 0.8, 0.0, 1.0, None)
    assert use.image.sha256 and (use.image.width, use.image.height) == (64, 64)


def test_an_adapter_the_recipe_does_not_list_is_a_soft_control_finding(base, model):
    other = testing.build_tiny_controlnet(base[0], base[5] / "depth", seed=9)
    with pytest.raises(GuardRefused, match="not one the recipe lists"):
        _plan(model, 1, _control(base, net=other))
    assert _plan(model, 1, _control(base, net=other), overrides=["control"]).controls[0].name == "depth"


def test_a_controlnet_for_another_text_width_is_refused_from_its_header(base, model, tmp_path):
    from diffusers import ControlNetModel

    net = ControlNetModel(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8,
                          cross_attention_dim=48, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                          conditioning_embedding_out_channels=(16, 32))
    net.save_pretrained(str(tmp_path / "wide"), safe_serialization=True)
    with pytest.raises(GuardRefused) as e:
        _plan(model, 1, _control(base, net=tmp_path / "wide"), mode="permissive")
    [f] = [f for f in e.value.findings if f.outcome == "refused"]
    assert f.severity == "hard" and "cross-attention width 48 vs 32" in f.reason


def test_a_replayed_controlnet_plan_finds_its_adapter_and_image_by_hash_and_is_identical(base, model, tmp_path):
    from iga.provenance import read_provenance, save_image

    [img] = model.generate(plan=_plan(model, 6, _control(base, 0.9, 0.0, 0.75)))
    back = Plan.from_dict(read_provenance(save_image(img.image, img.plan.to_dict(), tmp_path)).plan)
    req = back.as_request()
    assert [(c.strength, c.start, c.end) for c in req.controls] == [(0.9, 0.0, 0.75)]
    [again] = iga.load(base[1]).generate(plan=back)
    assert np.array_equal(again.pixels, img.pixels)


def test_iga_plan_generate_show_and_replay_carry_the_controlnet(base, tmp_path):
    args = ["--model", base[1], "--seed", 3, "--steps", 4, "--controlnet", base[3], "--control-image", base[4],
            "--control-strength", 0.7, "--control-end", 0.5]
    plan = cli_json(["plan", PROMPT, *args])["plan"]
    assert [(c["name"], c["strength"], c["end"]) for c in plan["controls"]] == [("edges", 0.7, 0.5)]
    assert "controlnet edges" in cli(["plan", PROMPT, *args]).stdout
    [image] = cli_json(["generate", PROMPT, *args, "--out", tmp_path / "out"])["images"]
    shown = cli_json(["show", image])
    params = shown["raw"]["parameters"]
    short = plan["controls"][0]["file_sha256"][:8]
    assert f'ControlNet 0: "Module: none, Model: edges [{short}], Weight: 0.7' in params
    assert "Guidance Start: 0.0, Guidance End: 0.5" in params
    assert shown["controls"][0]["model"] == f"edges [{short}]"
    assert f"edges [{short}] x 0.7 (steps 0.0..0.5)" in cli(["show", image]).stdout
    res = cli(["replay", image])
    assert res.exit_code == 0 and "identical" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("case", ["pickle", "image", "strength", "window", "count"])
def test_bad_control_input_is_one_clear_line_and_exit_2(base, tmp_path, case):
    pt = tmp_path / "control.pth"
    pt.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    net, image, extra, expect = {
        "pickle": (pt, base[4], [], "pickles"),
        "image": (base[3], broken, [], "broken.png is not an image"),
        "strength": (base[3], base[4], ["--control-strength", "nan"], "strength nan cannot work"),
        "window": (base[3], base[4], ["--control-start", 0.8, "--control-end", 0.2], "0 <= start < end <= 1"),
        "count": (base[3], base[4], ["--controlnet", base[3]], "one conditioning image per ControlNet"),
    }[case]
    res = cli(["plan", PROMPT, "--model", base[1], "--controlnet", net, "--control-image", image, *extra])
    assert res.exit_code == 2, res.stdout + res.stderr
    [line] = res.stderr.strip().splitlines()
    assert expect in line, line


def test_a_controlnet_is_found_by_its_id_in_the_model_store(base, model, tmp_path, monkeypatch):
    folder = tmp_path / "models"
    testing.build_tiny_controlnet(base[0], folder / "edges", seed=3)  # the same bytes as base[3]
    monkeypatch.setenv("IGA_MODELS", str(folder))
    plan = _plan(model, 1, ControlRequest(path="edges", image=str(base[4])))
    assert plan.controls[0].name == "edges" and plan.controls[0].strength == 0.8
    with pytest.raises(ValueError, match="ControlNet not found: edgse"):
        _plan(model, 1, ControlRequest(path="edgse", image=str(base[4])))
