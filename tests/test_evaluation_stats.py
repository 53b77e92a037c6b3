"""Aggregates of run rows: bootstrap CIs, variance across the axis, Kendall tau, bit-identity, headline ratios."""

import numpy as np
import pytest

from iga.evaluation import stats
from iga.evaluation.headline import compare
from iga.evaluation.table import normalise_row


def row(value, seed, prompt="p", role="point", arm="", axis="sampler", **m):
    return normalise_row({"key": f"{role}{arm}{axis}{value}{seed}{prompt}", "role": role, "arm": arm, "axis": axis,
                          "value": value, "value_order": 0, "prompt": prompt, "seed": seed, **m})


def test_the_bootstrap_ci_of_a_mean_brackets_it_and_is_reproducible():
    v = np.random.default_rng(0).normal(5.0, 1.0, 200)
    a, b = stats.mean_ci(v), stats.mean_ci(v)
    assert a == b and a["ci"][0] < a["mean"] < a["ci"][1]
    assert a["ci"][1] - a["ci"][0] == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.2)  # the normal-theory width


def test_one_observation_has_no_ci_and_nan_is_ignored():
    assert stats.mean_ci([1.0]) == {"mean": 1.0, "ci": None, "n": 1}
    assert stats.mean_ci([float("nan"), None, 2.0, 4.0])["mean"] == 3.0


def test_variance_is_taken_across_values_within_each_prompt_and_seed():
    rows = [row("a", 1, ssim=0.9), row("b", 1, ssim=0.7), row("a", 2, ssim=0.5), row("b", 2, ssim=0.5)]
    assert stats.group_variances(rows, "ssim") == {("", "sampler", "p", 1, ""): pytest.approx(0.02),
                                                   ("", "sampler", "p", 2, ""): 0.0}
    assert stats.axis_variance(rows, ["ssim"])["ssim"]["mean"] == pytest.approx(0.01)


def test_kendall_tau_is_one_when_seeds_keep_their_order_and_minus_one_when_reversed():
    same = [row(v, s, ssim=s * k) for v, k in (("a", 1.0), ("b", 2.0)) for s in (1, 2, 3, 4)]
    assert stats.kendall_taus(same, "ssim") == [pytest.approx(1.0)]
    flipped = [row("a", s, ssim=float(s)) for s in (1, 2, 3)] + [row("b", s, ssim=-float(s)) for s in (1, 2, 3)]
    assert stats.kendall_taus(flipped, "ssim") == [pytest.approx(-1.0)]


def test_bit_identity_compares_each_repeat_with_its_first_run():
    rows = [row("a", 1, plan_sha256="x", pixels_sha256="p1"), row("a", 1, role="repeat", plan_sha256="x",
                                                                   pixels_sha256="p1"),
            row("b", 1, plan_sha256="y", pixels_sha256="p2"), row("b", 1, role="repeat", plan_sha256="y",
                                                                   pixels_sha256="p3")]
    assert stats.bit_identical_rate(rows) == {"bit_identical_rate": 0.5, "n_repeats": 2}


def test_headline_comparisons_are_paired_over_groups():
    iga = {("p", 1): 1.0, ("p", 2): 2.0, ("q", 1): 3.0}
    base = {("p", 1): 2.0, ("p", 2): 4.0, ("q", 1): 6.0, ("q", 9): 100.0}  # an unpaired group is left out
    r = compare(iga, base, "ratio")
    assert r["value"] == pytest.approx(0.5) and r["n_groups"] == 3 and r["ci"] == [pytest.approx(0.5)] * 2
    d = compare(iga, base, "difference")
    assert d["value"] == pytest.approx(-2.0)
    assert compare(iga, {k: 0.0 for k in iga}, "ratio")["value"] is None  # 0 in the baseline: no ratio
