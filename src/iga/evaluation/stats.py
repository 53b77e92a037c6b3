"""Aggregates of a run's rows: per-value means, variance across the varied axis, seed repeatability, with 95 %
bootstrap confidence intervals (percentile method, 2,000 resamples, fixed seed: the same rows give the same CI).
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations
from typing import Any, Callable, Sequence

import numpy as np

N_RESAMPLES = 2000
CI_LEVEL = 0.95
_RNG_SEED = 12345


def finite(values: Sequence[Any]) -> np.ndarray:
    """The finite numbers among values (None and NaN/inf dropped), as float64."""
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray]) -> list[float] | None:
    """95 % percentile-bootstrap CI of a statistic, resampling the samples jointly (paired) by index.

    ``statistic`` takes one (resamples x n) array per sample and returns one value per resample (row), so all
    2,000 resamples are computed at once. None when there are fewer than two observations.
    """
    n = len(samples[0])
    if n < 2:
        return None
    rng = np.random.default_rng(_RNG_SEED)
    idx = rng.integers(0, n, size=(N_RESAMPLES, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = np.asarray(statistic(*(np.asarray(s)[idx] for s in samples)), dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if len(stats) < N_RESAMPLES // 2:
        return None
    a = (1 - CI_LEVEL) / 2
    return [float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))]


def row_means(a: np.ndarray) -> np.ndarray:
    """The mean of each resample (row)."""
    return a.mean(axis=1)


def mean_ci(values: Sequence[Any]) -> dict[str, Any]:
    """{"mean", "ci", "n"} of the finite values (mean None when there are none)."""
    v = finite(values)
    if len(v) == 0:
        return {"mean": None, "ci": None, "n": 0}
    return {"mean": float(v.mean()), "ci": bootstrap_ci([v], row_means), "n": int(len(v))}


def _points(rows: list[dict], arm: str | None = None) -> list[dict]:
    return [r for r in rows if r["role"] == "point" and (arm is None or r["arm"] == arm)]


def failure_counts(rows: list[dict]) -> dict[str, Any]:
    """Images attempted (refusals excluded), failures by type, and the failure rate."""
    tried = [r for r in rows if not r["refused"]]
    by_type: dict[str, int] = defaultdict(int)
    for r in tried:
        if r["failure"]:
            by_type[r["failure"]] += 1
    n_fail = sum(by_type.values())
    return {"n": len(tried), "refused": len(rows) - len(tried), "failures": dict(by_type),
            "failure_rate": n_fail / len(tried) if tried else None}


def value_label(r: dict) -> str:
    """The column a row belongs to: its axis value (with the grid value, and arm and block in the headline)."""
    label = r["value"] if not r["grid_value"] else f"{r['value']} | {r['grid_value']}"
    return f"{r['arm']} {r['axis']}: {label}" if r["arm"] else label


def per_value(rows: list[dict], metric_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For each axis value (in axis order): counts, failures and each metric's mean with its CI."""
    by_value: dict[str, list[dict]] = defaultdict(list)
    order: dict[str, int] = {}
    for r in _points(rows):
        label = value_label(r)
        by_value[label].append(r)
        order.setdefault(label, (r["arm"], r["axis"], r["value_order"]))
    out = {}
    for label in sorted(by_value, key=lambda v: order[v]):
        rs = by_value[label]
        out[label] = {**failure_counts(rs), "nfe": mean_ci([r["nfe"] for r in rs if r["image"]])["mean"],
                      "metrics": {m: mean_ci([r[m] for r in rs]) for m in metric_names}}
    return out


def _groups(rows: list[dict], key: Callable[[dict], Any]) -> dict[Any, list[dict]]:
    g: dict[Any, list[dict]] = defaultdict(list)
    for r in rows:
        g[key(r)].append(r)
    return g


def group_variances(rows: list[dict], metric: str) -> dict[tuple, float]:
    """For each (arm, axis, prompt, seed, grid value): the sample variance of the metric across the axis values
    (or draws), over its finite values; groups with fewer than two are left out."""
    out = {}
    for k, rs in _groups(_points(rows), lambda r: (r["arm"], r["axis"], r["prompt"], r["seed"],
                                                    r["grid_value"])).items():
        v = finite([r[metric] for r in rs])
        if len(v) >= 2:
            out[k] = float(v.var(ddof=1))
    return out


def axis_variance(rows: list[dict], metric_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Mean over (prompt, seed) of each metric's variance across the varied axis, with its bootstrap CI."""
    out = {}
    for m in metric_names:
        v = list(group_variances(rows, m).values())
        out[m] = {**mean_ci(v), "n_groups": len(v)}
    return out


def bit_identical_rate(rows: list[dict]) -> dict[str, Any]:
    """Of the repeated plans, the fraction whose pixels came out bit-identical to the first run."""
    first = {(r["arm"], r["plan_sha256"]): r["pixels_sha256"] for r in rows if r["role"] == "point"}
    same = [first.get((r["arm"], r["plan_sha256"])) == r["pixels_sha256"] for r in rows
            if r["role"] == "repeat" and r["pixels_sha256"] and (r["arm"], r["plan_sha256"]) in first]
    return {"bit_identical_rate": (sum(same) / len(same)) if same else None, "n_repeats": len(same)}


def kendall_taus(rows: list[dict], metric: str) -> list[float]:
    """Kendall tau between the seeds' rankings by a metric under each pair of axis values, per (arm, prompt).

    Does the best seed stay best when the setting changes? 1: same order, 0: unrelated, -1: reversed.
    Pairs with fewer than three seeds measured under both values, or with ties everywhere, are left out.
    """
    from scipy.stats import kendalltau

    taus = []
    for _, rs in _groups(_points(rows), lambda r: (r["arm"], r["axis"], r["prompt"], r["grid_value"])).items():
        by_value = _groups(rs, lambda r: r["value"])
        for a, b in combinations(sorted(by_value), 2):
            sa = {r["seed"]: r[metric] for r in by_value[a]}
            sb = {r["seed"]: r[metric] for r in by_value[b]}
            common = [s for s in sa if s in sb and _ok(sa[s]) and _ok(sb[s])]
            if len(common) < 3:
                continue
            tau = kendalltau([sa[s] for s in common], [sb[s] for s in common]).statistic
            if tau == tau:
                taus.append(float(tau))
    return taus


def _ok(v: Any) -> bool:
    return v is not None and math.isfinite(v)


def repeatability(rows: list[dict], metric_names: Sequence[str]) -> dict[str, Any]:
    """Bit-identity of repeated plans and the Kendall tau of seed rankings across the axis, per metric."""
    return {**bit_identical_rate(rows), "kendall_tau": {m: mean_ci(kendall_taus(rows, m)) for m in metric_names}}


def present_metrics(rows: list[dict], candidates: Sequence[str]) -> list[str]:
    """The metric columns that hold at least one finite value."""
    return [m for m in candidates if any(_ok(r.get(m)) for r in rows)]
