"""`iga recipe draft`: every source read in its documented shape, the most certain evidence chosen, conflicts found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iga.checkpoint.embed import update_metadata
from iga.interop.draft import draft_recipe
from iga.models import testing
from test_generate_support import cli

KOHYA_V_ZSNR = {  # kohya sd-scripts writes every value as a Python str()
    "ss_v2": "False", "ss_base_model_version": "sd_v1_v", "ss_zero_terminal_snr": "True", "ss_clip_skip": "2",
    "ss_noise_offset": "None", "ss_resolution": "(768, 768)", "ss_network_module": "None",
}


@pytest.fixture(scope="module")
def tiny_sd1():
    return testing.build_tiny("sd1", seed=3)


def single_file(tiny, root: Path, metadata: dict[str, str], name: str = "model.safetensors") -> Path:
    path = testing.save_single_file(tiny, root / name)
    update_metadata(path, metadata)
    return path


def test_kohya_v_prediction_and_zero_terminal_snr_reach_the_recipe(tiny_sd1, tmp_path):
    draft = draft_recipe(single_file(tiny_sd1, tmp_path, KOHYA_V_ZSNR))
    r = draft.recipe
    assert r.prediction_type == "v" and r.training_schedule.zero_terminal_snr is True
    assert r.clip_skip == 2 and r.resolution.preferred == ["768x768"]
    assert draft.chosen["prediction_type"].source == "kohya"
    assert draft.chosen["zero_terminal_snr"].key == "ss_zero_terminal_snr"


def test_older_kohya_v_parameterization_key_is_read(tiny_sd1, tmp_path):
    draft = draft_recipe(single_file(tiny_sd1, tmp_path, {"ss_v_parameterization": "True"}))
    assert draft.recipe.prediction_type == "v"


def test_modelspec_keys_give_prediction_resolution_and_clip_skip(tiny_sd1, tmp_path):
    md = {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v1",
          "modelspec.prediction_type": "v", "modelspec.resolution": "640x640", "modelspec.encoder_layer": "2"}
    draft = draft_recipe(single_file(tiny_sd1, tmp_path, md))
    r = draft.recipe
    assert (r.prediction_type, r.resolution.preferred, r.clip_skip, r.architecture) == ("v", ["640x640"], 2, "sd1")
    assert draft.chosen["clip_skip"].key == "modelspec.encoder_layer" and not draft.conflicts


def test_comfyui_predict_key_and_v_zsnr_spelling(tiny_sd1, tmp_path):
    draft = draft_recipe(single_file(tiny_sd1, tmp_path, {"modelspec.predict_key": "v-zsnr"}))
    assert draft.recipe.prediction_type == "v" and draft.recipe.training_schedule.zero_terminal_snr is True


def test_conflicting_sources_are_a_finding_naming_both(tiny_sd1, tmp_path):
    md = {**KOHYA_V_ZSNR, "modelspec.prediction_type": "epsilon"}
    draft = draft_recipe(single_file(tiny_sd1, tmp_path, md))
    [conflict] = [c for c in draft.conflicts if c.startswith("prediction_type")]
    assert "modelspec" in conflict and "kohya" in conflict


def test_diffusers_folder_config_and_model_card(tiny_sd1, tmp_path):
    folder = testing.save_folder(tiny_sd1, tmp_path / "sd1")
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(prediction_type="v_prediction", rescale_betas_zero_snr=True, beta_schedule="scaled_linear",
               beta_start=0.00085, beta_end=0.012)
    cfg_path.write_text(json.dumps(cfg))
    (folder / "README.md").write_text("---\nlicense: openrail\ninference:\n  parameters:\n    num_inference_steps: 30\n"
                                      "    guidance_scale: 5.5\n    width: 640\n    height: 640\n---\n# A model\n")
    draft = draft_recipe(folder)
    r = draft.recipe
    assert r.prediction_type == "v" and r.training_schedule.zero_terminal_snr is True
    assert (r.training_schedule.kind, r.training_schedule.beta_end) == ("scaled_linear", 0.012)
    assert (r.steps.default, r.cfg.default, r.resolution.preferred) == (30, 5.5, ["640x640"])
    assert draft.chosen["steps"].source == "model card"
    assert "sampler" in draft.chosen and draft.chosen["sampler"].confidence < 0.5  # the pipeline's default only


def test_a1111_sidecar_generation_keys(tiny_sd1, tmp_path):
    path = single_file(tiny_sd1, tmp_path, {})
    path.with_suffix(".json").write_text(json.dumps({"description": "a model", "sampler": "Euler a",
                                                     "steps": 24, "cfg": 6, "vae": "vae-ft-mse.safetensors"}))
    draft = draft_recipe(path)
    r = draft.recipe
    assert (r.sampler.name, r.steps.default, r.cfg.default, r.vae.id) == ("euler_ancestral", 24, 6.0,
                                                                           "vae-ft-mse.safetensors")
    assert draft.chosen["vae"].source == "a1111 sidecar"


def test_fields_nobody_names_are_listed_as_defaulted(tiny_sd1, tmp_path):
    draft = draft_recipe(single_file(tiny_sd1, tmp_path, {}))
    assert {"sampler", "steps", "cfg"} <= set(draft.defaulted)
    assert draft.recipe.steps.min == 1 and draft.recipe.steps.max == 150  # permissive, for calibrate to narrow


def test_cli_draft_writes_a_recipe_that_checks(tiny_sd1, tmp_path):
    model = single_file(tiny_sd1, tmp_path, KOHYA_V_ZSNR)
    out = tmp_path / "draft.json"
    r = cli(["recipe", "draft", str(model), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert cli(["recipe", "check", str(out)]).exit_code == 0
    again = cli(["recipe", "draft", str(model), "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    explained = cli(["recipe", "draft", str(model), "--json", "--explain"])
    data = json.loads(explained.stdout)
    assert data["fields"]["prediction_type"]["source"] == "kohya" and len(data["evidence"]) >= 5


def test_notes_text_fills_sampler_steps_cfg_and_clip_skip(tiny_sd1, tmp_path):
    notes = "Recommended settings: Sampler: DPM++ 2M Karras, Steps: 25-30, CFG: 5-7, Clip skip 2"
    draft = draft_recipe(single_file(tiny_sd1, tmp_path, {}), notes=notes)
    r = draft.recipe
    assert (r.sampler.name, r.scheduler.name, r.clip_skip) == ("dpmpp_2m", "karras", 2)
    assert (r.steps.min, r.steps.max, r.cfg.min, r.cfg.max) == (25, 30, 5.0, 7.0)
    assert draft.chosen["steps"].source == "notes" and "25-30" in draft.chosen["steps"].key


def test_unknown_sampler_in_notes_does_not_reach_the_recipe(tiny_sd1, tmp_path):
    draft = draft_recipe(single_file(tiny_sd1, tmp_path, {}), notes="Sampler: Euler SMEA Dy, Steps: 28")
    assert "sampler" not in draft.chosen and draft.recipe.steps.default == 28
