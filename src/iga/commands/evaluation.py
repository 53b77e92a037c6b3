"""`iga eval`: the evaluation protocol (vary exactly one setting, measure, aggregate) and the headline experiment."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from iga.provenance.jsonutil import dumps_strict

from iga.commands.guard import JsonOpt, ModelOpt, model_named

SpecArg = Annotated[Optional[str], typer.Argument(help="an experiment spec (YAML/JSON), or `headline` for the "
                                                  "built-in headline experiment; omit to use the flags")]
VaryOpt = Annotated[Optional[list[str]], typer.Option("--vary", help="the axis to vary: sampler, schedule, steps, "
                                                      "cfg (the protocol), vae or clip_skip")]
ValuesOpt = Annotated[Optional[list[str]], typer.Option("--values", help="its values: a comma list "
                      "(euler,heun), a range (steps 10-40:10), `recipe` (what the recipe admits) or `knobs` "
                      "(what a UI offers); one --values per --vary")]
PromptsOpt = Annotated[Optional[str], typer.Option("--prompts", help="a count of demo prompts (10), "
                       "demo:{train,held_out,all}[:N], or a file with one prompt per line")]
PromptOpt = Annotated[Optional[list[str]], typer.Option("--prompt", help="a prompt (repeatable)")]
SeedsOpt = Annotated[Optional[str], typer.Option("--seeds", help="a count (4 -> 1000..1003) or a list (1,2,3)")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="run folder (default runs/NAME); rerunning "
                                                "the same command there resumes")]


def _spec_from_flags(model, vary, values, prompts, prompt, seeds, preset, mode, grid) -> dict[str, Any]:
    from iga.evaluation.axes import SpecError

    vary, values = list(vary or []), list(values or [])
    if len(vary) != len(values):
        raise SpecError(f"give one --values per --vary ({len(vary)} --vary, {len(values)} --values)")
    spec: dict[str, Any] = {"vary": dict(zip(vary, values)), "mode": mode, "grid": grid}
    if len(set(vary)) != len(vary):
        raise SpecError(f"--vary {vary[0]} is given twice")
    spec["name"] = "-".join(vary) or "base"
    if model:
        spec["model"] = str(model)
    if prompt:
        spec["prompts"] = list(prompt)
    elif prompts:
        spec["prompts"] = int(prompts) if prompts.isdigit() else prompts
    if seeds:
        spec["seeds"] = int(seeds) if seeds.isdigit() else [_int(s) for s in seeds.split(",") if s.strip()]
    if preset:
        spec["base"] = {"preset": preset}
    return spec


def _int(text: str) -> int:
    from iga.evaluation.axes import SpecError

    try:
        return int(text)
    except ValueError:
        raise SpecError(f"--seeds: {text!r} is not a whole number") from None


def _load(spec_arg, flags: dict, quick: bool, workers: int, backend: str, ray_address) -> Any:
    from iga.evaluation.spec import parse_spec, read_spec_file

    if spec_arg == "headline":
        from iga.evaluation.headline import builtin_spec

        data, where = builtin_spec(quick), "headline"
    elif spec_arg:
        data, where = read_spec_file(spec_arg), spec_arg
    else:
        data, where = flags, "flags"
    data = {**data, "workers": workers, "backend": backend, **({"ray_address": ray_address} if ray_address else {})}
    if spec_arg and flags.get("model"):  # --model overrides the spec's (or the headline's bundled) model
        data["model"] = flags["model"]
    return parse_spec(data, where=where)


def eval_cmd(
    spec: SpecArg = None, model: ModelOpt = None, vary: VaryOpt = None, values: ValuesOpt = None,
    prompts: PromptsOpt = None, prompt: PromptOpt = None, seeds: SeedsOpt = None,
    preset: Annotated[Optional[str], typer.Option(help="base settings: a preset of the recipe")] = None,
    mode: Annotated[str, typer.Option(help="guarded (the varied axis is an explicit override, recorded), "
                                      "strict or permissive")] = "guarded",
    grid: Annotated[bool, typer.Option("--grid", help="allow two --vary axes (an X/Y grid; no variance "
                                       "figures)")] = False,
    out: OutOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="headline: a small version (about 2 minutes)")] = False,
    workers: Annotated[int, typer.Option(help="worker processes (each loads the model once)")] = 1,
    backend: Annotated[str, typer.Option(help="local or ray")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: a local Ray "
                                                       "runtime)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the evaluation protocol: fix prompts, seeds and everything else, vary exactly one setting, measure.

    Every point goes through the guard (in guarded mode the varied axis is named as an override and recorded in
    the audit log; forbidden values are refused and reported). Each (prompt, seed) also gets a reference image
    (the recipe's sampler and schedule at 4x the canonical steps) that SSIM, PSNR and the colour shifts compare
    against. The run folder gets the images (full provenance), results.parquet/.csv, summary.json and
    report.html/.md. Rerunning the same command resumes; Ctrl-C keeps every finished row.

    Exit codes: 0 done, 2 bad input (nothing written), 130 interrupted (rerun to resume).

    Examples:
      iga eval --vary sampler --values euler,heun,dpmpp_2m,uni_pc --prompts 10 --seeds 4
      iga eval --vary cfg --values recipe --prompts demo:held_out --seeds 8
      iga eval --vary steps --values 10-40:10 --vary cfg --values 2,3,5 --grid
      iga eval headline [--quick]          # the IGA arm against a UI's knob space
      iga eval examples/eval/samplers.yaml
    """
    from iga.evaluation.axes import SpecError
    from iga.evaluation.experiment import run_experiment
    from iga.guard import AuditLogError
    from iga.recipe.names import UnknownNameError

    if quick and spec != "headline":
        raise _fail("--quick sizes the headline experiment: iga eval headline --quick")
    try:
        flags = _spec_from_flags(model, vary, values, prompts, prompt, seeds, preset, mode, grid) if not spec \
            else ({"model": str(model)} if model else {})
        experiment = _load(spec, flags, quick, workers, backend, ray_address)
        run_dir = out or Path("runs") / experiment.name
        result = with_progress(lambda p: run_experiment(experiment, run_dir, progress=p), as_json)
    except (SpecError, UnknownNameError, KeyError, AuditLogError) as e:
        raise _fail(str(e.args[0]) if e.args else str(e)) from None
    except KeyboardInterrupt:
        target = out or "the same --out"
        typer.echo(f"interrupted: every finished row is in {target}/results.parquet; rerun the same command to "
                   "resume", err=True)
        raise typer.Exit(130) from None
    _print_result(result, as_json)


def with_progress(fn, quiet: bool, label: str = "evaluating"):
    """Run fn(progress) under a rich progress bar on a terminal (silent when piped or quiet)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=quiet or not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("eval", total=None)
        return fn(lambda done, total: bar.update(task, completed=done, total=total))


def _print_result(result, as_json: bool) -> None:
    s = result.summary
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.eval-result/1", "run_dir": str(result.run_dir),
                               "summary": json.loads((result.run_dir / "summary.json").read_text())}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)  # piped output: keep the columns readable
    shown = [m for m in ("ssim", "psnr", "delta_hue", "colourfulness", "adherence_all") if m in s["metrics"]]
    t = Table(title=f"{s['name']}: varying {s['axis']} on {s['model']['name']}")
    for col in ("value", "images", "NFE", "refused", "failures", *shown):
        t.add_column(col)
    for value, v in s["per_value"].items():
        fails = ", ".join(f"{k} {n}" for k, n in v["failures"].items()) or "-"
        cells = [_fmt(v["metrics"][m]["mean"]) for m in shown]
        t.add_row(value, str(v["n"]), _fmt(v.get("nfe")), str(v["refused"]), fails, *cells)
    console.print(t)
    if "headline" in s:
        h = Table(title="headline (iga arm vs a UI's knob space)")
        for col in ("figure", "iga", "baseline", "ratio / difference", "95% CI"):
            h.add_column(col)
        for r in s["headline"]["table"]:
            h.add_row(r["figure"], r["iga"], r["baseline"], r["ratio_or_difference"], r["ci95"])
        console.print(h)
    typer.echo(f"{result.run_dir}/report.html  ({s['n_images']} images, {s['n_rows']} rows)")


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def calibrate_cmd(
    model: Annotated[Optional[Path], typer.Argument(help="checkpoint or model id (default: the bundled demo model)",
                                                    callback=model_named)] = None,
    facts: Annotated[Optional[Path], typer.Option(help="take the model's facts (prediction type, training "
                                                  "schedule, sizes, VAE) from this recipe file instead")] = None,
    prompts: PromptsOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="a tiny budget (a smoke test, not a recipe)")] = False,
    out: OutOpt = None,
    write: Annotated[bool, typer.Option("--write", help="embed the proposed recipe in the model (in place, "
                                        "journaled, with fresh hashes)")] = False,
    sidecar: Annotated[bool, typer.Option("--sidecar", help="write it as the model's sidecar recipe instead")] = False,
    save: Annotated[Optional[Path], typer.Option("--save", help="write the proposed recipe to this JSON file")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Derive a recipe from evidence: a budgeted sweep turned into a compatibility set by documented thresholds.

    Stages: a CFG scan (dpmpp_2m + karras, 20 steps), every sampler, every schedule with the best sampler, step
    counts, then CFG around the best. Only the model's facts are kept from its current recipe; every choice is
    measured again. A sampler or schedule failing more than 25 % of the time is forbidden (with its evidence);
    allowed ones fail at most 5 % and stay close to the best (adherence, Frechet distance on the demo; SSIM to
    the reference otherwise). Prints the proposed recipe's difference from the current one. The run folder
    (default runs/calibrate-MODEL) keeps every image and row; rerunning resumes.

    Exit codes: 0 done, 2 bad input, 130 interrupted (rerun to resume).
    """
    from iga.evaluation.axes import SpecError
    from iga.guard import AuditLogError
    from iga.recipe import RecipeError

    if write and sidecar:
        raise _fail("choose one of --write and --sidecar")
    try:
        result, source = _run_calibration(model, facts, prompts, quick, out, as_json)
    except (SpecError, RecipeError, RuntimeError, AuditLogError) as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: finished images are kept; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    _deliver(result, source, write, sidecar, save, as_json)


def _run_calibration(model, facts, prompts, quick: bool, out, quiet: bool):
    from iga.evaluation.calibrate import QUICK, Budget, calibrate
    from iga.evaluation.experiment import effective_recipe, open_model, worker_config
    from iga.demo.model import draws_shapes
    from iga.evaluation.spec import parse_spec, spec_prompts

    budget = QUICK if quick else Budget()
    spec = parse_spec({"model": str(model) if model else None,
                       "prompts": prompts or f"demo:all:{budget.prompts}"}, where="calibrate")
    source = open_model(spec)
    if facts:
        from iga.recipe import load_recipe_file

        facts_recipe, _ = load_recipe_file(facts)
    else:
        facts_recipe = effective_recipe(source)
    texts = spec_prompts(spec, draws_shapes(source))
    run_dir = out or Path("runs") / f"calibrate-{source.identity.name}{'-quick' if quick else ''}"
    result = with_progress(lambda p: calibrate(source, facts_recipe, worker_config(spec, source), run_dir, texts,
                                                budget, progress=p), quiet)
    return result, source


def _deliver(result, source, write: bool, sidecar: bool, save, as_json: bool) -> None:
    from iga.evaluation.calibrate import recipe_diff

    data = result.recipe.to_dict()
    if save:
        from iga.evaluation.table import atomic_write

        atomic_write(Path(save), (json.dumps(data, indent=2) + "\n").encode())
    where = None
    if write:
        from iga.checkpoint import embed_recipe_with_hashes

        embed_recipe_with_hashes(source.path, data)
        where = f"embedded in {source.path}"
    elif sidecar:
        from iga.checkpoint import write_sidecar

        where = f"written to {write_sidecar(source.path, data)}"
    diff = recipe_diff(source.recipe, result.recipe)
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.calibrate/1", "recipe": data, "diff": diff, "written": where,
                               "run_dir": str(result.run_dir)}, indent=2))
        return
    typer.echo(f"proposed recipe for {source.identity.name} (current -> proposed):")
    for line in diff:
        typer.echo(f"  {line}")
    for name, why in data["calibration"]["evidence"].items():
        typer.echo(f"  forbidden {name}: {why}")
    typer.echo(where or "not written (use --write, --sidecar or --save)")
    typer.echo(f"evidence: {result.run_dir}/results.parquet")


def register(app: typer.Typer) -> None:
    """Add `iga eval` and `iga calibrate` to the CLI."""
    app.command("eval")(eval_cmd)
    app.command("calibrate")(calibrate_cmd)
