"""The headline experiment, quick size: every figure of the table is there and finite (not that IGA wins)."""

import math

import pytest

from iga.evaluation import parse_spec, run_experiment
from iga.evaluation.headline import ARMS, BLOCKS, VARIANCE_METRICS, builtin_spec


@pytest.fixture(scope="module")
def quick(tmp_path_factory, module_audit):
    return run_experiment(parse_spec(builtin_spec(quick=True), where="headline"),
                          tmp_path_factory.mktemp("headline") / "run")


def test_the_quick_headline_table_is_complete(quick):
    table = quick.summary["headline"]["table"]
    figures = [r["figure"] for r in table]
    for block in BLOCKS:
        for m in VARIANCE_METRICS:
            assert f"{block} draws: variance of {m}" in figures
        for name in ("failure rate", "prompt adherence (all three)", "repeats bit-identical",
                     "Kendall tau of seed ranking by ssim"):
            assert f"{block} draws: {name}" in figures


def test_every_headline_figure_is_finite_and_ratios_exist_wherever_the_baseline_is_not_zero(quick):
    for key, c in quick.summary["headline"]["figures"].items():
        if "bit_identical" in key:
            assert all(c[arm]["bit_identical_rate"] == 1.0 for arm in ARMS), key
            continue
        if "kendall" in key:
            assert all(c[arm]["mean"] is None or -1 <= c[arm]["mean"] <= 1 for arm in ARMS), key
            continue
        assert math.isfinite(c["iga"]) and math.isfinite(c["baseline"]), key
        assert c["n_groups"] == 2 * 3
        if key.endswith("adherence") or c["baseline"] > 0:
            assert c["value"] is not None and math.isfinite(c["value"]), key
            assert c["ci"] is None or c["ci"][0] <= c["value"] <= c["ci"][1] + 1e-12, key


def test_both_arms_share_prompts_seeds_and_draw_counts_and_the_baseline_runs_without_the_guard(quick):
    rows = [r for r in quick.rows if r["role"] == "point"]
    for arm in ARMS:
        for block in BLOCKS:
            mine = [r for r in rows if r["arm"] == arm and r["axis"] == block]
            assert len(mine) == 2 * 3 * 3  # prompts x seeds x draws
    from iga.guard import Plan
    from iga.provenance import read_provenance

    base = next(r for r in rows if r["arm"] == "baseline" and r["image"])
    plan = Plan.from_dict(read_provenance(quick.run_dir / base["image"]).plan)
    assert plan.model.recipe_source == "given"  # resolved against the knob space, and the image says so
