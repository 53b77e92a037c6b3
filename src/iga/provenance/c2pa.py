"""C2PA Content Credentials for iga images (optional extra: ``pip install iga-diffusion[c2pa]``).

``sign_image`` adds a signed C2PA manifest to a PNG, JPEG (or WebP) file iga wrote; ``read_manifest`` reads one
back and reports whether it validates. The manifest holds two assertions:

- ``c2pa.actions``: one ``c2pa.created`` action by iga, digital source type "trainedAlgorithmicMedia";
- ``org.iga.provenance`` (schema ``iga.c2pa/1``): generator (``iga <version>``), iga_version of the plan, model
  name, weights_sha256, recipe_sha256, plan_schema and ``plan_sha256``: the SHA-256 of the canonical plan JSON
  (``canonical_plan_json``: sorted keys, no spaces, UTF-8, ``schema`` added as when saved). The plan itself stays
  in iga's own metadata (PNG text chunks / EXIF), which C2PA's hard binding covers: editing it breaks validation.

Credentials: one PEM file holding the certificate chain (signing certificate first, then its issuers) and the
private key (PKCS#8, SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"; unencrypted). The algorithm follows the
key: P-256/384/521 -> ES256/384/512, Ed25519, RSA -> PS256. C2PA needs a certificate chain issued by a CA (a
self-signed signing certificate is refused) with digitalSignature key usage and an extended key usage such as
emailProtection or documentSigning. No timestamp authority is used, and nothing goes to the network: OCSP and
remote manifests are never fetched.

Validation: ``state`` is c2pa's "Trusted" (valid and the signer chains to a configured trust anchor), "Valid"
(well-formed, signature and content hashes match, signer not on a trust list; iga configures none) or
"Invalid". Files are untrusted input: every c2pa failure becomes one ``ProvenanceError`` line.

``c2pa`` (and ``cryptography``, which it depends on) are imported only when used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iga.provenance.errors import ProvenanceError
from iga.provenance.read import detect_format

ASSERTION_LABEL = "org.iga.provenance"
ASSERTION_SCHEMA = "iga.c2pa/1"
INSTALL_HINT = "C2PA needs the optional extra: pip install iga-diffusion[c2pa]"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MAX_FILE_BYTES = 512 * 1024 * 1024  # a manifest is read only from files up to this size
MAX_PEM_BYTES = 1024 * 1024
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)
# no network from a library call on untrusted files: no OCSP, no remote manifests
_SETTINGS = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}


def available() -> bool:
    """True when the c2pa extra (``c2pa-python``) can be imported."""
    try:
        import c2pa  # noqa: F401
    except Exception:  # ImportError, or a native library that fails to load
        return False
    return True


def _c2pa() -> Any:
    try:
        import c2pa
    except Exception as exc:
        raise ProvenanceError(INSTALL_HINT) from exc
    return c2pa


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300] + ("..." if len(text) > 300 else "")


def _context(c2pa: Any) -> Any:
    return c2pa.Context.from_dict(_SETTINGS)


# ---------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """A signing certificate chain and its private key, checked to belong together."""

    cert_chain_pem: bytes  # signing certificate first
    key_pem: bytes  # PKCS#8, as c2pa wants it
    alg: str  # ES256, ES384, ES512, Ed25519 or PS256
    subject: str


def _alg_for(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name)
        if alg is None:
            raise ProvenanceError(f"EC key on curve {key.curve.name}: C2PA signs with P-256, P-384 or P-521")
        return alg
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "PS256"
    raise ProvenanceError(f"unsupported private key type {type(key).__name__}: use EC (P-256), Ed25519 or RSA")


def parse_credentials(cert_chain_pem: bytes | str, key_pem: bytes | str | None = None, *,
                      where: str = "credentials") -> Credentials:
    """Check a PEM certificate chain and private key (both may be in ``cert_chain_pem`` when ``key_pem`` is None)."""
    _c2pa()  # the extra brings cryptography
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    blob = cert_chain_pem.encode() if isinstance(cert_chain_pem, str) else bytes(cert_chain_pem)
    if key_pem is not None:
        blob += b"\n" + (key_pem.encode() if isinstance(key_pem, str) else bytes(key_pem))
    blocks = [(m.group(1).decode(), m.group(0)) for m in _PEM_BLOCK.finditer(blob)]
    certs = [b for kind, b in blocks if kind == "CERTIFICATE"]
    keys = [(kind, b) for kind, b in blocks if kind.endswith("PRIVATE KEY")]
    if any(kind == "ENCRYPTED PRIVATE KEY" for kind, _ in keys):
        raise ProvenanceError(f"{where}: the private key is encrypted; store it unencrypted (e.g. "
                              "openssl pkey -in key.pem -out plain.pem) and keep the file private")
    if not certs:
        raise ProvenanceError(f"{where}: no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    if len(keys) != 1:
        raise ProvenanceError(f"{where}: expected one PEM private key, found {len(keys)}")
    try:
        key = serialization.load_pem_private_key(keys[0][1], password=None)
    except Exception as exc:
        raise ProvenanceError(f"{where}: the private key cannot be read: {_one_line(exc)}") from None
    try:
        leaf = x509.load_pem_x509_certificate(certs[0])
        for extra in certs[1:]:
            x509.load_pem_x509_certificate(extra)
    except Exception as exc:
        raise ProvenanceError(f"{where}: a certificate cannot be read: {_one_line(exc)}") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (leaf.public_key().public_bytes(serialization.Encoding.DER, pub)
            != key.public_key().public_bytes(serialization.Encoding.DER, pub)):
        raise ProvenanceError(f"{where}: the private key does not belong to the first (signing) certificate")
    alg = _alg_for(key)
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    return Credentials(b"".join(c + b"\n" for c in certs), pkcs8, alg, leaf.subject.rfc4514_string())


def load_credentials(path: str | os.PathLike[str]) -> Credentials:
    """Read and check one PEM file holding the certificate chain and the private key."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_PEM_BYTES:
            raise ProvenanceError(f"{p}: larger than {MAX_PEM_BYTES} bytes; not a PEM certificate + key file")
        data = p.read_bytes()
    except OSError as exc:
        raise ProvenanceError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse_credentials(data, where=str(p))


def _signer(c2pa: Any, creds: Credentials) -> Any:
    try:
        alg = getattr(c2pa.C2paSigningAlg, creds.alg.upper())
        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, creds.cert_chain_pem, creds.key_pem, None))
    except Exception as exc:
        raise ProvenanceError(f"C2PA signer rejected the credentials: {_one_line(exc)}") from None


def check_credentials(creds: Credentials) -> None:
    """Fail early (one line) when c2pa will not sign with these credentials: signs a tiny image in memory."""
    import io

    from PIL import Image

    c2pa = _c2pa()
    src = io.BytesIO()
    Image.new("RGB", (8, 8)).save(src, "PNG")
    src.seek(0)
    _sign_stream(c2pa, creds, _manifest("check.png", "image/png", None), "image/png", src, io.BytesIO())


# ---------------------------------------------------------------------------------------------------- plan


def canonical_plan_json(plan: Any) -> str:
    """The plan as canonical JSON (sorted keys, compact, UTF-8, ``schema`` added as when saved)."""
    from iga.provenance.planjson import dump_plan

    return json.dumps(json.loads(dump_plan(plan)), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def plan_sha256(plan: Any) -> str:
    """SHA-256 (hex) of ``canonical_plan_json(plan)``."""
    return hashlib.sha256(canonical_plan_json(plan).encode("utf-8")).hexdigest()


def iga_assertion(plan: Any) -> dict[str, Any]:
    """The ``org.iga.provenance`` assertion for a plan."""
    from iga import __version__
    from iga.provenance.planjson import plan_to_dict

    data = plan_to_dict(plan)
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    return {"schema": ASSERTION_SCHEMA, "generator": f"iga {__version__}", "iga_version": data.get("iga_version"),
            "plan_schema": data.get("schema") or "iga.plan/1",
            "model": {"name": model.get("name"), "weights_sha256": model.get("weights_sha256"),
                      "recipe_sha256": model.get("recipe_sha256")},
            "recipe_sha256": model.get("recipe_sha256"), "plan_sha256": plan_sha256(data)}


# ------------------------------------------------------------------------------------------------- signing


def _manifest(title: str, mime: str, assertion: dict[str, Any] | None) -> dict[str, Any]:
    from iga import __version__

    assertions: list[dict[str, Any]] = [{"label": "c2pa.actions", "data": {"actions": [{
        "action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "softwareAgent": {"name": "iga", "version": __version__}}]}}]
    if assertion is not None:
        assertions.append({"label": ASSERTION_LABEL, "data": assertion})
    return {"claim_generator_info": [{"name": "iga", "version": __version__}], "title": title, "format": mime,
            "assertions": assertions}


def _sign_stream(c2pa: Any, creds: Credentials, manifest: dict[str, Any], mime: str, src: Any, dst: Any) -> None:
    signer = _signer(c2pa, creds)
    try:
        with c2pa.Builder(manifest, context=_context(c2pa)) as builder:
            builder.sign(signer, mime, src, dst)
    except ProvenanceError:
        raise
    except Exception as exc:  # C2paError and friends
        raise ProvenanceError(f"C2PA signing failed: {_one_line(exc)}") from None
    finally:
        with contextlib.suppress(Exception):
            signer.close()


def sign_image(path: str | os.PathLike[str], cert_chain_pem: bytes | str | Credentials,
               key_pem: bytes | str | None = None, *, plan: Any) -> dict[str, Any]:
    """Add a signed C2PA manifest for ``plan`` to the image at ``path``; returns the iga assertion written.

    ``cert_chain_pem``: PEM certificates (signing certificate first), or ``Credentials``; ``key_pem``: the PEM
    private key (None when ``cert_chain_pem`` holds it too). The signed image is written to a temp file beside
    the original, fsynced, and renamed over it: the file is either the old image or the signed one, never half.
    """
    c2pa = _c2pa()
    creds = (cert_chain_pem if isinstance(cert_chain_pem, Credentials)
             else parse_credentials(cert_chain_pem, key_pem))
    target = Path(path)
    assertion = iga_assertion(plan)
    try:
        with open(target, "rb") as src:
            fmt = detect_format(src.read(12))
            src.seek(0)
            mime = _MIME[fmt]
            manifest = _manifest(target.name, mime, assertion)
            mode = os.fstat(src.fileno()).st_mode & 0o7777
            tmp = target.with_name(f".iga-c2pa-{secrets.token_hex(8)}.tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                with os.fdopen(fd, "w+b") as dst:
                    _sign_stream(c2pa, creds, manifest, mime, src, dst)
                    dst.flush()
                    os.fsync(dst.fileno())
                os.chmod(tmp, mode)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except OSError as exc:
        raise ProvenanceError(f"{target}: cannot sign: {exc.strerror or exc}") from None
    from iga.provenance.save import _fsync_dir

    _fsync_dir(target.parent)
    return assertion


# ------------------------------------------------------------------------------------------------- reading


def _status_line(state: str | None, failures: list[str]) -> str:
    if state == "Trusted":
        return "valid, signer trusted"
    if state == "Valid":
        return "valid signature and content hashes; signer not on a trust list"
    return "INVALID: " + (", ".join(c for c in failures if c != "signingCredential.untrusted") or "see failures")


def read_manifest(path: str | os.PathLike[str], *, plan: Any = None) -> dict[str, Any] | None:
    """The validated summary of an image's C2PA manifest, or None when it has none.

    Keys: state (Trusted|Valid|Invalid), valid (bool: state is not Invalid), trusted, status (one line),
    failures (validation failure codes), title, label, claim_generator, signer {common_name, issuer, alg,
    time, cert_serial_number}, actions (action names), iga (the ``org.iga.provenance`` assertion, or None) and
    plan_matches (True/False when ``plan`` is given and the assertion carries plan_sha256, else None).
    """
    c2pa = _c2pa()
    p = Path(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            fmt = detect_format(f.read(12))
            if size > MAX_FILE_BYTES:
                raise ProvenanceError(f"{size} bytes: too large to check its C2PA manifest (limit {MAX_FILE_BYTES})")
            f.seek(0)
            try:
                reader = c2pa.Reader.try_create(_MIME[fmt], f, context=_context(c2pa))
                if reader is None:
                    return None
                with reader:
                    state = reader.get_validation_state()
                    results = reader.get_validation_results() or {}
                    active = reader.get_active_manifest() or {}
            except ProvenanceError:
                raise
            except Exception as exc:
                raise ProvenanceError(f"C2PA manifest cannot be read: {_one_line(exc)}") from None
    except OSError as exc:
        raise ProvenanceError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return _summary(state, results, active, plan)


def _summary(state: Any, results: Any, active: Any, plan: Any) -> dict[str, Any]:
    def text(v: Any) -> str | None:
        return v[:500] if isinstance(v, str) else None

    failures: list[str] = []
    am = results.get("activeManifest") if isinstance(results, dict) else None
    for bucket in ([am] if isinstance(am, dict) else []) + (
            [d for d in results.get("ingredientDeltas", []) if isinstance(d, dict)]
            if isinstance(results, dict) and isinstance(results.get("ingredientDeltas"), list) else []):
        found = bucket.get("failure") or bucket.get("validationDeltas", {}).get("failure", [])
        failures += [text(x.get("code")) or "?" for x in found if isinstance(x, dict)] if isinstance(found, list) else []
    state = text(state) or ("Invalid" if failures else None)
    active = active if isinstance(active, dict) else {}
    sig = active.get("signature_info") if isinstance(active.get("signature_info"), dict) else {}
    gens = active.get("claim_generator_info")
    gen = gens[0] if isinstance(gens, list) and gens and isinstance(gens[0], dict) else {}
    iga = None
    actions: list[str] = []
    for a in active.get("assertions") or []:
        if not isinstance(a, dict):
            continue
        label, data = a.get("label"), a.get("data")
        if label == ASSERTION_LABEL and isinstance(data, dict):
            iga = data
        elif isinstance(label, str) and label.startswith("c2pa.actions") and isinstance(data, dict):
            actions += [text(x.get("action")) or "?" for x in data.get("actions") or [] if isinstance(x, dict)]
    matches = None
    if plan is not None and iga is not None and isinstance(iga.get("plan_sha256"), str):
        try:
            matches = iga["plan_sha256"] == plan_sha256(plan)
        except ProvenanceError:
            matches = False
    return {
        "state": state, "valid": state in ("Valid", "Trusted"), "trusted": state == "Trusted",
        "status": _status_line(state, failures), "failures": failures,
        "title": text(active.get("title")), "label": text(active.get("label")),
        "claim_generator": " ".join(x for x in (text(gen.get("name")), text(gen.get("version"))) if x) or None,
        "signer": {k: text(sig.get(k)) for k in ("common_name", "issuer", "alg", "time", "cert_serial_number")},
        "actions": actions, "iga": iga, "plan_matches": matches,
    }


__all__ = ["available", "sign_image", "read_manifest", "load_credentials", "parse_credentials", "check_credentials",
           "Credentials", "canonical_plan_json", "plan_sha256", "iga_assertion", "ASSERTION_LABEL", "INSTALL_HINT"]
