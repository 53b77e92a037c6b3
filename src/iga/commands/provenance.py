"""`iga show IMAGE`: what made this image (iga, A1111, Fooocus, SwarmUI, ComfyUI or InvokeAI metadata), normalised.

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


def _hires_text(report) -> str | None:
    """Hires fix as one line: "x2, 10 steps, latent" (the denoise has its own row)."""
    if report.get("hires_scale") is None:
        return None
    parts = [f"x{report['hires_scale']:g}", f"{report['hires_steps']} steps" if report.get("hires_steps") else None,
             report.get("hires_upscaler")]
    return ", ".join(p for p in parts if p)


def _refiner_text(report) -> str | None:
    """The SDXL refiner as A1111 writes it, with the switch: "name [hash], switch at 0.8"."""
    if report.get("refiner") is None:
        return None
    name = f"{report['refiner']} [{report['refiner_hash']}]" if report.get("refiner_hash") else report["refiner"]
    switch = report.get("refiner_switch")
    return name + (f", switch at {switch:g}" if switch is not None else "")


def _loras_text(loras) -> str | None:
    """name (hash) x weight, ...: the weight only where the source records it (A1111 keeps it in the prompt)."""
    if not loras:
        return None
    return ", ".join(f"{u.get('name')} ({u.get('hash')})" + (f" x {u['weight']:g}" if u.get("weight") is not None
                                                             else "") for u in loras)


def _controls_text(controls) -> str | None:
    """model x weight (steps start..end), ...: a ControlNet unit per entry."""
    if not controls:
        return None
    return ", ".join(f"{u.get('model')} x {u.get('weight')} (steps {u.get('start')}..{u.get('end')})"
                     for u in controls)


def show_command(
    image: Annotated[Path, typer.Argument(help="a PNG, JPEG or WebP image")],
    as_json: Annotated[bool, typer.Option("--json", help=f"machine-readable output (schema {SHOW_SCHEMA})")] = False,
) -> None:
    """Show the generation settings stored in an image, whichever tool made it.

    Reads iga's own plan first, then Fooocus and SwarmUI JSON, A1111-style infotext (A1111, Forge, Fooocus,
    Civitai ...), ComfyUI graphs and InvokeAI metadata. Sampler and schedule are shown under iga's canonical (ComfyUI-style) names.
    Untrusted files are read with hard size limits; nothing in them is executed.

    --json prints one object, stable within schema "iga.show/1" (every key always present, null if unknown):

      schema, path, source (iga|a1111|fooocus|swarmui|comfyui|invokeai|none), format (png|jpeg|webp), prompt,
      negative_prompt, seed, steps, cfg, sampler, schedule, width, height, model_name, model_hash,
      clip_skip, denoise, guidance (distilled), shift (flow), loras ([{name, hash, weight}]: A1111's
      'Lora hashes', weights from iga plans only), controls ([{module, model, weight, start, end}]: ControlNet
      units, sd-webui-controlnet's 'ControlNet N' in A1111 infotext), refiner, refiner_hash, refiner_switch (the
      SDXL refiner: A1111's 'Refiner: name [hash]' and 'Refiner switch at'), image_width, image_height, plan (the full iga plan,
      or null), raw (the metadata texts as found), warnings (list of strings), c2pa (the C2PA manifest summary, or null when there is
      none or the c2pa extra is not installed: state Trusted|Valid|Invalid, valid, trusted, status, failures,
      title, label, claim_generator, signer, actions, iga (the org.iga.provenance assertion), plan_matches)

    A C2PA manifest that cannot be read is a warning, not a failure: the generation metadata is still shown.

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
    report["c2pa"] = _c2pa_summary(image, prov, report["warnings"])
    if as_json:
        typer.echo(dumps_strict(report, indent=2, ensure_ascii=False))
        return
    _print_report(report)


def _c2pa_summary(image: Path, prov: Any, warnings: list[str]) -> dict[str, Any] | None:
    """The image's validated C2PA manifest (None without one or without the c2pa extra); problems become warnings."""
    from iga.provenance import ProvenanceError
    from iga.provenance import c2pa

    if prov.format not in ("png", "jpeg", "webp") or not c2pa.available():
        return None
    try:
        summary = c2pa.read_manifest(image, plan=prov.plan)
    except ProvenanceError as exc:
        warnings.append(str(exc))
        return None
    if summary is not None and summary["plan_matches"] is False:
        warnings.append("the C2PA manifest's plan_sha256 does not match the iga plan in the file")
    return summary


def _c2pa_line(c2pa: dict[str, Any]) -> str:
    signer = c2pa.get("signer") or {}
    who = signer.get("common_name") or "?"
    if signer.get("issuer"):
        who += f" ({signer['issuer']})"
    parts = [f"C2PA: {c2pa['status']}", f"signed by {who}"]
    if c2pa.get("claim_generator"):
        parts.append(f"generator {c2pa['claim_generator']}")
    if c2pa.get("plan_matches") is not None:
        parts.append("plan hash matches" if c2pa["plan_matches"] else "plan hash DIFFERS")
    return "; ".join(parts)


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
                ("clip skip", report["clip_skip"]), ("denoise", report["denoise"]),
                ("loras", _loras_text(report.get("loras"))), ("hires", _hires_text(report)),
                ("controlnets", _controls_text(report.get("controls"))), ("refiner", _refiner_text(report))]
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
    if report.get("c2pa"):
        ok = report["c2pa"]["valid"] and report["c2pa"]["plan_matches"] is not False
        console.print(Text(_safe(_c2pa_line(report["c2pa"])), style="green" if ok else "bold red"))
    for warning in report["warnings"]:
        console.print(Text(_safe(f"warning: {warning}"), style="yellow"))
