"""`iga calibrate`: the rules that turn figures into a compatibility set, and a small end-to-end calibration."""

import json
import shutil
import subprocess
import sys

import pytest

from iga.recipe import RECIPE_VERSION
from iga.evaluation import calibrate as cal
from iga.evaluation.calibrate import Score


def test_a_setting_failing_more_than_the_threshold_is_forbidden_with_its_evidence():
    scores = {"sampler=lcm": Score(n=16, failure_rate=0.5, failures={"residual_noise": 6, "black": 2}),
              "sampler=euler": Score(n=16, failure_rate=0.0),
              "sampler=edge": Score(n=16, failure_rate=cal.FORBID_FAILURE_RATE, failures={"burnt": 4})}
    forbidden = cal._forbidden(scores)
    assert list(forbidden) == ["sampler=lcm"]  # exactly at the threshold is not above it
    assert "50%" in forbidden["sampler=lcm"] and "residual_noise: 6" in forbidden["sampler=lcm"]


def test_the_allow_rule_needs_few_failures_close_adherence_and_close_ssim():
    best = Score(n=16, failure_rate=0.0, adherence=1.0, ssim=0.99, frechet=2.0)
    assert cal._passes(Score(n=16, failure_rate=0.0, adherence=0.97, ssim=0.95, frechet=3.9), best)
    assert not cal._passes(Score(n=16, failure_rate=0.1, adherence=1.0, ssim=0.99, frechet=2.0), best)
    assert not cal._passes(Score(n=16, failure_rate=0.0, adherence=0.9, ssim=0.99, frechet=2.0), best)
    assert not cal._passes(Score(n=16, failure_rate=0.0, adherence=1.0, ssim=0.9, frechet=2.0), best)
    assert not cal._passes(Score(n=16, failure_rate=0.0, adherence=1.0, ssim=0.99, frechet=4.1), best)
    # a stochastic sampler does not follow the ODE reference: its SSIM is not held against it
    assert cal._passes(Score(n=16, failure_rate=0.0, adherence=1.0, ssim=0.6, frechet=2.5), best, deterministic=False)


def test_samplers_are_compared_at_equal_model_calls():
    assert cal.equal_nfe_steps("dpmpp_2m", 20) == 20
    assert cal.equal_nfe_steps("heun", 20) == 10
    assert cal.equal_nfe_steps("heunpp2", 20) == 7


def _recipe(out):
    data = json.loads(out)["recipe"]
    data["calibration"].pop("date")
    return data


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cal")
    model = tmp / "model.safetensors"
    from iga.paths import DEMO_MODEL

    shutil.copy(DEMO_MODEL, model)
    runs = []
    for name in ("a", "b"):
        p = subprocess.run([sys.executable, "-m", "iga.cli", "calibrate", str(model), "--quick", "--json",
                            "--out", str(tmp / name)], capture_output=True, text=True,
                           env={**__import__("os").environ, "IGA_AUDIT_LOG": str(tmp / "audit.jsonl"),
                                "OMP_NUM_THREADS": "1"})
        assert p.returncode == 0, p.stderr
        runs.append(p.stdout)
    return tmp, model, runs


def test_the_same_model_budget_and_threads_give_the_same_recipe(quick):
    _, _, (a, b) = quick
    assert _recipe(a) == _recipe(b)


def test_the_proposed_recipe_is_valid_and_its_presets_lie_inside_its_ranges(quick):
    from iga.recipe import parse_recipe_dict

    _, _, (a, _) = quick
    data = json.loads(a)["recipe"]
    recipe, issues = parse_recipe_dict(data)
    assert not [i for i in issues if i.severity == "error"]
    assert recipe.iga_version == RECIPE_VERSION and recipe.calibration.thresholds["forbid_failure_rate"] == 0.25
    for p in recipe.presets:
        assert recipe.steps.min <= p.steps <= recipe.steps.max and recipe.cfg.min <= p.cfg <= recipe.cfg.max
    assert recipe.sampler.name in recipe.constraints.allow_samplers
    assert recipe.prediction_type == "v" and recipe.training_schedule.kind == "linear"  # facts kept
    assert "turbo" not in (recipe.constraints.allow_schedules or [])  # refused at 20 steps: never allowed


def test_write_embeds_the_recipe_with_hashes_that_verify(quick, tmp_path):
    tmp, model, _ = quick
    env = {**__import__("os").environ, "IGA_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    p = subprocess.run([sys.executable, "-m", "iga.cli", "calibrate", str(model), "--quick", "--write",
                        "--out", str(tmp / "a")], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "embedded in" in p.stdout and "sampler:" in p.stdout
    v = subprocess.run([sys.executable, "-m", "iga.cli", "verify", str(model)], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    from iga.checkpoint import read_recipe_dict

    assert read_recipe_dict(model)["calibration"]["budget"]["seeds"] == cal.QUICK.seeds


def test_a_recipe_that_admits_a_failing_setting_is_caught():
    from iga.generate import load

    recipe = load().recipe  # cfg 1.5..4, steps 15..40, forbids lcm
    bad = {"cfg": {"cfg=3": Score(n=16, failure_rate=0.5, failures={"burnt": 8})},
           "sampler": {"sampler=lcm": Score(n=16, failure_rate=0.9, failures={"burnt": 14}),
                       "sampler=euler": Score(n=16, failure_rate=0.3, failures={"burnt": 5})},
           "steps": {"steps=8": Score(n=16, failure_rate=0.4, failures={"residual_noise": 6})}}
    problems = cal.uncovered_failures(bad, recipe)
    assert problems == ["cfg: cfg=3 fails 50% but the recipe admits it",
                        "sampler: sampler=euler fails 30% but the recipe admits it"]
