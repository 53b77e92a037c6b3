"""`iga inspect / embed / verify / recover`: output, JSON schemas and exit codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import typer
from test_checkpoint_support import data_region, isolated_cache, run, write_reference  # noqa: F401

import iga.checkpoint as ck
from iga.commands import checkpoint as commands

RECIPE = {
    "iga_version": "1.0.0",
    "architecture": "sd1",
    "prediction_type": "eps",
    "sampler": {"name": "euler_ancestral"},
    "scheduler": {"name": "karras"},
    "cfg": {"default": 7, "min": 5, "max": 9},
    "steps": {"default": 20, "min": 16, "max": 32},
    "clip_skip": 2,
}


@pytest.fixture()
def app() -> typer.Typer:
    a = typer.Typer()
    commands.register(a)
    return a




def _model(tmp_path: Path) -> Path:
    p = tmp_path / "model.safetensors"
    write_reference(
        p,
        [("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "F16", [8, 768]),
         ("model.diffusion_model.input_blocks.0.0.weight", "F16", [8, 4, 3, 3])],
        {"ss_network_dim": "4", "modelspec.title": "T"},
    )
    return p


def _recipe_file(tmp_path: Path, recipe: dict = RECIPE) -> Path:
    f = tmp_path / "recipe.json"
    f.write_text(json.dumps(recipe))
    return f


def test_embed_verify_inspect_round_trip(app: typer.Typer, tmp_path: Path) -> None:
    model = _model(tmp_path)
    code, out, err = run(app, "embed", model, _recipe_file(tmp_path), "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["schema"] == "iga.embed/1" and rep["mode"] == "rewrite"
    assert rep["weights_sha256"] == hashlib.sha256(data_region(model)).hexdigest()
    stored = ck.read_recipe_dict(model)
    assert stored["hashes"]["weights_sha256"] == rep["weights_sha256"]
    assert stored["hashes"]["metadata_sha256"] == rep["metadata_sha256"]

    code, out, _ = run(app, "verify", model)
    assert code == 0 and "verified" in out

    code, out, _ = run(app, "inspect", model, "--json", "--hash")
    assert code == 0
    rep = json.loads(out)
    assert rep["schema"] == "iga.inspect/1"
    assert rep["architecture"]["architecture"] == "sd1"
    assert rep["architecture"]["prediction_type"] == "eps"
    assert rep["recipe"]["origin"] == "embedded" and rep["recipe"]["valid"] is True
    assert rep["recipe"]["raw"] == stored
    assert rep["metadata"]["kohya"] == {"ss_network_dim": "4"}
    assert rep["metadata"]["modelspec"]["modelspec.prediction_type"] == "epsilon"
    assert rep["tensors"]["count"] == 2 and rep["tensors"]["dtypes"]["F16"]["count"] == 2
    assert rep["hashes"]["file_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert rep["header"]["length"] % 8 == 0 and rep["header"]["slack"] > 0

    code, out, _ = run(app, "inspect", model)
    assert code == 0 and "sd1" in out and "embedded" in out

    # second embed of an edited recipe: in place
    code, out, _ = run(app, "embed", model, _recipe_file(tmp_path, {**RECIPE, "clip_skip": 1}))
    assert code == 0 and "in place" in out


def test_verify_detects_tampered_weights_and_recipe(app: typer.Typer, tmp_path: Path) -> None:
    model = _model(tmp_path)
    assert run(app, "embed", model, _recipe_file(tmp_path))[0] == 0
    raw = bytearray(model.read_bytes())
    raw[-1] ^= 0xFF  # flip one byte of tensor data
    model.write_bytes(bytes(raw))
    code, out, err = run(app, "verify", model, "--json")
    assert code == 1
    rep = json.loads(out)
    assert rep["status"] == "mismatch"
    assert {c["name"]: c["ok"] for c in rep["checks"]} == {"weights_sha256": False, "metadata_sha256": True,
                                                           "header_sha256": True}
    assert "weights_sha256" in err and "tensor data" in err
    raw[-1] ^= 0xFF
    model.write_bytes(bytes(raw))

    recipe = ck.read_recipe_dict(model)
    ck.embed_recipe(model, {**recipe, "clip_skip": 3})  # edited, old hashes kept
    code, _, err = run(app, "verify", model)
    assert code == 1 and "metadata_sha256" in err and "edited" in err


def test_verify_without_recipe_or_hashes_exits_2(app: typer.Typer, tmp_path: Path) -> None:
    model = _model(tmp_path)
    code, out, err = run(app, "verify", model, "--json")
    assert code == 2 and json.loads(out)["status"] == "no_recipe" and "no recipe" in err
    ck.embed_recipe(model, RECIPE)
    code, out, err = run(app, "verify", model, "--json")
    assert code == 2 and json.loads(out)["status"] == "no_hashes"


def test_bad_inputs_exit_2_with_one_line(app: typer.Typer, tmp_path: Path) -> None:
    garbage = tmp_path / "bad.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    ckpt = tmp_path / "old.ckpt"
    ckpt.write_bytes(b"\x80\x02")
    for args in (("inspect", garbage), ("inspect", ckpt), ("verify", garbage), ("inspect", tmp_path / "nope"),
                 ("embed", garbage, _recipe_file(tmp_path)), ("recover", tmp_path / "nope.safetensors")):
        code, out, err = run(app, *args)
        assert code == 2, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err + out
    assert "safetensors" in run(app, "inspect", ckpt)[2]  # says how to fix: convert
    code, out, _ = run(app, "inspect", garbage, "--json")
    assert code == 2 and json.loads(out)["error"]


def test_invalid_recipe_file_is_refused_and_model_untouched(app: typer.Typer, tmp_path: Path) -> None:
    model = _model(tmp_path)
    before = model.read_bytes()
    bad = _recipe_file(tmp_path, {**RECIPE, "prediction_type": "sideways", "steps": {"default": 5, "min": 9}})
    code, _, err = run(app, "embed", model, bad)
    assert code == 2 and err.count("\n") == 1 and "prediction_type" in err
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert run(app, "embed", model, broken)[0] == 2
    assert model.read_bytes() == before


def test_embed_yaml_and_out(app: typer.Typer, tmp_path: Path) -> None:
    import yaml

    model = _model(tmp_path)
    before = model.read_bytes()
    rf = tmp_path / "recipe.yaml"
    rf.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "with-recipe.safetensors"
    code, stdout, err = run(app, "embed", model, rf, "-o", out)
    assert code == 0, err
    assert model.read_bytes() == before
    assert ck.read_recipe_dict(out)["prediction_type"] == "eps"
    assert run(app, "verify", out)[0] == 0


def test_embed_replaces_a_stale_weights_hash_with_a_warning(app: typer.Typer, tmp_path: Path) -> None:
    model = _model(tmp_path)
    rf = _recipe_file(tmp_path, {**RECIPE, "hashes": {"weights_sha256": "0" * 64}})
    code, _, err = run(app, "embed", model, rf)
    assert code == 0 and "replaced" in err
    assert run(app, "verify", model)[0] == 0


def test_recover_command(app: typer.Typer, tmp_path: Path) -> None:
    model = _model(tmp_path)
    code, out, _ = run(app, "recover", model)
    assert code == 0 and "nothing to do" in out


def test_help_documents_json_schema(app: typer.Typer) -> None:
    code, out, _ = run(app, "inspect", "--help")
    assert code == 0 and "iga.inspect/1" in out
    code, out, _ = run(app, "verify", "--help")
    assert code == 0 and "iga.verify/1" in out


def test_cli_import_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, iga.commands.checkpoint, iga.checkpoint; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
