"""X/Y/Z grids: every combination of up to three axes, each cell through the guard, on the one sweep runner.

    from iga.diagnostics.grid import GridSpec, parse_axis, run_grid
    spec = GridSpec("a red circle on a blue background", x=parse_axis("cfg=2,3,5,7"),
                    y=parse_axis("sampler=euler,dpmpp_2m"), seed=1)
    result = run_grid(spec, Path("outputs/grids/cfg-sampler"))
    result.grids            # one labelled PNG per Z value; each carries its cells' plans (text chunk iga_grid)

A cell the guard refuses is a cell with the guard's reason, not an error: a grid is how users see where a
recipe's limits are. In guarded mode the varied axes are explicit overrides (recorded in each plan and the audit
log); what the recipe forbids outright stays refused.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from iga.evaluation.axes import GRID_AXES, SpecError, knob_values, parse_values, recipe_values
from iga.evaluation.runner import Backend, Point, run_points, threads_per_worker
from iga.evaluation.worker import WorkerConfig
from iga.guard import Request
from iga.guard.plan import OVERRIDABLE, Mode
from iga.guard.source import ModelSource

GRID_SCHEMA = "iga.grid/1"
MAX_CELLS = 1000  # a grid past this is a sweep: use `iga eval`


@dataclass(frozen=True)
class GridAxis:
    """One axis of a grid: its name and values, as written (`recipe`/`knobs` expanded when the grid runs)."""

    name: str
    values: tuple[Any, ...] | str

    def labels(self) -> list[str]:
        """The cell labels along this axis."""
        return [_label(v) for v in self.values]


def _label(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


def parse_axis(text: str) -> GridAxis:
    """'cfg=2,3,5,7', 'steps=10-40:10', 'prompt=red,green' -> a GridAxis (SpecError says what is wrong)."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep:
        raise SpecError(f"axis {text!r}: write AXIS=VALUES, e.g. cfg=2,3,5 or steps=10-40:10 (axes: "
                        f"{', '.join(GRID_AXES)})")
    parsed = parse_values(name, values, GRID_AXES)
    return GridAxis(name, parsed if isinstance(parsed, str) else tuple(parsed))


@dataclass
class GridSpec:
    """What a grid draws: a prompt, the base request, X and optional Y and Z axes."""

    prompt: str
    x: GridAxis
    y: GridAxis | None = None
    z: GridAxis | None = None
    base: Request = field(default_factory=Request)
    mode: Mode = "guarded"
    seed: int | None = None  # the seed of every cell (unless seed is an axis); None: one random seed

    def axes(self) -> list[GridAxis]:
        """The given axes in X, Y, Z order."""
        return [a for a in (self.x, self.y, self.z) if a is not None]


@dataclass
class Cell:
    """One cell of a grid: its position and the row the runner wrote for it."""

    x: int
    y: int
    z: int
    row: dict[str, Any]

    @property
    def refused(self) -> str:
        """The guard's reason, when it refused the cell."""
        return self.row.get("refused") or ""


@dataclass
class GridResult:
    """A finished grid: its folder, the labelled grid images (one per Z value) and every cell."""

    run_dir: Path
    axes: list[GridAxis]
    cells: list[Cell]
    grids: list[Path]
    seed: int


def expand(spec: GridSpec, source: ModelSource) -> list[GridAxis]:
    """The spec's axes with `recipe` / `knobs` expanded against the model's recipe; checks the whole grid."""
    from iga.evaluation.experiment import effective_recipe

    names = [a.name for a in spec.axes()]
    if len(set(names)) != len(names):
        raise SpecError(f"an axis is given twice ({', '.join(names)}): each axis may appear once")
    out = []
    for a in spec.axes():
        if a.values == "recipe":
            out.append(GridAxis(a.name, tuple(recipe_values(a.name, effective_recipe(source)))))
        elif a.values == "knobs":
            out.append(GridAxis(a.name, tuple(knob_values(a.name))))
        else:
            out.append(a)
    prompt_axis = next((a for a in out if a.name == "prompt"), None)
    if prompt_axis is not None and str(prompt_axis.values[0]) not in spec.prompt:
        raise SpecError(f"prompt axis: {prompt_axis.values[0]!r} (its first value, the text each value replaces) "
                        f"does not occur in the prompt {spec.prompt!r}")
    cells = 1
    for a in out:
        cells *= len(a.values)
    if cells > MAX_CELLS:
        raise SpecError(f"the grid has {cells} cells; at most {MAX_CELLS} (use `iga eval` for larger sweeps)")
    return out


def grid_points(spec: GridSpec, axes: list[GridAxis], seed: int) -> list[Point]:
    """One point per cell, Z slowest and X fastest; each cell's value is its position "x,y,z"."""
    reason = spec.base.reason or "iga grid: varies " + ", ".join(a.name for a in axes)
    search = next((str(a.values[0]) for a in axes if a.name == "prompt"), "")
    ranges = [range(len(a.values)) for a in axes] + [range(1)] * (3 - len(axes))
    points = []
    for order, (k, j, i) in enumerate(itertools.product(*reversed(ranges))):
        where = (i, j, k)
        chosen = {a.name: a.values[n] for a, n in zip(axes, where)}
        prompt = spec.prompt.replace(search, str(chosen.pop("prompt"))) if "prompt" in chosen else spec.prompt
        cell_seed = int(chosen.pop("seed", seed))
        fields = {**spec.base.model_dump(exclude_defaults=True, exclude={"overrides", "reason"}), **chosen}
        overrides = list(spec.base.overrides)
        if spec.mode == "guarded":
            overrides += [n for n in chosen if n in OVERRIDABLE and n not in overrides]
        request = Request(**fields, overrides=overrides, reason=reason)
        points.append(Point("point", prompt, cell_seed, request, spec.mode, axis="grid",
                            value=",".join(map(str, where)), value_order=order))
    return points


def run_grid(spec: GridSpec, run_dir: Path, *, source: ModelSource | None = None,
             progress: Callable[[int, int], None] | None = None, workers: int = 1, model: Any = None) -> GridResult:
    """Render every cell on the sweep runner (resuming from run_dir), then draw one grid image per Z value.

    ``model``: an already loaded ``iga.generate.Model`` of the source to render on (in-process).
    """
    from iga.guard.source import describe_model
    from iga.paths import default_model_path

    from .grid_image import write_grids

    source = source or describe_model(default_model_path())
    axes = expand(spec, source)
    seed = spec.seed if spec.seed is not None else (spec.base.seed if spec.base.seed is not None
                                                    else random.randrange(2**32))
    points = grid_points(spec, axes, seed)
    config = WorkerConfig(source.path, threads=threads_per_worker(workers))
    try:
        rows = run_points(points, source, config, run_dir, backend=Backend("local", workers, model=model),
                          action="grid",
                          progress=progress)
    except KeyboardInterrupt:  # draw what is finished, so the user sees the partial grid, then stop
        write_grids(run_dir, spec, axes, _cells(points, _journal_rows(points, source, run_dir)), seed)
        raise
    cells = _cells(points, rows)
    grids = write_grids(run_dir, spec, axes, cells, seed)
    return GridResult(run_dir, axes, cells, grids, seed)


def _cells(points: list[Point], rows: list[dict[str, Any]]) -> list[Cell]:
    by_value = {r["value"]: r for r in rows}
    cells = []
    for p in points:
        row = by_value.get(p.value)
        if row is not None:
            i, j, k = (int(n) for n in p.value.split(","))
            cells.append(Cell(i, j, k, row))
    return cells


def _journal_rows(points: list[Point], source: ModelSource, run_dir: Path) -> list[dict[str, Any]]:
    """The journal's rows of exactly these points (a folder may hold cells of other grids)."""
    from iga.evaluation.runner import resolve_point
    from iga.evaluation.table import Journal

    journal = Journal(run_dir / "rows.jsonl").rows
    keys = [resolve_point(p, source).key for p in points]
    return [journal[k] for k in keys if k in journal]


def grid_record(spec: GridSpec, axes: list[GridAxis], cells: list[Cell], seed: int, z: int | None,
                plans: dict[str, Any]) -> dict[str, Any]:
    """What a grid image carries: its axes and each cell's position, image, plan (or the guard's reason)."""
    return {
        "schema": GRID_SCHEMA, "prompt": spec.prompt, "seed": seed, "mode": spec.mode,
        "axes": {pos: {"name": a.name, "values": a.labels()} for pos, a in zip("xyz", axes)},
        "z": z,
        "cells": [{"x": c.x, "y": c.y, "z": c.z, "image": c.row.get("image") or None,
                   "refused": c.refused or None, "failures": c.row.get("failures") or None,
                   "error": c.row.get("error") or None, "plan": plans.get(c.row.get("image") or "")}
                  for c in cells if z is None or c.z == z],
    }


def read_cell_plans(run_dir: Path, cells: list[Cell]) -> dict[str, Any]:
    """Each rendered cell's plan, read back from its image's provenance (so resumed cells have theirs too)."""
    from iga.provenance import read_provenance

    plans = {}
    for c in cells:
        rel = c.row.get("image")
        if rel and (run_dir / rel).exists():
            plans[rel] = read_provenance(run_dir / rel).plan
    return plans


def dumps(record: dict[str, Any]) -> str:
    """A grid record as compact JSON (NaN-free: plans and rows hold none that matter)."""
    return json.dumps(record, separators=(",", ":"), default=str)
