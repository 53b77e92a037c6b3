"""The guard: every rule in all three modes, presets, legacy names, snapping suggestions, no-recipe fallback."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iga.guard import GuardRefused, ModelIdentity, Plan, Request, resolve
from iga.recipe import parse_recipe_dict
from iga.recipe.names import UnknownNameError


def recipe(**changes):
    d = {
        "iga_version": "1.0.0",
        "model_id": "guard-test",
        "architecture": "sdxl",
        "prediction_type": "v",
        "sampler": {"name": "euler_ancestral", "params": {"eta": 1.0}},
        "scheduler": {"name": "karras", "canonical_steps": 20, "subsample": [16, 24, 28, 32]},
        "cfg": {"default": 6.5, "min": 5.0, "max": 9.0},
        "steps": {"default": 20, "min": 16, "max": 32},
        "vae": {"id": "sdxl-vae-fp16-fix", "embedded": True},
        "clip_skip": 2,
        "resolution": {"preferred": ["1024x1024"], "max": "1536x1536"},
        "constraints": {"forbid_samplers": ["ddim", "lcm"], "forbid_schedules": ["beta", "turbo"]},
        "presets": [{"name": "Quality", "steps": 28, "cfg": 6.5},
                    {"name": "Fast", "steps": 16, "cfg": 5.5, "sampler": "dpmpp_2m"}],
    }
    d.update(changes)
    return parse_recipe_dict(d)[0]


R = recipe()
SDXL = ModelIdentity(name="m", architecture="sdxl")


@pytest.fixture(scope="module", autouse=True)
def vae_in_store(tmp_path_factory):
    """A VAE file "other-vae" in the model store (a header is all the guard reads; its data is 16 zero bytes)."""
    from safetensors.numpy import save_file
    import numpy as np

    folder = tmp_path_factory.mktemp("models")
    save_file({"decoder.conv_in.weight": np.zeros((1, 4, 1, 1), np.float32)}, str(folder / "other-vae.safetensors"))
    mp = pytest.MonkeyPatch()
    mp.setenv("IGA_MODELS", str(folder))
    yield folder
    mp.undo()


def outcome(findings, field):
    return [f for f in findings if f.field == field and f.severity != "info"]


def refused(req, mode="guarded", rec=R, model=SDXL, **kw):
    with pytest.raises(GuardRefused) as e:
        resolve(rec, req, mode, model=model, **kw)
    return e.value.findings


# --- defaults and presets ---------------------------------------------------------------------------------------

def test_defaults_come_from_the_recipe():
    plan, findings = resolve(R, Request(seed=1), model=SDXL)
    assert (plan.sampler, plan.schedule, plan.steps, plan.cfg) == ("euler_ancestral", "karras", 20, 6.5)
    assert (plan.width, plan.height, plan.clip_skip) == (1024, 1024, 2)
    assert plan.vae.id == "sdxl-vae-fp16-fix" and plan.eta == 1.0
    assert len(plan.sigmas) == 21 and plan.sigmas[-1] == 0.0
    assert plan.nfe == 20
    assert all(f.severity == "info" for f in findings) and not plan.overrides


def test_preset_fills_fields_and_request_wins_over_preset():
    plan, _ = resolve(R, Request(preset="fast", seed=1), model=SDXL)
    assert (plan.steps, plan.cfg, plan.sampler, plan.preset) == (16, 5.5, "dpmpp_2m", "Fast")
    assert not plan.overrides  # a preset's own sampler is sanctioned by the recipe
    plan, _ = resolve(R, Request(preset="Fast", steps=24, seed=1), model=SDXL)
    assert (plan.steps, plan.cfg) == (24, 5.5)


def test_default_preset_applies_when_request_names_none():
    rec = recipe(default_preset="Quality")
    plan, findings = resolve(rec, Request(seed=1), model=SDXL)
    assert plan.steps == 28 and plan.preset == "Quality"
    assert any(f.field == "preset" for f in findings)


def test_unknown_preset_lists_presets():
    with pytest.raises(KeyError, match="Quality, Fast"):
        resolve(R, Request(preset="Slow"), model=SDXL)


# --- hard findings: refused in every mode ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["strict", "guarded", "permissive"])
@pytest.mark.parametrize(
    "req, field, fragment",
    [
        (Request(sampler="DDIM"), "sampler", "v-prediction"),
        (Request(sampler="LCM", overrides=["sampler"]), "sampler", "consistency-distilled"),
        (Request(schedule="Beta"), "schedule", "forbidden"),
        (Request(schedule="turbo", steps=4, overrides=["schedule", "steps"]), "schedule", "forbidden"),
        (Request(prediction_type="epsilon"), "prediction_type", "never allowed"),
        (Request(steps=0), "steps", "at least 1"),
        (Request(size="1020x1020"), "size", "multiples of 8"),
        (Request(cfg=-1.0), "cfg", "finite number >= 0"),
        (Request(cfg=float("inf")), "cfg", "finite"),
        (Request(clip_skip=0), "clip_skip", "starts at 1"),
        (Request(batch=0), "batch", "outside"),
        (Request(seed=-5), "seed", "outside"),
        (Request(eta=-0.5), "eta", ">= 0"),
        (Request(cfg_rescale=1.5), "cfg_rescale", "[0, 1]"),
        (Request(sigmas=[14.0, 3.0, 5.0, 0.0]), "sigmas", "decreas"),
        (Request(sigmas=[14.0, 3.0, 1.0]), "sigmas", "0"),
    ],
)
def test_hard_findings_refused_in_all_modes(req, field, fragment, mode):
    hits = [f for f in refused(req, mode) if f.field == field and f.severity == "hard"]
    assert hits and fragment in hits[0].reason + (hits[0].suggestion or ""), hits


def test_architecture_and_marker_mismatch_are_hard():
    hits = refused(Request(), model=ModelIdentity(name="m", architecture="sd1"))
    assert outcome(hits, "architecture")[0].severity == "hard"
    hits = refused(Request(), detected_prediction="eps")
    assert "does not belong" in outcome(hits, "prediction_type")[0].reason


def test_explicit_grid_cannot_be_refined():
    rec = recipe(scheduler={"name": "explicit", "grid": [14.6, 6.0, 3.0, 1.5, 0.7, 0.3, 0.0]},
                 steps={"default": 6, "min": 3, "max": 6}, presets=[])
    plan, _ = resolve(rec, Request(steps=4, overrides=[], seed=0), "permissive", model=SDXL)
    assert plan.sigmas[0] == pytest.approx(14.6) and plan.sigmas[-1] == 0 and len(plan.sigmas) == 5
    hits = refused(Request(steps=9), "permissive", rec=rec)
    assert "refined" in outcome(hits, "steps")[0].reason


def test_allow_list_is_hard():
    rec = recipe(constraints={"allow_samplers": ["euler_ancestral", "dpmpp_2m"]})
    hits = refused(Request(sampler="heun", overrides=["sampler"]), rec=rec)
    assert outcome(hits, "sampler")[0].severity == "hard"


# --- soft findings: strict refuses, guarded needs an override, permissive warns ---------------------------------

SOFT_CASES = [
    (Request(steps=12), "steps", "outside the recipe's range", "use 16"),
    (Request(steps=18), "steps", "off the allowed subsample", "16 and 20"),
    (Request(steps=30), "steps", "off the allowed subsample", "28 and 32"),
    (Request(cfg=12.0), "cfg", "outside the recipe's range", "use 9.0"),
    (Request(sampler="DPM++ 2M SDE"), "sampler", "not the recipe's sampler", "euler_ancestral"),
    (Request(schedule="exponential"), "schedule", "not the recipe's schedule", "karras"),
    (Request(vae="other-vae"), "vae", "not the recipe's", "sdxl-vae-fp16-fix"),
    (Request(clip_skip=1), "clip_skip", "differs from the recipe's", None),
    (Request(size="2048x1024"), "size", "above the recipe's maximum", "1536x1536"),
]
FIELD_TO_OVERRIDE = {"steps": "steps", "cfg": "cfg", "sampler": "sampler", "schedule": "schedule", "vae": "vae",
                     "clip_skip": "clip_skip", "size": "size"}


@pytest.mark.parametrize("req, field, fragment, suggestion", SOFT_CASES)
def test_soft_guarded_refuses_without_override_and_teaches(req, field, fragment, suggestion):
    f = outcome(refused(req, "guarded"), field)[0]
    assert f.severity == "soft" and f.outcome == "refused" and fragment in f.reason
    assert f"--override {FIELD_TO_OVERRIDE[field]}" in f.suggestion
    if suggestion:
        assert suggestion in f.suggestion


@pytest.mark.parametrize("req, field, fragment, suggestion", SOFT_CASES)
def test_soft_strict_refuses_even_with_override(req, field, fragment, suggestion):
    r = req.model_copy(update={"overrides": [FIELD_TO_OVERRIDE[field]]})
    f = outcome(refused(r, "strict"), field)[0]
    assert f.outcome == "refused" and "strict mode" in f.reason


@pytest.mark.parametrize("req, field, fragment, suggestion", SOFT_CASES)
def test_soft_guarded_accepts_named_override_and_records_it(req, field, fragment, suggestion):
    r = req.model_copy(update={"overrides": [FIELD_TO_OVERRIDE[field]], "reason": "testing", "seed": 3})
    plan, findings = resolve(R, r, "guarded", model=SDXL)
    f = outcome(findings, field)[0]
    assert f.outcome == "overridden"
    rec = [o for o in plan.overrides if o.field == field]
    assert rec and rec[0].reason == "testing" and rec[0].mode == "guarded" and rec[0].time.endswith("Z")
    assert rec[0].requested_value == f.requested_value and rec[0].recipe_value == f.recipe_value


@pytest.mark.parametrize("req, field, fragment, suggestion", SOFT_CASES)
def test_soft_permissive_warns_and_records(req, field, fragment, suggestion):
    plan, findings = resolve(R, req.model_copy(update={"seed": 3}), "permissive", model=SDXL)
    assert outcome(findings, field)[0].outcome == "warned"
    assert [o for o in plan.overrides if o.field == field][0].reason == "permissive mode"


def test_override_of_one_field_does_not_cover_another():
    hits = refused(Request(steps=12, cfg=12.0, overrides=["steps"]))
    assert outcome(hits, "cfg")[0].outcome == "refused"
    assert outcome(hits, "steps")[0].outcome == "overridden"


def test_unneeded_override_is_noted_and_unknown_override_field_is_an_error():
    _, findings = resolve(R, Request(overrides=["cfg"], seed=1), model=SDXL)
    assert any(f.field == "cfg" and "nothing needed" in f.reason for f in findings)
    with pytest.raises(ValueError, match="overridable fields"):
        resolve(R, Request(overrides=["colour"]), model=SDXL)


# --- names ---------------------------------------------------------------------------------------------------------

def test_combined_legacy_name_sets_sampler_and_schedule():
    plan, findings = resolve(R, Request(sampler="DPM++ 2M Karras", overrides=["sampler"], seed=1), model=SDXL)
    assert (plan.sampler, plan.schedule) == ("dpmpp_2m", "karras")
    assert outcome(findings, "schedule") == []  # karras is the recipe's schedule
    hits = refused(Request(sampler="DPM++ 2M Exponential", overrides=["sampler"]))
    assert outcome(hits, "schedule")[0].outcome == "refused"


def test_unknown_names_raise_with_suggestions():
    with pytest.raises(UnknownNameError, match="dpmpp_2m"):
        resolve(R, Request(sampler="dpmpp_2n"), model=SDXL)
    with pytest.raises(UnknownNameError, match="karras"):
        resolve(R, Request(schedule="karas"), model=SDXL)


# --- no recipe -----------------------------------------------------------------------------------------------------

def test_no_recipe_resolves_against_architecture_defaults():
    plan, findings = resolve(None, Request(seed=1), model=ModelIdentity(name="x", architecture="sd1"))
    assert (plan.sampler, plan.schedule, plan.steps, plan.cfg, plan.width) == ("dpmpp_2m", "karras", 20, 7.0, 512)
    assert plan.prediction_type == "eps"
    info = [f for f in findings if f.field == "recipe"]
    assert info and info[0].severity == "info" and "no recipe" in info[0].reason
    # nothing to deviate from: another sampler is fine, but values that cannot work are still refused
    plan, _ = resolve(None, Request(sampler="euler", seed=1), model=ModelIdentity(name="x", architecture="sd2"))
    assert plan.sampler == "euler" and plan.prediction_type == "v" and not plan.overrides
    with pytest.raises(GuardRefused):
        resolve(None, Request(steps=0), model=ModelIdentity(name="x", architecture="sd1"))


# --- plan data -----------------------------------------------------------------------------------------------------

def test_plan_round_trips_exactly_through_json():
    plan, _ = resolve(R, Request(steps=18, overrides=["steps"], reason="why not", seed=42, batch=3,
                                 prompt="a cat, \"quoted\"\nline two ✓"), model=SDXL)
    text = plan.to_json()
    again = Plan.model_validate_json(text)
    assert again == plan and again.to_json() == text
    d = json.loads(text)
    assert d["schema"] == "iga.plan/1" and d["seeds"] == [42, 43, 44]
    assert Plan.from_dict(d) == plan
    one = plan.for_image(2)
    assert (one.seed, one.seeds, one.batch_index) == (44, [44], 2)


def test_committed_plan_schema_is_current():
    from pathlib import Path

    from iga.schemas import schema_json

    committed = (Path(__file__).resolve().parents[1] / "schema" / "plan-v1.schema.json").read_text()
    assert committed == schema_json("plan"), "run: iga schema plan > schema/plan-v1.schema.json"


# --- property: an accepted guarded plan without overrides lies inside the recipe -------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.one_of(st.none(), st.integers(-2, 60)),
    cfg=st.one_of(st.none(), st.floats(-1, 20, allow_nan=False)),
    sampler=st.one_of(st.none(), st.sampled_from(["euler_ancestral", "dpmpp_2m", "ddim", "Euler", "heun"])),
    schedule=st.one_of(st.none(), st.sampled_from(["karras", "exponential", "beta", "normal"])),
    preset=st.one_of(st.none(), st.sampled_from(["Quality", "Fast"])),
    size=st.one_of(st.none(), st.sampled_from(["1024x1024", "1536x1536", "2048x2048", "512x768"])),
    clip_skip=st.one_of(st.none(), st.integers(0, 3)),
)
def test_accepted_guarded_plans_lie_inside_the_recipe(steps, cfg, sampler, schedule, preset, size, clip_skip):
    req = Request(steps=steps, cfg=cfg, sampler=sampler, schedule=schedule, preset=preset, size=size,
                  clip_skip=clip_skip, seed=0)
    try:
        plan, findings = resolve(R, req, "guarded", model=SDXL)
    except GuardRefused:
        return
    assert not plan.overrides
    assert R.steps.min <= plan.steps <= R.steps.max and plan.steps in R.allowed_steps()
    assert R.cfg.min <= plan.cfg <= R.cfg.max
    assert plan.sampler not in R.constraints.forbid_samplers
    assert plan.schedule not in R.constraints.forbid_schedules
    assert plan.sampler in {R.sampler.name} | {p.sampler for p in R.presets if p.sampler}
    assert plan.schedule == R.scheduler.name
    assert plan.width <= 1536 and plan.height <= 1536 and plan.clip_skip == R.clip_skip
    assert plan.sigmas[-1] == 0 and all(a > b for a, b in zip(plan.sigmas, plan.sigmas[1:]))


def test_a_demo_checkpoint_without_a_recipe_resolves_on_the_schedule_and_size_it_declares(tmp_path):
    import shutil

    from iga.checkpoint import remove_recipe
    from iga.generate import load
    from iga.paths import DEMO_MODEL

    bare = tmp_path / "bare.safetensors"
    shutil.copy(DEMO_MODEL, bare)
    remove_recipe(bare)
    plan = load(bare).plan(seed=1)
    assert plan.model.recipe_source == "none"
    assert plan.prediction_type == "v" and plan.training_schedule["kind"] == "linear"
    assert (plan.width, plan.height) == (32, 32)


def test_explicit_schedule_without_a_grid_is_refused_not_a_crash():
    from iga.guard.source import describe_model
    from iga.paths import DEMO_MODEL

    recipe = describe_model(DEMO_MODEL).recipe
    with pytest.raises(GuardRefused) as e:
        resolve(recipe, Request(schedule="explicit", overrides=["schedule"], seed=0), "guarded")
    [f] = [f for f in e.value.findings if f.outcome == "refused"]
    assert f.field == "schedule" and f.severity == "hard" and "has none" in f.reason
