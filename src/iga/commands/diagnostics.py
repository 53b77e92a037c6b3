"""`iga grid` (X/Y/Z plots on the sweep runner) and `iga doctor` (the troubleshooting routine as a command)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from iga.commands.evaluation import with_progress
from iga.commands.guard import (
    CfgOpt, ClipSkipOpt, EtaOpt, JsonOpt, ModelOpt, ModeOpt, NegativeOpt, OverrideOpt, PresetOpt, ReasonOpt,
    SamplerOpt, ScheduleOpt, SeedOpt, SizeOpt, StepsOpt, VaeOpt, build_request,
)

AXES_HELP = "sampler, schedule, steps, cfg, seed, prompt (search and replace), vae, clip_skip, eta, cfg_rescale"
XOpt = Annotated[str, typer.Option("--x", "-x", help=f"the X axis as AXIS=VALUES: a list (cfg=2,3,5,7), a range "
                                   f"(steps=10-40:10), `recipe` or `knobs`. Axes: {AXES_HELP}")]
YOpt = Annotated[Optional[str], typer.Option("--y", "-y", help="the Y axis (rows), written like --x")]
ZOpt = Annotated[Optional[str], typer.Option("--z", "-z", help="the Z axis: one grid image per value")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="grid folder (default outputs/grids/TIME-AXES); "
                                                "rerunning the same command there resumes")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _source(model: Path | None):
    from iga.checkpoint import CheckpointError
    from iga.guard.source import describe_model
    from iga.paths import default_model_path
    from iga.recipe import RecipeError

    path = model or default_model_path()
    if not Path(path).exists():
        raise _fail(f"model {path} not found; pass --model PATH (a .safetensors file or a diffusers folder)")
    try:
        return describe_model(path)
    except (CheckpointError, RecipeError, OSError) as e:
        raise _fail(f"cannot open model {path}: {e}") from None


def grid_cmd(
    prompt: Annotated[str, typer.Argument(help="the prompt of every cell (a prompt axis replaces part of it)")],
    x: XOpt, y: YOpt = None, z: ZOpt = None,
    model: ModelOpt = None, preset: PresetOpt = None, sampler: SamplerOpt = None, schedule: ScheduleOpt = None,
    steps: StepsOpt = None, cfg: CfgOpt = None, seed: SeedOpt = None, size: SizeOpt = None, vae: VaeOpt = None,
    clip_skip: ClipSkipOpt = None, eta: EtaOpt = None, override: OverrideOpt = None, reason: ReasonOpt = None,
    mode: ModeOpt = "guarded", negative: NegativeOpt = "", out: OutOpt = None,
    workers: Annotated[int, typer.Option(help="worker processes (each loads the model once)")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """An X/Y/Z plot: every combination of up to three axes, one labelled grid image per Z value.

    Every cell goes through the guard. In guarded mode (default) the varied axes are explicit overrides, recorded
    in each cell's plan and the audit log; what the recipe forbids outright is shown as a grey cell with the
    guard's reason. Cells a failure detector flags (black, burnt, residual noise, ...) are marked under the image.
    Every cell is also saved with full provenance (DIR/images/), and each grid PNG carries its cells' plans (text
    chunk iga_grid; grid.json beside it). All cells share one seed (--seed, else one random seed) unless seed is
    an axis. Ctrl-C keeps the finished cells; rerun with the same --out to finish the grid.

    Exit codes: 0 done, 2 bad input, 130 interrupted.

    Examples:
      iga grid "a red circle on a blue background" --x cfg=2,3,5,7 --y sampler=euler,dpmpp_2m,heun,uni_pc
      iga grid "a red circle on a blue background" --x steps=5-20:5 --y schedule=karras,normal --z cfg=3,7
      iga grid "a red circle on a blue background" --x prompt=red,green,yellow --y seed=1-4
      iga grid "..." --model sd15.safetensors --x sampler=recipe --y cfg=recipe --seed 7
    """
    from iga.diagnostics.grid import GridSpec, parse_axis, run_grid
    from iga.evaluation.axes import SpecError
    from iga.recipe.names import UnknownNameError

    if mode not in ("strict", "guarded", "permissive"):
        raise _fail(f"--mode {mode!r}: choose strict, guarded or permissive")
    if z and not y:
        raise _fail("--z needs --y: axes fill X, then Y, then Z")
    try:
        axes = [parse_axis(a) for a in (x, y, z) if a]
        base = build_request(preset=preset, sampler=sampler, schedule=schedule, steps=steps, cfg=cfg, seed=seed,
                             size=size, vae=vae, clip_skip=clip_skip, eta=eta, negative=negative, override=override,
                             reason=reason)
        spec = GridSpec(prompt, *axes, base=base, mode=mode, seed=seed)  # type: ignore[arg-type]
        source = _source(model)
        run_dir = out or Path("outputs") / "grids" / _default_name(axes)
        result = with_progress(lambda p: run_grid(spec, run_dir, source=source, progress=p, workers=workers),
                               as_json, "grid")
    except (SpecError, UnknownNameError, ValueError) as e:
        raise _fail(str(e.args[0]) if e.args else str(e)) from None
    except KeyboardInterrupt:
        where = out or "the same --out"
        typer.echo(f"interrupted: finished cells are kept in {where}/images; rerun with --out {where} to finish "
                   "the grid", err=True)
        raise typer.Exit(130) from None
    _print_grid(result, as_json)


def _default_name(axes) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return "-".join([stamp, *(a.name for a in axes)])


def _print_grid(result, as_json: bool) -> None:
    rendered = sum(1 for c in result.cells if c.row.get("image"))
    refused = sum(1 for c in result.cells if c.refused)
    flagged = sum(1 for c in result.cells if c.row.get("failures"))
    if as_json:
        typer.echo(json.dumps({"schema": "iga.grid-result/1", "run_dir": str(result.run_dir),
                               "grids": [str(p) for p in result.grids], "seed": result.seed,
                               "cells": len(result.cells), "rendered": rendered, "refused": refused,
                               "flagged": flagged}, indent=2))
        return
    for p in result.grids:
        typer.echo(str(p))
    typer.echo(f"{len(result.cells)} cells: {rendered} rendered, {refused} refused by the guard, {flagged} flagged "
               f"by a failure detector; seed {result.seed}; cells with provenance in {result.run_dir}/images",
               err=True)


def register(app: typer.Typer) -> None:
    """Add `iga grid` to the CLI."""
    app.command("grid")(grid_cmd)
