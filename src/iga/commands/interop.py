"""`iga recipe draft` (a recipe from what a model already carries) and `iga recipe export` (a recipe in another
tool's terms)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from iga.commands.guard import model_named
from iga.provenance.jsonutil import dumps_strict

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def draft_cmd(
    model: Annotated[Path, typer.Argument(help="a .safetensors checkpoint, a diffusers folder or a model id",
                                          callback=model_named)],
    notes: Annotated[Optional[Path], typer.Option("--notes", help="a text file with the publisher's recommended "
                                                  "settings (Civitai style: 'Sampler: DPM++ 2M Karras, Steps: "
                                                  "25-30, CFG: 5-7, Clip skip 2')")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="show every field's value, source and certainty, and "
                                          "every piece of evidence")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="write the recipe here (JSON or YAML by "
                                                "suffix; never over an existing file)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Draft a recipe from everything the model and its neighbours say.

    Sources: the tensors (architecture, prediction-type markers), ModelSpec keys, kohya's ss_* training metadata,
    a diffusers folder's scheduler config, A1111's <model>.json user-metadata sidecar, a model card's front matter
    (README.md), and --notes. Sure sources that disagree are listed as conflicts; fields no source names come
    from the architecture's permissive defaults. The draft is a valid recipe: check it, then `iga embed` it or
    let `iga calibrate` narrow it.

    Exit 0 with a draft (conflicts are printed, not fatal); 2 when the model cannot be read.
    """
    from iga.checkpoint import CheckpointError
    from iga.interop.draft import draft_recipe

    if not model.exists():
        raise _fail(f"{model}: no such file or folder")
    try:
        text = notes.read_text(encoding="utf-8", errors="replace")[:1 << 20] if notes else None
    except OSError as e:
        raise _fail(f"--notes {notes}: {e.strerror or e}") from None
    try:
        draft = draft_recipe(model, notes=text)
    except (CheckpointError, ValueError) as e:
        raise _fail(str(e)) from None
    recipe = draft.recipe.to_dict()
    if out is not None:
        _write_new(out, recipe)
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.recipe-draft/1", "recipe": recipe, "conflicts": draft.conflicts,
                                 "notes": draft.notes, "defaulted": draft.defaulted,
                                 "fields": {k: _evidence(e) for k, e in draft.chosen.items()},
                                 "evidence": [_evidence(e) for e in draft.evidence] if explain else None},
                                indent=2))
        return
    _print_draft(draft, recipe, explain, out)


def _evidence(e) -> dict:
    return {"field": e.field, "value": e.value, "source": e.source, "key": e.key, "confidence": e.confidence}


def _print_draft(draft, recipe: dict, explain: bool, out: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if explain:
        table = Table("field", "value", "source", "where", "sure", title="fields and their sources")
        for fld, e in sorted(draft.chosen.items()):
            table.add_row(fld, str(e.value), e.source, e.key, f"{e.confidence:.2f}")
        for fld in draft.defaulted:
            table.add_row(fld, "(architecture default)", "-", "-", "-")
        console.print(table)
        if len(draft.evidence) > len(draft.chosen):
            console.print(f"[dim]{len(draft.evidence)} pieces of evidence in all (--json --explain lists them)[/]")
    for n in draft.notes:
        console.print(f"[dim]note[/] {n}", soft_wrap=True)
    for c in draft.conflicts:
        console.print(f"[yellow]conflict[/] {c}", soft_wrap=True)
    if out is None:
        console.print_json(dumps_strict(recipe))
    else:
        console.print(f"wrote {out}")


def _write_new(path: Path, recipe: dict) -> None:
    """Write the recipe as JSON or YAML, whole, never over an existing file."""
    import os

    from iga.checkpoint import write_bytes_atomic

    if path.exists():
        raise _fail(f"--out {path}: the file exists; choose another name")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_dump(recipe, sort_keys=False).encode()
    else:
        data = (dumps_strict(recipe, indent=2) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(os.fspath(path), data)


def export_cmd(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="a recipe file (.json/.yaml) or a checkpoint "
                                                "carrying one")],
    to: Annotated[str, typer.Option("--to", help="diffusers, comfyui, a1111, invokeai or fooocus")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="folder to write the files into (default: "
                                                "print them)")] = None,
    model_file: Annotated[Optional[str], typer.Option("--model-file", help="the checkpoint's file name as the "
                                                      "target tool knows it")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a recipe in another tool's own terms, and say what that tool cannot express.

    diffusers: scheduler_config.json + the pipeline call's arguments; comfyui: an API-format workflow;
    a1111: the <model>.json user-metadata sidecar + an infotext line; invokeai: the model's default settings;
    fooocus: a preset. Ranges, forbid lists, allowed step counts and presets have no place in most of them: each
    is listed under "cannot express" instead of being dropped silently.
    """
    from iga.interop.export import FORMATS, export_recipe

    if to not in FORMATS:
        raise _fail(f"--to {to!r}: choose {', '.join(FORMATS)}")
    recipe = _load_recipe(recipe_path)
    if model_file is None and recipe_path.suffix == ".safetensors":
        model_file = recipe_path.name
    try:
        result = export_recipe(recipe, to, model_file=model_file)
    except ValueError as e:
        raise _fail(str(e)) from None
    if out is not None:
        for name, content in result.files.items():
            target = out / name
            if target.exists():
                raise _fail(f"{target} exists; choose another --out folder")
        for name, content in result.files.items():
            _write_file(out / name, content)
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.recipe-export/1", **result.to_dict(),
                                 "written": [str(out / n) for n in result.files] if out else None}, indent=2))
        return
    for name, content in result.files.items():
        typer.echo(f"# {out / name if out else name}")
        if out is None:
            typer.echo(content if isinstance(content, str) else dumps_strict(content, indent=2))
    for line in result.lost:
        typer.echo(f"cannot express: {line}", err=True)


def _write_file(path: Path, content) -> None:
    import os

    from iga.checkpoint import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else dumps_strict(content, indent=2)
    write_bytes_atomic(os.fspath(path), (text + "\n").encode())


def _load_recipe(path: Path):
    """A recipe from a recipe file or from a checkpoint's header or sidecar."""
    from iga.checkpoint import CheckpointError
    from iga.recipe import RecipeError, load_recipe_file

    if not path.exists():
        raise _fail(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".json", ".yaml", ".yml"):
            return load_recipe_file(path)[0]
        from iga.guard.source import describe_model

        recipe = describe_model(path, file_hash=False).recipe
    except (RecipeError, CheckpointError, ValueError) as e:
        raise _fail(str(e)) from None
    if recipe is None:
        raise _fail(f"{path} carries no recipe (draft one with `iga recipe draft {path}`)")
    return recipe


def register(app: typer.Typer) -> None:
    """Add `iga recipe draft` and `iga recipe export` to the `recipe` group."""
    recipe_app = next(g.typer_instance for g in app.registered_groups if g.name == "recipe")
    recipe_app.command("draft")(draft_cmd)
    recipe_app.command("export")(export_cmd)
