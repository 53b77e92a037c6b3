"""The `iga` command: one entry point, subcommands registered from `iga.commands.*`.

Start-up stays light (no torch, no diffusers): every command imports what it needs when it runs.
Exit codes: 0 ok, 1 verification failed, 2 bad input or usage, 3 refused by the guard.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import typer

from iga.provenance.jsonutil import dumps_strict

app = typer.Typer(
    name="iga",
    help=(
        "iga binds a diffusion checkpoint to its native recipe (sampler, schedule, steps, CFG, VAE).\n\n"
        "Start with `iga generate \"a red circle on a blue background\"` (bundled demo model), "
        "`iga inspect MODEL.safetensors`, or `iga plan --model MODEL --sampler \"DPM++ 2M Karras\"`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
recipe_app = typer.Typer(help="Author and check recipes (JSON or YAML).", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print one clear error line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def schema(
    kind: str = typer.Argument("recipe", help="which schema: recipe or plan"),
) -> None:
    """Print the JSON Schema of a Recipe v1 (or of a Plan) to stdout."""
    from iga.schemas import schema_json

    try:
        typer.echo(schema_json(kind), nl=False)
    except KeyError as e:
        raise fail(str(e.args[0])) from None


@recipe_app.command("check")
def recipe_check(
    file: Path = typer.Argument(..., help="recipe file, .json or .yaml"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Validate a recipe: every problem with its field path, value and fix; print the normalised recipe.

    Exit 0 when valid (warnings allowed), 2 when invalid.
    """
    from iga.recipe import RecipeError, load_recipe_file

    try:
        recipe, issues = load_recipe_file(file)
    except RecipeError as e:
        if as_json:
            typer.echo(dumps_strict({"schema": "iga.recipe-check/1", "valid": False,
                                   "issues": [_issue_dict(i) for i in e.issues]}, indent=2))
            raise typer.Exit(2) from None
        raise fail(str(e)) from None
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.recipe-check/1", "valid": True,
                               "issues": [_issue_dict(i) for i in issues], "recipe": recipe.to_dict()}, indent=2))
        return
    from rich.console import Console

    console = Console()
    for i in issues:
        style = {"warning": "yellow", "info": "dim"}.get(i.severity, "red")
        console.print(f"[{style}]{i.severity}[/]: {i}", highlight=False, markup=True, soft_wrap=True)
    console.print(f"[green]valid[/] Recipe {recipe.iga_version} for {recipe.model_id or 'an unnamed model'}")
    console.print_json(json.dumps(recipe.to_dict()))


def _issue_dict(i) -> dict:
    return {"path": i.path, "value": i.value, "message": i.message, "fix": i.fix, "severity": i.severity}


LongOpt = typer.Option(False, "--long", help="every field: aliases, diffusers mapping, options, the method")


@app.command()
def samplers(as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
             long: bool = LongOpt) -> None:
    """List every sampler iga knows: canonical name, A1111 label, order, model calls per step, noise.

    Canonical names are ComfyUI's (its 42 KSampler names compute ComfyUI's maths); iga adds `restart` and the
    other tools' forms under their own names (`lms_exact`, `uni_pc_diffusers`, ...).
    """
    from iga.catalog.samplers import SAMPLERS

    rows = [_sampler_row(s) for s in SAMPLERS.values()]
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.samplers/1", "samplers": rows}, indent=2))
        return
    if long:
        _print_long(rows, ("a1111", "comfyui", "order", "formula_order", "nfe_per_step", "noise", "stochastic",
                           "automatic_schedule", "aliases", "diffusers", "diffusers_flags", "options", "variant",
                           "description", "doc"))
        return
    lines = [f"{'name':31} {'order':6} {'NFE':4} {'noise':9} A1111 label", "-" * 66]
    for r in rows:
        order = str(r["order"]) + (f" ({r['formula_order']})" if r["formula_order"] != r["order"] else "")
        name = r["name"] + ("" if r["comfyui"] else " *")
        lines.append(f"{name:31} {order:6} {str(r['nfe_per_step'] or 'adap'):4} {r['noise']:9} {r['a1111'] or ''}")
        lines.append(_wrapped(r["description"], "    "))
    lines += ["", "order: measured order of a whole run, (n): of its repeating update.",
              "NFE: model calls per step. * not a ComfyUI name: another tool's form of a method",
              "or iga's own. --long shows aliases, diffusers mapping, options and the method."]
    typer.echo("\n".join(lines))


def _wrapped(text: str, indent: str) -> str:
    import shutil
    import textwrap

    width = min(100, shutil.get_terminal_size((80, 24)).columns)
    return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent)


def _sampler_row(s) -> dict:
    return {"name": s.name, "a1111": s.a1111_label, "comfyui": s.comfyui, "order": s.order,
            "formula_order": s.formula_order or s.order, "nfe_per_step": s.nfe_per_step, "noise": s.noise,
            "stochastic": s.stochastic, "automatic_schedule": s.a1111_default_schedule, "aliases": list(s.aliases),
            "diffusers": s.diffusers, "diffusers_flags": s.diffusers_flags,
            "options": {k: o.describe() for k, o in s.option_specs.items()}, "variant": s.variant,
            "description": s.description, "doc": s.doc}


def _print_long(rows: list[dict], fields: tuple[str, ...]) -> None:
    """One block per entry, wrapped to the terminal (80 columns when piped)."""
    import shutil
    import textwrap

    width = min(100, shutil.get_terminal_size((80, 24)).columns)
    for r in rows:
        typer.echo(r["name"])
        for f in fields:
            v = r.get(f)
            if v in (None, "", [], {}):
                continue
            text = ", ".join(f"{k}: {x}" for k, x in v.items()) if isinstance(v, dict) else \
                ", ".join(v) if isinstance(v, list) else str(v)
            typer.echo(textwrap.fill(text, width, initial_indent=f"  {f}: ", subsequent_indent="    "))
        typer.echo("")


@app.command()
def schedules(as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
              long: bool = LongOpt) -> None:
    """List every schedule (sigma spacing) iga knows, with its A1111 label and diffusers flags."""
    from iga.catalog.schedules import SCHEDULES

    rows = [{"name": s.name, "a1111": s.a1111_label, "aliases": list(s.aliases), "diffusers_flags": s.diffusers_flags,
             "variant": s.variant, "description": s.description} for s in SCHEDULES.values()]
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.schedules/1", "schedules": rows}, indent=2))
        return
    if long:
        _print_long(rows, ("a1111", "aliases", "diffusers_flags", "variant", "description"))
        return
    lines = [f"{'name':18} A1111 label", "-" * 40]
    for r in rows:
        lines += [f"{r['name']:18} {r['a1111'] or ''}", _wrapped(r["description"], "    ")]
    lines += ["", "--long shows aliases, diffusers flags and where tools differ."]
    typer.echo("\n".join(lines))


# Command groups written as separate modules; each exposes register(app).
_COMMAND_MODULES = ("checkpoint", "guard", "generate", "provenance", "demo", "evaluation", "diagnostics", "signing",
                    "serve", "interop", "store", "comfyui")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"iga.commands.{name}").register(app)


_register_all()


def main() -> None:
    """Console-script entry point: Ctrl-C anywhere exits 130 with one line, never a traceback."""
    # typer vendors click; reach its exception classes through typer's public ones
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        rv = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except click_exception as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
