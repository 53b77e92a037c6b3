"""`iga calibrate`: derive a recipe from evidence, in five budgeted stages on the sweep runner.

Only the model's facts are taken from its current recipe (prediction type, training schedule, architecture,
sizes, VAE, clip skip; see ``axes.knob_recipe``); every choice is measured again from scratch:
1. ``cfg``: a CFG scan with a neutral start (dpmpp_2m + karras, 20 steps, A1111's defaults);
2. ``sampler``: every sampler at the start schedule and steps, at the chosen CFG;
3. ``schedule``: every schedule with the best sampler;
4. ``steps``: step counts with the best sampler and schedule;
5. ``cfg_fine``: CFG around the chosen value at the chosen steps.
Each setting is rendered for every (prompt, seed) of the budget; stages 2-5 compare against a reference per
(prompt, seed) (the start sampler and schedule at 4x the start steps, at the chosen CFG). The thresholds below
turn the figures into a compatibility set. Same model, budget and thread count -> the same recipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from iga.guard import Request
from iga.guard.source import ModelSource
from iga.recipe import names
from iga.recipe.schema import Recipe

from . import stats
from .axes import knob_recipe, knob_values
from .runner import Point, run_points
from .worker import WorkerConfig

# The documented rules (recorded in the recipe's calibration block).
FORBID_FAILURE_RATE = 0.25  # a sampler or schedule failing more often than this is forbidden, with its evidence
ALLOW_FAILURE_RATE = 0.05  # an allowed setting fails at most this often
ADHERENCE_TOLERANCE = 0.05  # ... and (demo judge) reads the prompt within this of the best setting
FRECHET_FACTOR = 2.0  # ... and (demo judge) its Frechet distance is at most this times the best one's
SSIM_TOLERANCE = 0.05  # ... and a deterministic setting's SSIM to the reference is within this of the best
FAST_ADHERENCE_TOLERANCE = 0.02  # Fast preset: adherence within this of Quality ...
FAST_SSIM_TOLERANCE = 0.03  # ... and SSIM to the reference within this of Quality's
DEFAULT_SSIM_TOLERANCE = 0.01  # default steps: the fewest whose SSIM is within this of the best
REFERENCE_FACTOR = 4


@dataclass(frozen=True)
class Budget:
    """How much a calibration renders: prompts x seeds images per setting, and the settings of each stage."""

    prompts: int = 8
    seeds: int = 2
    samplers: tuple[str, ...] | None = None  # None: every sampler a UI lists
    schedules: tuple[str, ...] | None = None  # None: every schedule a UI lists
    steps: tuple[int, ...] = (6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
    cfgs: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 9.0, 12.0)
    start_sampler: str = "dpmpp_2m"
    start_schedule: str = "karras"
    start_steps: int = 20


QUICK = Budget(prompts=2, seeds=2, samplers=("euler", "dpmpp_2m", "heun", "lcm"),
               schedules=("karras", "normal", "turbo"), steps=(8, 15, 20, 30), cfgs=(1.5, 3.0, 7.0))


@dataclass
class Score:
    """The figures of one setting over the budget's images."""

    n: int = 0
    refused: int = 0
    failure_rate: float | None = None
    failures: dict[str, int] = field(default_factory=dict)
    adherence: float | None = None
    frechet: float | None = None
    ssim: float | None = None
    nfe: float | None = None


@dataclass
class Calibration:
    """The outcome: the proposed recipe, every stage's scores, and the run folder that holds the evidence."""

    recipe: Recipe
    scores: dict[str, dict[str, Score]]
    run_dir: Path


class _Run:
    """Stages share one run folder and one growing list of points, so the table ends up complete."""

    def __init__(self, source: ModelSource, config: WorkerConfig, facts: Recipe, budget: Budget, run_dir: Path,
                 prompts: list[str], progress: Callable[[int, int], None] | None):
        self.source, self.config, self.budget, self.run_dir = source, config, budget, run_dir
        self.knobs = knob_recipe(facts)
        self.prompts, self.seeds = prompts, [1000 + i for i in range(budget.seeds)]
        self.points: list[Point] = []
        self.progress = progress
        self.judge = None
        if config.judge_path:
            from iga.demo.judge import load_judge

            self.judge = load_judge(config.judge_path)

    def reference(self, cfg: float) -> None:
        b = self.budget
        req = Request(sampler=b.start_sampler, schedule=b.start_schedule, steps=REFERENCE_FACTOR * b.start_steps,
                      cfg=cfg, reason="calibration reference")
        self.points += [Point("reference", p, s, req, "permissive", recipe=self.knobs)
                        for p in self.prompts for s in self.seeds]

    def stage(self, name: str, base: dict[str, Any], key: str, values: list[Any],
              adjust: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Score]:
        """Render the base setting with each value of one field (resuming what is done); score each, by label.
        ``adjust(value)`` gives fields that go with a value (the sampler stage's equal-NFE step count)."""
        settings = [{**base, key: v, **(adjust(v) if adjust else {})} for v in values]
        labels = [_label(key, v) for v in values]
        for prompt in self.prompts:
            for seed in self.seeds:
                for i, (s, label) in enumerate(zip(settings, labels)):
                    req = Request(**s, reason=f"calibration stage {name}")
                    self.points.append(Point("point", prompt, seed, req, "permissive", axis=name, value=label,
                                             value_order=i, recipe=self.knobs))
        rows = run_points(self.points, self.source, self.config, self.run_dir, action="calibrate",
                          progress=self.progress)
        return {label: self._score([r for r in rows if r["role"] == "point" and r["axis"] == name
                                    and r["value"] == label]) for label in labels}

    def _score(self, rows: list[dict]) -> Score:
        counts = stats.failure_counts(rows)
        sc = Score(n=counts["n"], refused=counts["refused"], failure_rate=counts["failure_rate"],
                   failures=counts["failures"])
        done = [r for r in rows if r["image"]]
        sc.adherence = stats.mean_ci([r["adherence_all"] for r in done])["mean"]
        sc.ssim = stats.mean_ci([r["ssim"] for r in done])["mean"]
        sc.nfe = stats.mean_ci([r["nfe"] for r in done])["mean"]
        if self.judge is not None and len(done) >= 2:
            from .judge import judge_frechet
            from .runner import load_pixels

            px = [load_pixels(self.run_dir, r["image"]) for r in done]
            sc.frechet = judge_frechet(self.judge, np.stack(px), [r["prompt"] for r in done])
        return sc


def _label(key: str, v: Any) -> str:
    return f"{key}={v:g}" if isinstance(v, float) else f"{key}={v}"


def _passes(sc: Score, best: Score, deterministic: bool = True) -> bool:
    """The allow rule: few failures and, against the stage's best setting, close adherence, a Frechet distance
    within a factor (demo judge) and, for deterministic settings, SSIM to the reference within a tolerance."""
    if sc.failure_rate is None or sc.failure_rate > ALLOW_FAILURE_RATE or sc.refused:
        return False
    if best.adherence is not None and (sc.adherence is None or sc.adherence < best.adherence - ADHERENCE_TOLERANCE):
        return False
    if best.frechet is not None and (sc.frechet is None or sc.frechet > FRECHET_FACTOR * best.frechet):
        return False
    if deterministic and best.ssim is not None:
        return sc.ssim is not None and sc.ssim >= best.ssim - SSIM_TOLERANCE
    return True


def _best(scores: dict[str, Score]) -> str:
    """The stage's best setting: fewest failures, then best adherence, then the highest SSIM to the reference
    (the converged trajectory); where there is no reference (the CFG stages), the lowest Frechet distance."""
    ok = {k: v for k, v in scores.items() if v.failure_rate is not None and not v.refused}
    if not ok:
        raise RuntimeError("calibration: every setting of a stage was refused or failed; nothing to choose from")

    def key(k: str) -> tuple:
        v = ok[k]
        quality = -v.ssim if v.ssim is not None else (v.frechet if v.frechet is not None else 0.0)
        return (round(v.failure_rate, 6), -round(v.adherence or 0.0, 6), quality)

    return min(ok, key=key)


def _forbidden(scores: dict[str, Score]) -> dict[str, str]:
    """Settings whose failure rate exceeds the threshold, each with its evidence."""
    out = {}
    for label, sc in scores.items():
        if sc.failure_rate is not None and sc.failure_rate > FORBID_FAILURE_RATE:
            worst = max(sc.failures, key=sc.failures.get)
            out[label] = (f"failure rate {sc.failure_rate:.0%} over {sc.n} images (most often {worst}: "
                          f"{sc.failures[worst]}); threshold {FORBID_FAILURE_RATE:.0%}")
    return out


def _value(label: str) -> str:
    return label.split("=", 1)[1]


def _contiguous(values: list[float], passing: set[float], centre: float) -> tuple[float, float]:
    """The run of passing values around the centre, in the tested order."""
    vs = sorted(values)
    i = vs.index(centre)
    lo = hi = i
    while lo > 0 and vs[lo - 1] in passing:
        lo -= 1
    while hi < len(vs) - 1 and vs[hi + 1] in passing:
        hi += 1
    return vs[lo], vs[hi]


def _cfg_stage(run: _Run, name: str, cfgs: list[float], base: dict[str, Any]) -> tuple[float, set[float], dict]:
    """A CFG scan: judged by failures, adherence and the Frechet distance, never by SSIM (the reference has one
    fixed CFG, so SSIM would only say which CFG is closest to the reference's)."""
    scores = run.stage(name, base, "cfg", [float(c) for c in cfgs])
    for sc in scores.values():
        sc.ssim = None
    best = scores[_best(scores)]
    passing = {float(_value(k)) for k, v in scores.items() if _passes(v, best)}
    chosen = float(_value(_best({k: v for k, v in scores.items() if float(_value(k)) in passing} or scores)))
    return chosen, passing, scores


def _choice_stage(run: _Run, name: str, options: list[str], base: dict[str, Any]) -> tuple[str, list, dict, dict]:
    """Sampler or schedule stage: (best, allowed, forbidden with evidence, scores)."""
    adjust = (lambda s: {"steps": equal_nfe_steps(s, base["steps"])}) if name == "sampler" else None
    scores = run.stage(name, base, name, options, adjust)
    best_label = _best(scores)
    best = scores[best_label]
    stochastic = {s.name for s in names.SAMPLERS if s.stochastic}
    allowed = [_value(k) for k, v in scores.items()
               if _passes(v, best, deterministic=name != "sampler" or _value(k) not in stochastic)]
    forbidden = {_value(k): why for k, why in _forbidden(scores).items()}
    return _value(best_label), allowed, forbidden, scores


def equal_nfe_steps(sampler: str, steps: int) -> int:
    """Steps that give a sampler the model calls the start sampler makes in ``steps`` (samplers are compared
    at equal NFE: heun's 2 calls per step get half the steps)."""
    per_step = names.sampler_info(sampler).nfe_per_step or 1
    return max(1, round(steps / per_step))


def _steps_stage(run: _Run, base: dict[str, Any]) -> tuple[dict[str, int], dict]:
    """Steps range, default and the Quality and Fast step counts."""
    scores = run.stage("steps", base, "steps", list(run.budget.steps))
    by_steps = {int(_value(k)): v for k, v in scores.items()}
    best = scores[_best(scores)]
    passing = sorted(n for n, v in by_steps.items() if _passes(v, best))
    if not passing:
        raise RuntimeError("calibration: no step count passed the allow rule; widen the budget's steps")
    tested = sorted(by_steps)
    lo = passing[-1]
    for n in reversed(tested[: tested.index(passing[-1])]):  # the smallest count from which every larger passes
        if n not in passing:
            break
        lo = n
    usable = [n for n in passing if n >= lo]
    quality = min(usable, key=lambda n: -(by_steps[n].ssim or 0.0))
    q = by_steps[quality]
    fast = min(n for n in usable if _close_to(by_steps[n], q))
    best_ssim = max((by_steps[n].ssim or 0.0) for n in usable)
    default = min(n for n in usable if (by_steps[n].ssim or 0.0) >= best_ssim - DEFAULT_SSIM_TOLERANCE)
    return {"min": lo, "max": usable[-1], "default": max(default, fast), "quality": quality, "fast": fast}, scores


def _close_to(v: Score, q: Score) -> bool:
    """The Fast preset's tolerance against Quality: adherence within 0.02 and SSIM within 0.03."""
    if q.adherence is not None and (v.adherence or 0.0) < q.adherence - FAST_ADHERENCE_TOLERANCE:
        return False
    return (v.ssim or 0.0) >= (q.ssim or 0.0) - FAST_SSIM_TOLERANCE


def _fine_cfgs(chosen: float) -> list[float]:
    """CFG around the chosen value, re-measured at the chosen steps."""
    return sorted(c for c in (chosen + d for d in (-1.0, -0.5, 0.0, 0.5, 1.0)) if c >= 1.0)


def calibrate(source: ModelSource, facts: Recipe, config: WorkerConfig, run_dir: Path, prompts: list[str],
              budget: Budget = Budget(), progress: Callable[[int, int], None] | None = None) -> Calibration:
    """Run the five stages and build the proposed recipe (facts from ``facts``, every choice measured)."""
    run = _Run(source, config, facts, budget, run_dir, prompts, progress)
    b = budget
    start = {"sampler": b.start_sampler, "schedule": b.start_schedule, "steps": b.start_steps}
    cfg1, pass1, s_cfg = _cfg_stage(run, "cfg", list(b.cfgs), start)
    run.reference(cfg1)
    samplers = list(b.samplers or knob_values("sampler"))
    start.pop("sampler")
    sampler, ok_samplers, bad_samplers, s_sam = _choice_stage(run, "sampler", samplers, {**start, "cfg": cfg1})
    schedules = list(b.schedules or knob_values("schedule"))
    base = {"sampler": sampler, "steps": b.start_steps, "cfg": cfg1}  # the schedule is the stage's field
    schedule, ok_schedules, bad_schedules, s_sch = _choice_stage(run, "schedule", schedules, base)
    steps, s_steps = _steps_stage(run, {"sampler": sampler, "schedule": schedule, "cfg": cfg1})
    fine = _fine_cfgs(cfg1)
    cfg, pass2, s_fine = _cfg_stage(run, "cfg_fine", fine, {"sampler": sampler, "schedule": schedule,
                                                             "steps": steps["default"]})
    passing = (pass1 | pass2) | {cfg}
    lo, hi = _contiguous(sorted(set(b.cfgs) | set(fine)), passing, cfg)
    scores = {"cfg": s_cfg, "sampler": s_sam, "schedule": s_sch, "steps": s_steps, "cfg_fine": s_fine}
    choice = {"sampler": sampler, "schedule": schedule, "steps": steps, "cfg": {"default": cfg, "min": lo, "max": hi},
              "allow_samplers": ok_samplers, "allow_schedules": ok_schedules,
              "forbid": {**bad_samplers, **bad_schedules}, "forbid_samplers": sorted(bad_samplers),
              "forbid_schedules": sorted(bad_schedules)}
    if facts.model_id is None or facts.model_id.endswith("(no recipe)"):  # the stand-in's name is not an id
        facts = facts.model_copy(update={"model_id": source.identity.name})
    recipe = build_recipe(facts, choice, scores, budget, len(prompts))
    problems = uncovered_failures(scores, recipe)
    if problems:  # the rules above make this impossible; say so loudly if a change ever breaks them
        raise RuntimeError("calibration produced a recipe that admits failing settings: " + "; ".join(problems))
    return Calibration(recipe, scores, run_dir)


def build_recipe(facts: Recipe, c: dict[str, Any], scores: dict, budget: Budget, n_prompts: int) -> Recipe:
    """The proposed recipe: the facts, the measured choices, presets inside the ranges, the calibration block."""
    from iga import __version__
    from iga.recipe import RECIPE_VERSION, parse_recipe_dict

    keep = ("model_id", "architecture", "prediction_type", "training_schedule", "vae", "clip_skip", "resolution")
    data = {k: v for k, v in facts.to_dict().items() if k in keep}
    st, cfg = c["steps"], c["cfg"]
    figures = {"steps": {str(k): asdict(v) for k, v in scores["steps"].items()},
               "chosen": {"sampler": asdict(scores["sampler"][f"sampler={c['sampler']}"]),
                          "schedule": asdict(scores["schedule"][f"schedule={c['schedule']}"])}}
    data.update(
        iga_version=RECIPE_VERSION, sampler={"name": c["sampler"]},
        scheduler={"name": c["schedule"], "canonical_steps": st["default"]},
        cfg=cfg, steps={"default": st["default"], "min": st["min"], "max": st["max"]},
        constraints={"forbid_samplers": c["forbid_samplers"], "forbid_schedules": c["forbid_schedules"],
                     "allow_samplers": sorted(set(c["allow_samplers"]) | {c["sampler"]}),
                     "allow_schedules": sorted(set(c["allow_schedules"]) | {c["schedule"]})},
        presets=[{"name": "Quality", "steps": st["quality"], "cfg": cfg["default"],
                  "description": "calibrated: the best-scoring step count"},
                 {"name": "Fast", "steps": st["fast"], "cfg": cfg["default"],
                  "description": "calibrated: the fewest steps within the Fast tolerance of Quality"}],
        calibration={"date": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                     "iga_version": __version__, "budget": {**asdict(budget), "prompts": n_prompts},
                     "thresholds": thresholds(), "figures": figures, "evidence": c["forbid"]},
    )
    recipe, _ = parse_recipe_dict(data, source="calibrated recipe")
    return recipe


def uncovered_failures(scores: dict[str, dict[str, Score]], recipe: Recipe) -> list[str]:
    """Settings that failed more often than FORBID_FAILURE_RATE yet the recipe still admits (should be none):
    samplers and schedules must be forbidden or left out of the allow lists, CFG and steps outside the ranges."""
    admits = {
        "sampler": lambda v: v not in recipe.constraints.forbid_samplers and v in (recipe.constraints.allow_samplers
                                                                                 or [v]),
        "schedule": lambda v: v not in recipe.constraints.forbid_schedules and v in (
            recipe.constraints.allow_schedules or [v]),
        "steps": lambda v: recipe.steps.min <= int(v) <= recipe.steps.max,
        "cfg": lambda v: recipe.cfg.min <= float(v) <= recipe.cfg.max,
    }
    out = []
    for stage, by_label in scores.items():
        field_ = "cfg" if stage.startswith("cfg") else stage
        for label, sc in by_label.items():
            if sc.failure_rate is not None and sc.failure_rate > FORBID_FAILURE_RATE and admits[field_](
                    _value(label)):
                out.append(f"{stage}: {label} fails {sc.failure_rate:.0%} but the recipe admits it")
    return out


def thresholds() -> dict[str, float]:
    """The rules that turned figures into the compatibility set."""
    return {"forbid_failure_rate": FORBID_FAILURE_RATE, "allow_failure_rate": ALLOW_FAILURE_RATE,
            "adherence_tolerance": ADHERENCE_TOLERANCE, "frechet_factor": FRECHET_FACTOR, "ssim_tolerance": SSIM_TOLERANCE,
            "fast_adherence_tolerance": FAST_ADHERENCE_TOLERANCE, "fast_ssim_tolerance": FAST_SSIM_TOLERANCE,
            "default_ssim_tolerance": DEFAULT_SSIM_TOLERANCE, "reference_factor": REFERENCE_FACTOR}


def recipe_diff(old: Recipe | None, new: Recipe) -> list[str]:
    """Human-readable differences in the choices (facts are copied, so they never differ)."""
    def flat(r: Recipe | None) -> dict[str, Any]:
        if r is None:
            return {}
        d = r.to_dict()
        return {"sampler": d["sampler"]["name"], "schedule": d["scheduler"]["name"],
                "steps": f"{d['steps']['default']} in {d['steps']['min']}..{d['steps']['max']}",
                "cfg": f"{d['cfg']['default']:g} in {d['cfg']['min']:g}..{d['cfg']['max']:g}",
                "forbid_samplers": ", ".join(d["constraints"].get("forbid_samplers", [])) or "-",
                "forbid_schedules": ", ".join(d["constraints"].get("forbid_schedules", [])) or "-",
                "allow_samplers": ", ".join(d["constraints"].get("allow_samplers") or ["(any not forbidden)"]),
                "allow_schedules": ", ".join(d["constraints"].get("allow_schedules") or ["(any not forbidden)"]),
                "presets": "; ".join(f"{p['name']}: {p.get('steps')} steps cfg {p.get('cfg')}"
                                     for p in d.get("presets", [])) or "-"}
    a, b = flat(old), flat(new)
    return [f"{k}: {a.get(k, '(none)')} -> {b[k]}" if a.get(k) != b[k] else f"{k}: {b[k]} (same)" for k in b]
