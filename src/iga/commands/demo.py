"""`iga demo`: rebuild the bundled demo model and its judge, read images with the judge, score the model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from iga.commands.guard import model_named
from iga.provenance.jsonutil import dumps_strict

demo_app = typer.Typer(help="The bundled demo model (32x32 shapes): train it, judge images, score it.",
                       no_args_is_help=True)


@demo_app.command("train")
def train_cmd(
    model: Annotated[str, typer.Option("--model", help="which demo model: pixel (the bundled default, v-prediction), "
                                       "latent (miniature SD1: VAE, CLIP, eps UNet) or flow (rectified flow)")
                     ] = "pixel",
    out: Annotated[Path, typer.Option(help="folder for checkpoints and the exported files")] = Path("runs/demo"),
    max_minutes: Annotated[Optional[float], typer.Option(help="time budget of the main stage (LR decays over it); "
                                                         "pixel default 75, latent and flow train fixed steps")
                           ] = None,
    steps: Annotated[Optional[int], typer.Option(help="train exactly this many steps (the main stage)")] = None,
    vae_steps: Annotated[Optional[int], typer.Option(help="latent: steps of each VAE stage")] = None,
    batch: Annotated[Optional[int], typer.Option(help="batch size (default: the shipped run's)")] = None,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    judge_steps: Annotated[int, typer.Option(help="training steps of the judge (0: skip the judge)")] = 1500,
    model_steps_only: Annotated[bool, typer.Option("--model-only", help="skip the judge")] = False,
    judge_only: Annotated[bool, typer.Option("--judge-only", help="train and export only the judge")] = False,
) -> None:
    """Train a demo model (and the judge) from scratch, or continue: rerunning the same command resumes.

    pixel: OUT/ckpt/ -> OUT/iga-demo-v1.safetensors (and OUT/iga-demo-judge-v1.safetensors).
    latent: three stages, each resumable -- OUT/vae-ckpt/ -> OUT/vae/ (the autoencoder), OUT/vae-warm-ckpt/ ->
    OUT/iga-demo-latent-vae-warm-v1.safetensors (a decoder fine-tuned to shifted colours), OUT/diffusion-ckpt/ ->
    OUT/iga-demo-latent-v1.safetensors + the diffusers folder OUT/iga-demo-latent-v1/ + the VAE alone.
    flow: OUT/flow-ckpt/ -> OUT/iga-demo-flow-v1.safetensors.
    Every random draw of step k is seeded by (seed, k): a resumed run equals an uninterrupted one. To ship, copy
    the exports to src/iga/data/demo/ and embed a recipe (`iga calibrate MODEL --facts FILE --write`, or `iga embed`).
    """
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from iga.demo.runs import MODELS, Limits, train
    from iga.demo.trainer import export_judge, train_judge

    if model not in MODELS:
        typer.echo(f"error: unknown --model {model!r}; use one of {', '.join(MODELS)}", err=True)
        raise typer.Exit(2)
    if judge_only and (model_steps_only or not judge_steps):
        typer.echo("error: --judge-only needs the judge: drop --model-only and keep --judge-steps above 0", err=True)
        raise typer.Exit(2)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out.mkdir(parents=True, exist_ok=True)
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*cols, disable=not sys.stderr.isatty()) as bar:
        if judge_steps and not model_steps_only and (model == "pixel" or judge_only):
            task = bar.add_task("judge", total=judge_steps, loss=0.0)
            judge, acc = train_judge(steps=judge_steps, progress=lambda s, l: bar.update(task, completed=s, loss=l))
            export_judge(judge, out / "iga-demo-judge-v1.safetensors", acc)
            typer.echo(f"judge accuracy on fresh images: {json.dumps(acc)}")
        if judge_only:
            return
        tasks: dict[str, Any] = {}

        def progress(stage: str, step: int, total: Optional[int], loss: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, loss=0.0)
            bar.update(tasks[stage], completed=step, loss=loss)
            if bar.disable and step % 100 == 0:  # a log file still shows how far it got
                print(f"{stage} step {step}/{total or '?'} loss {loss:.4f}", file=sys.stderr, flush=True)

        try:
            stages = train(model, out, Limits(steps=steps, vae_steps=vae_steps, max_minutes=max_minutes,
                                              batch=batch, seed=seed), progress)
        except ValueError as e:  # a checkpoint folder of another model
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
    typer.echo(dumps_strict({"schema": "iga.demo-train/2", "model": model, "stages": stages}, indent=2))


@demo_app.command("judge")
def judge_cmd(
    images: Annotated[list[Path], typer.Argument(help="images to read (resized to 32x32 if needed)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Print what the judge reads from each image: shape, foreground and background colour, with confidence."""
    import numpy as np
    from PIL import Image

    from iga.demo.judge import load_judge, read

    judge = load_judge()
    rows = []
    for p in images:
        try:
            with Image.open(p) as im:
                px = np.asarray(im.convert("RGB"))
        except OSError as e:
            typer.echo(f"error: cannot read {p}: {e}", err=True)
            raise typer.Exit(2) from None
        [r] = read(judge, px)
        rows.append({"image": str(p), "shape": r.shape, "fg": r.fg, "bg": r.bg, "confidence": r.confidence,
                     "reads_as": f"a {r.fg} {r.shape} on a {r.bg} background"})
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.demo-judge/1", "images": rows}, indent=2))
        return
    for r in rows:
        conf = min(r["confidence"].values())
        typer.echo(f"{r['image']}: {r['reads_as']} (lowest confidence {conf:.2f})")


@demo_app.command("score")
def score_cmd(
    n: Annotated[int, typer.Option("--n", min=1, help="images per prompt group (training and held-out prompts); "
                                   "rounded up to prompts x seeds")] = 110,
    model: Annotated[Optional[Path], typer.Option(help="model path or id (default: the bundled demo model)",
                                                  callback=model_named)] = None,
    sampler: Annotated[Optional[str], typer.Option(help="sampler (needs --override sampler)")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="schedule (needs --override schedule)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="steps")] = None,
    cfg: Annotated[Optional[float], typer.Option(help="CFG scale")] = None,
    preset: Annotated[Optional[str], typer.Option(help="a preset of the recipe")] = None,
    override: Annotated[Optional[list[str]], typer.Option("--override", help="fields to override")] = None,
    mode: Annotated[str, typer.Option(help="strict, guarded or permissive")] = "guarded",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="keep the run folders here (OUT/train, "
                                                "OUT/held_out; rerunning resumes); default: a temporary folder, "
                                                "removed afterwards")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Generate about N images per prompt group through the guard and print the judge's accuracy per attribute.

    Groups: prompts seen in training and held-out prompts never seen. Each group is one `iga eval` experiment
    of the base setting: S = ceil(N / prompts in the group) seeds (1000, 1001, ...) times K = ceil(N / S)
    prompts spread evenly over the group (demo:GROUP:K), so K x S >= N images, exactly N when S divides N
    (N = 110: 55 x 2 training, 11 x 10 held-out). Seeds are fixed, so two runs agree. Also prints the Frechet
    distance between judge features of generated and real images (lower is better).

    Exit codes: 0 done, 2 bad input, 3 refused by the guard.
    """
    import contextlib
    import tempfile

    from iga.evaluation import SpecError
    from iga.recipe.names import UnknownNameError

    base = {k: v for k, v in {"sampler": sampler, "schedule": schedule, "steps": steps, "cfg": cfg,
                              "preset": preset}.items() if v is not None}
    keep = contextlib.nullcontext(str(out)) if out else tempfile.TemporaryDirectory(prefix="iga-demo-score-")
    try:
        with keep as root:
            specs = {g: _group_spec(g, n, model, base, list(override or []), mode) for g in ("train", "held_out")}
            report = _score_groups(specs, Path(root), quiet=as_json)
    except _Refused as e:
        typer.echo(f"refused by the guard: {e}", err=True)
        raise typer.Exit(3) from None
    except (SpecError, UnknownNameError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    _print_score(report, as_json)


class _Refused(Exception):
    """The guard refused the setting; the message is its reason."""


def _group_spec(group: str, n: int, model: Optional[Path], base: dict, overrides: list[str], mode: str):
    """One prompt group's experiment: the base setting (no axis) over K prompts x S seeds, K x S >= n."""
    from iga.evaluation import parse_spec
    from iga.evaluation.spec import demo_prompts

    seeds = -(-n // len(demo_prompts(group, None)))  # fewest seeds, so as many distinct prompts as possible
    k = -(-n // seeds)
    # No repeat and no reference: bit-identity and distance to a reference are not what this command measures.
    return parse_spec({"name": f"demo-score-{group}", "model": str(model) if model else None,
                       "prompts": f"demo:{group}:{k}", "seeds": seeds, "base": base, "mode": mode,
                       "overrides": overrides, "repeat": False, "reference": False}, where="demo score")


def _refusal(spec) -> str:
    """The guard's reason for refusing the spec's setting ("" if allowed), found before anything is rendered."""
    from iga.evaluation.experiment import effective_recipe, open_model, sweep_points
    from iga.evaluation.runner import resolve_point
    from iga.demo.model import draws_shapes
    from iga.evaluation.spec import spec_prompts, spec_seeds

    source = open_model(spec)
    prompts = spec_prompts(spec, draws_shapes(source))
    # the guard judges the setting, not which demo prompt or seed it is for, so the first (prompt, seed)
    # decides; _group_score still checks every row the runner writes
    points = sweep_points(spec, effective_recipe(source), prompts[:1], spec_seeds(spec)[:1])
    return resolve_point(next(p for p in points if p.role == "point"), source).refused


def _score_groups(specs: dict, root: Path, quiet: bool) -> dict:
    """Run each group's experiment into root/GROUP and collect the iga.demo-score/1 report."""
    from rich.progress import Progress

    from iga.evaluation import run_experiment

    for spec in specs.values():  # refuse before rendering anything, as the guard does for `iga generate`
        reason = _refusal(spec)
        if reason:
            raise _Refused(reason)
    groups, settings = {}, {}
    with Progress(disable=quiet or not sys.stderr.isatty(), transient=True) as bar:
        for group, spec in specs.items():
            task = bar.add_task(f"scoring {group}", total=None)
            result = run_experiment(spec, root / group, report=False,
                                    progress=lambda d, t, task=task: bar.update(task, completed=d, total=t))
            groups[group], group_settings = _group_score(group, result)
            settings = settings or group_settings
    return {"schema": "iga.demo-score/1", "settings": settings, "mode": specs["train"].mode, "groups": groups}


def _group_score(group: str, result) -> tuple[dict, dict]:
    """A group's {n, accuracy, frechet} and the settings its points ran with, from the runner's rows."""
    import math

    points = [r for r in result.rows if r["role"] == "point"]
    refused = next((r["refused"] for r in points if r["refused"]), "")
    if refused:  # the pre-check passed but the runner refused a point: still the guard's word
        raise _Refused(refused)
    failed = [r for r in points if not r["image"]]
    if failed:
        typer.echo(f"warning: {len(failed)} of {len(points)} {group} images failed ({failed[0]['failure']}: "
                   f"{failed[0]['error'][:120]}); they count as misses", err=True)
    accuracy = {}
    for k in ("shape", "fg", "bg", "all"):
        hits = [r[f"adherence_{k}"] for r in points]
        accuracy[k] = sum(v for v in hits if v is not None and math.isfinite(v)) / len(points) if points else 0.0
    # no axis: the run's single per-value entry is the base setting; its Frechet distance needs >= 2 images
    frechet = next(iter(result.summary["per_value"].values()), {}).get("judge_frechet")
    first = next((r for r in points if r["plan_sha256"]), {})
    settings = {k: first.get(k) for k in ("sampler", "schedule", "steps", "cfg", "nfe", "prediction_type")}
    settings["overrides"] = [o for o in first.get("overrides", "").split(";") if o]
    return {"n": len(points), "accuracy": accuracy, "frechet": frechet}, settings


def _print_score(report: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(dumps_strict(report, indent=2))
        return
    s = report["settings"]
    typer.echo(f"{s['sampler']} + {s['schedule']}, {s['steps']} steps, cfg {s['cfg']:g}, {s['nfe']} model calls "
               f"per image ({report['mode']} mode)")
    typer.echo(f"{'group':10} {'n':>4} {'shape':>7} {'fg':>7} {'bg':>7} {'all 3':>7} {'Frechet':>9}")
    for g, r in report["groups"].items():
        a = r["accuracy"]
        typer.echo(f"{g:10} {r['n']:>4} {a['shape']:>7.1%} {a['fg']:>7.1%} {a['bg']:>7.1%} {a['all']:>7.1%} "
                   f"{'n/a' if r['frechet'] is None else format(r['frechet'], '.2f'):>9}")


@demo_app.command("matrix")
def matrix_cmd(
    models: Annotated[Optional[list[Path]], typer.Option("--model", "-m", help="a model with a recipe (repeat; "
                                                         "default: the bundled demo family)")] = None,
    prompts: Annotated[str, typer.Option(help="demo:{train,held_out,all}[:N], a count, or a file")] = "demo:all:12",
    seeds: Annotated[int, typer.Option(help="seeds per prompt (1000, 1001, ...)")] = 2,
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder (one sub-folder per model; rerunning "
                                      "resumes)")] = Path("runs/recipe-matrix"),
    guarded: Annotated[bool, typer.Option("--guarded/--unguarded", help="--unguarded: resolve each cell against the "
                                          "model's facts only (no allow/forbid lists, knob-space ranges), as a UI "
                                          "without a guard would run it")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Render every model under every model's recipe: the cross-recipe matrix.

    A recipe contributes its default sampler, schedule, steps and CFG; each model keeps its own facts (prediction
    type, training schedule, VAE). Permissive mode: soft deviations run and are recorded, what a model forbids is
    refused. Per cell: judge adherence (all three attributes), failure rate, SSIM to the model's own recipe at 4x
    steps, judge Frechet distance. Writes OUT/matrix.json, OUT/matrix.md and OUT/matrix.png.

    Exit codes: 0 done, 2 bad input.
    """
    from iga.checkpoint import write_bytes_atomic
    from iga.commands.evaluation import with_progress
    from iga.demo.model import FAMILY
    from iga.evaluation import SpecError
    from iga.evaluation.matrix import draw_matrix, markdown_table, run_matrix
    from iga.guard.source import describe_model
    from iga.store import ModelNotFound, model_path

    try:
        paths = [model_named(m) for m in models] if models else [model_path(n) for n in FAMILY.values()]
        sources = [describe_model(str(p)) for p in paths]
        result = with_progress(lambda prog: run_matrix(sources, prompts, seeds, out, guarded=guarded,
                                                       progress=lambda _m, d, t: prog(d, t)),
                               as_json, "cross-recipe matrix")
    except (ValueError, SpecError, ModelNotFound, typer.BadParameter) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    table = markdown_table(result)
    write_bytes_atomic(out / "matrix.json", dumps_strict(result.to_dict(), indent=1).encode())
    write_bytes_atomic(out / "matrix.md", (table + "\n").encode())
    grid = draw_matrix(result, out / "matrix.png")
    if as_json:
        typer.echo(dumps_strict({**result.to_dict(), "grid": str(grid)}, indent=2))
        return
    typer.echo(table)
    typer.echo(f"\nimage grid: {grid}; figures: {out / 'matrix.json'}")


def register(app: typer.Typer) -> None:
    """Add the `iga demo` group to the CLI."""
    app.add_typer(demo_app, name="demo")
