"""Sidecar recipes and the precedence between embedded and sidecar recipes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from test_checkpoint_support import isolated_cache, write_reference  # noqa: F401

import iga.checkpoint as ck

A = {"iga_version": "1.0.0", "prediction_type": "eps", "cfg": {"default": 7}}
B = {"iga_version": "1.0.0", "prediction_type": "v", "cfg": {"default": 7}}


def _model(tmp_path: Path, name: str = "model.safetensors") -> Path:
    p = tmp_path / name
    write_reference(p, [("w", "F32", [4])], {"k": "v"})
    return p


def test_sidecar_paths() -> None:
    assert ck.sidecar_paths("/m/model.safetensors") == ["/m/model.iga.json"]
    assert ck.sidecar_paths("/m/model.fp16.safetensors") == ["/m/model.fp16.iga.json"]
    assert ck.sidecar_paths("/m/model.ckpt") == ["/m/model.iga.json"]


def test_folder_sidecar_paths(tmp_path: Path) -> None:
    folder = tmp_path / "sd-model"
    folder.mkdir()
    assert ck.sidecar_paths(folder) == [str(folder / "iga.json"), str(tmp_path / "sd-model.iga.json")]


def test_no_recipe_anywhere(tmp_path: Path) -> None:
    assert ck.find_recipe(_model(tmp_path)) is None


def test_embedded_only_and_sidecar_only(tmp_path: Path) -> None:
    p = _model(tmp_path)
    ck.write_sidecar(p, A)
    src = ck.find_recipe(p)
    assert (src.recipe, src.origin, src.path) == (A, "sidecar", str(tmp_path / "model.iga.json"))
    (tmp_path / "model.iga.json").unlink()
    ck.embed_recipe(p, B)
    src = ck.find_recipe(p)
    assert (src.recipe, src.origin, src.path) == (B, "embedded", str(p))


def test_embedded_wins_and_warns_when_they_differ(tmp_path: Path) -> None:
    p = _model(tmp_path)
    ck.embed_recipe(p, A)
    ck.write_sidecar(p, B)
    with pytest.warns(ck.RecipeConflictWarning, match="prediction_type"):
        src = ck.find_recipe(p)
    assert src.origin == "embedded" and src.recipe == A and len(src.warnings) == 1
    with pytest.warns(ck.RecipeConflictWarning):
        src = ck.find_recipe(p, prefer="sidecar")
    assert src.origin == "sidecar" and src.recipe == B


def test_no_warning_when_they_agree(tmp_path: Path) -> None:
    p = _model(tmp_path)
    ck.embed_recipe(p, A)
    ck.write_sidecar(p, A)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = ck.find_recipe(p)
    assert src.origin == "embedded" and src.warnings == ()


def test_pickle_checkpoint_uses_sidecar_without_opening(tmp_path: Path) -> None:
    p = tmp_path / "model.ckpt"
    p.write_bytes(b"\x80\x02 this would be a pickle")
    assert ck.find_recipe(p) is None
    ck.write_sidecar(p, A)
    assert ck.find_recipe(p).recipe == A


def test_diffusers_folder_sidecars(tmp_path: Path) -> None:
    folder = tmp_path / "sd-model"
    folder.mkdir()
    assert ck.find_recipe(folder) is None
    (tmp_path / "sd-model.iga.json").write_text(json.dumps(B))
    src = ck.find_recipe(folder)
    assert src.recipe == B and src.path == str(tmp_path / "sd-model.iga.json")
    (folder / "iga.json").write_text(json.dumps(A))
    with pytest.warns(ck.RecipeConflictWarning, match="differ"):
        src = ck.find_recipe(folder)
    assert src.recipe == A and src.path == str(folder / "iga.json")


def test_bad_sidecars_are_clear_errors(tmp_path: Path) -> None:
    p = _model(tmp_path)
    side = tmp_path / "model.iga.json"
    side.write_text("{not json")
    with pytest.raises(ck.RecipeDecodeError, match="model.iga.json"):
        ck.find_recipe(p)
    side.write_text('["a list"]')
    with pytest.raises(ck.RecipeDecodeError, match="object"):
        ck.find_recipe(p)
    side.write_bytes(b"{" + b" " * (1024 * 1024) + b"}")
    with pytest.raises(ck.RecipeTooLargeError):
        ck.find_recipe(p)
    with pytest.raises(ck.CheckpointFileError):
        ck.find_recipe(tmp_path / "missing.safetensors")


def test_write_sidecar_is_atomic_and_readable(tmp_path: Path) -> None:
    p = _model(tmp_path)
    target = ck.write_sidecar(p, A)
    assert json.loads(Path(target).read_text()) == A
    assert [x.name for x in tmp_path.iterdir() if x.name.endswith(".iga-tmp")] == []
