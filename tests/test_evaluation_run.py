"""`iga eval` on the bundled demo model: the run folder, the table, resume, interruption, bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from iga.evaluation import SpecError, parse_spec, run_experiment
from iga.evaluation.table import COLUMN_NAMES

REQUIRED = ("prompt", "seed", "sampler", "schedule", "steps", "cfg", "image", "plan_sha256", "nfe", "ssim", "psnr",
            "delta_hue", "delta_saturation", "colourfulness", "sharpness", "hf_energy", "clipped", "failure",
            "seconds")
SMALL = {"vary": {"sampler": ["euler", "dpmpp_2m", "lcm"]}, "prompts": "demo:all:2", "seeds": 2}


@pytest.fixture(scope="module")
def run(tmp_path_factory, module_audit):
    tmp = tmp_path_factory.mktemp("eval")
    return run_experiment(parse_spec(dict(SMALL)), tmp / "run"), tmp


def test_a_run_writes_every_file_and_the_table_has_the_protocol_columns(run):
    result, _ = run
    d = result.run_dir
    for name in ("results.parquet", "results.csv", "summary.json", "report.html", "report.md", "rows.jsonl"):
        assert (d / name).is_file(), name
    import pandas as pd

    table = pd.read_parquet(d / "results.parquet")
    assert set(REQUIRED) <= set(table.columns)
    assert list(table.columns) == list(COLUMN_NAMES)
    assert list(pd.read_csv(d / "results.csv").columns) == list(COLUMN_NAMES)


def test_every_point_of_the_protocol_is_a_row_and_images_are_relative_paths(run):
    result, _ = run
    rows = result.rows
    # 2 prompts x 2 seeds x (1 reference + 3 values + 1 repeat)
    assert len(rows) == 2 * 2 * 5
    points = [r for r in rows if r["role"] == "point"]
    assert sorted({r["value"] for r in points}) == ["dpmpp_2m", "euler", "lcm"]
    for r in rows:
        if r["image"]:
            assert not Path(r["image"]).is_absolute() and (result.run_dir / r["image"]).is_file()
    assert all(r["nfe"] == r["steps"] for r in points if r["sampler"] in ("euler", "dpmpp_2m"))


def test_a_forbidden_value_is_a_refused_row_with_the_guards_reason_and_no_image(run):
    result, _ = run
    lcm = [r for r in result.rows if r["value"] == "lcm"]
    assert len(lcm) == 4
    assert all(r["refused"] and "forbidden" in r["refused"] and r["image"] == "" for r in lcm)
    assert result.summary["per_value"]["lcm"]["refused"] == 4


def test_each_image_carries_its_plan_and_the_plan_matches_its_row(run):
    from iga.evaluation.runner import plan_sha256
    from iga.guard import Plan
    from iga.provenance import read_provenance

    result, _ = run
    row = next(r for r in result.rows if r["value"] == "euler" and r["role"] == "point")
    prov = read_provenance(result.run_dir / row["image"])
    plan = Plan.from_dict(prov.plan)
    assert plan_sha256(plan) == row["plan_sha256"]
    assert plan.sampler == "euler" and plan.seed == row["seed"] and plan.prompt == row["prompt"]
    assert [o.field for o in plan.overrides] == ["sampler"]  # guarded mode: the varied axis is an explicit override


def test_reference_metrics_compare_against_the_high_step_reference(run):
    result, _ = run
    ref = next(r for r in result.rows if r["role"] == "reference")
    assert ref["sampler"] == "dpmpp_2m" and ref["steps"] == 4 * 20
    pts = [r for r in result.rows if r["role"] == "point" and r["image"]]
    assert all(0 < r["ssim"] <= 1 and np.isfinite(r["psnr"]) for r in pts)
    # dpmpp_2m at 20 steps is closer to its own 80-step solution than first-order euler is
    mean = {v: np.mean([r["ssim"] for r in pts if r["value"] == v]) for v in ("euler", "dpmpp_2m")}
    assert mean["dpmpp_2m"] > mean["euler"]


def test_summary_has_variance_with_confidence_intervals_and_repeatability(run):
    result, _ = run
    s = json.loads((result.run_dir / "summary.json").read_text())
    v = s["variance"]["ssim"]
    assert v["n_groups"] == 4 and v["mean"] >= 0 and v["ci"][0] <= v["mean"] <= v["ci"][1]
    assert s["repeatability"]["n_repeats"] == 4 and s["repeatability"]["bit_identical_rate"] == 1.0
    assert s["per_value"]["euler"]["judge_frechet"] is not None


def test_the_report_opens_offline(run):
    result, _ = run
    html = (result.run_dir / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(?!data:|#)", html)
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html


def test_a_rerun_resumes_and_makes_nothing_again(run):
    result, tmp = run
    before = sorted(p.name for p in (result.run_dir / "images").iterdir())
    again = run_experiment(parse_spec(dict(SMALL)), result.run_dir, report=False)
    assert sorted(p.name for p in (result.run_dir / "images").iterdir()) == before
    assert [r["key"] for r in again.rows] == [r["key"] for r in result.rows]


def test_a_folder_holding_another_experiment_is_refused(run):
    result, _ = run
    other = {**SMALL, "seeds": 3}
    with pytest.raises(SpecError, match="another experiment"):
        run_experiment(parse_spec(other), result.run_dir, report=False)


def test_an_interrupted_run_keeps_finished_rows_and_a_rerun_completes_it(tmp_path, offline_audit):
    spec = {"vary": {"cfg": [2, 3]}, "prompts": "demo:all:1", "seeds": 2, "repeat": False}

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_spec(dict(spec)), tmp_path, progress=stop_after_two, report=False)
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 2
    made = []
    result = run_experiment(parse_spec(dict(spec)), tmp_path, report=False,
                            progress=lambda done, total: made.append(total))
    assert len(result.rows) == 2 * (1 + 2) and made[-1] == 4  # only the 4 images not made before


@pytest.mark.parametrize("args, message", [
    (["--vary", "colour", "--values", "1,2"], "unknown axis 'colour'"),
    (["--vary", "cfg", "--values", "2,3", "--vary", "steps", "--values", "10,20"], "exactly one at a time"),
    (["--vary", "cfg", "--values", " , "], "has no values"),
    (["SPEC_MISSING"], "cannot read spec"),
    (["--vary", "sampler", "--values", "eulr"], "euler"),
])
def test_bad_input_is_one_clear_line_exit_2_and_nothing_written(tmp_path, args, message):
    out = tmp_path / "run"
    args = [str(tmp_path / "nope.yaml") if a == "SPEC_MISSING" else a for a in args]
    p = subprocess.run([sys.executable, "-m", "iga.cli", "eval", *args, "--out", str(out)], capture_output=True,
                       text=True, env={**os.environ, "IGA_AUDIT_LOG": str(tmp_path / "a.jsonl")})
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert not out.exists()


def test_a_learned_metric_without_its_weights_file_is_refused_before_anything_runs(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"vary: {{cfg: [2, 3]}}\nlpips_weights: {tmp_path / 'lpips.safetensors'}\n")
    p = subprocess.run([sys.executable, "-m", "iga.cli", "eval", str(spec), "--out", str(tmp_path / "run")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "lpips_weights" in p.stderr and "lpips.safetensors" in p.stderr
    assert not (tmp_path / "run").exists()


def test_an_unreadable_spec_names_the_problem(tmp_path):
    bad = tmp_path / "spec.yaml"
    bad.write_text("vary: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        from iga.evaluation import load_spec

        load_spec(bad)


def test_ctrl_c_exits_130_and_the_table_holds_the_finished_rows(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "IGA_AUDIT_LOG": str(tmp_path / "a.jsonl")}
    proc = subprocess.Popen([sys.executable, "-m", "iga.cli", "eval", "--vary", "steps", "--values", "20,30,40",
                             "--prompts", "2", "--seeds", "3", "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / "rows.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or journal.read_text().count("\n") < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun" in err and "Traceback" not in err
    import pandas as pd

    n = len(pd.read_parquet(out / "results.parquet"))
    assert n >= 3 and n == journal.read_text().count("\n")


def test_eval_runs_on_a_stable_diffusion_checkpoint_without_a_judge(tmp_path, offline_audit):
    """The ordinary SD1 backend (VAE, CLIP text encoder, latent UNet): reference metrics, no adherence."""
    from iga.models import testing

    _, _, single = testing.save_family(tmp_path / "tiny", ["sd1"], seed=3)["sd1"]
    spec = parse_spec({"model": str(single), "prompts": ["a cat", "a dog"], "seeds": 2, "repeat": False,
                       "base": {"size": "64x64", "steps": 4}, "reference_factor": 2,
                       "vary": {"sampler": ["euler", "dpmpp_2m"]}})
    result = run_experiment(spec, tmp_path / "run", report=False)
    pts = [r for r in result.rows if r["role"] == "point"]
    assert len(pts) == 8 and all(r["image"] and np.isfinite(r["ssim"]) for r in pts)
    assert all(r["adherence_all"] is None or np.isnan(r["adherence_all"]) for r in pts)
    assert result.summary["model"]["name"] == "sd1" and "judge_frechet" not in result.summary["per_value"]["euler"]


def test_demo_prompts_are_refused_for_a_model_without_the_demo_grammar(tmp_path):
    from iga.models import testing

    _, _, single = testing.save_family(tmp_path / "tiny", ["sd1"], seed=3)["sd1"]
    with pytest.raises(SpecError, match="demo prompts need"):
        run_experiment(parse_spec({"model": str(single), "prompts": 3}), tmp_path / "run")
    assert not (tmp_path / "run").exists()
