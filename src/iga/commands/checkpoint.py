"""`iga inspect`, `iga embed`, `iga verify`, `iga recover`: look into checkpoints and bind recipes to them.

Exit codes: 0 ok, 1 verification failed, 2 bad input or usage (one `error: ...` line on stderr, no traceback).
Top-level imports stay light (typer and the standard library); iga.checkpoint is imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from iga.commands.guard import model_named
from iga.provenance.jsonutil import dumps_strict

INSPECT_SCHEMA = "iga.inspect/1"
VERIFY_SCHEMA = "iga.verify/1"
EMBED_SCHEMA = "iga.embed/1"


def register(app: typer.Typer) -> None:
    """Add the checkpoint commands to the `iga` app."""
    app.command("inspect")(inspect_command)
    app.command("embed")(embed_command)
    app.command("verify")(verify_command)
    app.command("recover")(recover_command)


# --- inspect -------------------------------------------------------------------------------------------------------


def inspect_command(
    path: Annotated[Path, typer.Argument(help="a .safetensors checkpoint, a diffusers folder or a model id "
                                         "(iga-demo-flow-v1)", callback=model_named)],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output (schema iga.inspect/1)")] = False,
    with_hash: Annotated[
        bool, typer.Option("--hash", help="also compute SHA-256 of the weights and of the file (reads the whole file)")
    ] = False,
) -> None:
    """Show what a checkpoint is and promises: architecture, prediction type, recipe, metadata, tensors, hashes.

    Only the header is read (milliseconds, whatever the file size) unless --hash is given. Pickle files
    (.ckpt/.pt/.pth/.bin) are refused, never loaded.

    --json prints one object, stable within schema "iga.inspect/1":

      schema        "iga.inspect/1"
      path          the path as given
      file_size     bytes
      header        {length: N, json_length, slack: free bytes for in-place edits, data_start: 8+N}
      architecture  {architecture: sd1|sd2|sdxl|sdxl_refiner|sd3|flux|demo|unknown, layout: ldm|diffusers|demo|unknown,
                     components: [...], prediction_type: eps|v|flow|null (when all hints agree),
                     zero_terminal_snr: true|false|null, evidence: [{source, detail, suggests, rank}],
                     prediction_hints: [{kind, value, source}], conflicts: [...], notes: [...],
                     variant: dev|schnell (flux), 3|3.5 (sd3), else null}
      recipe        null, or {origin: embedded|sidecar, path, raw: {...} (as stored), valid: true|false|null
                     (null when the recipe validator is unavailable), normalized: {...}|null, issues: [str],
                     warnings: [str]}
      metadata      {modelspec: {...}, kohya: {...}, iga: {...}, other: {...}} (all string values, as stored)
      tensors       {count, bytes, dtypes: {DTYPE: {count, bytes}}}
      hashes        null, or {weights_sha256, file_sha256, autov2, autov3}

    A LoRA file gets its own report: {schema, path, file_size, kind: "lora", lora: {format, targets,
    architecture, prediction_type, zero_terminal_snr, rank, alpha, base_model, file_sha256, addnet_sha256,
    short_hash, training (its ss_*/ModelSpec training metadata), recipe (the iga.recipe narrowing, or null),
    notes, ...}, metadata, tensors}; its hashes are always computed.

    On bad input it prints {"schema": "iga.inspect/1", "path": ..., "error": "..."} and exits 2.
    """
    with _errors(INSPECT_SCHEMA, path if as_json else None):
        report = _inspect(path, with_hash)
    if as_json:
        typer.echo(dumps_strict(report, indent=2, ensure_ascii=False))
    elif report.get("kind") == "lora":
        _print_lora(report)
    else:
        _print_inspect(report)


def _inspect(path: Path, with_hash: bool) -> dict[str, Any]:
    import warnings

    from iga.checkpoint import compute_hashes, detect_architecture, find_recipe, group_metadata, read_header

    header = read_header(path)
    lora = _lora_report(path, header)
    if lora is not None:
        return lora
    arch = detect_architecture(header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # conflicts are reported in recipe.warnings
        source = find_recipe(path)
    recipe: dict[str, Any] | None = None
    if source is not None:
        recipe = {"origin": source.origin, "path": source.path, "raw": source.recipe, "warnings": list(source.warnings)}
        recipe.update(_normalise(source.recipe, source.path))
    hashes = compute_hashes(path).to_dict() if with_hash else None
    return {
        "schema": INSPECT_SCHEMA,
        "path": str(path),
        "file_size": header.file_size,
        "header": {
            "length": header.header_len,
            "json_length": header.json_len,
            "slack": header.slack,
            "data_start": header.data_start,
        },
        "architecture": arch.to_dict(),
        "recipe": recipe,
        "metadata": group_metadata(header.metadata),
        "tensors": {
            "count": len(header.tensors),
            "bytes": header.data_len,
            "dtypes": header.dtype_summary(),
        },
        "hashes": hashes,
    }


def _lora_report(path: Path, header: Any) -> dict[str, Any] | None:
    """A LoRA's report (its training metadata and what it implies; hashes always: LoRAs are small), or None for
    anything that is not a LoRA."""
    from iga.checkpoint import group_metadata
    from iga.models.lora import LoraError, lora_format, read_lora

    if lora_format([t.name for t in header.tensors])[0] is None:
        return None
    try:
        info = read_lora(path)
    except LoraError as e:
        raise _UsageError(str(e)) from None
    return {"schema": INSPECT_SCHEMA, "path": str(path), "file_size": header.file_size, "kind": "lora",
            "lora": info.to_dict(), "metadata": group_metadata(header.metadata),
            "tensors": {"count": len(header.tensors), "bytes": header.data_len, "dtypes": header.dtype_summary()}}


def _print_lora(r: dict[str, Any]) -> None:
    echo, lo = typer.echo, r["lora"]
    echo(f"{r['path']}\n  LoRA ({lo['format']} keys) for {', '.join(lo['targets'])}, {_size(r['file_size'])}")
    arch = lo["architecture"] or "not stated"
    echo(f"  trained for   {arch}" + (f"  [{lo['architecture_source']}]" if lo["architecture_source"] else ""))
    pred = lo["prediction_type"] or "not stated"
    echo(f"  prediction    {pred}" + (f"  [{lo['prediction_source']}]" if lo["prediction_source"] else "")
         + {True: ", zero terminal SNR", False: ", no zero terminal SNR", None: ""}[lo["zero_terminal_snr"]])
    echo(f"  applies to    {arch} models predicting {pred}; another architecture or prediction type is refused")
    echo(f"  rank / alpha  {lo['rank']} / {lo['alpha']}" + (f" (scale {lo['alpha'] / lo['rank']:g})"
                                                          if lo["rank"] and lo["alpha"] is not None else ""))
    if lo["base_model"]:
        echo(f"  base model    {lo['base_model']}")
    echo(f"  hashes        A1111 'Lora hashes' {lo['short_hash']} (tensor data {lo['addnet_sha256']}); "
         f"file {lo['file_sha256']}")
    rec = lo["recipe"]
    if rec is not None:
        echo("  iga.recipe    narrows the base recipe:")
        for line in json.dumps(rec, indent=2, ensure_ascii=False).splitlines():
            echo(f"      {line}")
    elif lo["recipe_problem"]:
        echo(f"  iga.recipe    {lo['recipe_problem']}")
    for n in lo["notes"]:
        echo(f"  note: {n}")
    if lo["training"]:
        echo("  training metadata")
        for k, v in lo["training"].items():
            echo(f"      {k} = {_short(v)}")


def _normalise(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Validate through iga.recipe when it is available; never fails the inspection."""
    try:
        from iga.recipe import parse_recipe_dict
    except ImportError:
        return {"valid": None, "normalized": None, "issues": []}
    try:
        model, issues = parse_recipe_dict(raw, source=source)
    except Exception as e:  # a broken recipe is something to show, not a crash
        found = getattr(e, "issues", None)
        lines = [str(i) for i in found] if found else [_one_line(e)]
        return {"valid": False, "normalized": None, "issues": lines}
    return {"valid": True, "normalized": model.to_dict(), "issues": [str(i) for i in issues]}


def _print_inspect(r: dict[str, Any]) -> None:
    echo = typer.echo
    a = r["architecture"]
    h = r["header"]
    echo(str(r["path"]))
    echo(
        f"  file          {_size(r['file_size'])}, header {h['length']:,} bytes "
        f"({h['slack']:,} free for in-place edits)"
    )
    parts = ", ".join(a["components"]) or "no known components"
    echo(f"  architecture  {a['architecture']} ({a['layout']} layout; {parts})")
    for e in a["evidence"]:
        arrow = f" -> {e['suggests']}" if e["suggests"] else ""
        echo(f"      {e['detail']}{arrow}  [{e['source']}]")
    for c in a["conflicts"]:
        echo(f"      conflict: {c}")
    for n in a["notes"]:
        echo(f"      note: {n}")
    pred = a["prediction_type"] or ("conflicting hints" if a["prediction_hints"] else "no hints")
    echo(f"  prediction    {pred}" + (", zero terminal SNR" if a["zero_terminal_snr"] else ""))
    for hint in a["prediction_hints"]:
        echo(f"      {hint['kind']}={hint['value']}  [{hint['source']}]")
    rec = r["recipe"]
    if rec is None:
        echo("  recipe        none (embed one with `iga embed MODEL RECIPE.json`)")
    else:
        status = {True: "valid", False: "INVALID", None: "not validated"}[rec["valid"]]
        echo(f"  recipe        {rec['origin']} ({rec['path']}), {status}")
        for w in rec["warnings"] + rec["issues"]:
            echo(f"      {w}")
        shown = rec["normalized"] if rec["normalized"] is not None else rec["raw"]
        for line in json.dumps(shown, indent=2, ensure_ascii=False).splitlines():
            echo(f"      {line}")
    t = r["tensors"]
    dtypes = ", ".join(f"{k} {v['count']:,} ({_size(v['bytes'])})" for k, v in t["dtypes"].items())
    echo(f"  tensors       {t['count']:,} tensors, {_size(t['bytes'])}" + (f": {dtypes}" if dtypes else ""))
    for group, values in r["metadata"].items():
        if not values:
            continue
        echo(f"  metadata {group}")
        for k, v in values.items():
            if k == "iga.recipe":
                v = f"<recipe, {len(v):,} characters; shown above>"
            echo(f"      {k} = {_short(v)}")
    if r["hashes"]:
        hs = r["hashes"]
        echo(f"  weights sha256  {hs['weights_sha256']}  (AutoV3 {hs['autov3']}, = sshs_model_hash)")
        echo(f"  file sha256     {hs['file_sha256']}  (AutoV2 {hs['autov2']}, A1111 'Model hash')")


# --- embed ---------------------------------------------------------------------------------------------------------


def embed_command(
    path: Annotated[Path, typer.Argument(help="the .safetensors checkpoint to bind the recipe to")],
    recipe_file: Annotated[Path, typer.Argument(help="recipe file, .json or .yaml")],
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="write a new file instead of editing PATH in place")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output (schema iga.embed/1)")] = False,
) -> None:
    """Embed a recipe in a checkpoint's header, with hashes that `iga verify` can check later.

    The recipe is validated (problems are listed with their fix), then hashes.weights_sha256 (SHA-256 of the tensor
    data, unchanged by header edits) and hashes.metadata_sha256 (SHA-256 of the recipe's canonical JSON without
    `hashes`) are filled in. The recipe goes under __metadata__["iga.recipe"]; prediction type, first preferred
    resolution, clip skip and the weights hash are mirrored into modelspec.* keys. All other metadata and every tensor
    stay as they are.

    By default PATH is edited in place: when the new header fits in the old one, only the header bytes are written
    (milliseconds, protected by an undo journal); otherwise the file is rewritten by streaming to a temp file and
    renaming it over PATH, with room reserved so the next edit is in place. With -o the result goes to OUT and PATH is
    not touched. Editing changes the full-file SHA-256 (A1111 "Model hash"/AutoV2), never the weights hash (AutoV3).

    --json prints {"schema": "iga.embed/1", "path", "mode": in_place|rewrite|unchanged, "bytes_written",
    "header_length", "slack", "weights_sha256", "metadata_sha256", "warnings": [str]}.
    """
    with _errors(EMBED_SCHEMA, path if as_json else None):
        report = _embed(path, recipe_file, out)
    if as_json:
        typer.echo(dumps_strict(report, indent=2, ensure_ascii=False))
        return
    for w in report["warnings"]:
        typer.echo(f"warning: {w}", err=True)
    how = {"in_place": "edited the header in place", "rewrite": "rewrote the file", "unchanged": "nothing to change"}
    typer.echo(
        f"embedded recipe in {report['path']}: {how[report['mode']]} ({report['bytes_written']:,} bytes written; "
        f"header {report['header_length']:,} bytes, {report['slack']:,} free)"
    )
    typer.echo(f"  weights sha256   {report['weights_sha256']}")
    typer.echo(f"  recipe sha256    {report['metadata_sha256']}")


def _embed(path: Path, recipe_file: Path, out: Path | None) -> dict[str, Any]:
    from iga.checkpoint import embed_recipe_with_hashes, read_header

    read_header(path)  # fail fast on a bad checkpoint before validating the recipe
    recipe, warnings = _load_recipe(recipe_file)
    result, hashes, more = embed_recipe_with_hashes(path, recipe, out=out)
    return {
        "schema": EMBED_SCHEMA,
        "path": result.path,
        "mode": result.mode,
        "bytes_written": result.bytes_written,
        "header_length": result.new_header_len,
        "slack": result.slack,
        "weights_sha256": hashes["weights_sha256"],
        "metadata_sha256": hashes["metadata_sha256"],
        "warnings": warnings + more,
    }


def _load_recipe(recipe_file: Path) -> tuple[dict[str, Any], list[str]]:
    """The validated recipe as a plain dict, plus its warnings."""
    from iga.recipe import load_recipe_file

    try:
        model, issues = load_recipe_file(recipe_file)
    except Exception as e:
        found = getattr(e, "issues", None)
        if found:
            raise _UsageError(f"{recipe_file} is not a valid iga recipe: " + "; ".join(str(i) for i in found)) from None
        raise _UsageError(f"{recipe_file}: {_one_line(e)}") from None
    return model.to_dict(), [str(i) for i in issues if getattr(i, "severity", "warning") == "warning"]


# --- verify --------------------------------------------------------------------------------------------------------


def verify_command(
    path: Annotated[Path, typer.Argument(help="a .safetensors checkpoint with a recipe (embedded or sidecar), or a "
                                         "model id", callback=model_named)],
    rehash: Annotated[bool, typer.Option("--rehash", help="recompute the weights hash instead of trusting the "
                                         "hash cache")] = False,
    trust: Annotated[Optional[list[Path]], typer.Option("--trust", help="a publisher's public key (.pub); the "
                                                        "recipe must carry a valid signature by one of them")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output (schema iga.verify/1)")] = False,
) -> None:
    """Check that a checkpoint still matches the hashes its recipe records (and, with --trust, its signature).

    weights_sha256 is compared with the SHA-256 of the tensor data (the hash cache is used when size, mtime, inode
    and a sampled-block fingerprint are unchanged; --rehash reads everything); metadata_sha256 with the recipe's
    canonical JSON without `hashes`; header_sha256 (Recipe 1.2) with the tensor index and the other metadata. A
    hash key that an embedded recipe must carry but does not (deleted or renamed) fails too. What the recipe's
    hashes do not cover is listed.

    Exit 0 when every recorded hash matches (and the signature is trusted), 1 when one does not or one is missing
    (saying which), 2 when there is no recipe, the recipe records no hashes, or the input is bad.

    --json prints {"schema": "iga.verify/1", "path", "status": ok|mismatch|missing|untrusted|no_recipe|no_hashes|
    error, "recipe_origin", "recipe_path", "checks": [{"name", "expected", "actual", "ok"}], "missing": [...],
    "uncovered": [...], "signature": {...} | null, "message"}.
    """
    report: dict[str, Any] = {
        "schema": VERIFY_SCHEMA,
        "path": str(path),
        "status": "error",
        "recipe_origin": None,
        "recipe_path": None,
        "checks": [],
        "missing": [],
        "uncovered": [],
        "signature": None,
        "message": "",
    }
    with _errors(VERIFY_SCHEMA, path if as_json else None, report):
        code = _verify(path, report, rehash)
        if code == 0 and trust:
            code = _verify_signature(path, list(trust), report)
    if as_json:
        typer.echo(dumps_strict(report, indent=2, ensure_ascii=False))
    else:
        for c in report["checks"]:
            mark = "ok      " if c["ok"] else "MISMATCH"
            typer.echo(f"{mark} {c['name']}: recorded {c['expected']}, actual {c['actual']}")
        for name in report["missing"]:
            typer.echo(f"MISSING  {name}: the embedded recipe does not record it")
        for what in report["uncovered"]:
            typer.echo(f"not covered: {what}")
        if code == 0:
            typer.echo(report["message"])
    if code:
        typer.echo(f"error: {report['message']}", err=True)
        raise typer.Exit(code)


def _verify(path: Path, report: dict[str, Any], rehash: bool) -> int:
    import warnings

    from iga.checkpoint import find_recipe
    from iga.checkpoint.integrity import check_integrity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = find_recipe(path)
    if source is None:
        report["status"] = "no_recipe"
        report["message"] = f"{path}: no recipe (neither embedded nor in a sidecar); nothing to verify"
        return 2
    report["recipe_origin"] = source.origin
    report["recipe_path"] = source.path
    hashes = source.recipe.get("hashes")
    if not isinstance(hashes, dict) or not hashes:
        report["status"] = "no_hashes"
        report["message"] = f"{path}: the {source.origin} recipe records no hashes; run `iga embed` to add them"
        return 2
    if path.is_dir() and "weights_sha256" in hashes:
        raise _UsageError(f"{path}: weights_sha256 can be verified for single .safetensors files only")
    result = check_integrity(path, source, rehash=rehash)
    report["checks"] = [{"name": c.name, "expected": c.expected, "actual": c.actual, "ok": c.ok}
                        for c in result.checks]
    report["missing"], report["uncovered"] = result.missing, result.uncovered
    if result.problems:
        report["status"] = "mismatch" if any(not c.ok for c in result.checks) else "missing"
        report["message"] = f"{path}: " + "; ".join(why for _, why in result.problems)
        return 1
    report["status"] = "ok"
    names = ", ".join(c.name for c in result.checks)
    report["message"] = f"{path}: verified ({names} match the {source.origin} recipe)"
    return 0


def _verify_signature(path: Path, trust: list[Path], report: dict[str, Any]) -> int:
    from iga.checkpoint.signing import check_signature, read_key_file

    status = check_signature(path, [read_key_file(p) for p in trust])
    report["signature"] = status.to_dict()
    if not status.ok:
        report["status"] = "untrusted"
        report["message"] = f"{path}: {status.message}"
        return 1
    report["message"] += f"; signed by trusted key {status.key_id}"
    return 0


# --- recover -------------------------------------------------------------------------------------------------------


def recover_command(path: Annotated[Path, typer.Argument(help="a .safetensors checkpoint")]) -> None:
    """Finish or undo an in-place header edit that was interrupted (power loss), using its undo journal.

    An in-place `iga embed` first writes the old header to an undo journal in iga's cache folder (or `.NAME.iga-undo`
    next to the file when that folder is not writable) and marks it done afterwards. If an edit was cut off (power
    loss), this restores the old header unless the new one landed whole. Later iga edits do this automatically.
    Exit 0 (also when there was nothing to do), 2 on error.
    """
    from iga.checkpoint import recover_interrupted_edit

    with _errors(None, None):
        outcome = recover_interrupted_edit(path)
    messages = {
        "none": "no interrupted edit; nothing to do",
        "discarded": "the edit had not started; discarded its incomplete journal",
        "completed": "the edit had completed; closed its journal",
        "unchanged": "the edit had not reached the file; closed its journal",
        "restored": "restored the header from before the interrupted edit",
    }
    typer.echo(f"{path}: {messages[outcome]}")


# --- helpers -------------------------------------------------------------------------------------------------------


class _UsageError(Exception):
    """Bad input found by the command itself (exit 2)."""


class _errors:
    """Turn expected failures into one stderr line (plus a JSON error object with --json) and exit code 2."""

    def __init__(self, schema: str | None, json_path: Path | None, report: dict[str, Any] | None = None) -> None:
        self.schema = schema
        self.json_path = json_path
        self.report = report

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        from iga.checkpoint import CheckpointError

        if not isinstance(exc, CheckpointError | _UsageError | OSError):
            return False
        message = _one_line(exc)
        if self.report is not None and self.json_path is not None:
            self.report.update(status="error", message=message)
            typer.echo(dumps_strict(self.report, indent=2, ensure_ascii=False))
            self.json_path = None
        _fail(message, self.schema, self.json_path)


def _fail(message: str, schema: str | None, json_path: Path | None) -> NoReturn:
    if schema is not None and json_path is not None:
        typer.echo(dumps_strict({"schema": schema, "path": str(json_path), "error": message}, indent=2))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} bytes"


def _short(v: str, limit: int = 160) -> str:
    v = v.replace("\n", "\\n")
    return v if len(v) <= limit else v[: limit - 3] + f"... ({len(v):,} characters)"
