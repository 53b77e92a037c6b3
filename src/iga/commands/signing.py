"""`iga keygen`, `iga sign`, `iga check-signature`: publishers sign recipes with Ed25519 keys, users check them.

What a signature proves and what it does not: see the module doc of iga.checkpoint.signing.
Exit codes: 0 ok (for check-signature: signed by a trusted key), 1 signature not trusted (unsigned, bad, stale,
untrusted key), 2 bad input or usage (one `error: ...` line on stderr, no traceback).
Top-level imports stay light (typer and the standard library); cryptography is imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from iga.commands.guard import model_named
from iga.provenance.jsonutil import dumps_strict

CHECK_SCHEMA = "iga.check-signature/1"
SIGN_SCHEMA = "iga.sign/1"


def register(app: typer.Typer) -> None:
    """Add the signing commands to the `iga` app."""
    app.command("keygen")(keygen_command)
    app.command("sign")(sign_command)
    app.command("check-signature")(check_signature_command)


def keygen_command(
    out_prefix: Annotated[Path, typer.Argument(help="writes OUT_PREFIX.key (private) and OUT_PREFIX.pub (public)")],
) -> None:
    """Make an Ed25519 key pair for signing recipes.

    OUT_PREFIX.key is the private key (PKCS#8 PEM, unencrypted, mode 0600): keep it secret, anyone holding it can
    sign as you. OUT_PREFIX.pub is the public key (PEM) to give to users, who pass it to `--trust`. Existing files
    are never overwritten. Prints the key id users can compare with what `iga check-signature` shows.
    """
    from iga.checkpoint.signing import write_key_pair

    with _errors():
        key_path, pub_path, kid = write_key_pair(out_prefix)
    typer.echo(f"private key  {key_path}  (mode 0600; keep it secret)")
    typer.echo(f"public key   {pub_path}  (give this to users: `iga check-signature MODEL --trust {pub_path}`)")
    typer.echo(f"key id       {kid}")


def sign_command(
    model: Annotated[Path, typer.Argument(help="a checkpoint with a recipe (embedded or sidecar)")],
    key: Annotated[Path, typer.Option("--key", help="private key file from `iga keygen` (.key)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output (schema iga.sign/1)")] = False,
) -> None:
    """Sign a model's recipe and its recorded hashes with an Ed25519 private key.

    The recipe must record hashes.weights_sha256 (`iga embed` adds it); the recorded hashes are checked against the
    file first (reads the whole file once, cached), so you never sign a recipe that does not match. An embedded
    recipe gets its signature in the header (`iga.signature`, same safe edit as `iga embed`); a sidecar recipe
    `X.iga.json` gets `X.iga-signature.json` next to it. Signing again replaces the signature.

    --json prints {"schema": "iga.sign/1", "path", "key_id", "location", "origin": embedded|sidecar, "payload"}.
    """
    from iga.checkpoint.signing import read_key_file, sign_model

    with _errors(SIGN_SCHEMA, model if as_json else None):
        result = sign_model(model, read_key_file(key))
    if as_json:
        typer.echo(dumps_strict({"schema": SIGN_SCHEMA, "path": str(model), "key_id": result.key_id,
                                 "location": result.location, "origin": result.origin, "payload": result.payload},
                                indent=2, ensure_ascii=False))
        return
    typer.echo(f"signed the {result.origin} recipe of {model} with key {result.key_id}")
    typer.echo(f"  signature in     {result.location}")
    typer.echo(f"  weights sha256   {result.payload['weights_sha256']}")
    typer.echo(f"  recipe sha256    {result.payload['recipe_sha256']}")


def check_signature_command(
    model: Annotated[Path, typer.Argument(help="a checkpoint with a recipe (embedded or sidecar), or a model id",
                                          callback=model_named)],
    trust: Annotated[
        list[Path] | None,
        typer.Option("--trust", help="trusted public key file (.pub; may hold several keys); repeatable"),
    ] = None,
    check_weights: Annotated[
        bool, typer.Option("--hash", help="also recompute the weights hash and require the signed one (reads the file)")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="machine-readable output (schema iga.check-signature/1)")
    ] = False,
) -> None:
    """Check that a trusted key signed exactly this model's recipe and recorded hashes.

    Exit 0 when a --trust key signed the current recipe; 1 when the model is unsigned, the signature is bad
    (corrupted or forged), stale (recipe or hashes changed after signing) or by a key not in --trust; 2 on bad input.
    Only the header is read unless --hash is given (`iga verify` also recomputes hashes).

    A valid signature proves that the key holder approved this recipe for weights with this hash, nothing more: not
    that the weights are safe, and not who holds the key (get .pub files from the publisher over a channel you trust).

    --json prints {"schema": "iga.check-signature/1", "path", "status": signed_trusted|signed_untrusted_key|
    bad_signature|stale|unsigned|error, "ok", "key_id", "message", "location"}.
    """
    from iga.checkpoint.signing import check_signature, read_key_file

    with _errors(CHECK_SCHEMA, model if as_json else None):
        pems = [read_key_file(p) for p in trust or []]
        result = check_signature(model, pems, check_weights=check_weights)
    if as_json:
        typer.echo(dumps_strict({"schema": CHECK_SCHEMA, "path": str(model), **result.to_dict()}, indent=2,
                                ensure_ascii=False))
    elif result.ok:
        typer.echo(result.message)
    if not result.ok:
        typer.echo(f"error: {result.message}", err=True)
        raise typer.Exit(1)


# --- helpers -------------------------------------------------------------------------------------------------------


class _errors:
    """Turn expected failures into one stderr line (plus a JSON error object with --json) and exit code 2."""

    def __init__(self, schema: str | None = None, json_path: Path | None = None) -> None:
        self.schema = schema
        self.json_path = json_path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        from iga.checkpoint import CheckpointError

        if not isinstance(exc, CheckpointError | OSError):
            return False
        _fail(_one_line(exc), self.schema, self.json_path)


def _fail(message: str, schema: str | None, json_path: Path | None) -> NoReturn:
    if schema is not None and json_path is not None:
        typer.echo(dumps_strict({"schema": schema, "path": str(json_path), "status": "error", "error": message},
                                indent=2))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
