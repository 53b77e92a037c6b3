"""The flow trajectory in the recipe and the guard: static shift (SD3), dynamic shift (Flux), distilled guidance
(Flux dev), distilled step counts (Flux schnell); iga's sigma lists equal diffusers' schedulers'."""

from __future__ import annotations

import math

import numpy as np
import pytest

import iga
from iga.guard import GuardRefused, Request
from iga.recipe import RecipeError, parse_recipe_dict

SIZES = ("512x512", "1024x1024", "768x1344")
STEPS = (4, 20, 28)


def recipe(**over):
    base = {"iga_version": "1.3.0", "model_id": "flow", "architecture": "flux", "prediction_type": "flow",
            "training_schedule": {"kind": "flow", "dynamic_shift": {}}, "sampler": {"name": "euler"},
            "scheduler": {"name": "time_uniform"}, "cfg": {"default": 1.0, "min": 1.0, "max": 1.0},
            "guidance": {"default": 3.5, "min": 1.0, "max": 6.0},
            "steps": {"default": 28, "min": 16, "max": 50},
            "resolution": {"preferred": ["1024x1024"], "max": "2048x2048"}}
    base.update(over)
    return parse_recipe_dict(base)[0]


FLUX_DEV = recipe()
FLUX_SCHNELL = recipe(guidance=None, steps={"default": 4, "min": 1, "max": 4})
SD3 = recipe(architecture="sd3", training_schedule={"kind": "flow", "shift": 3.0}, guidance=None,
             scheduler={"name": "normal"}, cfg={"default": 4.5, "min": 3.0, "max": 7.0})


def plan(r, mode="guarded", **fields):
    return iga.resolve(r, Request(seed=0, **fields), mode)[0]


def refused(r, **fields):
    with pytest.raises(GuardRefused) as e:
        plan(r, **fields)
    return [f for f in e.value.findings if f.outcome == "refused"]


def test_sd3_sigmas_equal_diffusers_at_every_size_and_step_count():
    from diffusers import FlowMatchEulerDiscreteScheduler

    for size in SIZES:
        for n in STEPS:
            s = FlowMatchEulerDiscreteScheduler(shift=3.0)
            s.set_timesteps(n)
            ours = plan(SD3, steps=n, size=size, overrides=["steps", "size"]).sigmas
            assert np.abs(np.array(ours) - s.sigmas.numpy()).max() <= 1e-6, (size, n)


def test_flux_sigmas_equal_diffusers_dynamic_shift_at_every_size_and_step_count():
    from diffusers import FlowMatchEulerDiscreteScheduler

    for size in SIZES:
        w, h = map(int, size.split("x"))
        mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * ((w // 16) * (h // 16) - 256)  # FluxPipeline's calculate_shift
        for n in STEPS:
            s = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
            s.set_timesteps(n, sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
            p = plan(FLUX_DEV, steps=n, size=size, overrides=["steps"])
            assert np.abs(np.array(p.sigmas) - s.sigmas.numpy()).max() <= 1e-6, (size, n)
            assert p.training_schedule["shift"] == pytest.approx(math.exp(mu))


def test_comfyuis_simple_schedule_only_approximates_the_flux_reference():
    exact = plan(FLUX_DEV, steps=28).sigmas
    simple = plan(FLUX_DEV, steps=28, schedule="simple", overrides=["schedule"]).sigmas
    assert 1e-4 < np.abs(np.array(exact) - np.array(simple)).max() < 5e-3  # 28 does not divide 1000


def test_cfg_7_on_a_guidance_distilled_model_is_refused_with_the_reason_and_the_fix():
    [f] = refused(FLUX_DEV, cfg=7.0)
    assert f.field == "cfg" and f.severity == "soft" and "guidance-distilled" in f.reason
    assert "guidance 3.5" in f.suggestion and "Distilled CFG Scale" in f.suggestion
    assert plan(FLUX_DEV, "guarded", cfg=7.0, overrides=["cfg"], reason="true CFG test").cfg == 7.0


def test_distilled_guidance_comes_from_the_recipe_and_is_checked_against_its_range():
    assert plan(FLUX_DEV).guidance == 3.5 and plan(FLUX_DEV, guidance=2.0).guidance == 2.0
    [f] = refused(FLUX_DEV, guidance=9.0)
    assert f.field == "guidance" and f.severity == "soft" and "1..6" in f.reason
    [f] = refused(SD3, guidance=3.5)
    assert f.field == "guidance" and f.severity == "hard" and "no distilled-guidance input" in f.reason
    assert plan(SD3).guidance is None and plan(FLUX_SCHNELL).guidance is None


def test_steps_beyond_a_step_distilled_models_range_are_refused():
    [f] = refused(FLUX_SCHNELL, steps=28)
    assert f.field == "steps" and "1..4" in f.reason


def test_a_shift_that_does_not_match_the_rule_is_a_soft_finding_naming_the_right_one():
    [f] = refused(FLUX_DEV, shift=3.0, size="1024x1024")
    assert f.field == "shift" and "dynamic-shift rule at 1024x1024" in f.reason
    assert f"{math.exp(1.15):.4g}" in f.suggestion
    assert plan(FLUX_DEV, shift=math.exp(1.15), size="1024x1024").training_schedule["shift"] == \
        pytest.approx(math.exp(1.15))  # asking for the rule's own shift is no deviation
    [f] = refused(SD3, shift=1.0)
    assert f.field == "shift" and "3" in f.suggestion
    accepted = plan(SD3, "guarded", shift=1.0, overrides=["shift"], reason="sharper")
    assert accepted.training_schedule["shift"] == 1.0 and accepted.overrides[0].field == "shift"


def test_a_shift_on_a_vp_model_is_hard():
    vp = recipe(architecture="sd1", prediction_type="eps", training_schedule={"kind": "scaled_linear"},
                guidance=None, scheduler={"name": "karras"}, cfg={"default": 7, "min": 1, "max": 12})
    [f] = refused(vp, shift=3.0)
    assert f.field == "shift" and f.severity == "hard"


def test_replaying_a_plan_keeps_its_shift_and_guidance():
    p = plan(FLUX_DEV, guidance=2.5, size="768x1344", steps=20)
    again = iga.resolve(FLUX_DEV, p.as_request(), "guarded")[0]
    assert (again.guidance, again.sigmas, again.training_schedule) == (p.guidance, p.sigmas, p.training_schedule)


def test_recipe_rules_for_flow_fields():
    with pytest.raises(RecipeError, match="contradict"):
        recipe(training_schedule={"kind": "flow", "shift": 3.0, "dynamic_shift": {}})
    with pytest.raises(RecipeError, match="flow schedules only"):
        recipe(training_schedule={"kind": "scaled_linear", "dynamic_shift": {}}, prediction_type="eps")
    with pytest.raises(RecipeError, match="CFG range must include 1"):
        recipe(cfg={"default": 3.5, "min": 2.0, "max": 5.0})
    assert FLUX_DEV.iga_version == "1.4.0"  # written as 1.3, read as the current version


def test_shift_and_distilled_guidance_travel_in_the_infotext_both_ways():
    from iga.provenance.infotext import format_infotext, parse_infotext

    p = plan(FLUX_DEV, guidance=2.5, size="1024x1024")
    text = format_infotext(p.to_dict())
    assert "Distilled CFG Scale: 2.5" in text and f"Shift: {math.exp(1.15):.6g}"[:12] in text
    back = parse_infotext(text)
    assert back["guidance"] == 2.5 and back["shift"] == pytest.approx(math.exp(1.15), rel=1e-5)


def test_comfyui_flux_guidance_and_model_sampling_nodes_are_read():
    import json

    from iga.provenance.foreign import from_comfyui_prompt

    def graph(sampling: dict) -> str:
        return json.dumps({
            "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors"}},
            "2": sampling,
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle", "clip": ["9", 0]}},
            "4": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["3", 0]}},
            "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
            "6": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 1.0, "sampler_name": "euler",
                                                       "scheduler": "simple", "denoise": 1.0, "model": ["2", 0],
                                                       "positive": ["4", 0], "negative": ["3", 0],
                                                       "latent_image": ["5", 0]}}})

    flux = from_comfyui_prompt(graph({"class_type": "ModelSamplingFlux", "inputs": {
        "max_shift": 1.15, "base_shift": 0.5, "width": 1024, "height": 1024, "model": ["1", 0]}}))
    assert flux["guidance"] == 3.5 and flux["prompt"] == "a castle"
    assert flux["shift"] == pytest.approx(math.exp(1.15)) and flux["model_name"] == "flux1-dev"
    sd3 = from_comfyui_prompt(graph({"class_type": "ModelSamplingSD3", "inputs": {"shift": 3.0, "model": ["1", 0]}}))
    assert sd3["shift"] == 3.0
