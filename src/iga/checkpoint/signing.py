"""Signed recipes: a publisher signs a checkpoint's recipe and hashes with an Ed25519 key; users check it.

Trust model
-----------
A valid signature from a key you trust proves one thing: the holder of that private key approved exactly this
recipe (every field, byte for byte after canonical JSON) for weights whose SHA-256 is exactly the one the recipe
records. Through that recorded hash the signature binds the weights too: change one tensor byte and the weights no
longer match the signed hash.

It does not prove:

- that the weights are safe, good, legal or what their name says: a signature is an approval, not an audit;
- that the key belongs to whom you think: iga does not distribute keys. A public key is trusted because you passed
  it with ``--trust`` (or configured it); get it from the publisher over a channel you already trust, and compare its
  key id (shown by ``iga keygen``, ``iga sign`` and ``iga check-signature``);
- that the file's tensors still have the recorded hash: checking a signature reads the header only (milliseconds).
  ``iga verify`` (or ``check_signature(..., check_weights=True)``) recomputes the weights hash;
- anything about other metadata (``modelspec.*``, kohya ``ss_*``, titles, thumbnails): only the recipe is signed;
- when it was signed, or that the key was not revoked since: there are no timestamps and no revocation lists.
  Remove a key from your trusted list to stop trusting it.

Whoever holds the private key can sign anything; keep ``.key`` files private (``iga keygen`` writes them mode 0600).

What is signed
--------------
The payload is the canonical JSON (sorted keys, no spaces, UTF-8) of::

    {"schema": "iga.signature/1",
     "recipe_sha256": <recipe_metadata_sha256 of the recipe: SHA-256 of its canonical JSON without "hashes">,
     "weights_sha256": <the recipe's hashes.weights_sha256; required>,
     "hashes": <the recipe's whole "hashes" object>}

so the signature covers the recipe text and every hash it records. Verification rebuilds the payload from the file's
current recipe and compares it with the signed one: any later edit of the recipe or its hashes makes the signature
``stale``, even though the signature bytes themselves are still valid.

Where it lives
--------------
The signature record is the JSON object
``{"alg": "ed25519", "key_id", "public_key" (base64 of the raw 32 bytes), "payload" (the payload JSON as a string),
"signature" (base64 of the 64-byte Ed25519 signature of the payload's UTF-8 bytes)}``.

- Embedded recipe: the record is the string value of the ``__metadata__`` key ``"iga.signature"``, written with the
  same safe header edit as ``iga embed`` (in place with an undo journal when it fits).
- Sidecar recipe (``model.iga.json``, or ``iga.json`` in a diffusers folder): the record is the file next to it with
  ``iga-signature.json`` in place of ``iga.json`` (``model.iga-signature.json``, ``iga-signature.json``).

One signature per recipe: signing again replaces it. Re-embedding a recipe leaves the old signature in place, where
it shows as ``stale`` until the publisher signs again.

Keys are PEM files: PKCS#8 private keys (unencrypted; protect them by file permissions) and SubjectPublicKeyInfo
public keys. A trusted-keys file may hold several public keys one after another. A key id is the first 16 hex digits
of the SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from iga.checkpoint.errors import CheckpointError

SIGNATURE_KEY = "iga.signature"
"""The ``__metadata__`` key that holds the signature record of an embedded recipe."""

PAYLOAD_SCHEMA = "iga.signature/1"
ALGORITHM = "ed25519"
SIDECAR_RECIPE_NAME = "iga.json"
SIDECAR_SIGNATURE_NAME = "iga-signature.json"
MAX_SIGNATURE_BYTES = 64 * 1024
"""A record is well under 1 KiB plus the hashes; anything much larger is not ours and is not parsed."""

MAX_KEY_FILE_BYTES = 1024 * 1024

Status = Literal["signed_trusted", "signed_untrusted_key", "bad_signature", "stale", "unsigned"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PEM_PUBLIC_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.S)


class SigningError(CheckpointError):
    """A model cannot be signed or checked as asked (no recipe, no hashes, unusable key)."""


@dataclass(frozen=True, slots=True)
class SignatureStatus:
    """The outcome of checking a model's signature against a list of trusted keys."""

    status: Status
    key_id: str | None
    """Id of the key that made the signature (None when unsigned or unreadable)."""
    message: str
    """One line saying what was found and, when not trusted, what to do."""
    location: str | None = None
    """Where the signature record is: the model file (header) or the sidecar signature file."""

    @property
    def ok(self) -> bool:
        """Whether a trusted key signed exactly the current recipe and hashes."""
        return self.status == "signed_trusted"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {"status": self.status, "ok": self.ok, "key_id": self.key_id, "message": self.message,
                "location": self.location}


@dataclass(frozen=True, slots=True)
class SignResult:
    """What ``sign_model`` wrote."""

    key_id: str
    location: str
    """The model file (signature in its header) or the sidecar signature file."""
    origin: Literal["embedded", "sidecar"]
    payload: dict[str, Any]


# --- keys ----------------------------------------------------------------------------------------------------------


def generate_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, PKCS#8 unencrypted; public PEM, SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def key_id(public_key: Any) -> str:
    """First 16 hex digits of SHA-256 of the raw 32-byte public key (an Ed25519PublicKey, raw bytes or a PEM)."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def load_private_key(private_pem: bytes, *, where: str | None = None) -> Any:
    """The Ed25519 private key in ``private_pem``; SigningError (saying how to fix it) for anything else."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except TypeError:  # raised for encrypted keys when no password is given
        raise SigningError("the private key is encrypted", path=where,
                           hint="iga reads unencrypted PKCS#8 keys (protect the file by its permissions); "
                                "make one with `iga keygen`.") from None
    except (ValueError, binascii.Error):
        raise SigningError("not a PEM private key", path=where,
                           hint="Pass the .key file written by `iga keygen` (not the .pub file).") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"the private key is {type(key).__name__.lstrip('_')}, not Ed25519", path=where,
                           hint="Make an Ed25519 key with `iga keygen`.")
    return key


def load_public_keys(pem: bytes, *, where: str | None = None) -> list[Any]:
    """Every Ed25519 public key in ``pem`` (one PEM block or several after another); SigningError if none."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    blocks = _PEM_PUBLIC_BLOCK.findall(pem)
    if not blocks:
        hint = ("This looks like a private key: trust the .pub file instead."
                if b"PRIVATE KEY" in pem else "Pass a .pub file written by `iga keygen`.")
        raise SigningError("no PEM public key (-----BEGIN PUBLIC KEY-----) found", path=where, hint=hint)
    keys = []
    for i, block in enumerate(blocks, 1):
        try:
            key = serialization.load_pem_public_key(block)
        except (ValueError, binascii.Error):
            raise SigningError(f"public key {i} is not valid PEM", path=where) from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningError(f"public key {i} is {type(key).__name__.lstrip('_')}, not Ed25519", path=where,
                               hint="iga signatures use Ed25519 keys made by `iga keygen`.")
        keys.append(key)
    return keys


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a key file (at most 1 MiB), or SigningError saying why not."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise SigningError(f"cannot read key file ({e.strerror})", path=p) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SigningError("key file is over 1 MiB; not a key", path=p)
    return data


def write_key_pair(prefix: str | os.PathLike[str]) -> tuple[str, str, str]:
    """Write a new key pair to PREFIX.key (mode 0600) and PREFIX.pub; never overwrites. Returns (key, pub, key id)."""
    base = os.fspath(prefix)
    key_path, pub_path = base + ".key", base + ".pub"
    for p in (key_path, pub_path):
        if os.path.lexists(p):
            raise SigningError("already exists; iga never overwrites a key", path=p,
                               hint="Choose another prefix, or move the old key away first.")
    private_pem, public_pem = generate_key()
    _write_new_file(key_path, private_pem, 0o600)
    try:
        _write_new_file(pub_path, public_pem, 0o644)
    except BaseException:
        os.unlink(key_path)  # half a pair is useless and confusing
        raise
    return key_path, pub_path, key_id(public_pem)


# --- signing -------------------------------------------------------------------------------------------------------


def signing_payload(recipe: dict[str, Any], *, where: str | None = None) -> dict[str, Any]:
    """The payload a signature covers for ``recipe`` (see module doc); SigningError when it records no weights hash."""
    from iga.recipe.canonical import recipe_metadata_sha256

    hashes = recipe.get("hashes")
    weights = hashes.get("weights_sha256") if isinstance(hashes, dict) else None
    if not isinstance(weights, str) or not _HEX64.match(weights):
        raise SigningError(
            "the recipe records no hashes.weights_sha256 (64 lowercase hex digits), so a signature could not bind "
            "the weights", path=where,
            hint="Run `iga embed MODEL RECIPE` (it records the hashes), check them with `iga verify MODEL`, then sign.")
    return {"schema": PAYLOAD_SCHEMA, "recipe_sha256": recipe_metadata_sha256(recipe), "weights_sha256": weights,
            "hashes": hashes}


def sign_model(path: str | os.PathLike[str], private_pem: bytes, *, check_hashes: bool = True) -> SignResult:
    """Sign the recipe of the model at ``path`` (embedded, else sidecar) with an Ed25519 private key in PEM.

    With ``check_hashes`` (the default) the recorded hashes are checked first, so a publisher never signs a
    recipe that no longer matches its file: metadata_sha256 against the recipe, weights_sha256 against the tensor
    data (reads the whole file once; cached). Replaces any earlier signature.
    """
    from iga.recipe.canonical import canonical_json

    p = os.fspath(path)
    key = load_private_key(private_pem)
    source = _find_recipe(p)
    if source is None:
        raise SigningError("no recipe to sign (neither embedded nor in a sidecar)", path=p,
                           hint="Embed one first with `iga embed MODEL RECIPE`.")
    payload = signing_payload(source.recipe, where=source.path)
    if check_hashes:
        _check_recorded_hashes(p, source.recipe)
    payload_text = canonical_json(payload).decode("utf-8")
    public = key.public_key()
    record = {
        "alg": ALGORITHM,
        "key_id": key_id(public),
        "public_key": base64.b64encode(_raw_public(public)).decode("ascii"),
        "payload": payload_text,
        "signature": base64.b64encode(key.sign(payload_text.encode("utf-8"))).decode("ascii"),
    }
    location = _store_record(p, source, record)
    return SignResult(record["key_id"], location, source.origin, payload)


# --- checking ------------------------------------------------------------------------------------------------------


def check_signature(
    path: str | os.PathLike[str], trusted_public_pems: Iterable[bytes], *, check_weights: bool = False
) -> SignatureStatus:
    """Check the signature of the model at ``path`` against trusted public keys (PEM bytes, one or more per item).

    Reads the header only, unless ``check_weights`` (then the tensor data is hashed too and must match the signed
    weights_sha256, else ``stale``). Raises CheckpointError only for bad input (missing or corrupt model, unusable
    trusted key); every finding about the signature is a status.
    """
    p = os.fspath(path)
    trusted = {key_id(k) for pem in trusted_public_pems for k in load_public_keys(pem)}
    source = _find_recipe(p)
    location, text = _load_record(p, source)
    if text is None:
        why = "no recipe" if source is None else f"the {source.origin} recipe carries no signature"
        return SignatureStatus("unsigned", None, f"{p}: unsigned ({why}); a publisher signs with `iga sign`")
    parsed = _parse_record(text)
    if isinstance(parsed, str):
        return SignatureStatus("bad_signature", None, f"{location}: unusable signature record: {parsed}", location)
    public, payload_text, signature = parsed
    kid = key_id(public)
    if not _valid(public, payload_text, signature):
        return SignatureStatus("bad_signature", kid, f"{location}: the signature does not match its payload and key "
                               f"{kid} (corrupted or forged)", location)
    stale = _staleness(p, source, payload_text, check_weights)
    if stale:
        return SignatureStatus("stale", kid, f"{p}: signature by key {kid} is stale: {stale}; the publisher must sign "
                               "again", location)
    if kid not in trusted:
        known = ", ".join(sorted(trusted)) or "none given"
        return SignatureStatus("signed_untrusted_key", kid, f"{p}: signed by key {kid}, which is not a trusted key "
                               f"(trusted: {known})", location)
    return SignatureStatus("signed_trusted", kid, f"{p}: signed by trusted key {kid}; the {source.origin} recipe and "
                           "its hashes are exactly what was signed", location)


# --- helpers -------------------------------------------------------------------------------------------------------


def _find_recipe(path: str) -> Any:
    from iga.checkpoint.sidecar import find_recipe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an embedded/sidecar conflict is `iga inspect`'s to report
        return find_recipe(path)


def _sidecar_signature_path(sidecar_recipe: str) -> str:
    """``model.iga.json`` -> ``model.iga-signature.json``; ``iga.json`` -> ``iga-signature.json`` (same folder)."""
    folder, name = os.path.split(sidecar_recipe)
    stem = name[: -len(SIDECAR_RECIPE_NAME)] if name.endswith(SIDECAR_RECIPE_NAME) else name + "."
    return os.path.join(folder, stem + SIDECAR_SIGNATURE_NAME)


def _store_record(path: str, source: Any, record: dict[str, str]) -> str:
    from iga.checkpoint import _io
    from iga.checkpoint.embed import update_metadata

    if source.origin == "embedded":
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return update_metadata(path, {SIGNATURE_KEY: text}).path
    target = _sidecar_signature_path(source.path)
    data = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
    _io.write_bytes_atomic(target, data)
    return target


def _load_record(path: str, source: Any) -> tuple[str | None, str | None]:
    """(location, record text) of the signature belonging to the recipe in use, (None, None) when there is none.

    An embedded recipe's signature is in the header; a sidecar recipe's in the sidecar signature file. With no recipe
    at all, a header signature still counts (it is then stale: what it signed is gone).
    """
    if source is None or source.origin == "embedded":
        if not os.path.isfile(path) or _is_pickle(path):
            return None, None
        from iga.checkpoint.header import read_header

        text = read_header(path).metadata.get(SIGNATURE_KEY)
        return (path, text) if text is not None else (None, None)
    sig = _sidecar_signature_path(source.path)
    try:
        with open(sig, "rb") as f:
            raw = f.read(MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        raise SigningError(f"cannot read the signature file ({e.strerror})", path=sig) from None
    return sig, raw.decode("utf-8", "replace")


def _parse_record(text: str) -> tuple[Any, str, bytes] | str:
    """(public key, payload text, signature bytes) from a record, or a string saying what is wrong with it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(text.encode("utf-8", "surrogatepass")) > MAX_SIGNATURE_BYTES:
        return f"over {MAX_SIGNATURE_BYTES:,} bytes"
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return "not valid JSON"
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("alg") != ALGORITHM:
        return f"algorithm {record.get('alg')!r} is not {ALGORITHM!r}"
    fields = [record.get(k) for k in ("public_key", "payload", "signature")]
    if not all(isinstance(v, str) for v in fields):
        return "public_key, payload and signature must be strings"
    public_b64, payload_text, signature_b64 = fields
    try:
        raw_public = base64.b64decode(public_b64, validate=True)
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return "public_key or signature is not base64"
    if len(raw_public) != 32 or len(signature) != 64:
        return "an Ed25519 public key is 32 bytes and a signature 64"
    public = Ed25519PublicKey.from_public_bytes(raw_public)
    if record.get("key_id") != key_id(public):
        return f"key_id {record.get('key_id')!r} is not the id of its public key ({key_id(public)})"
    return public, payload_text, signature


def _valid(public: Any, payload_text: str, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(signature, payload_text.encode("utf-8", "surrogatepass"))
    except InvalidSignature:
        return False
    return True


def _staleness(path: str, source: Any, payload_text: str, check_weights: bool) -> str | None:
    """Why the signed payload no longer describes the model (None when it still does)."""
    from iga.recipe.canonical import canonical_json

    if source is None:
        return "the recipe it signed is no longer in the file"
    try:
        current = signing_payload(source.recipe)
    except SigningError:
        return "the recipe no longer records hashes.weights_sha256"
    if canonical_json(current).decode("utf-8") != payload_text:
        try:
            signed = json.loads(payload_text)
        except ValueError:
            signed = {}
        changed = [k for k in ("recipe_sha256", "weights_sha256", "hashes") if current.get(k) != signed.get(k)]
        what = {"recipe_sha256": "the recipe", "weights_sha256": "the recorded weights hash",
                "hashes": "the recorded hashes"}
        return "changed since signing: " + (", ".join(what[k] for k in changed) or "the payload format")
    if check_weights:
        from iga.checkpoint.hashing import weights_sha256

        if not os.path.isfile(path) or _is_pickle(path):
            return "the weights cannot be hashed here (not a single .safetensors file)"
        if weights_sha256(path) != current["weights_sha256"]:
            return "the tensor data no longer has the signed weights_sha256"
    return None


def _check_recorded_hashes(path: str, recipe: dict[str, Any]) -> None:
    """Refuse to sign hashes that are already wrong: signing must approve the file as it is."""
    from iga.recipe.canonical import recipe_metadata_sha256

    hashes = recipe["hashes"]
    recorded_meta = hashes.get("metadata_sha256")
    if isinstance(recorded_meta, str) and recorded_meta != recipe_metadata_sha256(recipe):
        raise SigningError("the recipe was edited after its hashes were recorded (metadata_sha256 differs)",
                           path=path, hint="Re-embed it with `iga embed MODEL RECIPE`, then sign.")
    if os.path.isfile(path) and not _is_pickle(path):
        from iga.checkpoint.hashing import weights_sha256

        if weights_sha256(path) != hashes["weights_sha256"]:
            raise SigningError("the tensor data does not have the weights_sha256 the recipe records", path=path,
                               hint="Sign only the file the recipe was made for; `iga verify MODEL` shows the "
                                    "mismatch, `iga embed MODEL RECIPE` records the current hash.")


def _raw_public(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    if isinstance(public_key, bytes | bytearray):
        if len(public_key) == 32:
            return bytes(public_key)
        public_key = load_public_keys(bytes(public_key))[0]
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _is_pickle(path: str) -> bool:
    from iga.checkpoint.header import PICKLE_SUFFIXES

    return os.path.splitext(path)[1].lower() in PICKLE_SUFFIXES


def _write_new_file(path: str, data: bytes, mode: int) -> None:
    # O_EXCL: fail rather than overwrite, even if the file appeared after the existence check.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise SigningError("already exists; iga never overwrites a key", path=path) from None
    except OSError as e:
        raise SigningError(f"cannot create key file ({e.strerror})", path=path) from None
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits; a private key must be exactly 0600
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
