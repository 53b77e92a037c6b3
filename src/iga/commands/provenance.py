"""`iga show IMAGE`: what made this image (iga, A1111, ComfyUI or InvokeAI metadata), normalised.

Exit codes: 0 when the file was read, including when it carries no generation metadata (that is an answer,
not a failure: the output says "no generation metadata found"); 2 when the file cannot be read safely
(missing, not PNG/JPEG/WebP, truncated, corrupt, or hostile: oversized or decompression-bomb chunks).
Top-level imports stay light; iga.provenance is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from iga.provenance.jsonutil import dumps_strict

SHOW_SCHEMA = "iga.show/1"


def register(app: typer.Typer) -> None:
    """Add `iga show` to the `iga` app."""
    app.command("show")(show_command)


def show_command(
    image: Annotated[Path, typer.Argument(help="a PNG, JPEG or WebP image")],
    as_json: Annotated[bool, typer.Option("--json", help=f"machine-readable output (schema {SHOW_SCHEMA})")] = False,
) -> None:
    """Show the generation settings stored in an image, whichever tool made it.

    Reads iga's own plan first, then A1111-style infotext (A1111, Forge, Civitai ...), ComfyUI graphs and
    InvokeAI metadata. Sampler and schedule are shown under iga's canonical (ComfyUI-style) names.
    Untrusted files are read with hard size limits; nothing in them is executed.

    --json prints one object, stable within schema "iga.show/1" (every key always present, null if unknown):

      schema, path, source (iga|a1111|comfyui|invokeai|none), format (png|jpeg|webp), prompt,
      negative_prompt, seed, steps, cfg, sampler, schedule, width, height, model_name, model_hash,
      clip_skip, denoise, image_width, image_height, plan (the full iga plan, or null), raw (the metadata
      texts as found), warnings (list of strings)

    Exit 0 when the file was read (also with no metadata); 2 when it is unreadable, corrupt or hostile,
    with one `error: ...` line on stderr (with --json, also {"schema", "path", "error"} on stdout).
    """
    from iga.provenance import ProvenanceError, read_provenance

    try:
        prov = read_provenance(image)
    except (ProvenanceError, OSError) as exc:
        if as_json:
            typer.echo(dumps_strict({"schema": SHOW_SCHEMA, "path": str(image), "error": str(exc)}, indent=2))
        typer.echo(f"error: {image}: {exc}", err=True)
        raise typer.Exit(2) from None
    report: dict[str, Any] = {"schema": SHOW_SCHEMA, "path": str(image), **prov.to_dict()}
    if as_json:
        typer.echo(dumps_strict(report, indent=2, ensure_ascii=False))
        return
    _print_report(report)


def _safe(value: Any) -> str:
    """Text from a file made safe for a terminal: control and bidi characters shown as escapes, not obeyed."""
    import unicodedata

    out = []
    for ch in str(value):
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf"):
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from iga.provenance.read import describe_source

    console = Console()
    size = (f"{report['image_width']}x{report['image_height']}"
            if report["image_width"] and report["image_height"] else "?")
    console.print(Text(_safe(f"{report['path']}  ({report['format']}, {size})"), style="bold"))
    console.print(Text(f"source: {describe_source(report['source'])}"))
    if report["source"] == "none":
        if report["raw"]:
            console.print(Text(_safe("other metadata present: " + ", ".join(sorted(report["raw"])))))
    else:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column("field", style="cyan", no_wrap=True)
        table.add_column("value", overflow="fold")
        size_gen = (f"{report['width']}x{report['height']}"
                    if report["width"] is not None and report["height"] is not None else None)
        rows = [("prompt", report["prompt"]), ("negative prompt", report["negative_prompt"]),
                ("seed", report["seed"]), ("steps", report["steps"]), ("cfg", report["cfg"]),
                ("sampler", report["sampler"]), ("schedule", report["schedule"]), ("size", size_gen),
                ("model", report["model_name"]), ("model hash", report["model_hash"]),
                ("clip skip", report["clip_skip"]), ("denoise", report["denoise"])]
        plan = report.get("plan") or {}
        for key in ("prediction_type", "nfe", "cfg_variant", "cfg_rescale", "eta", "mode", "iga_version"):
            if plan.get(key) not in (None, "", [], {}):
                rows.append((key.replace("_", " "), plan[key]))
        if isinstance(plan.get("overrides"), list) and plan["overrides"]:
            rows.append(("overrides", ", ".join(str(o.get("field", o)) if isinstance(o, dict) else str(o)
                                                for o in plan["overrides"])))
        for name, value in rows:
            if value is not None:
                # Text(): prompts may contain [brackets] that rich would read as markup
                table.add_row(name, Text(_safe(value)))
        console.print(table)
    for warning in report["warnings"]:
        console.print(Text(_safe(f"warning: {warning}"), style="yellow"))
