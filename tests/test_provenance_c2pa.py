"""C2PA Content Credentials (optional extra): sign iga images, read and validate the manifest back.

A throw-away CA + signing certificate (P-256, ES256) is made in the test with `cryptography`; nothing goes to
the network. Skipped when c2pa-python is not installed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

pytest.importorskip("c2pa")
pytest.importorskip("cryptography")

from PIL import Image  # noqa: E402

from iga.provenance import ProvenanceError, read_provenance, save_image  # noqa: E402
from iga.provenance import c2pa as ic  # noqa: E402

PLAN = {"schema": "iga.plan/1", "iga_version": "0.1.0", "mode": "guarded",
        "model": {"name": "demo", "weights_sha256": "ab" * 32, "recipe_sha256": "cd" * 32},
        "prompt": "a red circle on a blue background", "negative_prompt": "", "seed": 7, "seeds": [7],
        "steps": 4, "cfg": 3.0, "sampler": "euler", "schedule": "karras", "width": 32, "height": 32,
        "sigmas": [14.6, 3.2, 0.9, 0.2, 0.0]}


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iga test")])


def _usage(**on):
    from cryptography import x509

    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    return x509.KeyUsage(**{**flags, **on})


def make_chain(*, eku: bool = True) -> tuple[bytes, bytes]:
    """(certificate chain PEM: signer then CA, PKCS#8 private key PEM) of a fresh test-only CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def base(subject, issuer, pub):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))

    ca = (base(_name("iga test CA"), _name("iga test CA"), ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (base(_name("iga test signer"), ca.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(digital_signature=True), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if eku:
        leaf = leaf.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    leaf = leaf.sign(ca_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    return chain, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.fixture(scope="module")
def chain():
    return make_chain()


def _image():
    im = Image.new("RGB", (32, 32), (20, 40, 200))
    im.paste((220, 20, 20), (8, 8, 24, 24))
    return im


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_sign_then_read_back_validates_and_keeps_the_iga_plan(tmp_path, chain, fmt):
    path = save_image(_image(), PLAN, tmp_path, fmt=fmt)
    written = ic.sign_image(path, chain[0], chain[1], plan=PLAN)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left behind
    prov = read_provenance(path)
    assert prov.source == "iga" and prov.plan == PLAN and prov.warnings == []
    summary = ic.read_manifest(path, plan=prov.plan)
    assert summary is not None
    assert summary["state"] == "Valid" and summary["valid"] and not summary["trusted"]
    assert summary["failures"] == ["signingCredential.untrusted"]  # a test CA is on no trust list
    assert summary["signer"]["common_name"] == "iga test signer" and summary["signer"]["alg"] == "Es256"
    assert summary["actions"] == ["c2pa.created"] and summary["claim_generator"].startswith("iga ")
    iga = summary["iga"]
    assert iga == written
    assert iga["schema"] == "iga.c2pa/1" and iga["generator"].startswith("iga ")
    assert iga["model"] == {"name": "demo", "weights_sha256": "ab" * 32, "recipe_sha256": "cd" * 32}
    assert iga["recipe_sha256"] == "cd" * 32
    assert iga["plan_sha256"] == ic.plan_sha256(PLAN) and summary["plan_matches"] is True
    assert ic.read_manifest(path, plan={**PLAN, "seed": 8})["plan_matches"] is False
    with Image.open(path) as im:
        assert im.size == (32, 32)


def test_canonical_plan_hash_ignores_key_order_and_adds_the_schema():
    shuffled = dict(reversed(list(PLAN.items())))
    assert ic.plan_sha256(shuffled) == ic.plan_sha256(PLAN)
    assert ic.plan_sha256({k: v for k, v in PLAN.items() if k != "schema"}) == ic.plan_sha256(PLAN)
    assert ic.canonical_plan_json(PLAN).startswith('{"cfg":3.0,')


def test_unsigned_image_has_no_manifest(tmp_path):
    path = save_image(_image(), PLAN, tmp_path, fmt="png")
    assert ic.read_manifest(path) is None


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_tampered_image_fails_validation(tmp_path, chain, fmt):
    path = save_image(_image(), PLAN, tmp_path, fmt=fmt)
    ic.sign_image(path, *chain, plan=PLAN)
    data = bytearray(path.read_bytes())
    pos = data.index(b"IDAT") + 12 if fmt == "png" else len(data) - 10  # inside the pixel data
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
    summary = ic.read_manifest(path)
    assert summary["state"] == "Invalid" and not summary["valid"]
    assert "assertion.dataHash.mismatch" in summary["failures"]
    assert summary["status"].startswith("INVALID: assertion.dataHash.mismatch")


def _edit_png_text(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace text inside the PNG chunk holding it and fix that chunk's CRC (a careful forger's edit)."""
    import struct
    import zlib

    pos, out = 8, bytearray(data[:8])
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if old in body:
            body = body.replace(old, new, 1)
        out += struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))
        pos += 12 + length
    return bytes(out)


def test_editing_the_stored_plan_breaks_validation(tmp_path, chain):
    path = save_image(_image(), PLAN, tmp_path, fmt="png")
    ic.sign_image(path, *chain, plan=PLAN)
    path.write_bytes(_edit_png_text(path.read_bytes(), b'"seed":7', b'"seed":8'))
    assert read_provenance(path).plan["seed"] == 8
    summary = ic.read_manifest(path, plan=read_provenance(path).plan)
    assert not summary["valid"] and summary["plan_matches"] is False


def test_bad_key_is_one_clear_error_and_the_image_is_untouched(tmp_path, chain):
    path = save_image(_image(), PLAN, tmp_path, fmt="png")
    before = path.read_bytes()
    bad = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ProvenanceError, match="private key cannot be read") as err:
        ic.sign_image(path, chain[0], bad, plan=PLAN)
    assert "\n" not in str(err.value)
    other_key = make_chain()[1]
    with pytest.raises(ProvenanceError, match="does not belong to the first"):
        ic.sign_image(path, chain[0], other_key, plan=PLAN)
    with pytest.raises(ProvenanceError, match="no PEM certificate"):
        ic.sign_image(path, b"", chain[1], plan=PLAN)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


def test_credentials_file_and_c2pa_refusing_a_certificate(tmp_path, chain):
    pem = tmp_path / "signer.pem"
    pem.write_bytes(chain[0] + chain[1])
    creds = ic.load_credentials(pem)
    assert creds.alg == "ES256" and "iga test signer" in creds.subject
    ic.check_credentials(creds)
    with pytest.raises(ProvenanceError, match="cannot read"):
        ic.load_credentials(tmp_path / "missing.pem")
    no_eku = ic.parse_credentials(*make_chain(eku=False))
    with pytest.raises(ProvenanceError) as err:  # c2pa's own certificate profile check, as one line
        ic.check_credentials(no_eku)
    assert str(err.value).startswith("C2PA") and "\n" not in str(err.value)


def test_garbage_manifest_is_a_provenance_error_or_none(tmp_path, chain):
    path = save_image(_image(), PLAN, tmp_path, fmt="png")
    ic.sign_image(path, *chain, plan=PLAN)
    data = bytearray(path.read_bytes())
    pos = data.index(b"caBX") + 40  # corrupt the manifest store itself
    data[pos:pos + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))
    try:
        summary = ic.read_manifest(path)
    except ProvenanceError as exc:
        assert "\n" not in str(exc)
    else:
        assert summary is None or not summary["valid"]
    (tmp_path / "text.png").write_bytes(b"not an image")
    with pytest.raises(ProvenanceError, match="unrecognised signature"):
        ic.read_manifest(tmp_path / "text.png")


def _cli(args):
    from typer.testing import CliRunner

    from iga.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_cli_generate_c2pa_then_show(tmp_path, chain, offline_audit, fmt):
    pem = tmp_path / "signer.pem"
    pem.write_bytes(chain[0] + chain[1])
    out = tmp_path / "out"
    res = _cli(["generate", "a red circle on a blue background", "--steps", "4", "--override", "steps",
                "--seed", "3", "--out", out, "--format", fmt, "--c2pa", pem, "--json"])
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    [image] = map(Path, report["images"])
    assert sorted(p.name for p in out.iterdir()) == [image.name]
    summary = ic.read_manifest(image, plan=report["plans"][0])
    assert summary["valid"] and summary["plan_matches"] is True
    assert summary["iga"]["model"]["weights_sha256"] == report["plans"][0]["model"]["weights_sha256"]

    shown = _cli(["show", image, "--json"])
    assert shown.exit_code == 0
    data = json.loads(shown.stdout)
    assert data["source"] == "iga" and data["c2pa"]["state"] == "Valid" and data["c2pa"]["plan_matches"] is True
    assert data["warnings"] == []
    text = _cli(["show", image])
    assert "C2PA: valid signature" in " ".join(text.stdout.split()) and "plan hash matches" in text.stdout


def test_cli_show_without_manifest_has_null_c2pa(tmp_path):
    path = save_image(_image(), PLAN, tmp_path, fmt="png")
    res = _cli(["show", path, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["c2pa"] is None
    assert "C2PA" not in _cli(["show", path]).stdout


def test_cli_generate_bad_credentials_fail_before_sampling(tmp_path, offline_audit):
    bad = tmp_path / "bad.pem"
    bad.write_text("hello\n")
    out = tmp_path / "out"
    res = _cli(["generate", "a red circle", "--steps", "4", "--override", "steps", "--out", out, "--c2pa", bad])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "no PEM certificate" in res.stderr
    assert not out.exists()


def test_cli_generate_c2pa_without_the_extra(tmp_path, monkeypatch, offline_audit):
    monkeypatch.setattr(ic, "available", lambda: False)
    pem = tmp_path / "signer.pem"
    pem.write_text("x")
    res = _cli(["generate", "a red circle", "--steps", "4", "--override", "steps", "--out", tmp_path / "o",
                "--c2pa", pem])
    assert res.exit_code == 2 and "pip install iga-diffusion[c2pa]" in res.stderr
    assert res.stderr.strip().count("\n") == 0
