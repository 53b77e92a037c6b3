"""The headline experiment: what binding a model to its recipe buys, measured against a UI's knob space.

Two arms on the same prompts and seeds, each with the same number of settings drawn with a fixed seed:
- ``iga``: settings drawn from the recipe's compatibility set (``axes.recipe_space``), resolved by the guard
  against the model's recipe;
- ``baseline``: settings drawn from the knob space a UI exposes (``axes.knob_space``), resolved against the
  model's facts with none of its choices (``axes.knob_recipe``: what runs when nothing guards the knobs).
Two blocks per arm: ``sampler`` (only the sampler is drawn, the rest at the recipe's defaults: sampler swaps, the
proposal's figure) and ``setting`` (sampler, schedule, steps and CFG drawn together). A draw the engine cannot
run at all (e.g. a sampler without support for the model's prediction type) is drawn again, and counted.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from iga.guard import GuardRefused, ModelIdentity, Request, resolve
from iga.recipe.schema import Recipe

from . import stats
from .axes import SettingSpace, knob_recipe, knob_space, recipe_space
from .runner import Point
from .spec import ExperimentSpec

ARMS = ("iga", "baseline")
BLOCKS = ("sampler", "setting")
MAX_REDRAWS = 1000
# The figures of the table, in order: metrics whose variance across draws is compared.
VARIANCE_METRICS = ("ssim", "psnr", "delta_hue", "delta_saturation", "delta_lightness", "colourfulness",
                    "sharpness", "hf_energy", "adherence_all")


# --quick: the same experiment, small enough for the test suite (Kendall tau needs three seeds).
QUICK = {"prompts": "demo:all:2", "seeds": 3, "draws": 3}


def builtin_spec(quick: bool = False) -> dict[str, Any]:
    """The shipped headline spec (iga/data/eval/headline.yaml), optionally in its --quick size."""
    import yaml

    from iga.paths import DATA_DIR

    data = yaml.safe_load((DATA_DIR / "eval" / "headline.yaml").read_text(encoding="utf-8"))
    if quick:
        data.update(QUICK, name=f"{data['name']}-quick")
    return data


def _runnable(setting: dict[str, Any], recipe: Recipe) -> bool:
    ident = ModelIdentity(name="draw", architecture=recipe.architecture or "unknown")
    try:
        resolve(recipe, Request(**setting, seed=0), "permissive", model=ident)
    except GuardRefused:
        return False
    return True


def draw_settings(space: SettingSpace, recipe: Recipe, block: str, n: int, rng: random.Random) -> tuple[list, int]:
    """n runnable settings for a block (sampler only, or all four fields) and how many draws were redrawn."""
    out, redrawn = [], 0
    while len(out) < n:
        s = space.draw(rng)
        if block == "sampler":
            s = {"sampler": s["sampler"]}
        if _runnable(s, recipe):
            out.append(s)
        else:
            redrawn += 1
            if redrawn > MAX_REDRAWS:
                raise RuntimeError(f"{space.name}: no runnable setting in {MAX_REDRAWS} draws")
    return out, redrawn


def _label(s: dict[str, Any]) -> str:
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in s.values())


def headline_points(spec: ExperimentSpec, recipe: Recipe, prompts: list[str], seeds: list[int]) -> list[Point]:
    """Per (prompt, seed): the reference, then every arm's drawn settings per block, then one repeat each."""
    from .experiment import reference_point

    knobs = knob_recipe(recipe)
    plan = {arm: (recipe_space(recipe) if arm == "iga" else knob_space(), None if arm == "iga" else knobs)
            for arm in ARMS}
    draws = {}
    for arm in ARMS:
        for block in BLOCKS:
            # one stream per arm and block: the baseline's draws never depend on the recipe under test, so two
            # recipes of one model are compared against the very same knob-space draws
            rng = random.Random(f"{spec.draw_seed}:{arm}:{block}")
            draws[arm, block] = draw_settings(plan[arm][0], plan[arm][1] or recipe, block, spec.draws, rng)[0]
    points = []
    for prompt in prompts:
        for seed in seeds:
            points.append(reference_point(spec, recipe, prompt, seed))
            for (arm, block), settings in draws.items():
                for d, s in enumerate(settings):
                    req = Request(**s, reason=f"headline {arm} arm, {block} draw {d}")
                    points.append(Point("point", prompt, seed, req, "permissive", arm=arm, draw=d, axis=block,
                                        value=_label(s), value_order=d, recipe=plan[arm][1]))
                points.append(Point("repeat", prompt, seed, points[-len(settings)].request, "permissive", arm=arm,
                                    draw=0, axis=block, value=_label(settings[0]), recipe=plan[arm][1]))
    return points


def _by_group(rows: list[dict], arm: str, block: str, column: str) -> dict[tuple, float]:
    """Per (prompt, seed): the mean of a column over an arm's draws in a block (failures as 0/1)."""
    out: dict[tuple, list[float]] = {}
    for r in rows:
        if r["role"] == "point" and r["arm"] == arm and r["axis"] == block:
            v = float(bool(r["failure"])) if column == "failure" else r[column]
            if v is not None and v == v:
                out.setdefault((r["prompt"], r["seed"]), []).append(v)
    return {k: float(np.mean(v)) for k, v in out.items()}


def compare(iga: dict[tuple, float], base: dict[tuple, float], how: str) -> dict[str, Any]:
    """Paired comparison over (prompt, seed) groups: ratio or difference of the two arms' means, with CI."""
    keys = sorted(set(iga) & set(base))
    a, b = np.array([iga[k] for k in keys]), np.array([base[k] for k in keys])
    if not keys:
        return {"iga": None, "baseline": None, "value": None, "ci": None, "n_groups": 0}

    def stat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per resample (row): the difference or the ratio of the arms' means (NaN when the baseline's is 0)."""
        mx, my = x.mean(axis=-1), y.mean(axis=-1)
        if how == "difference":
            return mx - my
        return np.where(my > 0, mx / np.where(my > 0, my, 1.0), np.nan)

    value = float(stat(a, b))
    return {"iga": float(a.mean()), "baseline": float(b.mean()), "value": value if value == value else None,
            "ci": stats.bootstrap_ci([a, b], stat), "n_groups": len(keys)}


def _variance_by_group(rows: list[dict], arm: str, block: str, metric: str) -> dict[tuple, float]:
    sub = [r for r in rows if r["arm"] == arm and r["axis"] == block]
    return {(k[2], k[3]): v for k, v in stats.group_variances(sub, metric).items()}


def headline_summary(rows: list[dict], metric_names: list[str], spec: ExperimentSpec) -> dict[str, Any]:
    """The headline figures per block: variance ratios, failure-rate ratio, adherence difference, repeatability."""
    table, figures = [], {}
    for block in BLOCKS:
        for m in (m for m in VARIANCE_METRICS if m in metric_names):
            c = compare(_variance_by_group(rows, "iga", block, m), _variance_by_group(rows, "baseline", block, m),
                        "ratio")
            figures[f"{block}/variance/{m}"] = c
            table.append(_table_row(f"{block} draws: variance of {m}", c, "ratio (iga / baseline)"))
        c = compare(_by_group(rows, "iga", block, "failure"), _by_group(rows, "baseline", block, "failure"), "ratio")
        figures[f"{block}/failure_rate"] = c
        table.append(_table_row(f"{block} draws: failure rate", c, "ratio (iga / baseline)"))
        if "adherence_all" in metric_names:
            c = compare(_by_group(rows, "iga", block, "adherence_all"),
                        _by_group(rows, "baseline", block, "adherence_all"), "difference")
            figures[f"{block}/adherence"] = c
            table.append(_table_row(f"{block} draws: prompt adherence (all three)", c, "difference (iga - baseline)"))
        table.extend(_repeatability_rows(rows, block, figures))
    return {"table": table, "figures": figures, "arms": {"draws": spec.draws, "draw_seed": spec.draw_seed}}


def _repeatability_rows(rows: list[dict], block: str, figures: dict) -> list[dict[str, str]]:
    out = []
    per_arm = {arm: [r for r in rows if r["arm"] == arm and r["axis"] == block] for arm in ARMS}
    bit = {arm: stats.bit_identical_rate(rs) for arm, rs in per_arm.items()}
    figures[f"{block}/bit_identical"] = bit
    out.append({"figure": f"{block} draws: repeats bit-identical", "iga": _pct(bit["iga"]["bit_identical_rate"]),
                "baseline": _pct(bit["baseline"]["bit_identical_rate"]), "ratio_or_difference": "",
                "ci95": "", "note": f"{bit['iga']['n_repeats']} / {bit['baseline']['n_repeats']} repeats"})
    tau = {arm: stats.mean_ci(stats.kendall_taus(rs, "ssim")) for arm, rs in per_arm.items()}
    figures[f"{block}/kendall_tau_ssim"] = tau
    out.append({"figure": f"{block} draws: Kendall tau of seed ranking by ssim", "iga": _num(tau["iga"]["mean"]),
                "baseline": _num(tau["baseline"]["mean"]), "ratio_or_difference": "",
                "ci95": f"{_ci(tau['iga']['ci'])} / {_ci(tau['baseline']['ci'])}", "note": "1 = seeds keep their order"})
    return out


def _table_row(figure: str, c: dict[str, Any], kind: str) -> dict[str, str]:
    return {"figure": figure, "iga": _num(c["iga"]), "baseline": _num(c["baseline"]),
            "ratio_or_difference": _num(c["value"]), "ci95": _ci(c["ci"]), "note": f"{kind}; {c['n_groups']} groups"}


def _num(v: Any) -> str:
    return "n/a" if v is None or v != v else f"{v:.4g}"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _ci(ci: list[float] | None) -> str:
    return "n/a" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]"
