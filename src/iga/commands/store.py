"""`iga models`: list the local model store (checkpoints, VAEs, LoRAs, ControlNets) by id and hash.

Top-level imports stay light (typer and the standard library); the store is imported inside the command.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from iga.provenance.jsonutil import dumps_strict

SCHEMA = "iga.models/1"


def register(app: typer.Typer) -> None:
    """Add `iga models` to the `iga` app."""
    app.command("models")(models_command)


def models_command(
    kind: Annotated[str | None, typer.Option("--kind", help="only one kind: checkpoint, vae, lora or controlnet")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help=f"machine-readable output (schema {SCHEMA})")] = False,
    compute: Annotated[bool, typer.Option("--hash", help="compute the SHA-256 of every listed file that has none "
                                          "yet (reads each whole file once; cached)")] = False,
) -> None:
    """List the models iga finds by id: a recipe's `vae.id` (and `--vae ID`) resolve here.

    Where models are found: every folder in $IGA_MODELS (separated like PATH), every folder in the "models" list of
    the config file ($IGA_CONFIG, else config.json in iga's user config folder, ~/.config/iga/config.json on
    Linux; `iga models --json` prints it), e.g. `{"models": ["~/models", "/data/vae"]}`, and the bundled demo
    model. Folders are searched up to 8 levels deep for .safetensors files and diffusers folders.

    Each model's id is its recipe's model_id, else the file's `iga.id` or `modelspec.title` metadata, else its file
    name. Kinds are told from the tensor names (nothing is loaded). Hashes are shown once computed (--hash).
    """
    from iga import store

    if kind is not None and kind not in store.KINDS:
        raise _fail(f"unknown kind {kind!r}; use one of {', '.join(store.KINDS)}")
    try:
        found = store.scan_store()
    except store.StoreConfigError as e:
        raise _fail(str(e)) from None
    rows = [e for e in found.entries if kind is None or e.kind == kind]
    hashes = _hashes(rows, compute)
    if as_json:
        typer.echo(dumps_strict({"schema": SCHEMA, "roots": _roots(store), "notes": found.notes,
                                 "models": [_row(e, hashes[e.path]) for e in rows]}, indent=2))
        return
    _print_table(rows, hashes, found.notes, store)


def _hashes(rows: list[Any], compute: bool) -> dict[str, str | None]:
    """Known hashes; with ``compute`` the missing ones too, with a progress bar on a terminal."""
    out = {e.path: e.cached_sha256() for e in rows}
    missing = [e for e in rows if out[e.path] is None]
    if not compute or not missing:
        return out
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    cols = (TextColumn("hashing {task.fields[name]}"), BarColumn(), TimeRemainingColumn())
    with Progress(*cols, disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("hash", total=sum(max(1, e.size) for e in missing), name="")
        for e in missing:
            bar.update(task, name=e.id)
            try:
                out[e.path] = e.sha256()
            except (OSError, ValueError) as err:
                typer.echo(f"warning: cannot hash {e.path}: {err}", err=True)
            bar.advance(task, max(1, e.size))
    return out


def _row(e: Any, sha: str | None) -> dict[str, Any]:
    return {"id": e.id, "kind": e.kind, "architecture": e.architecture, "sha256": sha, "recipe": e.recipe,
            "format": e.format, "bundled": e.bundled, "path": e.path}


def _roots(store: Any) -> dict[str, Any]:
    r = store.roots()
    return {"folders": [str(f) for f in r.folders], "config": str(store.config_path()),
            "bundled": [str(b) for b in r.bundled]}


def _print_table(rows: list[Any], hashes: dict[str, str | None], notes: list[str], store: Any) -> None:
    head = ("id", "kind", "architecture", "sha256", "recipe", "path")
    table = [head] + [(e.id, e.kind, e.architecture, (hashes[e.path] or "-")[:12], "yes" if e.recipe else "no",
                       e.path + (" (bundled)" if e.bundled else "")) for e in rows]
    widths = [min(40, max(len(r[i]) for r in table)) for i in range(len(head) - 1)]
    for r in table:
        typer.echo("  ".join(c[:40].ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if not any(not e.bundled for e in rows):
        typer.echo(f"\nonly the bundled model is here: add folders with {store.MODELS_ENV} or "
                   f"\"models\" in {store.config_path()} (see `iga models --help`)")
    elif any(hashes[e.path] is None for e in rows):
        typer.echo("\nsha256 '-': not computed yet (`iga models --hash`)")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)
