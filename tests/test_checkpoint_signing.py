"""Signed recipes: `iga keygen / sign / check-signature` and iga.checkpoint.signing (Ed25519)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
import typer
from test_checkpoint_support import isolated_cache, run, write_reference  # noqa: F401

import iga.checkpoint as ck
from iga.checkpoint import signing
from iga.checkpoint.signing import SIGNATURE_KEY, SigningError, check_signature, generate_key, key_id, sign_model
from iga.commands import signing as commands

RECIPE = {
    "iga_version": "1.0.0",
    "architecture": "sd1",
    "prediction_type": "eps",
    "sampler": {"name": "euler_ancestral"},
    "scheduler": {"name": "karras"},
    "cfg": {"default": 7, "min": 5, "max": 9},
    "steps": {"default": 20, "min": 16, "max": 32},
}


def _bare_model(tmp_path: Path, name: str = "model.safetensors") -> Path:
    p = tmp_path / name
    tensors = [("model.diffusion_model.input_blocks.0.0.weight", "F16", [8, 4, 3, 3])]
    write_reference(p, tensors, {"modelspec.title": "T"})
    return p


def _model(tmp_path: Path) -> Path:
    """A small .safetensors file with a recipe and its hashes embedded, as `iga embed` leaves it."""
    p = _bare_model(tmp_path)
    ck.embed_recipe_with_hashes(p, RECIPE)
    return p


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_key()


@pytest.fixture(scope="module")
def other_keys() -> tuple[bytes, bytes]:
    return generate_key()


def _record(model: Path) -> dict:
    return json.loads(ck.read_header(model).metadata[SIGNATURE_KEY])


def _replace_record(model: Path, record: dict) -> None:
    ck.update_metadata(model, {SIGNATURE_KEY: json.dumps(record)})


# --- API: round trip -----------------------------------------------------------------------------------------------


def test_signed_recipe_round_trip_is_trusted(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    model = _model(tmp_path)
    private, public = keys
    result = sign_model(model, private)
    assert result.origin == "embedded" and result.location == str(model)
    assert result.key_id == key_id(public) and len(result.key_id) == 16
    status = check_signature(model, [public])
    assert status.ok and status.status == "signed_trusted" and status.key_id == key_id(public)


def test_signature_record_format_in_header(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    rec = _record(model)
    assert set(rec) == {"alg", "key_id", "public_key", "payload", "signature"} and rec["alg"] == "ed25519"
    assert len(base64.b64decode(rec["public_key"])) == 32 and len(base64.b64decode(rec["signature"])) == 64
    payload = json.loads(rec["payload"])
    recipe = ck.read_recipe_dict(model)
    from iga.recipe.canonical import canonical_json, recipe_metadata_sha256

    assert rec["payload"] == canonical_json(payload).decode()  # the payload is stored in canonical form
    assert payload == {"schema": "iga.signature/1", "recipe_sha256": recipe_metadata_sha256(recipe),
                       "weights_sha256": recipe["hashes"]["weights_sha256"], "hashes": recipe["hashes"]}


def test_signing_keeps_recipe_tensors_and_other_metadata(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    model = _model(tmp_path)
    before = ck.read_header(model)
    weights = ck.weights_sha256(model, use_cache=False)
    sign_model(model, keys[0])
    after = ck.read_header(model)
    assert ck.weights_sha256(model, use_cache=False) == weights
    assert {k: v for k, v in after.metadata.items() if k != SIGNATURE_KEY} == before.metadata


def test_signing_again_replaces_the_signature(tmp_path: Path, keys, other_keys) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    sign_model(model, other_keys[0])
    assert check_signature(model, [other_keys[1]]).ok
    assert check_signature(model, [keys[1]]).status == "signed_untrusted_key"


def test_sidecar_recipe_gets_a_sidecar_signature_file(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    model = _bare_model(tmp_path)
    hashes = {"weights_sha256": ck.weights_sha256(model)}
    ck.write_sidecar(model, {**RECIPE, "hashes": hashes})
    result = sign_model(model, keys[0])
    assert result.origin == "sidecar" and result.location == str(tmp_path / "model.iga-signature.json")
    assert SIGNATURE_KEY not in ck.read_header(model).metadata  # the model file is not touched
    assert check_signature(model, [keys[1]]).ok
    recipe = json.loads((tmp_path / "model.iga.json").read_text())
    recipe["steps"]["default"] = 30
    (tmp_path / "model.iga.json").write_text(json.dumps(recipe))
    assert check_signature(model, [keys[1]]).status == "stale"


def test_trusted_key_file_may_hold_several_keys(tmp_path: Path, keys, other_keys) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    assert check_signature(model, [other_keys[1] + keys[1]]).ok


# --- API: wrongly signed, unsigned, untrusted ----------------------------------------------------------------------


def test_unsigned_model_is_unsigned(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    status = check_signature(_model(tmp_path), [keys[1]])
    assert status.status == "unsigned" and not status.ok and status.key_id is None


def test_model_without_recipe_is_unsigned(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    assert check_signature(_bare_model(tmp_path), [keys[1]]).status == "unsigned"


def test_signature_by_another_key_is_untrusted(tmp_path: Path, keys, other_keys) -> None:
    model = _model(tmp_path)
    sign_model(model, other_keys[0])
    status = check_signature(model, [keys[1]])
    assert status.status == "signed_untrusted_key" and status.key_id == key_id(other_keys[1])
    assert key_id(other_keys[1]) in status.message and "not a trusted key" in status.message


def test_no_trusted_keys_means_untrusted(tmp_path: Path, keys) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    assert check_signature(model, []).status == "signed_untrusted_key"


def test_tampered_signature_bytes_are_a_bad_signature(tmp_path: Path, keys) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    rec = _record(model)
    sig = bytearray(base64.b64decode(rec["signature"]))
    sig[0] ^= 1
    _replace_record(model, {**rec, "signature": base64.b64encode(bytes(sig)).decode()})
    status = check_signature(model, [keys[1]])
    assert status.status == "bad_signature" and not status.ok


def test_tampered_payload_is_a_bad_signature(tmp_path: Path, keys) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    rec = _record(model)
    payload = json.loads(rec["payload"])
    payload["weights_sha256"] = "0" * 64
    _replace_record(model, {**rec, "payload": json.dumps(payload, sort_keys=True, separators=(",", ":"))})
    assert check_signature(model, [keys[1]]).status == "bad_signature"


def test_trusted_public_key_swapped_into_a_foreign_signature_is_bad(tmp_path: Path, keys, other_keys) -> None:
    # an attacker signs with their own key, then claims the publisher's key in the record
    model = _model(tmp_path)
    sign_model(model, other_keys[0])
    rec = _record(model)
    raw = signing._raw_public(keys[1])
    _replace_record(model, {**rec, "public_key": base64.b64encode(raw).decode(), "key_id": key_id(keys[1])})
    assert check_signature(model, [keys[1]]).status == "bad_signature"


@pytest.mark.parametrize("record", [
    "not json",
    "[]",
    json.dumps({"alg": "rsa"}),
    json.dumps({"alg": "ed25519", "public_key": "!!", "payload": "{}", "signature": "x"}),
])
def test_malformed_signature_record_is_a_bad_signature(tmp_path: Path, keys, record: str) -> None:
    model = _model(tmp_path)
    ck.update_metadata(model, {SIGNATURE_KEY: record})
    assert check_signature(model, [keys[1]]).status == "bad_signature"


def test_recipe_edited_after_signing_is_stale(tmp_path: Path, keys) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    recipe = ck.read_recipe_dict(model)
    ck.embed_recipe_with_hashes(model, {**recipe, "steps": {"default": 40, "min": 16, "max": 60}})  # even re-hashed
    status = check_signature(model, [keys[1]])
    assert status.status == "stale" and "the recipe" in status.message and status.key_id == key_id(keys[1])


def test_weights_hash_edited_after_signing_is_stale(tmp_path: Path, keys) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    recipe = ck.read_recipe_dict(model)
    recipe["hashes"]["weights_sha256"] = "ab" * 32
    ck.embed_recipe(model, recipe)
    status = check_signature(model, [keys[1]])
    assert status.status == "stale" and "weights hash" in status.message


def test_recipe_removed_after_signing_is_stale(tmp_path: Path, keys) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    ck.remove_recipe(model)
    assert check_signature(model, [keys[1]]).status == "stale"


def test_changed_tensor_data_is_stale_only_when_weights_are_checked(tmp_path: Path, keys) -> None:
    model = _model(tmp_path)
    sign_model(model, keys[0])
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    assert check_signature(model, [keys[1]]).ok  # header only: the recipe and its hashes are as signed
    status = check_signature(model, [keys[1]], check_weights=True)
    assert status.status == "stale" and "tensor data" in status.message


# --- API: refusals -------------------------------------------------------------------------------------------------


def test_signing_requires_a_recorded_weights_hash(tmp_path: Path, keys) -> None:
    model = _bare_model(tmp_path)
    ck.embed_recipe(model, RECIPE)
    with pytest.raises(SigningError, match=r"no hashes\.weights_sha256.*iga embed"):
        sign_model(model, keys[0])


def test_signing_requires_a_recipe(tmp_path: Path, keys) -> None:
    with pytest.raises(SigningError, match="no recipe to sign"):
        sign_model(_bare_model(tmp_path), keys[0])


def test_signing_refuses_hashes_that_do_not_match_the_file(tmp_path: Path, keys) -> None:
    model = _model(tmp_path)
    recipe = ck.read_recipe_dict(model)
    ck.embed_recipe(model, {**recipe, "hashes": {**recipe["hashes"], "weights_sha256": "cd" * 32}})
    with pytest.raises(SigningError, match="tensor data does not have"):
        sign_model(model, keys[0])
    ck.embed_recipe(model, {**recipe, "clip_skip": 2})  # edited without re-hashing
    with pytest.raises(SigningError, match="edited after its hashes"):
        sign_model(model, keys[0])


def test_a_public_key_is_not_a_signing_key(tmp_path: Path, keys) -> None:
    with pytest.raises(SigningError, match="not a PEM private key"):
        sign_model(_model(tmp_path), keys[1])


def test_a_private_key_is_not_a_trusted_key(tmp_path: Path, keys) -> None:
    with pytest.raises(SigningError, match="private key"):
        check_signature(_model(tmp_path), [keys[0]])


def test_non_ed25519_keys_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    priv = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(SigningError, match="not Ed25519"):
        signing.load_private_key(priv)
    with pytest.raises(SigningError, match="not Ed25519"):
        signing.load_public_keys(pub)


# --- keygen --------------------------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_0600_and_a_public_key(tmp_path: Path) -> None:
    key_path, pub_path, kid = signing.write_key_pair(tmp_path / "pub")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    private = signing.load_private_key(Path(key_path).read_bytes())
    (public,) = signing.load_public_keys(Path(pub_path).read_bytes())
    assert key_id(public) == key_id(private.public_key()) == kid


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_bytes(b"keep me")
    with pytest.raises(SigningError, match="never overwrites"):
        signing.write_key_pair(tmp_path / "k")
    assert (tmp_path / "k.pub").read_bytes() == b"keep me" and not (tmp_path / "k.key").exists()


# --- CLI -----------------------------------------------------------------------------------------------------------


@pytest.fixture()
def app() -> typer.Typer:
    a = typer.Typer()
    commands.register(a)
    return a




def test_cli_keygen_sign_check_round_trip(app: typer.Typer, tmp_path: Path) -> None:
    model = _model(tmp_path)
    code, out, err = run(app, "keygen", tmp_path / "pub")
    assert code == 0, err
    kid = out.split("key id")[1].split()[0]
    code, out, err = run(app, "sign", model, "--key", tmp_path / "pub.key", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["schema"] == "iga.sign/1" and rep["origin"] == "embedded"
    code, out, err = run(app, "check-signature", model, "--trust", tmp_path / "pub.pub", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["schema"] == "iga.check-signature/1" and rep["status"] == "signed_trusted" and rep["ok"] is True
    assert rep["key_id"] == kid and "trusted key" in rep["message"]


def test_cli_keygen_refuses_to_overwrite_with_exit_2(app: typer.Typer, tmp_path: Path) -> None:
    assert run(app, "keygen", tmp_path / "k")[0] == 0
    before = (tmp_path / "k.key").read_bytes()
    code, _, err = run(app, "keygen", tmp_path / "k")
    assert code == 2 and err.startswith("error:") and "never overwrites" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "k.key").read_bytes() == before


def test_cli_check_signature_exit_1_with_one_line_reason(app: typer.Typer, tmp_path: Path, keys, other_keys) -> None:
    model = _model(tmp_path)
    (tmp_path / "good.pub").write_bytes(keys[1])
    (tmp_path / "other.key").write_bytes(other_keys[0])
    code, _, err = run(app, "check-signature", model, "--trust", tmp_path / "good.pub")
    assert code == 1 and "unsigned" in err and len(err.strip().splitlines()) == 1
    assert run(app, "sign", model, "--key", tmp_path / "other.key")[0] == 0
    code, out, err = run(app, "check-signature", model, "--trust", tmp_path / "good.pub", "--json")
    assert code == 1 and json.loads(out)["status"] == "signed_untrusted_key" and "not a trusted key" in err


def test_cli_bad_input_exits_2(app: typer.Typer, tmp_path: Path, keys) -> None:
    model = _model(tmp_path)
    (tmp_path / "good.pub").write_bytes(keys[1])
    code, _, err = run(app, "check-signature", tmp_path / "missing.safetensors", "--trust", tmp_path / "good.pub")
    assert code == 2 and err.startswith("error:")
    code, _, err = run(app, "check-signature", model, "--trust", tmp_path / "nope.pub")
    assert code == 2 and "cannot read key file" in err
    code, out, err = run(app, "sign", model, "--key", tmp_path / "good.pub", "--json")
    assert code == 2 and json.loads(out)["status"] == "error" and "not a PEM private key" in err
    bare = _bare_model(tmp_path, "bare.safetensors")
    (tmp_path / "good.key").write_bytes(keys[0])
    code, _, err = run(app, "sign", bare, "--key", tmp_path / "good.key")
    assert code == 2 and "no recipe to sign" in err


def test_cli_registers_signing_commands() -> None:
    from iga.cli import app as main_app

    names = {c.name for c in main_app.registered_commands}
    assert {"keygen", "sign", "check-signature"} <= names
