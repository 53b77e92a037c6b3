"""The ComfyUI node pack without ComfyUI: its installer, and its guard giving the CLI's findings for the same request.

The nodes themselves run in ComfyUI (tests/test_comfyui_e2e.py); everything they decide is in
``iga.integrations.comfyui.guard``, tested here on the bundled demo model's recipe (presets, forbidden lists,
overrides) against `iga plan --json`.
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from iga.cli import app
from iga.guard import read_records
from iga.integrations.comfyui.guard import (
    FROM_LOADER, FROM_RECIPE, NodeError, comfyui_problems, conditioning_text, graph_clip_skip, ksampler_request,
    load_source, loader_settings, parse_overrides, recipe_presets, sigma_mismatch,
)
from iga.integrations.comfyui.install import LOADER, NotComfyUI, install
from iga.paths import default_model_path

SIZE = (32, 32)


@pytest.fixture
def audit(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("IGA_AUDIT_LOG", str(path))
    monkeypatch.setenv("IGA_CACHE_DIR", str(tmp_path / "cache"))
    return path


def _comfyui_folder(root):
    (root / "custom_nodes").mkdir(parents=True)
    (root / "main.py").write_text("")
    (root / "nodes.py").write_text("")
    return root


# --- install ------------------------------------------------------------------------------------------------------


def test_install_writes_the_loader_once_and_a_second_run_changes_nothing(tmp_path):
    root = _comfyui_folder(tmp_path / "ComfyUI")
    said = []
    loader = install(root, say=said.append)
    assert loader == (root / "custom_nodes" / "iga_nodes" / "__init__.py").resolve()
    assert loader.read_text() == LOADER and "from iga.integrations.comfyui.nodes import" in LOADER
    mtime = loader.stat().st_mtime_ns
    assert install(root / "custom_nodes", say=said.append) == loader  # its custom_nodes folder works too
    assert loader.stat().st_mtime_ns == mtime and said[0].startswith("installed") and said[1].startswith("already")


def test_install_refuses_a_folder_that_is_not_comfyui_and_the_cli_exits_2(tmp_path):
    (tmp_path / "custom_nodes").mkdir()
    with pytest.raises(NotComfyUI, match="not a ComfyUI folder"):
        install(tmp_path, say=lambda _: None)
    r = CliRunner().invoke(app, ["comfyui", "install", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "is not a folder" in r.output
    assert not (tmp_path / "custom_nodes" / "iga_nodes").exists()


def test_install_accepts_a_base_directory_comfyui_runs_with(tmp_path):
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "models").mkdir()
    assert install(tmp_path / "custom_nodes", say=lambda _: None).read_text() == LOADER


def test_the_cli_installs_into_a_comfyui_folder(tmp_path):
    root = _comfyui_folder(tmp_path / "ComfyUI")
    r = CliRunner().invoke(app, ["comfyui", "install", str(root)])
    assert r.exit_code == 0, r.output
    assert (root / "custom_nodes" / "iga_nodes" / "__init__.py").read_text() == LOADER


# --- the same request, the same findings as `iga plan` ------------------------------------------------------------


def _cli_plan(*args: str) -> tuple[int, dict]:
    r = CliRunner().invoke(app, ["plan", "--json", "--size", f"{SIZE[0]}x{SIZE[1]}", *args])
    return r.exit_code, json.loads(r.stdout)


def _node_plan(mode: str = "guarded", loader_preset: str = "recipe default", **inputs) -> tuple[int, list[dict]]:
    """The IGA KSampler's path: loader handle, request from the node's inputs, the guard; (exit-like code,
    findings)."""
    handle = load_source(default_model_path(), mode, loader_preset)
    request = ksampler_request(handle, width=SIZE[0], height=SIZE[1], **{"preset": FROM_LOADER, **inputs})
    try:
        plan = handle.resolve(request)
    except NodeError as e:
        assert e.findings, str(e)
        return 3, [f.model_dump(mode="json") for f in e.findings]
    return 0, [f.model_dump(mode="json") for f in plan.findings]


CASES = {  # name: (the node's inputs, the same request as `iga plan` flags)
    "recipe defaults": ({"seed": 5}, ["--seed", "5"]),
    "a preset": ({"seed": 5, "preset": "Fast"}, ["--seed", "5", "--preset", "Fast"]),
    "a forbidden sampler": ({"seed": 5, "sampler": "lcm"}, ["--seed", "5", "--sampler", "lcm"]),
    "a forbidden schedule": ({"seed": 5, "scheduler": "turbo"}, ["--seed", "5", "--schedule", "turbo"]),
    "a deviation without override": ({"seed": 5, "sampler": "euler"}, ["--seed", "5", "--sampler", "euler"]),
    "overridden deviations": (
        {"seed": 5, "sampler": "euler", "steps": 50, "overrides": "sampler, steps", "override_reason": "A/B test"},
        ["--seed", "5", "--sampler", "euler", "--steps", "50", "--override", "sampler", "--override", "steps",
         "--reason", "A/B test"]),
    "cfg outside the range": ({"seed": 5, "cfg": 9.0}, ["--seed", "5", "--cfg", "9"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_node_request_gives_the_same_findings_as_iga_plan(case, audit):
    inputs, flags = CASES[case]
    code, findings = _node_plan(**inputs)
    cli_code, cli = _cli_plan(*flags)
    assert code == cli_code
    assert findings == (cli["findings"] if cli_code else cli["plan"]["findings"])


@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_modes_give_the_same_findings_as_iga_plan(mode, audit):
    code, findings = _node_plan(mode, seed=5, sampler="euler")
    cli_code, cli = _cli_plan("--seed", "5", "--sampler", "euler", "--mode", mode)
    assert (code, cli_code) == ((3, 3) if mode == "strict" else (0, 0))
    assert findings == (cli["findings"] if cli_code else cli["plan"]["findings"])


def test_a_forbidden_sampler_is_refused_with_the_guards_reason_and_suggestion(audit):
    handle = load_source(default_model_path(), "permissive")
    with pytest.raises(NodeError) as e:
        handle.resolve(ksampler_request(handle, seed=1, preset=FROM_LOADER, sampler="lcm"))
    assert "lcm is forbidden by this model's recipe" in str(e.value) and "use dpmpp_2m" in str(e.value)
    assert "iga-demo-v1" in str(e.value)


def test_an_unoverridden_deviation_tells_how_to_override_it_in_comfyui(audit):
    handle = load_source(default_model_path(), "guarded")
    with pytest.raises(NodeError, match="IGA KSampler's overrides .* override_reason"):
        handle.resolve(ksampler_request(handle, seed=1, preset=FROM_LOADER, sampler="euler"))


def test_an_override_without_a_reason_is_refused_before_the_guard(audit):
    handle = load_source(default_model_path(), "guarded")
    with pytest.raises(NodeError, match="need a reason: fill in override_reason"):
        ksampler_request(handle, seed=1, preset=FROM_LOADER, sampler="euler", overrides="sampler")


def test_an_accepted_override_is_written_to_the_audit_log_as_comfyui(audit):
    handle = load_source(default_model_path(), "guarded")
    plan = handle.resolve(ksampler_request(handle, seed=3, preset=FROM_LOADER, sampler="euler",
                                           overrides="sampler", override_reason="compare samplers"))
    assert plan.sampler == "euler" and plan.steps == 20
    (record,) = list(read_records(audit))
    assert record["action"] == "comfyui" and record["field"] == "sampler" and record["reason"] == "compare samplers"
    assert record["requested_value"] == "euler" and record["seed"] == 3


def test_the_loader_outputs_the_recipes_or_the_presets_settings_and_records_nothing(audit):
    plan = loader_settings(load_source(default_model_path(), "guarded"))
    assert (plan.sampler, plan.schedule, plan.steps, plan.cfg) == ("dpmpp_2m", "karras", 20, 3.0)
    fast = loader_settings(load_source(default_model_path(), "guarded", "Fast"))
    assert (fast.steps, fast.preset) == (15, "Fast")
    assert not audit.exists()


def test_the_ksampler_preset_overrides_the_loaders_and_knobs_left_from_recipe_ask_for_nothing(audit):
    handle = load_source(default_model_path(), "guarded", "Fast")
    assert ksampler_request(handle, seed=1, preset=FROM_LOADER).preset == "Fast"
    req = ksampler_request(handle, seed=1, preset="Quality", sampler=FROM_RECIPE, scheduler=FROM_RECIPE)
    assert (req.preset, req.sampler, req.schedule, req.steps, req.cfg) == ("Quality", None, None, None, None)
    assert handle.resolve(req).steps == 30


def test_a_preset_the_checkpoint_lacks_is_refused_with_its_list(audit):
    handle = load_source(default_model_path(), "guarded", "Turbo")
    with pytest.raises(NodeError, match="no preset 'Turbo'.*Quality"):
        loader_settings(handle)


def test_a_comfyui_sampler_name_is_forbidden_when_the_recipe_forbids_its_a1111_label(audit):
    from iga.recipe import parse_recipe_dict

    handle = load_source(default_model_path(), "permissive")
    raw = handle.source.recipe.to_dict()
    raw["constraints"]["forbid_samplers"] = ["Euler a"]
    handle.source.recipe = parse_recipe_dict(raw)[0]
    with pytest.raises(NodeError, match="euler_ancestral is forbidden"):
        handle.resolve(ksampler_request(handle, seed=1, preset=FROM_LOADER, sampler="euler_ancestral"))


def test_a_file_that_no_longer_matches_its_recipe_stops_the_loader_unless_permissive(audit, tmp_path):
    bad = tmp_path / "demo.safetensors"
    shutil.copyfile(default_model_path(), bad)
    with bad.open("r+b") as f:  # one byte of tensor data
        f.seek(-10, 2)
        byte = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(NodeError, match="iga verify failed.*weights_sha256 does not match"):
        load_source(bad, "guarded", rehash=True)
    plan = loader_settings(load_source(bad, "permissive", rehash=True))
    assert "integrity" in {o.field for o in plan.overrides}


def test_recipe_presets_gathers_every_checkpoints_presets_and_skips_unreadable_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    assert recipe_presets([str(default_model_path()), str(junk)]) == ["Fast", "Quality"]


# --- reading ComfyUI's graph, and what its KSampler can run --------------------------------------------------------


def test_the_prompt_text_is_read_from_the_text_encoder_node_behind_a_conditioning_link():
    graph = {"3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
             "9": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["3", 0]}}}
    assert conditioning_text(graph, ["3", 0]) == "a red circle"
    assert conditioning_text(graph, ["9", 0]) == "" and conditioning_text(None, ["3", 0]) == ""
    assert conditioning_text(graph, "not a link") == ""


def test_the_clip_skip_is_read_from_the_graph_between_the_loader_and_the_text_encoder():
    graph = {"1": {"class_type": "IgaCheckpointLoader", "inputs": {}},
             "2": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}},
             "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["2", 0]}},
             "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "b", "clip": ["1", 1]}},
             "5": {"class_type": "SomeCustomClip", "inputs": {"clip": ["1", 1]}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "c", "clip": ["5", 0]}}}
    assert [graph_clip_skip(graph, [n, 0]) for n in ("3", "4", "6")] == [2, 1, None]
    assert graph_clip_skip(None, ["3", 0]) is None


def test_overrides_are_read_from_commas_or_spaces():
    assert parse_overrides(" sampler, steps cfg ") == ["sampler", "steps", "cfg"] and parse_overrides("") == []


def test_a_plan_comfyuis_ksampler_cannot_run_is_named(audit):
    handle = load_source(default_model_path(), "permissive")
    plan = handle.resolve(ksampler_request(handle, seed=1, preset=FROM_LOADER, sampler="restart"))
    assert comfyui_problems(plan, ["euler", "dpmpp_2m"], ["karras"]) == [
        "the plan's sampler restart is not one of ComfyUI's (euler, dpmpp_2m)"]
    ok = handle.resolve(ksampler_request(handle, seed=1, preset=FROM_LOADER))
    assert comfyui_problems(ok, ["dpmpp_2m"], ["karras"]) == []
    assert comfyui_problems(ok.model_copy(update={"clip_skip": 2}), ["dpmpp_2m"], ["karras"], 2) == []
    assert "clip skip 2 but the graph's text encoding uses 1" in \
        comfyui_problems(ok.model_copy(update={"clip_skip": 2}), ["dpmpp_2m"], ["karras"], 1)[0]
    assert "cannot be read" in comfyui_problems(ok, ["dpmpp_2m"], ["karras"], None)[0]


def test_sigma_lists_that_differ_are_named_and_float32_rounding_is_not():
    assert sigma_mismatch([14.6, 1.0, 0.0], [14.600001, 1.0, 0.0]) is None
    assert sigma_mismatch([14.6, 1.0, 0.0], [14.6, 0.0]) == "ComfyUI would run 1 steps where the plan has 2"
    assert "sigma 1 is 1.1 in ComfyUI but 1 in the plan" == sigma_mismatch([14.6, 1.0, 0.0], [14.6, 1.1, 0.0])


def test_extra_png_text_is_kept_beside_igas_chunks_and_cannot_replace_them(tmp_path):
    from PIL import Image

    from iga.provenance import ProvenanceError, read_provenance, save_image
    from iga.provenance.png import read_png_text

    handle = load_source(default_model_path(), "guarded")
    plan = loader_settings(handle)
    img = Image.new("RGB", SIZE, (200, 10, 10))
    extra = {"prompt": json.dumps({"3": {"class_type": "KSampler"}}), "workflow": json.dumps({"nodes": []})}
    path = save_image(img, plan, tmp_path, "png", extra_text=extra)
    texts = read_png_text(path).texts
    assert json.loads(texts["prompt"]) == {"3": {"class_type": "KSampler"}} and texts["workflow"] == '{"nodes": []}'
    assert read_provenance(path).plan["sampler"] == "dpmpp_2m" and "parameters" in texts
    with pytest.raises(ProvenanceError, match="would replace iga's own chunk"):
        save_image(img, plan, tmp_path, "png", extra_text={"iga_metadata": "{}"})
