"""The SDXL refiner as one two-stage plan: loaded, guarded, rendered as diffusers does, recorded and replayed.

Cross-tool convention (diffusers as the oracle): ``StableDiffusionXLPipeline(denoising_end=switch,
output_type="latent")`` then ``StableDiffusionXLImg2ImgPipeline(refiner, denoising_start=switch)``, both with
EulerDiscreteScheduler(use_karras_sigmas=True, timestep_spacing="linspace") (as tests/test_generate_crosstool.py:
fractional timesteps, noise * sigma_max), the same seed and an explicit empty negative prompt. The base runs the
steps whose timestep is >= round(1000 - switch * 1000); the refiner continues the latent with no new noise. Both
pipelines decode with the VAE the tiny base and refiner share.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import iga  # noqa: E402
from iga.guard import GuardRefused, Plan  # noqa: E402
from iga.models import clear_cache, testing  # noqa: E402
from iga.provenance.infotext import format_infotext, parse_infotext  # noqa: E402
from test_generate_support import PROMPT, cli, cli_json, one_thread  # noqa: E402,F401

STEPS, CFG, SEED, SWITCH = 8, 7.0, 3, 0.8
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")
SETTINGS = dict(sampler="euler", schedule="karras", steps=STEPS, cfg=CFG, seed=SEED, size="64x64")

pytestmark = pytest.mark.usefixtures("offline_audit")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """{"base": SDXL base folder, "refiner": its refiner folder (same VAE), "model": iga Model on the base}."""
    root = tmp_path_factory.mktemp("refiner")
    base = testing.build_tiny("sdxl", seed=60)
    refiner = testing.build_tiny("sdxl_refiner", seed=61, vae=base.vae)
    out = {"root": root, "base": testing.save_folder(base, root / "base"),
           "refiner": testing.save_folder(refiner, root / "shelf" / "tiny-refiner")}
    out["model"] = iga.load(out["base"])
    yield out
    clear_cache()


def _euler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")


def _diffusers_pair(pair, seed: int) -> np.ndarray:
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base = StableDiffusionXLPipeline.from_pretrained(str(pair["base"]), local_files_only=True, scheduler=_euler())
    ref = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(pair["refiner"]), local_files_only=True,
                                                           scheduler=_euler())
    common = dict(negative_prompt="", num_inference_steps=STEPS, guidance_scale=CFG)
    with torch.inference_mode():
        latent = base(PROMPT, height=64, width=64, denoising_end=SWITCH, output_type="latent",
                      generator=torch.Generator("cpu").manual_seed(seed), **common).images
        out = ref(PROMPT, image=latent, denoising_start=SWITCH, output_type="np",
                  generator=torch.Generator("cpu").manual_seed(seed), **common).images[0]
    return (out * 255.0).round().astype(np.uint8)


def _plan(pair, **fields) -> Plan:
    return pair["model"].plan(PROMPT, **{**SETTINGS, "refiner": str(pair["refiner"]), **fields})


def test_iga_reproduces_diffusers_base_then_refiner(pair):
    plan = _plan(pair, refiner_switch=SWITCH)
    sched = _euler()
    sched.set_timesteps(STEPS)
    handover = int((sched.timesteps >= round(1000 - SWITCH * 1000)).sum())  # diffusers' denoising_end rule
    assert plan.refiner.switch_index == handover == 5
    assert np.allclose(plan.sigmas, sched.sigmas.numpy(), rtol=1e-5, atol=1e-6)
    [img] = pair["model"].generate(plan=plan)
    assert img.nfe == plan.nfe == STEPS  # one (batched CFG) call per Euler step: 5 base + 3 refiner
    theirs = _diffusers_pair(pair, SEED)
    diff = np.abs(img.pixels.astype(int) - theirs.astype(int))
    # measured: max 1/255 (float rounding at a .5 boundary), mean ~2e-4
    assert img.pixels.std() > 5 and diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())
    base_only = pair["model"].generate(**{**SETTINGS, "prompt": PROMPT})[0].pixels
    assert np.abs(base_only.astype(int) - img.pixels.astype(int)).max() > 2  # the refiner did change the image


def test_the_refiner_loads_with_its_own_conditioning(pair):
    """One bigG encoder (penultimate state + pooled) and 5 time ids; the negative row carries its own score."""
    backend = pair["model"].refiner_for(_plan(pair))
    assert backend.architecture == "sdxl_refiner" and len(backend.text_encoders) == 1
    cond, uncond = backend.scored(6.0, 2.5).encode_prompt([PROMPT], [""], width=64, height=48)
    assert cond["time_ids"].tolist() == [[48.0, 64.0, 0.0, 0.0, 6.0]]
    assert uncond["time_ids"].tolist() == [[48.0, 64.0, 0.0, 0.0, 2.5]]
    assert cond["encoder_hidden_states"].shape[-1] == 48 and cond["text_embeds"].shape[-1] == 40


def test_a_refiner_on_an_sd1_model_is_refused(pair, tmp_path):
    sd1 = iga.load(testing.save_folder(testing.build_tiny("sd1", seed=62), tmp_path / "sd1"))
    with pytest.raises(GuardRefused) as e:
        sd1.plan(PROMPT, refiner=str(pair["refiner"]), size="64x64")
    [f] = [f for f in e.value.findings if f.field == "refiner"]
    assert f.severity == "hard" and "sd1" in f.reason


def test_a_base_model_given_as_refiner_is_refused(pair):
    with pytest.raises(GuardRefused) as e:
        _plan(pair, refiner=str(pair["base"]))
    assert any(f.field == "refiner" and f.severity == "hard" and "not an SDXL refiner" in f.reason
               for f in e.value.findings)


def test_a_switch_that_leaves_a_model_no_step_is_refused_and_one_outside_0_1_is_bad_input(pair):
    with pytest.raises(GuardRefused, match="leaves the refiner no step"):
        _plan(pair, refiner_switch=0.9999)  # cutoff round(0.1) = 0: every step >= 0
    with pytest.raises(GuardRefused, match="leaves the base model no step"):
        _plan(pair, refiner_switch=0.0001)  # cutoff 1000: above t = 999
    with pytest.raises(ValueError, match="between 0 and 1"):
        _plan(pair, refiner_switch=1.5)
    res = cli(["plan", "--model", pair["base"], "--refiner", pair["refiner"], "--refiner-switch", "0", "--size",
               "64x64"])
    assert res.exit_code == 2 and "between 0 and 1" in res.stderr


def _with_recipe(pair, tmp_path, name: str):
    """A copy of the base folder whose recipe hands over to the store's ``tiny-refiner`` at 0.6."""
    folder = shutil.copytree(pair["base"], tmp_path / name)
    recipe = {"iga_version": "1.4.0", "model_id": name, "architecture": "sdxl", "prediction_type": "eps",
              "sampler": {"name": "euler"}, "scheduler": {"name": "karras"},
              "cfg": {"default": CFG, "min": 1, "max": 9},
              "steps": {"default": STEPS, "min": 4, "max": 30}, "resolution": {"preferred": ["64x64"]},
              "refiner": {"model_id": "tiny-refiner", "switch": 0.6}}
    (folder / "iga.json").write_text(json.dumps(recipe))
    return iga.load(folder)


def test_a_recipe_declaring_a_refiner_uses_it_from_the_store(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("IGA_MODELS", str(pair["refiner"].parent))
    model = _with_recipe(pair, tmp_path, "with-recipe")
    plan = model.plan(PROMPT, seed=SEED)
    assert plan.refiner is not None and plan.refiner.switch == 0.6 and plan.refiner.model.name == "tiny-refiner"
    assert plan.refiner.model.architecture == "sdxl_refiner" and not plan.overrides
    with pytest.raises(GuardRefused) as e:  # a switch other than the recipe's is a deviation
        model.plan(PROMPT, refiner_switch=0.7)
    assert any(f.field == "refiner" and f.severity == "soft" for f in e.value.findings)


def test_a_recipe_refiner_missing_from_the_store_is_soft(pair, tmp_path):
    model = _with_recipe(pair, tmp_path, "refiner-elsewhere")  # IGA_MODELS unset: the store lacks it
    with pytest.raises(GuardRefused) as e:
        model.plan(PROMPT, seed=SEED)
    [f] = [f for f in e.value.findings if f.field == "refiner"]
    assert f.severity == "soft" and "--override refiner" in f.suggestion
    plan = model.plan(PROMPT, seed=SEED, overrides=["refiner"], reason="no refiner on this machine")
    assert plan.refiner is None and [o.field for o in plan.overrides] == ["refiner"]
    with pytest.raises(GuardRefused):  # --refiner none against the recipe is the same deviation
        model.plan(PROMPT, refiner="none")


def test_the_refiner_is_in_the_plan_json_and_the_table(pair):
    out = cli_json(["plan", "--model", pair["base"], "--refiner", pair["refiner"], "--refiner-switch", "0.8",
                    "--sampler", "euler", "--schedule", "karras", "--steps", STEPS, "--size", "64x64"])
    ref = out["plan"]["refiner"]
    assert ref["switch"] == 0.8 and ref["switch_index"] == 5 and ref["model"]["architecture"] == "sdxl_refiner"
    assert ref["aesthetic_score"] == 6.0 and ref["negative_aesthetic_score"] == 2.5 and out["plan"]["nfe"] == STEPS
    table = cli(["plan", "--model", pair["base"], "--refiner", pair["refiner"], "--size", "64x64"])
    assert table.exit_code == 0 and "tiny-refiner" in table.stdout and "switch at 0.8" in table.stdout


def test_replay_and_infotext_carry_the_refiner(pair, tmp_path):
    from iga.provenance import read_provenance, save_image
    from iga.replay import stored_plan_problem

    [img] = pair["model"].generate(plan=_plan(pair))
    path = save_image(img.image, img.plan.to_dict(), tmp_path)
    prov = read_provenance(path)
    back = Plan.from_dict(prov.plan)
    assert back.refiner == img.plan.refiner
    assert (prov.refiner, prov.refiner_switch) == ("tiny-refiner", 0.8)
    assert stored_plan_problem(back, pair["model"].source) is None
    from iga.guard.source import describe_model

    found = back.as_request().refiner  # any folder with the recorded weights (a parallel test may have made a copy)
    assert describe_model(found).identity.weights_sha256 == back.refiner.model.weights_sha256
    assert np.array_equal(pair["model"].generate(plan=back)[0].pixels, img.pixels)  # bit for bit
    text = format_infotext(back.to_dict())
    assert "Refiner: tiny-refiner, Refiner switch at: 0.8" in text
    shown = cli_json(["show", path])
    assert shown["refiner"] == "tiny-refiner" and shown["refiner_switch"] == 0.8


def test_a1111_refiner_fields_are_read():
    parsed = parse_infotext(
        "a cat\nNegative prompt: \nSteps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, "
        "Size: 1024x1024, Model: sd_xl_base_1.0, Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.8")
    assert (parsed["refiner"], parsed["refiner_hash"], parsed["refiner_switch"]) == ("sd_xl_refiner_1.0",
                                                                                   "7440042bbd", 0.8)


def test_a_plan_without_a_refiner_asks_for_none_on_replay(pair):
    plan = pair["model"].plan(PROMPT, **SETTINGS)
    assert plan.refiner is None and plan.as_request().refiner == "none"
    again, _ = pair["model"].source.resolve(plan.as_request(), "guarded")
    assert again.refiner is None and again.sigmas == plan.sigmas


def test_a_single_file_refiner_loads_like_its_folder(pair, tmp_path):
    """The LDM layout (``conditioner.embedders.0.model.*`` alone, 5-value ``label_emb``) gives the same network."""
    from iga.guard.source import describe_model
    from iga.models.loader import load_backend

    tiny = testing.build_tiny("sdxl_refiner", seed=61, vae=testing.build_tiny("sdxl", seed=60).vae)
    single = testing.save_single_file(tiny, tmp_path / "tiny-refiner.safetensors")
    assert describe_model(single).identity.architecture == "sdxl_refiner"
    a, b = load_backend(single), load_backend(pair["refiner"])
    (ca, _), (cb, _) = (m.encode_prompt([PROMPT], [""], width=64, height=64) for m in (a, b))
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(ca[k], cb[k]) for k in cb)
    assert torch.allclose(a.raw_model(x, torch.tensor([500.0]), ca), b.raw_model(x, torch.tensor([500.0]), cb),
                          atol=1e-4)
    plan = _plan(pair, refiner=str(single))
    assert f"Refiner: tiny-refiner [{plan.refiner.model.autov2}]" in format_infotext(plan.to_dict())
