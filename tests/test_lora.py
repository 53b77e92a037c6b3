"""LoRAs: read defensively, checked against the base model, composed into the recipe, applied like diffusers does,
recorded in the plan and the A1111 infotext, replayed bit for bit."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import iga  # noqa: E402
from iga.checkpoint import embed_recipe  # noqa: E402
from iga.guard import GuardRefused, Plan, Request  # noqa: E402
from iga.models import clear_cache, testing  # noqa: E402
from test_generate_support import PROMPT, TINY_RECIPE, cli, cli_json, one_thread  # noqa: E402,F401

SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")
KOHYA_SD1 = {"ss_base_model_version": "sd_v1", "ss_v2": "False", "ss_network_dim": "4", "ss_network_alpha": "2.0",
             "ss_output_name": "tiny-style", "ss_sd_model_name": "tiny-sd1", "ss_zero_terminal_snr": "False",
             "modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.prediction_type": "epsilon"}

pytestmark = pytest.mark.usefixtures("offline_audit")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(tiny, single file with TINY_RECIPE, diffusers folder, root): one tiny SD1 model saved both ways."""
    root = tmp_path_factory.mktemp("lora")
    tiny = testing.build_tiny("sd1", seed=61)
    single = testing.save_single_file(tiny, root / "tiny-sd1.safetensors")
    embed_recipe(single, TINY_RECIPE)
    folder = testing.save_folder(tiny, root / "tiny-sd1")
    yield tiny, single, folder, root
    clear_cache()


@pytest.fixture(scope="module")
def model(base):
    return iga.load(base[1])


def _lora(base, name: str, *, layout: str = "kohya", metadata: dict | None = None, recipe: dict | None = None,
          seed: int = 5):
    md = dict(KOHYA_SD1 if metadata is None else metadata)
    if recipe is not None:
        md["iga.recipe"] = json.dumps(recipe)
    return testing.build_tiny_lora(base[0], base[3] / f"{name}.safetensors", layout=layout, seed=seed,
                                   metadata=md or None)


def _diffusers_image(folder, lora, weight: float, seed: int) -> np.ndarray:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")
    pipe.load_lora_weights(str(lora), adapter_name="style")
    pipe.set_adapters(["style"], [weight])
    with torch.inference_mode():
        out = pipe(PROMPT, num_inference_steps=4, guidance_scale=6.0, height=64, width=64,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
    return (out * 255.0).round().astype(np.uint8)


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
def test_a_lora_image_matches_diffusers_own_pipeline_with_the_same_lora(base, model, layout):
    lora = _lora(base, f"cross-{layout}", layout=layout, metadata={} if layout == "diffusers" else None)
    [with_lora] = model.generate(PROMPT, seed=3, loras=[{"path": str(lora), "weight": 0.8}])
    theirs = _diffusers_image(base[2], lora, 0.8, seed=3)
    diff = np.abs(with_lora.pixels.astype(int) - theirs.astype(int))
    assert diff.max() <= 2, (layout, diff.max(), diff.mean())  # measured: max 1/255 on a few pixels
    [plain] = model.generate(PROMPT, seed=3)
    assert np.abs(plain.pixels.astype(int) - with_lora.pixels.astype(int)).max() > 10  # the LoRA did something


def test_a_lora_never_leaks_into_a_later_plan_without_it(base, model):
    lora = _lora(base, "leak")
    [before] = model.generate(PROMPT, seed=4)
    [with_lora] = model.generate(PROMPT, seed=4, loras=[{"path": str(lora)}])
    [after] = model.generate(PROMPT, seed=4)
    assert np.array_equal(before.pixels, after.pixels) and not np.array_equal(before.pixels, with_lora.pixels)
    [fresh] = iga.load(base[1]).generate(PROMPT, seed=4)  # another Model on the same (cached) weights
    assert np.array_equal(fresh.pixels, before.pixels)


def test_a_kohya_lora_describes_what_it_was_trained_for(base):
    from iga.checkpoint import read_header
    from iga.models.lora import read_lora

    path = _lora(base, "describe")
    info = read_lora(path)
    assert (info.format, info.targets, info.architecture, info.prediction_type) == (
        "kohya", ["text_encoder", "unet"], "sd1", "eps")
    assert (info.rank, info.alpha, info.zero_terminal_snr) == (4, 2.0, False)
    no_metadata = testing.build_tiny_lora(base[0], base[3] / "bare.safetensors", alpha=3.0)
    assert read_lora(no_metadata).alpha == 3.0  # from the .alpha tensors when ss_network_alpha is absent
    data = path.read_bytes()[read_header(path).data_start:]  # A1111's addnet hash: the bytes after the header
    assert info.addnet_sha256 == hashlib.sha256(data).hexdigest() and info.short_hash == info.addnet_sha256[:12]
    assert info.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_matching_lora_is_accepted_and_recorded_in_the_plan(base, model):
    lora = _lora(base, "matching")
    plan = model.plan(PROMPT, seed=1, loras=[{"path": str(lora), "weight": 0.6}])
    [use] = plan.loras
    assert (use.name, use.weight, use.architecture, use.prediction_type, use.format) == (
        "matching", 0.6, "sd1", "eps", "kohya")
    assert use.path is None and len(use.addnet_sha256) == 64  # the path only with IGA_RECORD_MODEL_PATH=1
    assert not [f for f in plan.findings if f.outcome == "refused"]


def test_lora_trained_for_sdxl_is_refused_on_an_sd1_model(base, model):
    lora = _lora(base, "xl", metadata={**KOHYA_SD1, "ss_base_model_version": "sdxl_base_v1-0",
                                       "modelspec.architecture": "stable-diffusion-xl-v1-base/lora"})
    with pytest.raises(GuardRefused) as e:
        model.plan(PROMPT, loras=[{"path": str(lora)}], mode="permissive")
    [f] = [f for f in e.value.findings if f.outcome == "refused"]
    assert (f.field, f.severity, f.requested_value) == ("lora", "hard", "sdxl") and "sd1" in f.reason


def test_lora_trained_for_v_prediction_is_refused_on_an_eps_model(base, model):
    lora = _lora(base, "vpred", metadata={**KOHYA_SD1, "ss_base_model_version": "sd_v1_v",
                                          "modelspec.prediction_type": "v"})
    with pytest.raises(GuardRefused) as e:
        model.plan(PROMPT, loras=[{"path": str(lora)}], mode="permissive")
    [f] = [f for f in e.value.findings if f.outcome == "refused"]
    assert (f.field, f.severity, f.recipe_value, f.requested_value) == ("lora", "hard", "eps", "v")


NARROW = {"kind": "lora", "cfg": {"default": 4.0, "min": 3.5, "max": 5.0}, "steps": {"min": 3},
          "constraints": {"forbid_samplers": ["DPM++ 2M"]}, "weight": {"default": 0.7, "min": 0.4, "max": 0.9}}


def test_a_lora_recipe_narrows_cfg_and_the_plan_applies_and_records_the_effective_range(base, model):
    lora = _lora(base, "narrow", recipe=NARROW)
    plan = model.plan(PROMPT, seed=1, loras=[{"path": str(lora), "weight": 0.7}])
    assert plan.cfg == 4.0  # the LoRA's default, inside the intersection of 3..9 and 3.5..5
    [use] = plan.loras
    assert use.effective["cfg"] == {"default": 4.0, "min": 3.5, "max": 5.0}
    assert use.effective["steps"]["min"] == 3 and "dpmpp_2m" in use.effective["constraints"]["forbid_samplers"]
    assert use.weight_range == [0.4, 0.9] and any("narrows cfg" in n for n in use.narrowed)
    assert any(f.field == "lora" and "narrows cfg" in f.reason for f in plan.findings)
    with pytest.raises(GuardRefused) as e:  # the recipe's own range would take CFG 8; the effective one does not
        model.plan(PROMPT, cfg=8.0, loras=[{"path": str(lora), "weight": 0.7}])
    assert any(f.field == "cfg" and f.severity == "soft" and "3.5..5" in f.reason for f in e.value.findings)
    with pytest.raises(GuardRefused) as e:  # and a sampler the LoRA forbids is hard
        model.plan(PROMPT, sampler="dpmpp_2m", loras=[{"path": str(lora), "weight": 0.7}], mode="permissive")
    assert any(f.field == "sampler" and f.severity == "hard" for f in e.value.findings)


def test_a_weight_outside_the_lora_recipes_range_is_a_soft_lora_override(base, model):
    lora = _lora(base, "weighted", recipe=NARROW)
    with pytest.raises(GuardRefused) as e:
        model.plan(PROMPT, loras=[{"path": str(lora), "weight": 1.5}])
    assert any(f.field == "lora" and f.severity == "soft" and "0.4..0.9" in f.reason for f in e.value.findings)
    plan = model.plan(PROMPT, loras=[{"path": str(lora), "weight": 1.5}], overrides=["lora"], reason="test")
    assert [o.field for o in plan.overrides] == ["lora"]


def test_a_lora_recipe_whose_range_misses_the_base_recipe_is_hard(base, model):
    lora = _lora(base, "disjoint", recipe={"cfg": {"min": 12.0, "max": 15.0}})
    with pytest.raises(GuardRefused) as e:
        model.plan(PROMPT, loras=[{"path": str(lora)}], mode="permissive")
    assert any(f.field == "lora" and f.severity == "hard" and "nothing is in both" in f.reason
               for f in e.value.findings)


def test_compose_intersects_ranges_unites_forbid_lists_and_clamps_defaults():
    from iga.recipe import parse_recipe_dict
    from iga.recipe.compose import CompositionError, compose, parse_lora_recipe

    recipe, _ = parse_recipe_dict({**TINY_RECIPE, "constraints": {"forbid_samplers": ["ddim"]}})
    a = parse_lora_recipe({"cfg": {"min": 4.0, "max": 8.0}, "constraints": {"forbid_samplers": ["lms"]}})
    b = parse_lora_recipe({"cfg": {"max": 5.0}, "steps": {"default": 9}})
    eff, notes = compose(recipe, [(a, "a"), (b, "b")])
    assert (eff.cfg.min, eff.cfg.max, eff.cfg.default) == (4.0, 5.0, 5.0)
    assert eff.steps.default == 8 and eff.constraints.forbid_samplers == ["ddim", "lms"]
    assert eff.presets[0].cfg == 5.0 and len(notes) >= 3  # the Fast preset's CFG 5 stays; notes say what changed
    with pytest.raises(CompositionError):
        compose(recipe, [(parse_lora_recipe({"steps": {"min": 20}}), "c")])
    with pytest.raises(ValueError, match="sampler_typo"):
        parse_lora_recipe({"cfg": {"min": 1}, "sampler_typo": 1})


def test_a_pickle_lora_is_one_clear_line_and_exit_2(base, tmp_path):
    pt = tmp_path / "style.pt"
    pt.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    res = cli(["plan", PROMPT, "--model", base[1], "--lora", str(pt)])
    assert res.exit_code == 2
    [line] = res.stderr.strip().splitlines()
    assert "style.pt" in line and "only .safetensors LoRAs are accepted" in line


def test_the_lora_option_splits_the_weight_at_the_last_colon_only():
    from iga.commands.guard import parse_lora_option

    assert parse_lora_option("a.safetensors:0.5").model_dump() == {"path": "a.safetensors", "weight": 0.5}
    assert parse_lora_option(r"C:\loras\a.safetensors").model_dump() == {"path": r"C:\loras\a.safetensors",
                                                                         "weight": 1.0}
    assert parse_lora_option(r"C:\loras\a.safetensors:-0.25").weight == -0.25
    assert parse_lora_option("dir:x/a.safetensors").path == "dir:x/a.safetensors"


def test_iga_plan_generate_show_and_replay_carry_the_lora(base, tmp_path, monkeypatch):
    lora = _lora(base, "cli-style", recipe=NARROW)
    args = ["--model", base[1], "--seed", 9, "--lora", f"{lora}:0.7"]
    plan = cli_json(["plan", PROMPT, *args])["plan"]
    assert plan["loras"][0]["weight"] == 0.7 and plan["loras"][0]["effective"]["cfg"]["max"] == 5.0
    text = cli(["plan", PROMPT, *args]).stdout
    assert "cli-style" in text  # the table names the LoRA
    gen = cli_json(["generate", PROMPT, *args, "--out", tmp_path / "out"])
    [image] = gen["images"]
    shown = cli_json(["show", image])
    params = shown["raw"]["parameters"]
    short = plan["loras"][0]["addnet_sha256"][:12]
    assert f'Lora hashes: "cli-style: {short}"' in params and "<lora:" not in params
    assert shown["loras"] == [{"name": "cli-style", "hash": short, "weight": 0.7}]
    res = cli(["replay", image])
    assert res.exit_code == 0 and "identical" in res.stdout, res.stdout + res.stderr


def test_show_reads_lora_hashes_from_an_a1111_image():
    from iga.provenance.read import fields_from_infotext

    text = ('a cat <lora:makeupA:0.8>\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, '
            'Size: 512x512, Lora hashes: "makeupA: 801f5d2c1395, other: 0123456789ab", Version: v1.10.1')
    assert fields_from_infotext(text)["loras"] == [{"name": "makeupA", "hash": "801f5d2c1395"},
                                                   {"name": "other", "hash": "0123456789ab"}]


def test_iga_inspect_on_a_lora_shows_its_training_metadata_and_what_it_implies(base):
    lora = _lora(base, "inspected", recipe=NARROW)
    report = cli_json(["inspect", lora])
    lo = report["lora"]
    assert report["kind"] == "lora" and (lo["architecture"], lo["prediction_type"], lo["rank"]) == ("sd1", "eps", 4)
    assert lo["training"]["ss_base_model_version"] == "sd_v1" and lo["recipe"]["cfg"]["max"] == 5.0
    text = cli(["inspect", lora]).stdout
    assert "trained for   sd1" in text and "Lora hashes" in text and "narrows the base recipe" in text


def test_a_replayed_plan_finds_its_lora_again_by_hash(base, model, tmp_path):
    from iga.provenance import read_provenance, save_image

    lora = _lora(base, "replayed")
    [img] = model.generate(PROMPT, seed=2, loras=[{"path": str(lora), "weight": 0.5}])
    back = Plan.from_dict(read_provenance(save_image(img.image, img.plan.to_dict(), tmp_path)).plan)
    assert back.loras[0].path is None  # found again through the store of used files
    assert back.as_request().loras[0].weight == 0.5
    [again] = iga.load(base[1]).generate(plan=back)
    assert np.array_equal(again.pixels, img.pixels)
    assert Request.model_validate({"loras": [{"path": "x.safetensors"}]}).loras[0].weight == 1.0


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
def test_every_layer_of_a_lora_lands_in_the_model_sd1_and_sdxl(base, tmp_path, layout):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from iga.models.loader import load_backend
    from iga.models.lora import read_lora, with_loras

    xl = testing.build_tiny("sdxl", seed=62)
    for tiny, single in ((base[0], base[1]), (xl, testing.save_single_file(xl, tmp_path / "xl.safetensors"))):
        lora = testing.build_tiny_lora(tiny, tmp_path / f"{tiny.architecture}.safetensors", layout=layout)
        assert read_lora(lora).architecture == ("sdxl" if tiny.architecture == "sdxl" else None)
        plain = load_backend(single)
        loaded = with_loras(plain, [(str(lora), 1.0)])
        models = [loaded.unet] + [slot.model for slot in loaded.text_encoders]
        wrapped = [sum(isinstance(m, BaseTunerLayer) for m in model.modules()) for model in models]
        assert wrapped == [len(v) for v in testing.lora_targets(tiny).values()]
        assert not any(isinstance(m, BaseTunerLayer) for m in plain.unet.modules())  # the cached backend is untouched


def test_a_lora_is_found_by_its_id_in_the_model_store(base, model, tmp_path, monkeypatch):
    folder = tmp_path / "models"
    _lora_in = testing.build_tiny_lora(base[0], folder / "inkwash.safetensors", metadata=KOHYA_SD1)
    monkeypatch.setenv("IGA_MODELS", str(folder))
    plan = model.plan(PROMPT, loras=[{"path": "inkwash", "weight": 0.5}])
    assert plan.loras[0].name == "inkwash" and plan.loras[0].file_sha256 == hashlib.sha256(
        _lora_in.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="no LoRA 'inkwsh'.*close LoRA ids: inkwash"):
        model.plan(PROMPT, loras=[{"path": "inkwsh"}])
