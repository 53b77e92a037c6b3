"""The cross-recipe matrix: every model rendered under every model's recipe, on the one sweep runner.

A *recipe* here is what a user copies from one model's page to another's: its default sampler, schedule, steps
and CFG. The model's own facts (prediction type, training schedule, VAE, size) stay the model's -- they are what
the file is, not a choice -- so a cell answers "what happens when model M is run with the settings made for
model R?". Every cell goes through the guard in permissive mode (soft deviations run and are recorded; what M's
recipe forbids outright stays refused, and the cell says so). Per (prompt, seed) the reference is M's own
recipe at 4x its steps, so the SSIM column is each cell's distance from M's best rendering of that prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from iga.guard import Request
from iga.guard.source import ModelSource
from iga.recipe.schema import Recipe

from .runner import Point

MATRIX_SCHEMA = "iga.recipe-matrix/1"
SAMPLES = 4  # images per cell in the grid


def recipe_setting(recipe: Recipe) -> dict[str, Any]:
    """The choices a recipe makes by default (what the matrix carries from one model to another)."""
    return {"sampler": recipe.sampler.name, "schedule": recipe.scheduler.name, "steps": recipe.steps.default,
            "cfg": recipe.cfg.default}


def model_label(source: ModelSource) -> str:
    """A model's name in the matrix: its recipe's model_id, else its file name."""
    return (source.recipe.model_id if source.recipe and source.recipe.model_id else None) or source.identity.name


def matrix_points(own: Recipe, recipes: dict[str, Recipe], prompts: list[str], seeds: list[int],
                  spec: Any, *, guarded: bool = True) -> list[Point]:
    """Per (prompt, seed): the model's reference, then one point per recipe (in the given order). Unguarded, the
    cells are resolved against the model's facts alone (``knob_recipe``: no allow/forbid lists, knob-space
    ranges), which is what a UI without a guard runs; the reference stays on the model's own recipe."""
    from .axes import knob_recipe
    from .experiment import reference_point

    against = None if guarded else knob_recipe(own)
    points = []
    for prompt in prompts:
        for seed in seeds:
            points.append(reference_point(spec, own, prompt, seed))
            for order, (label, recipe) in enumerate(recipes.items()):
                req = Request(**recipe_setting(recipe), reason=f"cross-recipe matrix: {label}'s recipe")
                points.append(Point("point", prompt, seed, req, "permissive", axis="recipe", value=label,
                                    value_order=order, recipe=against))
    return points


@dataclass
class Matrix:
    """The figures per (model, recipe) cell and where the images are."""

    models: list[str]
    recipes: list[str]
    settings: dict[str, dict[str, Any]]
    cells: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # model -> recipe -> figures
    run_dirs: dict[str, str] = field(default_factory=dict)
    samples: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # model -> recipe -> first-seed images

    def to_dict(self) -> dict[str, Any]:
        return {"schema": MATRIX_SCHEMA, "models": self.models, "recipes": self.recipes, "settings": self.settings,
                "cells": self.cells, "run_dirs": self.run_dirs, "samples": self.samples}


def _cell(entry: dict[str, Any]) -> dict[str, Any]:
    metrics = entry.get("metrics", {})
    return {"n": entry.get("n"), "refused": entry.get("refused"), "failure_rate": entry.get("failure_rate"),
            "failures": entry.get("failures"), "nfe": entry.get("nfe"),
            "adherence_all": (metrics.get("adherence_all") or {}).get("mean"),
            "ssim": (metrics.get("ssim") or {}).get("mean"), "judge_frechet": entry.get("judge_frechet")}


def run_matrix(sources: list[ModelSource], prompts: str | list[str] | int, seeds: int | list[int], run_dir: Path, *,
               guarded: bool = True, progress: Callable[[str, int, int], None] | None = None) -> Matrix:
    """Render every source under every source's recipe; one run folder per model under ``run_dir`` (resumable).
    ``guarded=False``: without the model's own choices and constraints (see ``matrix_points``)."""
    from .experiment import summarise, worker_config, write_summary
    from .runner import run_points
    from .spec import ExperimentSpec, spec_prompts, spec_seeds

    missing = [s.path for s in sources if s.recipe is None]
    if missing:
        raise ValueError(f"every model in the matrix needs a recipe; none in {', '.join(missing)}")
    recipes = {model_label(s): s.recipe for s in sources}
    if len(recipes) != len(sources):
        raise ValueError("two models share a model_id; the matrix needs one recipe per model")
    out = Matrix(list(recipes), list(recipes), {k: recipe_setting(r) for k, r in recipes.items()})
    for source in sources:
        label = model_label(source)
        spec = ExperimentSpec(name=f"matrix-{label}" + ("" if guarded else "-unguarded"), model=source.path,
                              prompts=prompts, seeds=seeds, mode="permissive", repeat=False)
        texts = spec_prompts(spec, True)
        points = matrix_points(source.recipe, recipes, texts, spec_seeds(spec), spec, guarded=guarded)
        folder = run_dir / label
        config = worker_config(spec, source)
        rows = run_points(points, source, config, folder, action="matrix",
                          progress=None if progress is None else (lambda d, t, lb=label: progress(lb, d, t)))
        summary = summarise(spec, source, rows, folder, config)
        write_summary(folder, summary)
        out.cells[label] = {r: _cell(summary["per_value"].get(r, {})) for r in recipes}
        out.run_dirs[label] = str(folder)
        out.samples[label] = {r: _spread([str(folder / row["image"]) for row in rows if row["role"] == "point"
                                          and row["value"] == r and row["image"] and row["seed"] == rows[0]["seed"]])
                              for r in recipes}
    return out


def _spread(images: list[str]) -> list[str]:
    """SAMPLES images evenly spaced over the prompts (demo prompt groups list the shapes in runs)."""
    if len(images) <= SAMPLES:
        return images
    step = len(images) / SAMPLES
    return [images[int(i * step)] for i in range(SAMPLES)]


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


def _num(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown_table(m: Matrix) -> str:
    """One row per model, one column per recipe; each cell: adherence, failure rate, SSIM to the reference,
    judge Frechet distance (or how many the guard refused)."""
    head = "| model \\ recipe | " + " | ".join(f"{r} ({_setting_text(m.settings[r])})" for r in m.recipes) + " |"
    lines = [head, "|---" * (len(m.recipes) + 1) + "|"]
    for model in m.models:
        cells = []
        for r in m.recipes:
            c = m.cells[model][r]
            if not c.get("n"):
                cells.append(f"refused ({c.get('refused') or 0})")
                continue
            mark = "**" if r == model else ""
            cells.append(f"{mark}{_pct(c['adherence_all'])} · fail {_pct(c['failure_rate'])} · SSIM "
                         f"{_num(c['ssim'])} · FD {_num(c['judge_frechet'], 1)}{mark}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _setting_text(s: dict[str, Any]) -> str:
    return f"{s['sampler']} + {s['schedule']}, {s['steps']} steps, CFG {s['cfg']:g}"


def draw_matrix(m: Matrix, path: Path, scale: int = 2) -> Path:
    """The image grid: one row per model, one column per recipe, each cell its first SAMPLES images side by
    side; the diagonal (each model under its own recipe) framed. Written atomically."""
    import io

    from PIL import Image, ImageDraw

    from iga.checkpoint import write_bytes_atomic
    from iga.diagnostics.grid_image import label_font

    first = next(p for per in m.samples.values() for ps in per.values() for p in ps)
    with Image.open(first) as im:
        w, h = im.size[0] * scale, im.size[1] * scale
    pad, left, top = 8, 150, 40
    cell_w = SAMPLES * w + (SAMPLES - 1) * 2
    canvas = Image.new("RGB", (left + len(m.recipes) * (cell_w + pad) + pad, top + len(m.models) * (h + pad) + pad),
                       "white")
    draw, font = ImageDraw.Draw(canvas), label_font()
    for j, r in enumerate(m.recipes):
        draw.text((left + j * (cell_w + pad), 4), f"recipe of {r}", font=font, fill="black")
        draw.text((left + j * (cell_w + pad), 20), _setting_text(m.settings[r]), font=label_font(10), fill="gray")
    for i, model in enumerate(m.models):
        y = top + i * (h + pad)
        draw.text((pad, y + h // 2 - 7), model, font=font, fill="black")
        for j, r in enumerate(m.recipes):
            x = left + j * (cell_w + pad)
            for k, img in enumerate(m.samples[model][r]):
                with Image.open(img) as im:
                    canvas.paste(im.convert("RGB").resize((w, h), Image.NEAREST), (x + k * (w + 2), y))
            if not m.samples[model][r]:
                draw.text((x, y + h // 2 - 7), "refused by the guard", font=font, fill=(170, 30, 30))
            if r == model:
                draw.rectangle((x - 3, y - 3, x + cell_w + 2, y + h + 2), outline=(30, 110, 200), width=2)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
    return path
