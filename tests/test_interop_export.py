"""`iga recipe export`: each target's documented shape, checked where possible against the target itself (ComfyUI's
own node definitions from its source, diffusers by running a pipeline with the export)."""

from __future__ import annotations

import ast
import json
import re
import tarfile

import numpy as np
import pytest

from iga.guard.defaults import architecture_default_recipe
from iga.guard.source import describe_model
from iga.interop.export import FORMATS, export_recipe
from iga.paths import DEMO_MODEL
from iga.recipe import parse_recipe_dict
from shared_support import SHARED
from test_generate_support import cli

COMFYUI_TAR = SHARED / "third_party" / "comfyui" / "comfyui-a125cd84.tar.gz"
# Fooocus' closed set of preset keys (modules/config.py possible_preset_keys, reference/peers.md s1.1)
FOOOCUS_KEYS = {"default_model", "default_refiner", "default_refiner_switch", "default_loras", "default_cfg_scale",
                "default_sample_sharpness", "default_cfg_tsnr", "default_clip_skip", "default_sampler",
                "default_scheduler", "default_performance", "default_overwrite_step", "default_overwrite_switch",
                "default_image_number", "default_prompt", "default_prompt_negative", "default_styles",
                "default_aspect_ratio", "default_vae", "default_inpaint_engine_version",
                "default_save_metadata_to_images", "checkpoint_downloads", "embeddings_downloads",
                "lora_downloads", "previous_default_models"}
# InvokeAI MainModelDefaultSettings fields (reference/metadata.md s7)
INVOKEAI_FIELDS = {"vae", "vae_precision", "scheduler", "steps", "cfg_scale", "cfg_rescale_multiplier", "width",
                   "height", "guidance", "cpu_only", "fp8_storage"}


@pytest.fixture(scope="module")
def demo_recipe():
    return describe_model(DEMO_MODEL).recipe


def _comfy_source(member: str) -> str:
    if not COMFYUI_TAR.is_file():
        pytest.skip("ComfyUI's source is not beside the project (../shared/third_party/comfyui)")
    with tarfile.open(COMFYUI_TAR) as tar:
        return tar.extractfile(f"ComfyUI/{member}").read().decode()


def _comfy_node_inputs(source: str) -> dict[str, set[str]]:
    """class name -> required input names, read from the INPUT_TYPES of ComfyUI's own node classes."""
    out: dict[str, set[str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for fn in node.body:
            if isinstance(fn, ast.FunctionDef) and fn.name == "INPUT_TYPES":
                for ret in ast.walk(fn):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Dict):
                        for k, v in zip(ret.value.keys, ret.value.values):
                            if isinstance(k, ast.Constant) and k.value == "required" and isinstance(v, ast.Dict):
                                out[node.name] = {kk.value for kk in v.keys if isinstance(kk, ast.Constant)}
    return out


# The required inputs of the ComfyUI nodes the export uses, as its API format names them (ComfyUI nodes.py,
# INPUT_TYPES, commit a125cd84). The next test checks this table against ComfyUI's source when it is beside the
# project; the one after checks the export against the table, so CI without ComfyUI still checks the shape.
COMFYUI_NODE_INPUTS = {
    "CheckpointLoaderSimple": {"ckpt_name"},
    "EmptyLatentImage": {"width", "height", "batch_size"},
    "CLIPSetLastLayer": {"clip", "stop_at_clip_layer"},
    "CLIPTextEncode": {"text", "clip"},
    "KSampler": {"model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                 "latent_image", "denoise"},
    "VAEDecode": {"samples", "vae"},
    "VAELoader": {"vae_name"},
    "SaveImage": {"images", "filename_prefix"},
    "ModelSamplingSD3": {"model", "shift"},  # comfy_extras/nodes_model_advanced.py
    "ModelSamplingFlux": {"model", "max_shift", "base_shift", "width", "height"},
    "FluxGuidance": {"conditioning", "guidance"},  # comfy_extras/nodes_flux.py (a schema-style node)
}


def _comfy_schema_inputs(source: str) -> dict[str, set[str]]:
    """node id -> input names of ComfyUI's schema-style nodes (``io.Schema(node_id=..., inputs=[io.X.Input("n")])``)."""
    out = {}
    for block in re.split(r"\nclass ", source):
        node = re.search(r'node_id="(\w+)"', block)
        if node:
            out[node.group(1)] = set(re.findall(r'io\.\w+\.Input\(\s*"(\w+)"', block))
    return out


def test_the_node_table_is_comfyuis_own():
    nodes = _comfy_node_inputs(_comfy_source("nodes.py"))
    nodes.update(_comfy_node_inputs(_comfy_source("comfy_extras/nodes_model_advanced.py")))
    nodes.update(_comfy_schema_inputs(_comfy_source("comfy_extras/nodes_flux.py")))
    assert {name: nodes[name] for name in COMFYUI_NODE_INPUTS} == COMFYUI_NODE_INPUTS


def _check_graph(graph: dict) -> None:
    for node_id, node in graph.items():
        assert set(node["inputs"]) == COMFYUI_NODE_INPUTS[node["class_type"]], (node_id, node["class_type"])
        for value in node["inputs"].values():  # links are [node id, output index] to nodes of the graph
            if isinstance(value, list):
                assert value[0] in graph and isinstance(value[1], int)


def test_comfyui_workflow_uses_comfyuis_node_types_and_input_names(demo_recipe):
    graph = export_recipe(demo_recipe, "comfyui", model_file="m.safetensors").files["workflow_api.json"]
    _check_graph(graph)
    sampler = next(n for n in graph.values() if n["class_type"] == "KSampler")["inputs"]
    assert (sampler["sampler_name"], sampler["scheduler"], sampler["steps"], sampler["cfg"]) == \
        ("dpmpp_2m", "karras", 20, 3.0)


def test_catalogs_comfyui_schedules_are_comfyuis_scheduler_names():
    from iga.catalog.samplers import COMFYUI_SAMPLERS
    from iga.catalog.schedules import COMFYUI_SCHEDULES

    source = _comfy_source("comfy/samplers.py")
    handlers = re.search(r"SCHEDULER_HANDLERS = \{(.*?)\n\}", source, re.S).group(1)
    names = set(re.findall(r'^\s*"(\w+)":', handlers, re.M))
    assert set(COMFYUI_SCHEDULES) == names
    ksampler = set(re.findall(r'"(\w+)"', re.search(r"KSAMPLER_NAMES = \[(.*?)\]", source, re.S).group(1)))
    assert set(COMFYUI_SAMPLERS) <= ksampler | {"ddim", "uni_pc", "uni_pc_bh2"}


def test_comfyui_workflow_with_clip_skip_and_a_separate_vae():
    recipe = architecture_default_recipe("sd1").to_dict()
    recipe.update(clip_skip=2, vae={"id": "vae-ft-mse.safetensors", "embedded": False})
    graph = export_recipe(parse_recipe_dict(recipe)[0], "comfyui").files["workflow_api.json"]
    _check_graph(graph)
    types = {n["class_type"]: n for n in graph.values()}
    assert types["CLIPSetLastLayer"]["inputs"]["stop_at_clip_layer"] == -2
    assert types["VAELoader"]["inputs"]["vae_name"] == "vae-ft-mse.safetensors"


def test_every_format_states_the_forbid_list_it_cannot_hold(demo_recipe):
    for fmt in FORMATS:
        lost = " ".join(export_recipe(demo_recipe, fmt).lost)
        assert "lcm" in lost and "15-40" in lost, (fmt, lost)


def test_a1111_infotext_reads_back_as_the_recipe(demo_recipe):
    from iga.provenance.infotext import parse_infotext

    files = export_recipe(demo_recipe, "a1111", model_file="iga-demo-v1.safetensors").files
    back = parse_infotext("\n" + files["infotext.txt"])
    assert (back["sampler"], back["schedule"], back["steps"], back["cfg"], back["width"]) == \
        ("dpmpp_2m", "karras", 20, 3.0, 32)
    sidecar = files["iga-demo-v1.json"]
    assert set(sidecar) <= {"description", "notes", "vae", "sd version", "activation text", "preferred weight"}
    assert "Never use: lcm" in sidecar["notes"]


def test_invokeai_settings_have_only_its_fields_and_a_known_scheduler(demo_recipe):
    from iga.catalog.samplers import INVOKEAI_IDS

    settings = export_recipe(demo_recipe, "invokeai").files["default_settings.json"]
    assert set(settings) <= INVOKEAI_FIELDS
    assert INVOKEAI_IDS[settings["scheduler"]] == ("dpmpp_2m", "karras")
    assert settings["cfg_scale"] >= 1 and settings["width"] % 8 == 0 and settings["steps"] == 20


def test_fooocus_preset_has_only_fooocus_keys(demo_recipe):
    [preset] = export_recipe(demo_recipe, "fooocus").files.values()
    assert set(preset) <= FOOOCUS_KEYS
    assert (preset["default_sampler"], preset["default_scheduler"], preset["default_aspect_ratio"]) == \
        ("dpmpp_2m", "karras", "32*32")


def test_a_recipe_diffusers_cannot_run_is_refused_with_the_reason():
    recipe = architecture_default_recipe("sd1").to_dict()
    recipe["sampler"] = {"name": "res_multistep"}
    with pytest.raises(ValueError, match="diffusers has no scheduler"):
        export_recipe(parse_recipe_dict(recipe)[0], "diffusers")


def test_cli_export_writes_files_and_lists_what_is_lost(tmp_path):
    r = cli(["recipe", "export", str(DEMO_MODEL), "--to", "comfyui", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    graph = json.loads((tmp_path / "workflow_api.json").read_text())
    assert graph == data["files"]["workflow_api.json"] and data["cannot_express"]
    assert graph["4"]["inputs"]["ckpt_name"] == "iga-demo-v1.safetensors"
    assert cli(["recipe", "export", str(DEMO_MODEL), "--to", "nope"]).exit_code == 2


def test_diffusers_export_runs_the_pipeline_to_igas_image(tmp_path):
    """The exported scheduler config and call arguments, given to diffusers' own pipeline, make iga's image."""
    torch = pytest.importorskip("torch")
    from diffusers import StableDiffusionPipeline
    from diffusers.schedulers import EulerDiscreteScheduler

    import iga
    from iga.guard import Request
    from iga.models import testing

    tiny = testing.build_tiny("sd1", seed=50)
    folder = testing.save_folder(tiny, tmp_path / "sd1")
    single = testing.save_single_file(tiny, tmp_path / "sd1.safetensors")
    recipe = architecture_default_recipe("sd1").to_dict()
    recipe.update(sampler={"name": "euler"}, scheduler={"name": "karras"},
                  steps={"default": 8, "min": 4, "max": 30}, cfg={"default": 7.0, "min": 1.0, "max": 12.0},
                  resolution={"preferred": ["64x64"], "max": "512x512"})
    recipe = parse_recipe_dict(recipe)[0]
    export = export_recipe(recipe, "diffusers")
    config, call = export.files["scheduler_config.json"], export.files["pipeline_call.json"]
    assert config["_class_name"] == "EulerDiscreteScheduler" and config["use_karras_sigmas"] is True
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    prompt = "a red circle on a blue background"
    with torch.inference_mode():
        theirs = pipe(prompt, generator=torch.Generator("cpu").manual_seed(1), output_type="np", **call).images[0]
    theirs = (theirs * 255.0).round().astype(np.uint8)
    model = iga.load(single)
    plan, _ = model.source.resolve(Request(prompt=prompt, seed=1), "guarded", recipe=recipe)
    ours = model.generate(plan=plan)[0].pixels
    assert ours.std() > 5
    assert int(np.abs(ours.astype(int) - theirs.astype(int)).max()) <= 2


def test_flow_recipes_export_their_shift_and_guidance_as_comfyui_nodes():
    from test_guard_flow import FLUX_DEV, SD3

    flux = export_recipe(FLUX_DEV, "comfyui")
    graph = flux.files["workflow_api.json"]
    _check_graph(graph)
    types = {n["class_type"]: n for n in graph.values()}
    assert types["ModelSamplingFlux"]["inputs"]["max_shift"] == 1.15
    assert types["FluxGuidance"]["inputs"]["guidance"] == 3.5
    k = types["KSampler"]["inputs"]
    assert graph[k["model"][0]]["class_type"] == "ModelSamplingFlux"
    assert graph[k["positive"][0]]["class_type"] == "FluxGuidance" and k["scheduler"] == "simple"
    assert any("time_uniform" in line for line in flux.lost)
    sd3 = export_recipe(SD3, "comfyui").files["workflow_api.json"]
    _check_graph(sd3)
    assert {n["class_type"]: n for n in sd3.values()}["ModelSamplingSD3"]["inputs"]["shift"] == 3.0


def test_flow_recipes_export_diffusers_flow_scheduler_and_distilled_guidance():
    from test_guard_flow import FLUX_DEV, SD3

    flux = export_recipe(FLUX_DEV, "diffusers").files
    assert flux["scheduler_config.json"]["use_dynamic_shifting"] is True
    assert flux["pipeline_call.json"]["guidance_scale"] == 3.5 and "true_cfg_scale" not in flux["pipeline_call.json"]
    sd3 = export_recipe(SD3, "diffusers").files
    assert sd3["scheduler_config.json"] == {"_class_name": "FlowMatchEulerDiscreteScheduler",
                                            "num_train_timesteps": 1000, "shift": 3.0}
    assert sd3["pipeline_call.json"]["guidance_scale"] == 4.5
