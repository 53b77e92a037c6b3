"""The local model store (iga.store): indexing and classification, ids and hashes, caches, the recipe's VAE by id
through the guard, and `iga models`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from iga import store
from iga.guard import GuardRefused, Request
from test_generate_support import PROMPT, TINY_RECIPE, file_sha256, one_thread, tiny_with_recipe  # noqa: F401 (fixture)

STORE_VAE = "tiny-store-vae"
RECIPE = {**TINY_RECIPE, "model_id": "tiny-store-model", "vae": {"id": STORE_VAE, "embedded": False}}


def _lora(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A LoRA as kohya writes it (names and metadata are all the store reads)."""
    z = np.zeros((4, 4), np.float32)
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": z,
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": z,
               "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": np.ones((), np.float32)}, str(path),
              metadata={"ss_base_model_version": "sd_v1", **(metadata or {})})
    return path


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    """A models folder: a tiny SD1 checkpoint whose recipe names a separate VAE, that VAE (LDM keys), a VAE with
    diffusers keys in a subfolder, a diffusers VAE folder, a LoRA with an iga.id, and a folder of unrelated files."""
    from iga.models import testing

    root = tmp_path_factory.mktemp("models")
    out = {"root": root, "model": tiny_with_recipe(root, "tiny-sd1", seed=0, recipe=RECIPE)}
    out["vae"] = testing.save_vae(testing.tiny_vae(seed=7), root / f"{STORE_VAE}.safetensors")
    (root / "more" / "deeper").mkdir(parents=True)
    out["vae_diffusers"] = testing.save_vae(testing.tiny_vae(seed=8), root / "more" / "other-vae.safetensors",
                                            layout="diffusers")
    testing.tiny_vae(seed=9).save_pretrained(root / "more" / "folder-vae", safe_serialization=True)
    out["lora"] = _lora(root / "more" / "deeper" / "detail-lora.safetensors", {"iga.id": "detail"})
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a model")
    save_file({"text_model.embeddings.weight": np.zeros((2, 2), np.float32)}, str(root / "notes" / "te.safetensors"))
    return out


@pytest.fixture
def in_store(shelf, monkeypatch, tmp_path):
    """The shelf is the store; caches and the used-models index are this test's own."""
    monkeypatch.setenv("IGA_MODELS", str(shelf["root"]))
    monkeypatch.setenv("IGA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IGA_MODEL_INDEX", str(tmp_path / "used.json"))
    monkeypatch.setenv("IGA_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return shelf


# --- indexing -----------------------------------------------------------------------------------------------------

def test_store_classifies_checkpoints_vaes_and_loras_and_names_them_by_id(in_store):
    by_path = {Path(e.path).name: e for e in store.entries()}
    model = by_path["tiny-sd1.safetensors"]
    assert (model.kind, model.id, model.recipe) == ("checkpoint", "tiny-store-model", True)
    assert by_path[f"{STORE_VAE}.safetensors"].kind == "vae" and by_path[f"{STORE_VAE}.safetensors"].id == STORE_VAE
    assert by_path["other-vae.safetensors"].kind == "vae"
    assert by_path["folder-vae"].kind == "vae" and by_path["folder-vae"].format == "diffusers"
    assert by_path[f"{STORE_VAE}.safetensors"].architecture == "sd1/sd2/sdxl"  # 4 latent channels
    lora = by_path["detail-lora.safetensors"]
    assert (lora.kind, lora.id, lora.architecture) == ("lora", "detail", "sd1")
    assert "te.safetensors" not in by_path and "readme.txt" not in by_path  # not a model the store indexes
    assert any(e.bundled and e.kind == "checkpoint" for e in store.entries())
    assert [e.id for e in store.entries("lora")] == ["detail"]


def test_find_by_id_file_name_and_hash_prefix(in_store):
    vae = store.find(STORE_VAE, kind="vae")
    assert Path(vae.path) == in_store["vae"]
    assert store.find("other-vae", kind="vae").path == str(in_store["vae_diffusers"])
    assert store.find(file_sha256(in_store["vae"])[:12], kind="vae").path == vae.path


def test_unknown_id_names_close_ids_and_where_models_are_found(in_store):
    with pytest.raises(store.ModelNotFound) as e:
        store.find("tiny-store-vea", kind="vae")
    assert STORE_VAE in str(e.value) and "IGA_MODELS" in str(e.value)


def test_colliding_ids_name_every_file_that_shares_them(in_store, tmp_path, monkeypatch):
    _lora(tmp_path / "a.safetensors", {"iga.id": "same"})
    _lora(tmp_path / "b.safetensors", {"iga.id": "same", "note": "other bytes"})
    monkeypatch.setenv("IGA_MODELS", str(tmp_path))
    with pytest.raises(store.AmbiguousModel) as e:
        store.find("same")
    assert "a.safetensors" in str(e.value) and "b.safetensors" in str(e.value)


def test_a_symlink_loop_is_walked_once(in_store, tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    _lora(tmp_path / "m" / "x.safetensors")
    os.symlink(tmp_path / "m", tmp_path / "m" / "loop")
    monkeypatch.setenv("IGA_MODELS", str(tmp_path / "m"))
    assert [e.id for e in store.entries("lora")] == ["x"]


# --- caches -------------------------------------------------------------------------------------------------------

def test_classifications_are_reused_until_the_file_changes(in_store, tmp_path, monkeypatch):
    from iga.store import index

    _lora(tmp_path / "x.safetensors")
    monkeypatch.setenv("IGA_MODELS", str(tmp_path))
    calls = []
    real = index.classify_file
    monkeypatch.setattr(index, "classify_file", lambda p: calls.append(p.name) or real(p))
    store.entries()
    assert calls.count("x.safetensors") == 1
    store.entries()
    assert calls.count("x.safetensors") == 1  # from the cache: the header is not read again
    st = os.stat(tmp_path / "x.safetensors")
    os.utime(tmp_path / "x.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    store.entries()
    assert calls.count("x.safetensors") == 2


def test_hashes_wait_until_asked_and_are_forgotten_when_the_file_changes(in_store):
    vae = store.find(STORE_VAE, kind="vae")
    assert vae.cached_sha256() is None
    assert vae.sha256() == file_sha256(in_store["vae"]) == vae.cached_sha256()
    st = os.stat(vae.path)
    os.utime(vae.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert vae.cached_sha256() is None
    finally:
        os.utime(vae.path, ns=(st.st_atime_ns, st.st_mtime_ns))


# --- the recipe's VAE through the guard ---------------------------------------------------------------------------

def test_recipe_vae_in_the_store_runs_and_the_plan_records_it(in_store, monkeypatch, tmp_path):
    from iga.generate import Model

    m = Model(in_store["model"])
    [img] = m.generate(PROMPT, seed=3)
    vae = img.plan.vae
    assert (vae.source, vae.id, vae.path) == ("file", STORE_VAE, None)
    assert vae.file_sha256 == file_sha256(in_store["vae"]) and vae.autov2 == vae.file_sha256[:10]
    assert not [f for f in img.plan.findings if f.field == "vae"]
    from iga.provenance.infotext import format_infotext

    text = format_infotext(img.plan.to_dict())  # the image's A1111 parameters name it too
    assert f"VAE hash: {vae.autov2}" in text and f"VAE: {STORE_VAE}" in text
    monkeypatch.setenv("IGA_MODEL_INDEX", str(tmp_path / "fresh.json"))  # replay finds the file by hash alone
    from iga.store.used import vae_file

    assert vae_file(img.plan) == str(in_store["vae"])
    monkeypatch.setenv("IGA_MODELS", str(tmp_path))  # the VAE gone: the checkpoint's own, as an override
    [own] = Model(in_store["model"]).generate(request=Request(prompt=PROMPT, seed=3, overrides=["vae"],
                                                              reason="test"))
    assert own.plan.vae.source == "checkpoint" and "VAE" not in format_infotext(own.plan.to_dict())
    assert np.abs(own.pixels.astype(int) - img.pixels.astype(int)).max() > 8  # another VAE, another image


def test_recipe_vae_absent_is_a_soft_finding_and_the_override_records_the_vae_that_ran(in_store, tmp_path,
                                                                                       monkeypatch):
    from iga.generate import Model

    monkeypatch.setenv("IGA_MODELS", str(tmp_path))
    m = Model(in_store["model"])
    with pytest.raises(GuardRefused) as e:
        m.plan(PROMPT, seed=1)
    [f] = [f for f in e.value.findings if f.field == "vae"]
    assert f.severity == "soft" and STORE_VAE in f.reason and "IGA_MODELS" in f.suggestion
    assert "--vae PATH" in f.suggestion
    plan = m.plan(PROMPT, seed=1, overrides=["vae"], reason="no VAE here")
    assert plan.vae.source == "checkpoint" and plan.vae.id != STORE_VAE and plan.vae.file_sha256 is None
    [o] = [o for o in plan.overrides if o.field == "vae"]
    assert o.recipe_value == STORE_VAE and o.reason == "no VAE here"


def test_recipe_vae_absent_on_a_checkpoint_without_its_own_vae_is_hard(in_store, tmp_path, monkeypatch):
    from iga.guard import ModelIdentity, resolve
    from iga.recipe import parse_recipe_dict

    monkeypatch.setenv("IGA_MODELS", str(tmp_path))
    recipe = parse_recipe_dict(RECIPE)[0]
    with pytest.raises(GuardRefused) as e:
        resolve(recipe, Request(seed=1, overrides=["vae"]), "permissive",
                model=ModelIdentity(name="m", architecture="sd1"), own_vae=False)
    [f] = [f for f in e.value.findings if f.field == "vae" and f.severity != "info"]
    assert f.severity == "hard" and "no VAE of its own" in f.reason


def test_a_single_file_without_first_stage_model_is_known_to_have_no_vae_of_its_own(in_store, tmp_path,
                                                                                    monkeypatch):
    from safetensors.torch import load_file, save_file as save_torch

    from iga.checkpoint import embed_recipe
    from iga.guard.source import describe_model

    bare = tmp_path / "no-vae.safetensors"
    save_torch({k: v for k, v in load_file(str(in_store["model"])).items()
                if not k.startswith("first_stage_model.")}, str(bare))
    embed_recipe(bare, RECIPE)
    assert describe_model(bare).own_vae is False and describe_model(in_store["model"]).own_vae is True
    monkeypatch.setenv("IGA_MODELS", str(tmp_path / "empty"))
    with pytest.raises(GuardRefused) as e:
        describe_model(bare).resolve(Request(seed=1), "permissive")
    assert [f.severity for f in e.value.findings if f.field == "vae"] == ["hard"]


def test_requested_vae_id_resolves_through_the_store(in_store):
    from iga.generate import Model

    m = Model(in_store["model"])
    plan = m.plan(PROMPT, seed=1, vae="other-vae", overrides=["vae"], reason="try it")
    assert plan.vae.source == "file" and plan.vae.file_sha256 == file_sha256(in_store["vae_diffusers"])
    assert [(o.recipe_value, o.requested_value) for o in plan.overrides] == [(STORE_VAE, "other-vae")]
    same = m.plan(PROMPT, seed=1, vae=str(in_store["vae"]))  # the recipe's VAE by path: no deviation
    assert same.vae.id == STORE_VAE and not same.overrides


def test_requested_unknown_vae_id_is_hard_and_lists_the_known_vaes(in_store):
    from iga.generate import Model

    with pytest.raises(GuardRefused) as e:
        Model(in_store["model"]).plan(PROMPT, seed=1, vae="no-such-vae")
    [f] = [f for f in e.value.findings if f.field == "vae"]
    assert f.severity == "hard" and STORE_VAE in f.reason and "other-vae" in f.reason


def _resolve(recipe_vae: dict, **request):
    from iga.guard import ModelIdentity, resolve
    from iga.recipe import parse_recipe_dict

    recipe = parse_recipe_dict({**RECIPE, "vae": recipe_vae})[0]
    return resolve(recipe, Request(seed=1, **request), model=ModelIdentity(name="m", architecture="sd1"))[0]


def test_recipe_vae_sha256_finds_the_file_whatever_its_name_and_a_wrong_hash_is_not_the_recipes(in_store):
    digest = file_sha256(in_store["vae"])
    plan = _resolve({"id": "renamed-vae", "sha256": digest})
    assert (plan.vae.source, plan.vae.id, plan.vae.file_sha256) == ("file", "renamed-vae", digest)
    with pytest.raises(GuardRefused) as e:
        _resolve({"id": STORE_VAE, "sha256": "0" * 64})
    [f] = [f for f in e.value.findings if f.field == "vae"]
    assert f.severity == "soft" and "not the recipe's SHA-256" in f.reason


def test_a_vae_for_other_latents_is_refused(in_store, tmp_path, monkeypatch):
    save_file({"decoder.conv_in.weight": np.zeros((1, 16, 1, 1), np.float32)}, str(tmp_path / "flux-ae.safetensors"))
    monkeypatch.setenv("IGA_MODELS", os.pathsep.join([str(in_store["root"]), str(tmp_path)]))
    with pytest.raises(GuardRefused) as e:
        _resolve({"id": STORE_VAE}, vae="flux-ae", overrides=["vae"])
    [f] = [f for f in e.value.findings if f.field == "vae" and f.severity == "hard"]
    assert "sd3/flux latents, not sd1's" in f.reason


# --- `iga models` -------------------------------------------------------------------------------------------------

def _cli(*args: str):
    from typer.testing import CliRunner

    from iga.cli import app

    return CliRunner().invoke(app, ["models", *args])


def test_iga_models_json_lists_id_kind_architecture_hash_and_recipe(in_store):
    r = _cli("--json", "--kind", "vae")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["schema"] == "iga.models/1" and data["roots"]["folders"] == [str(in_store["root"])]
    rows = {row["id"]: row for row in data["models"] if not row["bundled"]}
    assert set(rows) == {STORE_VAE, "other-vae", "folder-vae"}
    # the bundled latent demo model's two VAEs are in every store
    assert {row["id"] for row in data["models"] if row["bundled"]} == {"iga-demo-latent-vae-v1",
                                                                       "iga-demo-latent-vae-warm-v1"}
    assert rows[STORE_VAE]["sha256"] is None and rows[STORE_VAE]["recipe"] is False
    hashed = {row["id"]: row for row in json.loads(_cli("--json", "--kind", "vae", "--hash").stdout)["models"]}
    assert hashed[STORE_VAE]["sha256"] == file_sha256(in_store["vae"])
    table = _cli("--kind", "checkpoint").stdout
    assert "tiny-store-model" in table and "yes" in table


def test_a_bad_config_file_is_one_clear_error_line(in_store, tmp_path, monkeypatch):
    bad = tmp_path / "config.json"
    bad.write_text('{"models": "~/models"}')
    monkeypatch.setenv("IGA_CONFIG", str(bad))
    r = _cli()
    assert r.exit_code == 2
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: config file") and str(bad) in line and "list of folder names" in line
    bad.write_text("{not json")
    assert "not valid JSON" in _cli().stderr


def test_config_file_folders_join_the_store(in_store, tmp_path, monkeypatch):
    (tmp_path / "loras").mkdir()
    _lora(tmp_path / "loras" / "cfg-lora.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"models": ["loras"]}))  # relative to the config file
    monkeypatch.setenv("IGA_CONFIG", str(tmp_path / "config.json"))
    assert "cfg-lora" in [e.id for e in store.entries("lora")]
