"""`iga demo`: rebuild the bundled demo model and its judge, read images with the judge, score the model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

demo_app = typer.Typer(help="The bundled demo model (32x32 shapes): train it, judge images, score it.",
                       no_args_is_help=True)


@demo_app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option(help="folder for checkpoints and the exported files")] = Path("runs/demo"),
    max_minutes: Annotated[float, typer.Option(help="time budget of the diffusion model (LR decays over it)")] = 75,
    steps: Annotated[Optional[int], typer.Option(help="train exactly this many steps instead of a time budget")] = None,
    batch: Annotated[int, typer.Option(help="batch size")] = 64,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint in --out")] = True,
    judge_steps: Annotated[int, typer.Option(help="training steps of the judge (0: skip the judge)")] = 1500,
    model_steps_only: Annotated[bool, typer.Option("--model-only", help="skip the judge")] = False,
    judge_only: Annotated[bool, typer.Option("--judge-only", help="train and export only the judge")] = False,
) -> None:
    """Train the demo diffusion model and its judge from scratch (or resume), then export both.

    Writes OUT/ckpt/ (resumable: weights, EMA, optimizer moments as safetensors + state.json), and
    OUT/iga-demo-v1.safetensors, OUT/iga-demo-judge-v1.safetensors. Copy them to src/iga/data/demo/ and embed
    the recipe (examples/recipes/demo.json) with `iga embed` to ship them.
    """
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from iga.demo.trainer import TrainConfig, Trainer, export_judge, train_judge

    if judge_only and (model_steps_only or not judge_steps):
        typer.echo("error: --judge-only needs the judge: drop --model-only and keep --judge-steps above 0", err=True)
        raise typer.Exit(2)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out.mkdir(parents=True, exist_ok=True)
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*cols, disable=not sys.stderr.isatty()) as bar:
        if judge_steps and not model_steps_only:
            task = bar.add_task("judge", total=judge_steps, loss=0.0)
            judge, acc = train_judge(steps=judge_steps, progress=lambda s, l: bar.update(task, completed=s, loss=l))
            export_judge(judge, out / "iga-demo-judge-v1.safetensors", acc)
            typer.echo(f"judge accuracy on fresh images: {json.dumps(acc)}")
        if judge_only:
            return
        cfg = TrainConfig(seed=seed, batch=batch, max_steps=steps, max_minutes=max_minutes)
        trainer = Trainer(out / "ckpt", cfg, resume=resume)
        total = steps or 0
        task = bar.add_task("diffusion", total=total or None, loss=0.0)
        summary = trainer.run(lambda s, l, e: bar.update(task, completed=s, loss=l))
    path = trainer.export(out / "iga-demo-v1.safetensors")
    typer.echo(json.dumps({"schema": "iga.demo-train/1", **summary, "model": str(path)}, indent=2))


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
        typer.echo(json.dumps({"schema": "iga.demo-judge/1", "images": rows}, indent=2))
        return
    for r in rows:
        conf = min(r["confidence"].values())
        typer.echo(f"{r['image']}: {r['reads_as']} (lowest confidence {conf:.2f})")


@demo_app.command("score")
def score_cmd(
    n: Annotated[int, typer.Option("--n", help="images per prompt group (training and held-out prompts)")] = 110,
    model: Annotated[Optional[Path], typer.Option(help="model (default: the bundled demo model)")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="sampler (needs --override sampler)")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="schedule (needs --override schedule)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="steps")] = None,
    cfg: Annotated[Optional[float], typer.Option(help="CFG scale")] = None,
    preset: Annotated[Optional[str], typer.Option(help="a preset of the recipe")] = None,
    override: Annotated[Optional[list[str]], typer.Option("--override", help="fields to override")] = None,
    mode: Annotated[str, typer.Option(help="strict, guarded or permissive")] = "guarded",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Generate N images per prompt group through the guard and print the judge's accuracy per attribute.

    Groups: prompts seen in training and held-out prompts never seen. Seeds are fixed, so two runs agree.
    Also prints the Frechet distance between judge features of generated and real images (lower is better).
    """
    from iga.demo.judge import load_judge
    from iga.demo.score import score
    from iga.generate import load
    from iga.guard import GuardRefused

    fields = {k: v for k, v in {"sampler": sampler, "schedule": schedule, "steps": steps, "cfg": cfg,
                                "preset": preset, "overrides": list(override or [])}.items() if v}
    from rich.progress import Progress

    try:
        with Progress(disable=not sys.stderr.isatty() or as_json, transient=True) as bar:
            task = bar.add_task("scoring", total=2 * n)
            report = score(load(model), load_judge(), n_per_group=n, request=fields, mode=mode,
                           progress=lambda d, t: bar.update(task, completed=d))
    except GuardRefused as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(3) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    s = report["settings"]
    typer.echo(f"{s['sampler']} + {s['schedule']}, {s['steps']} steps, cfg {s['cfg']:g}, {s['nfe']} model calls "
               f"per image ({report['mode']} mode)")
    typer.echo(f"{'group':10} {'n':>4} {'shape':>7} {'fg':>7} {'bg':>7} {'all 3':>7} {'Frechet':>9}")
    for g, r in report["groups"].items():
        a = r["accuracy"]
        typer.echo(f"{g:10} {r['n']:>4} {a['shape']:>7.1%} {a['fg']:>7.1%} {a['bg']:>7.1%} {a['all']:>7.1%} "
                   f"{'n/a' if r['frechet'] is None else format(r['frechet'], '.2f'):>9}")


def register(app: typer.Typer) -> None:
    """Add the `iga demo` group to the CLI."""
    app.add_typer(demo_app, name="demo")
