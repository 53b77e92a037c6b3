"""`iga doctor`: the broken-setup matrix, the instruments, and the command's inputs and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iga.diagnostics.case import CaseError, case_from_image, case_from_plan
from iga.diagnostics.doctor import badness
from iga.diagnostics.selftest import SETUPS, run_matrix

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, module_audit):
    return {r["setup"]: r for r in run_matrix(tmp_path_factory.mktemp("matrix"))}


def test_the_doctor_names_the_injected_cause_first_in_all_setups_but_one(matrix):
    assert len(matrix) == len(SETUPS) >= 7
    assert sum(not r["right"] for r in matrix.values()) <= 1, [r for r in matrix.values() if not r["right"]]


@pytest.mark.parametrize("setup", [s for s in SETUPS if "turbo" not in s.name], ids=lambda s: s.expect)
def test_each_injected_cause_is_named_first_with_measured_evidence(matrix, setup):
    row = matrix[setup.name]
    assert row["named"] == setup.expect, row
    assert row["evidence"]


def test_a_setting_outside_the_recipe_is_evidenced_by_putting_it_back(matrix):
    row = matrix["CFG far above the recipe's range (15; recipe 1.5-4)"]
    assert "cfg 15.0 -> 3.0" in row["evidence"] and "outside the recipe's range" in row["evidence"]


def test_nan_is_located_in_the_unet_at_the_step_the_fault_begins(matrix):
    """The injected UNet returns NaN for timesteps below 300: the doctor names the UNet and that step."""
    import re

    from iga.diagnostics.selftest import NAN_FROM_T
    from iga.generate import load
    from iga.sampling.parameterization import schedule_from_config

    row = matrix["a model that emits NaN from step ~14"]
    assert "UNet" in row["diagnosis"]
    step = int(re.search(r"at step (\d+)", row["evidence"]).group(1))
    plan = load().plan(PROMPT, sampler="euler", seed=3, overrides=["sampler"])
    schedule = schedule_from_config(plan.training_schedule)
    ts = [float(schedule.sigma_to_t(s)) for s in plan.sigmas[:-1]]  # euler calls the model once per step
    assert ts[step - 1] < NAN_FROM_T <= ts[step - 2]  # the first model call below the threshold is at this step


def test_a_wrong_prediction_type_is_refused_and_measured(matrix):
    row = matrix["wrong prediction type (eps on a v model)"]
    assert "measured: as eps:" in row["evidence"] and "as v:" in row["evidence"]


def test_badness_counts_failures_ssim_and_adherence():
    assert badness({}) == 0
    assert badness({"failures": "burnt"}) == 4.0
    assert badness({"ssim": 0.5, "adherence_all": 0.0}) == pytest.approx(4 * 0.5 + 3)
    assert badness({"failures": "non_finite;black"}) == 16.0


def _cli(*args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "IGA_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    return subprocess.run([sys.executable, "-m", "iga.cli", *args], capture_output=True, text=True, env=env)


def _generate(tmp_path, *flags):
    p = _cli("generate", PROMPT, "--seed", "4", "-o", str(tmp_path / "gen"), *flags, "--json", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    return Path(json.loads(p.stdout)["images"][0])


def test_an_image_made_with_too_few_steps_exits_1_and_names_the_steps(tmp_path):
    image = _generate(tmp_path, "--steps", "4", "--override", "steps")
    p = _cli("doctor", str(image), "--out", str(tmp_path / "doc"), "--json", tmp_path=tmp_path)
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert out["found"] and out["causes"][0]["field"] == "steps" and "--steps 20" in out["causes"][0]["fix"]
    report = (tmp_path / "doc" / "report.html").read_text()
    assert "likely cause" in report and "previews.png" in report
    for grid in out["grids"]:  # the CFG, steps and sampler sweeps around the user's setting
        assert (tmp_path / "doc" / grid).is_file()
    assert {Path(g).parent.name for g in out["grids"]} == {"sweep-cfg", "sweep-steps", "sweep-sampler"}


def test_an_image_made_at_the_recipe_exits_0_with_nothing_found(tmp_path):
    image = _generate(tmp_path)
    p = _cli("doctor", str(image), "--no-sweeps", "--out", str(tmp_path / "doc"), tmp_path=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "nothing wrong found" in p.stdout


def test_an_a1111_image_is_examined_with_the_given_model(tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from iga.paths import default_model_path

    info = PngInfo()
    info.add_text("parameters", f"{PROMPT}\nSteps: 20, Sampler: Euler, Schedule type: Karras, CFG scale: 14, "
                                "Seed: 3, Size: 32x32, Model: demo")
    path = tmp_path / "a1111.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path, pnginfo=info)
    case = case_from_image(path, default_model_path())
    assert case.source == "a1111" and case.request.cfg == 14 and case.request.steps == 20
    assert any("not recorded" in n for n in case.notes)


@pytest.mark.parametrize("make, message", [
    (lambda d: _plain_png(d), "carries no generation settings"),
    (lambda d: d / "missing.png", "not found"),
])
def test_bad_images_are_one_clear_line_exit_2(tmp_path, make, message):
    p = _cli("doctor", str(make(tmp_path)), tmp_path=tmp_path)
    assert p.returncode == 2 and message in p.stderr and p.stderr.count("\n") == 1, p.stderr


def _plain_png(d: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8)).save(d / "plain.png")
    return d / "plain.png"


def test_a_model_that_cannot_be_found_is_one_clear_line_exit_2(tmp_path):
    image = _generate(tmp_path)
    p = _cli("doctor", str(image), "--model", str(tmp_path / "none.safetensors"), tmp_path=tmp_path)
    assert p.returncode == 2 and "not found" in p.stderr and p.stderr.count("\n") == 1


def test_neither_image_nor_plan_is_a_usage_error(tmp_path):
    p = _cli("doctor", tmp_path=tmp_path)
    assert p.returncode == 2 and "an image or --plan" in p.stderr


def test_a_plan_file_is_a_case_and_a_non_plan_is_refused(tmp_path):
    from iga.generate import load

    plan = load().plan(PROMPT, cfg=9.0, overrides=["cfg"], seed=2)
    good = tmp_path / "plan.json"
    good.write_text(plan.to_json())
    case = case_from_plan(good)
    assert case.request.cfg == 9.0 and case.seed == 2 and plan.model.path is None  # found by its weights hash
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "iga.plan/1", "steps": "many"}))
    with pytest.raises(CaseError, match="not a valid iga plan"):
        case_from_plan(bad)
