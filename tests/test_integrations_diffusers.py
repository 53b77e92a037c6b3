"""iga.integrations.diffusers: a diffusers pipeline configured by a recipe, and guarded call by call."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import iga  # noqa: E402
from iga.guard import Request  # noqa: E402
from iga.guard.audit import read_records  # noqa: E402
from iga.guard.defaults import architecture_default_recipe  # noqa: E402
from iga.integrations.diffusers import GuardRefusedError, apply_recipe, guard  # noqa: E402
from iga.models import testing  # noqa: E402
from iga.recipe import parse_recipe_dict  # noqa: E402
from test_generate_support import cli  # noqa: E402

PROMPT = "a red circle on a blue background"
pytestmark = pytest.mark.usefixtures("offline_audit")


def recipe_dict() -> dict:
    r = architecture_default_recipe("sd1").to_dict()
    r.update(model_id="tiny-sd1", sampler={"name": "euler"}, scheduler={"name": "karras"},
             steps={"default": 8, "min": 4, "max": 30}, cfg={"default": 7.0, "min": 1.0, "max": 12.0},
             resolution={"preferred": ["64x64"], "max": "512x512"},
             constraints={"forbid_samplers": ["lcm"]})
    return r


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    from iga.checkpoint.embed import embed_recipe_with_hashes

    root = tmp_path_factory.mktemp("guarded")
    tiny = testing.build_tiny("sd1", seed=50)
    folder = testing.save_folder(tiny, root / "sd1")
    single = testing.save_single_file(tiny, root / "sd1.safetensors")
    embed_recipe_with_hashes(single, recipe_dict())
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, single, parse_recipe_dict(recipe_dict())[0]


def test_guarded_call_gives_the_image_iga_generate_gives(setup):
    pipe, single, recipe = setup
    out = guard(pipe, recipe=recipe)(PROMPT, generator=torch.Generator().manual_seed(3))
    assert out.plans[0].seed == 3 and out.plans[0].sampler == "euler" and out.plans[0].steps == 8
    theirs = np.asarray(out.images[0].convert("RGB"))
    ours = iga.load(single).generate(PROMPT, seed=3)[0].pixels
    assert ours.std() > 5
    assert int(np.abs(ours.astype(int) - theirs.astype(int)).max()) <= 2


def test_forbidden_sampler_is_refused_with_the_same_finding_as_the_cli(setup):
    pipe, single, recipe = setup
    with pytest.raises(GuardRefusedError) as refused:
        guard(pipe, recipe=recipe)(PROMPT, sampler="lcm", overrides=["sampler"], reason="try")
    ours = [f.model_dump(mode="json") for f in refused.value.findings if f.outcome == "refused"]
    r = cli(["plan", "--model", single, "--sampler", "lcm", "--override", "sampler", "--reason", "try", "--json"])
    assert r.exit_code == 3
    theirs = [f for f in json.loads(r.stdout)["findings"] if f["outcome"] == "refused"]
    assert ours == theirs and "lcm is forbidden" in str(refused.value)


def test_an_override_is_logged_as_the_cli_logs_it(setup, tmp_path, monkeypatch):
    pipe, single, recipe = setup
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("IGA_AUDIT_LOG", str(log))
    with pytest.raises(GuardRefusedError):
        guard(pipe, recipe=recipe)(PROMPT, num_inference_steps=40, generator=torch.Generator().manual_seed(1))
    guard(pipe, recipe=recipe)(PROMPT, num_inference_steps=40, generator=torch.Generator().manual_seed(1),
                               overrides=["steps"], reason="more steps")
    r = cli(["plan", "--model", single, "--steps", "40", "--seed", "1", "--override", "steps", "--reason",
             "more steps"])
    assert r.exit_code == 0, r.output
    ours, theirs = list(read_records(log))
    for rec in (ours, theirs):
        rec.pop("time")
    theirs["action"] = "generate"  # `iga plan` records its own action name; everything else is the same
    ours.pop("weights_sha256"), theirs.pop("weights_sha256")  # the pipe is named by folder, not hashed
    ours.pop("model"), theirs.pop("model")
    assert ours == theirs


def test_images_carry_provenance_and_save_with_it(setup, tmp_path):
    from iga.provenance import read_provenance

    pipe, _, recipe = setup
    out = guard(pipe, recipe=recipe)(PROMPT, seed=5)
    assert "Steps: 8, Sampler: Euler, Schedule type: Karras" in out.images[0].info["parameters"]
    [path] = out.save(tmp_path)
    prov = read_provenance(path)
    assert prov.source == "iga" and prov.plan["seed"] == 5 and prov.plan["sampler"] == "euler"


def test_apply_recipe_sets_the_scheduler_and_returns_the_call(setup):
    pipe, _, recipe = setup
    call = apply_recipe(pipe, recipe)
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler" and pipe.scheduler.config.use_karras_sigmas
    assert call == {"num_inference_steps": 8, "guidance_scale": 7.0, "width": 64, "height": 64}
    odd = parse_recipe_dict({**recipe_dict(), "sampler": {"name": "res_multistep"}})[0]
    with pytest.raises(ValueError, match="diffusers has no scheduler"):
        apply_recipe(pipe, odd)


def test_dry_run_plan_and_a_pipe_without_a_recipe(setup):
    pipe, _, recipe = setup
    plan = guard(pipe, recipe=recipe).plan(PROMPT, guidance_scale=5.0, seed=2)
    assert plan.cfg == 5.0 and plan.seed == 2
    with pytest.raises(ValueError, match="no recipe"):
        guard(pipe)
    assert iga.resolve(recipe, Request(prompt=PROMPT, seed=2, cfg=5.0), "guarded")[0].sigmas == plan.sigmas
