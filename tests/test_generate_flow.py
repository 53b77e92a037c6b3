"""SD3 and Flux end to end: `iga generate` on tiny random models (diffusers folders and the single files people
share) makes diffusers' own pipeline's image, and `iga replay` regenerates it identically."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from iga.models import testing  # noqa: E402
from test_generate_support import cli  # noqa: E402

PROMPT = "a red circle on a blue background"
pytestmark = pytest.mark.usefixtures("offline_audit")
# each family's reference call: SD3 with true CFG and a negative prompt, Flux dev with its distilled guidance
CASES = {"sd3": dict(cfg=4.0, negative="blurry"), "flux_dev": dict(cfg=1.0, guidance=3.5),
         "flux_schnell": dict(cfg=1.0)}


@pytest.fixture(scope="module", params=list(CASES))
def model(request, tmp_path_factory):
    variant = request.param
    root = tmp_path_factory.mktemp(variant)
    tiny = testing.build_tiny(variant, seed=7)
    folder = testing.save_folder(tiny, root / "folder")
    single = testing.save_flow_files(tiny, root / "files")
    return variant, folder, single


def diffusers_image(variant: str, folder, seed: int, steps: int) -> np.ndarray:
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    case = CASES[variant]
    cls = StableDiffusion3Pipeline if variant == "sd3" else FluxPipeline
    pipe = cls.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=steps, height=64, width=64, generator=torch.Generator("cpu").manual_seed(seed),
              output_type="np", guidance_scale=case.get("guidance", case["cfg"]))
    if variant == "sd3":
        kw["negative_prompt"] = case["negative"]
    with torch.inference_mode():
        out = pipe(PROMPT, **kw).images[0]
    return (out * 255.0).round().astype(np.uint8)


def generate_args(variant: str, model_path, out, steps: int) -> list[str]:
    case = CASES[variant]
    args = ["generate", PROMPT, "--model", str(model_path), "--seed", "3", "--steps", str(steps), "--size", "64x64",
            "--cfg", str(case["cfg"]), "--out", str(out), "--json", "--mode", "permissive"]
    if "negative" in case:
        args += ["--negative", case["negative"]]
    if "guidance" in case:
        args += ["--guidance", str(case["guidance"])]
    return args


@pytest.mark.parametrize("layout", ["folder", "single"])
def test_iga_generate_makes_diffusers_image_and_replays_it(model, layout, tmp_path):
    from PIL import Image

    variant, folder, single = model
    steps = 4
    r = cli(generate_args(variant, folder if layout == "folder" else single, tmp_path, steps))
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    plan = result["plans"][0]
    assert plan["prediction_type"] == "flow" and plan["model"]["architecture"] == ("sd3" if variant == "sd3"
                                                                                   else "flux")
    assert (plan["guidance"] is not None) == (variant == "flux_dev")
    ours = np.asarray(Image.open(result["images"][0]).convert("RGB"))
    theirs = diffusers_image(variant, folder, 3, steps)
    assert ours.std() > 3
    assert int(np.abs(ours.astype(int) - theirs.astype(int)).max()) <= 2, variant
    again = cli(["replay", result["images"][0], "--model", str(folder if layout == "folder" else single)])
    assert again.exit_code == 0 and "identical" in again.output, again.output


def test_no_recipe_defaults_follow_the_family(model):
    import iga

    variant, folder, single = model
    for path in (folder, single):
        p = iga.load(path).plan(PROMPT, seed=0, size="64x64")
        assert p.prediction_type == "flow" and p.sampler == "euler"
        assert p.schedule == ("normal" if variant == "sd3" else "time_uniform")
        assert (p.guidance == 3.5) if variant == "flux_dev" else p.guidance is None
        assert p.steps == (4 if variant == "flux_schnell" else 28)


def test_the_evaluation_protocol_runs_on_a_flow_model(model, tmp_path):
    variant, folder, _ = model
    if variant != "flux_dev":
        pytest.skip("one flow family is enough for the sweep runner")
    import shutil

    from iga.checkpoint.sidecar import write_sidecar
    from iga.guard.defaults import architecture_default_recipe

    model_dir = shutil.copytree(folder, tmp_path / "flux")  # its recipe: the family's, at the tiny model's size
    recipe = architecture_default_recipe("flux", variant="dev").to_dict()
    recipe["resolution"] = {"preferred": ["64x64"], "max": "128x128"}
    write_sidecar(model_dir, recipe)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a castle\na red car\n")
    r = cli(["eval", "--model", model_dir, "--vary", "steps", "--values", "4,8", "--prompts", prompts, "--seeds", "1",
             "--out", tmp_path / "ev", "--mode", "permissive"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ev" / "report.html").is_file()


def test_iga_plan_shows_the_shift_and_guidance_that_will_run(model):
    variant, folder, _ = model
    r = cli(["plan", "--model", folder, "--size", "512x512", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "shift" in r.stdout
    assert ("distilled guidance" in r.stdout) == (variant == "flux_dev")
    refused = cli(["plan", "--model", folder, "--cfg", "7"])
    if variant == "flux_dev":  # a guidance-distilled model at CFG 7: refused, with the fix
        assert refused.exit_code == 3 and "guidance-distilled" in refused.output and "guidance 3.5" in refused.output
