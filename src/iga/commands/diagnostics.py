"""`iga grid` (X/Y/Z plots on the sweep runner) and `iga doctor` (the troubleshooting routine as a command)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from iga.provenance.jsonutil import dumps_strict

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
    from iga.guard import AuditLogError
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
    except (SpecError, UnknownNameError, ValueError, AuditLogError) as e:
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
        typer.echo(dumps_strict({"schema": "iga.grid-result/1", "run_dir": str(result.run_dir),
                               "grids": [str(p) for p in result.grids], "seed": result.seed,
                               "cells": len(result.cells), "rendered": rendered, "refused": refused,
                               "flagged": flagged}, indent=2))
        return
    for p in result.grids:
        typer.echo(str(p))
    typer.echo(f"{len(result.cells)} cells: {rendered} rendered, {refused} refused by the guard, {flagged} flagged "
               f"by a failure detector; seed {result.seed}; cells with provenance in {result.run_dir}/images",
               err=True)


def doctor_cmd(
    image: Annotated[Optional[Path], typer.Argument(help="an image with provenance (iga, A1111, ComfyUI, "
                                                    "InvokeAI)")] = None,
    plan: Annotated[Optional[Path], typer.Option("--plan", help="a plan JSON file instead of an image (`iga plan "
                                                 "--json`, a grid.json cell)")] = None,
    model: ModelOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="report folder (default "
                                                "outputs/doctor/TIME-NAME)")] = None,
    sweeps: Annotated[bool, typer.Option("--sweeps/--no-sweeps", help="CFG, steps and sampler grids around your "
                                         "setting (the slowest part)")] = True,
    half: Annotated[Optional[bool], typer.Option("--half/--no-half", help="compare half precision with float32 "
                                                 "(default: when the image was made in half precision)")] = None,
    trust_path: Annotated[bool, typer.Option("--trust-path", help="open the model path the image or plan records "
                                             "(it comes from the file: only for files you trust)")] = False,
    self_test: Annotated[bool, typer.Option("--self-test", help="diagnose deliberately broken setups and print "
                                            "whether each injected cause is named first")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find out why an image went wrong: re-run it, put each setting back to the recipe's one at a time, probe.

    The routine: your settings re-run (as a UI without a guard runs them) next to the recipe's own settings for
    the same prompt and seed; then every setting where you left the recipe is put back alone, and a setting
    whose return removes the symptom is a likely cause, ranked by how much it helps (failure detectors, SSIM to
    the recipe's image, and the judge's prompt adherence on the demo model). Instruments: x0 previews, the first
    component and step that goes NaN/Inf, the prediction-type probe (eps against v), the VAE round trip, half
    against full precision. It ends with a table: symptom -> likely cause -> evidence (the measured figures) ->
    fix (a command), in the terminal and in DIR/report.html with the images and sweeps.

    Exit codes: 0 nothing wrong found, 1 a problem found (see the table), 2 bad input, 130 interrupted.
    `--self-test` exits 0 when the doctor names the injected cause first in all setups but at most one.

    Examples:
      iga doctor outputs/20261129-...-cfg15.png
      iga doctor a1111-image.png --model sd15.safetensors
      iga doctor --plan plan.json --no-sweeps
    """
    from iga.diagnostics.case import CaseError, case_from_image, case_from_plan
    from iga.guard import AuditLogError
    from iga.recipe.names import UnknownNameError

    if self_test:
        _self_test(out, as_json)
        return
    if (image is None) == (plan is None):
        raise _fail("give an image or --plan FILE (one of them)")
    try:
        case = case_from_image(image, model, trust_path=trust_path) if image is not None \
            else case_from_plan(plan, model, trust_path=trust_path)  # type: ignore[arg-type]
        name = Path(case.where).stem[:40]
        run_dir = out or Path("outputs") / "doctor" / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{name}"
        from iga.diagnostics.doctor import run_doctor

        diag = with_progress(lambda p: run_doctor(case, run_dir, sweeps=sweeps, half=half, progress=p), as_json,
                             "examining")
    except (CaseError, UnknownNameError, ValueError, AuditLogError) as e:
        raise _fail(str(e.args[0]) if e.args else str(e)) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing diagnosed (the renders made so far are kept)", err=True)
        raise typer.Exit(130) from None
    _print_diagnosis(diag, as_json)
    raise typer.Exit(1 if diag.found else 0)


def _self_test(out: Path | None, as_json: bool) -> None:
    from iga.diagnostics.selftest import markdown, run_matrix

    work = out or Path("outputs") / "doctor" / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-self-test"
    try:
        rows = with_progress(lambda p: run_matrix(work, p), as_json, "self-test")
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    typer.echo(dumps_strict({"schema": "iga.doctor-self-test/1", "rows": rows}, indent=2) if as_json
               else markdown(rows))
    raise typer.Exit(0 if sum(not r["right"] for r in rows) <= 1 else 1)


def _print_diagnosis(diag, as_json: bool) -> None:
    if as_json:
        typer.echo((diag.run_dir / "diagnosis.json").read_text())
        return
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    if diag.symptom:
        console.print(f"[bold red]symptom[/]: {diag.symptom}", highlight=False)
    if diag.causes:
        t = Table(title="likely causes, most likely first", show_lines=True)
        for col in ("#", "likely cause", "evidence", "fix"):
            t.add_column(col, overflow="fold")
        for n, c in enumerate(diag.causes, 1):
            t.add_row(str(n), c.cause, c.evidence, c.fix)
        console.print(t)
    else:
        console.print("[green]nothing wrong found[/]" if not diag.symptom else "no cause found among the settings "
                      "and probes (see the checks in the report)", highlight=False)
    for c in diag.checks:
        console.print(f"  [dim]{c.name}:[/] {c.result}", highlight=False)
    typer.echo(f"{diag.run_dir}/report.html")


def register(app: typer.Typer) -> None:
    """Add `iga grid` and `iga doctor` to the CLI."""
    app.command("grid")(grid_cmd)
    app.command("doctor")(doctor_cmd)
