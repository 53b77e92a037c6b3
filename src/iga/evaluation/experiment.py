"""An experiment end to end: spec -> points -> the sweep runner -> summary.json and the report.

    from iga.evaluation import load_spec, run_experiment
    result = run_experiment(load_spec("examples/eval/samplers.yaml"), Path("runs/samplers"))
    result.summary["variance"]["ssim"]
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from iga.demo.model import draws_shapes
from iga.guard import Request
from iga.provenance.jsonutil import dumps_strict
from iga.guard.defaults import architecture_default_recipe
from iga.guard.source import ModelSource, describe_model
from iga.recipe.schema import Recipe

from . import stats
from .axes import SpecError, knob_values, parse_values, recipe_values
from .runner import Backend, Point, run_points, threads_per_worker
from .spec import ExperimentSpec, spec_prompts, spec_seeds
from .table import METRIC_COLUMNS, atomic_write
from .worker import WorkerConfig


@dataclass
class RunResult:
    """What a finished (or resumed) run produced."""

    run_dir: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


def open_model(spec: ExperimentSpec) -> ModelSource:
    """The spec's model (default: the bundled demo model), described for the guard."""
    from iga.paths import default_model_path

    return describe_model(spec.model or default_model_path())


def effective_recipe(source: ModelSource) -> Recipe:
    """The model's recipe, or the architecture stand-in the guard resolves against when it has none."""
    return source.recipe or architecture_default_recipe(source.identity.architecture, source.detected_prediction,
                                                       source.declared_schedule, source.identity.variant)


def axis_values(axis: str, values: Any, recipe: Recipe) -> list[Any]:
    """An axis's values with `recipe` and `knobs` expanded."""
    parsed = parse_values(axis, values)
    if parsed == "recipe":
        return recipe_values(axis, recipe)
    if parsed == "knobs":
        return knob_values(axis)
    return list(parsed)  # type: ignore[arg-type]


def _label(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


def base_request(spec: ExperimentSpec, extra: dict[str, Any], reason: str) -> Request:
    """The request every point shares, with one point's axis values and the overrides it needs."""
    fields = {**spec.base, **extra}
    overrides = list(dict.fromkeys([*spec.overrides, *extra]))
    return Request(**fields, overrides=overrides if spec.mode == "guarded" else [], reason=reason)


def reference_point(spec: ExperimentSpec, recipe: Recipe, prompt: str, seed: int) -> Point:
    """The reference of a (prompt, seed): the recipe's sampler and schedule at reference_factor x canonical steps,
    other settings as the base. Permissive: it may leave the steps range, and says so in its plan."""
    steps = spec.reference_factor * (recipe.scheduler.canonical_steps or recipe.steps.default)
    fields = {k: v for k, v in spec.base.items() if k not in ("sampler", "schedule", "steps", "preset")}
    if spec.base.get("preset"):
        preset = recipe.preset(spec.base["preset"])
        fields.setdefault("cfg", preset.cfg)
    req = Request(**{k: v for k, v in fields.items() if v is not None}, sampler=recipe.sampler.name,
                  schedule=recipe.scheduler.name, steps=steps,
                  reason=f"evaluation reference: the recipe's sampler and schedule at {spec.reference_factor}x "
                         "the canonical steps")
    return Point("reference", prompt, seed, req, "permissive")


def sweep_points(spec: ExperimentSpec, recipe: Recipe, prompts: list[str], seeds: list[int]) -> list[Point]:
    """Reference, then one point per axis value (two axes: their product), then a repeat, per (prompt, seed)."""
    axes = list(spec.vary.items())
    if not axes:  # score one setting: the base
        combos = [({}, "base", "", 0)]
    else:
        vals = [axis_values(a, v, recipe) for a, v in axes]
        combos = []
        for i, c in enumerate(itertools.product(*vals)):
            extra = {a: v for (a, _), v in zip(axes, c)}
            combos.append((extra, _label(c[0]), _label(c[1]) if len(c) > 1 else "", i))
    axis = "+".join(a for a, _ in axes) or "none"
    reason = f"iga eval {spec.name}: varies {axis}"
    points = []
    for prompt, seed in itertools.product(prompts, seeds):
        if spec.reference:
            points.append(reference_point(spec, recipe, prompt, seed))
        for extra, value, grid_value, order in combos:
            points.append(Point("point", prompt, seed, base_request(spec, extra, reason), spec.mode, axis=axis,
                                value=value, value_order=order, grid_value=grid_value))
        if spec.repeat:
            first = points[-len(combos)]
            points.append(Point("repeat", prompt, seed, first.request, spec.mode, axis=axis, value=first.value,
                                value_order=first.value_order, grid_value=first.grid_value))
    return points


def worker_config(spec: ExperimentSpec, source: ModelSource) -> WorkerConfig:
    """What each worker loads: the model, the demo judge when the model is the demo, learned metrics."""
    from iga.paths import DEMO_JUDGE

    judge = spec.judge
    if judge == "auto":
        judge = str(DEMO_JUDGE) if draws_shapes(source) else None
    elif judge == "none":
        judge = None
    elif judge is not None and not Path(judge).is_file():
        raise SpecError(f"judge {judge} does not exist (use auto, none or a judge .safetensors file)")
    threads = spec.threads or threads_per_worker(spec.workers)
    return WorkerConfig(source.path, judge, spec.clip_model, spec.lpips_weights, threads)


def summarise(spec: ExperimentSpec, source: ModelSource, rows: list[dict], run_dir: Path,
              config: WorkerConfig) -> dict[str, Any]:
    """summary.json: per-value figures, variance across the axis, repeatability, set-level metrics."""
    from .failures import describe

    names = stats.present_metrics(rows, METRIC_COLUMNS)
    points = [r for r in rows if r["role"] == "point"]
    values = list(dict.fromkeys(r["value"] for r in sorted(points, key=lambda r: r["value_order"])))
    ref = next((r for r in rows if r["role"] == "reference" and not r["refused"]), None)
    summary = {
        "schema": "iga.eval-summary/1", "name": spec.name, "kind": spec.kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "model": {"name": source.identity.name, "path": source.path, "weights_sha256": source.identity.weights_sha256,
                  "recipe_source": source.identity.recipe_source},
        "axis": " / ".join(dict.fromkeys(r["axis"] for r in points)) or "none", "values": values,
        "numeric_axis": bool(points) and points[0]["axis"] in ("steps", "cfg", "clip_skip"),
        "metrics": names, "n_rows": len(rows), "n_images": sum(1 for r in rows if r["image"]),
        "per_value": stats.per_value(rows, names), "variance": stats.axis_variance(rows, names),
        "repeatability": stats.repeatability(rows, names), "failure_rules": describe(),
        "reference": {k: ref[k] for k in ("sampler", "schedule", "steps", "cfg")} if ref else None,
        "seconds": sum(r["seconds"] or 0.0 for r in rows), "threads": config.threads,
        "notes": [],
    }
    _set_metrics(summary, spec, rows, run_dir, config)
    return summary


def _set_metrics(summary: dict, spec: ExperimentSpec, rows: list[dict], run_dir: Path, config: WorkerConfig) -> None:
    """Metrics of a set of images per value: the demo judge's Frechet distance, and FID with local weights."""
    import numpy as np

    from .runner import load_pixels

    judge = None
    if config.judge_path:
        from iga.demo.judge import load_judge

        judge = load_judge(config.judge_path)  # once, not per value
    refs: dict[tuple, Any] = {}
    if spec.fid_weights:  # each reference is read once, whichever values share it
        refs = {(r["prompt"], r["seed"]): load_pixels(run_dir, r["image"]) for r in rows
                if r["role"] == "reference" and r["image"]}
    for value, entry in summary["per_value"].items():
        rs = [r for r in rows if r["role"] == "point" and r["image"] and stats.value_label(r) == value]
        imgs = [p for p in (load_pixels(run_dir, r["image"]) for r in rs) if p is not None]
        if len(imgs) < 2:
            continue
        if judge is not None:
            from .judge import judge_frechet

            entry["judge_frechet"] = judge_frechet(judge, np.stack(imgs), [r["prompt"] for r in rs])
        if spec.fid_weights:
            from .learned import fid

            ref_imgs = [p for p in (refs.get((r["prompt"], r["seed"])) for r in rs) if p is not None]
            if len(ref_imgs) >= 2:
                entry["fid_vs_reference"] = fid(np.stack(imgs), np.stack(ref_imgs), spec.fid_weights)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """summary.json, atomically (NaN written as null: strict JSON readers accept it)."""
    path = run_dir / "summary.json"
    atomic_write(path, dumps_strict(summary, indent=1).encode())
    return path


def check_run_dir(run_dir: Path, spec: ExperimentSpec) -> None:
    """Refuse to mix two different experiments in one folder; record the spec of a new run."""
    path = run_dir / "spec.json"
    mine = spec.model_dump(mode="json", exclude={"workers", "backend", "ray_address"})
    if path.exists():
        try:
            theirs = json.loads(path.read_text())
        except (OSError, ValueError):
            theirs = None
        if isinstance(theirs, dict):
            theirs = {k: v for k, v in theirs.items() if k not in ("workers", "backend", "ray_address")}
        if theirs != mine:
            raise SpecError(f"{run_dir} holds another experiment (its spec.json differs); choose another --out, or "
                            "delete the folder to start over")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(mine, indent=1).encode())


def run_experiment(spec: ExperimentSpec, run_dir: Path, *, progress: Callable[[int, int], None] | None = None,
                   report: bool = True) -> RunResult:
    """Run (or resume) an experiment and write its tables, summary and report into run_dir."""
    source = open_model(spec)
    recipe = effective_recipe(source)
    if spec.kind == "headline":
        from .headline import headline_points, headline_summary

        points = headline_points(spec, recipe, spec_prompts(spec, draws_shapes(source)), spec_seeds(spec))
    else:
        points = sweep_points(spec, recipe, spec_prompts(spec, draws_shapes(source)), spec_seeds(spec))
    config = worker_config(spec, source)
    check_run_dir(run_dir, spec)
    rows = run_points(points, source, config, run_dir, progress=progress,
                      backend=Backend(spec.backend, spec.workers, spec.ray_address))
    summary = summarise(spec, source, rows, run_dir, config)
    if spec.kind == "headline":
        summary["headline"] = headline_summary(rows, summary["metrics"], spec)
    write_summary(run_dir, summary)
    if report:
        from .report import write_report

        write_report(run_dir, rows, summary)
    return RunResult(run_dir, rows, summary)

