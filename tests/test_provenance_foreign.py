"""Reading other tools' images: A1111 (PNG and JPEG), ComfyUI (API graph and UI workflow), InvokeAI.

Fixtures are written by hand after the format descriptions in shared/reference/metadata.md sections 5-7 and
saved the way each tool saves them (Pillow PngInfo.add_text of json.dumps for ComfyUI/InvokeAI; tEXt
``parameters`` for A1111 PNG; piexif UserComment for A1111 JPEG).
"""

from __future__ import annotations

import copy
import io
import json

import piexif
import piexif.helper
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from iga.provenance import read_provenance

A1111_TEXT = (
    "masterpiece, best quality, (1girl:1.1), solo, looking at viewer\n"
    "Negative prompt: (worst quality:1.4), lowres, bad hands\n"
    "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned, "
    "Denoising strength: 0.5, Clip skip: 2, Hires upscale: 2, Hires upscaler: R-ESRGAN 4x+, "
    'Lora hashes: "detail: 62e1fbd6b3ba", Version: v1.10.1'
)

COMFY_PROMPT = {
    "3": {"inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                     "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                     "latent_image": ["5", 0]}, "class_type": "KSampler", "_meta": {"title": "KSampler"}},
    "4": {"inputs": {"ckpt_name": "sd15/v1-5-pruned-emaonly.safetensors"}, "class_type": "CheckpointLoaderSimple",
          "_meta": {"title": "Load Checkpoint"}},
    "5": {"inputs": {"width": 512, "height": 640, "batch_size": 1}, "class_type": "EmptyLatentImage",
          "_meta": {"title": "Empty Latent Image"}},
    "6": {"inputs": {"text": "beautiful scenery nature glass bottle landscape, purple galaxy bottle,",
                     "clip": ["4", 1]}, "class_type": "CLIPTextEncode", "_meta": {"title": "CLIP Text Encode"}},
    "7": {"inputs": {"text": "text, watermark", "clip": ["4", 1]}, "class_type": "CLIPTextEncode",
          "_meta": {"title": "CLIP Text Encode"}},
    "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode",
          "_meta": {"title": "VAE Decode"}},
    "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}, "class_type": "SaveImage",
          "_meta": {"title": "Save Image"}},
}

COMFY_WORKFLOW = {
    "last_node_id": 9, "last_link_id": 9,
    "nodes": [
        {"id": 3, "type": "KSampler", "pos": [863, 186], "size": [315, 262], "flags": {}, "order": 4, "mode": 0,
         "inputs": [{"name": "model", "type": "MODEL", "link": 1},
                    {"name": "positive", "type": "CONDITIONING", "link": 4},
                    {"name": "negative", "type": "CONDITIONING", "link": 6},
                    {"name": "latent_image", "type": "LATENT", "link": 2}],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": [7], "slot_index": 0}],
         "properties": {"Node name for S&R": "KSampler"},
         "widgets_values": [156680208700286, "randomize", 20, 8, "dpmpp_2m", "karras", 1]},
        {"id": 4, "type": "CheckpointLoaderSimple", "inputs": [],
         "outputs": [{"name": "MODEL", "links": [1]}, {"name": "CLIP", "links": [3, 5]}, {"name": "VAE", "links": [8]}],
         "widgets_values": ["v1-5-pruned-emaonly.safetensors"]},
        {"id": 5, "type": "EmptyLatentImage", "outputs": [{"name": "LATENT", "links": [2]}],
         "widgets_values": [512, 512, 1]},
        {"id": 6, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "type": "CLIP", "link": 3}],
         "widgets_values": ["a bottle with a galaxy inside"]},
        {"id": 7, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "type": "CLIP", "link": 5}],
         "widgets_values": ["text, watermark"]},
        {"id": 8, "type": "VAEDecode", "inputs": [{"name": "samples", "link": 7}, {"name": "vae", "link": 8}]},
        {"id": 9, "type": "SaveImage", "inputs": [{"name": "images", "link": 9}], "widgets_values": ["ComfyUI"]},
    ],
    "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"],
              [4, 6, 0, 3, 1, "CONDITIONING"], [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"],
              [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"]],
    "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4,
}

INVOKEAI = {
    "generation_mode": "sdxl_txt2img", "positive_prompt": "a photo of an astronaut riding a horse on mars",
    "positive_style_prompt": "", "negative_prompt": "blurry, lowres", "negative_style_prompt": "",
    "width": 1024, "height": 768, "seed": 2345678901, "rand_device": "cpu", "cfg_scale": 7.5,
    "cfg_rescale_multiplier": 0, "steps": 30, "scheduler": "dpmpp_2m_k", "clip_skip": 0,
    "model": {"key": "5c1f2a7e-0000-4000-8000-00000000abcd", "hash": "blake3:" + "9f" * 32,
              "name": "Juggernaut XL v9", "base": "sdxl", "type": "main"},
    "vae": {"key": "b2", "hash": "blake3:" + "11" * 32, "name": "sdxl-vae-fp16-fix", "base": "sdxl", "type": "vae"},
    "loras": [], "app_version": "4.2.4",
}


def png_with(tmp_path, name="x.png", **texts):
    meta = PngInfo()
    for key, value in texts.items():
        meta.add_text(key, value if isinstance(value, str) else json.dumps(value))
    path = tmp_path / name
    Image.new("RGB", (8, 8)).save(path, pnginfo=meta, compress_level=4)
    return path


def test_a1111_png(tmp_path):
    prov = read_provenance(png_with(tmp_path, parameters=A1111_TEXT))
    assert prov.source == "a1111" and prov.plan is None
    assert prov.prompt == "masterpiece, best quality, (1girl:1.1), solo, looking at viewer"
    assert prov.negative_prompt == "(worst quality:1.4), lowres, bad hands"
    assert (prov.seed, prov.steps, prov.cfg, prov.width, prov.height) == (1234567890, 25, 7.0, 512, 768)
    assert (prov.sampler, prov.schedule, prov.clip_skip, prov.denoise) == ("dpmpp_2m", "karras", 2, 0.5)
    assert (prov.model_name, prov.model_hash) == ("v1-5-pruned-emaonly", "6ce0161689")
    assert prov.raw["parameters"] == A1111_TEXT and prov.warnings == []


def test_a1111_jpeg_written_like_a1111(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (16, 8)).save(buf, "JPEG")
    exif_bytes = piexif.dump({"Exif": {piexif.ExifIFD.UserComment:
                                       piexif.helper.UserComment.dump(A1111_TEXT + " ✓", encoding="unicode")}})
    out = io.BytesIO()
    piexif.insert(exif_bytes, buf.getvalue(), out)
    path = tmp_path / "a.jpg"
    path.write_bytes(out.getvalue())
    prov = read_provenance(path)
    assert prov.source == "a1111" and prov.format == "jpeg" and (prov.image_width, prov.image_height) == (16, 8)
    assert prov.seed == 1234567890 and prov.raw["EXIF UserComment"].endswith("v1.10.1 ✓")


def test_a1111_legacy_png_with_combined_sampler(tmp_path):
    text = ("a castle\nNegative prompt: \nSteps: 30, Sampler: DPM++ SDE Karras, CFG scale: 7.5, Seed: 9, "
            "Size: 768x512, Model hash: 0123456789, Model: dreamshaper_8, Version: v1.6.0")
    prov = read_provenance(png_with(tmp_path, parameters=text))
    assert (prov.sampler, prov.schedule, prov.negative_prompt, prov.clip_skip) == ("dpmpp_sde", "karras", "", 1)


def test_comfyui_api_graph(tmp_path):
    prov = read_provenance(png_with(tmp_path, prompt=COMFY_PROMPT, workflow=COMFY_WORKFLOW))
    assert prov.source == "comfyui"
    assert prov.prompt == "beautiful scenery nature glass bottle landscape, purple galaxy bottle,"
    assert prov.negative_prompt == "text, watermark"
    assert (prov.seed, prov.steps, prov.cfg, prov.denoise) == (156680208700286, 20, 8.0, 1.0)
    assert (prov.sampler, prov.schedule, prov.width, prov.height) == ("euler", "normal", 512, 640)
    assert prov.model_name == "v1-5-pruned-emaonly" and prov.clip_skip is None
    assert prov.warnings == []


def test_comfyui_lora_clip_skip_and_primitive_links(tmp_path):
    g = copy.deepcopy(COMFY_PROMPT)
    g["10"] = {"inputs": {"lora_name": "detail.safetensors", "strength_model": 0.8, "strength_clip": 0.8,
                          "model": ["4", 0], "clip": ["11", 0]}, "class_type": "LoraLoader"}
    g["11"] = {"inputs": {"stop_at_clip_layer": -2, "clip": ["4", 1]}, "class_type": "CLIPSetLastLayer"}
    g["12"] = {"inputs": {"seed": 777}, "class_type": "Seed (rgthree)"}
    g["13"] = {"inputs": {"string": "a prompt from a string node"}, "class_type": "String Literal"}
    g["3"]["inputs"].update(model=["10", 0], seed=["12", 0])
    g["6"]["inputs"].update(clip=["10", 1], text=["13", 0])
    g["7"]["inputs"]["clip"] = ["10", 1]
    prov = read_provenance(png_with(tmp_path, prompt=g))
    assert (prov.seed, prov.clip_skip, prov.model_name) == (777, 2, "v1-5-pruned-emaonly")
    assert prov.prompt == "a prompt from a string node"


def test_comfyui_hires_fix_reports_the_first_pass(tmp_path):
    g = copy.deepcopy(COMFY_PROMPT)
    # the second pass gets the LOWER node id, so order of ids alone would pick it
    g["2"] = {"inputs": {"seed": 5, "steps": 12, "cfg": 8, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                         "denoise": 0.5, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                         "latent_image": ["14", 0]}, "class_type": "KSampler"}
    g["14"] = {"inputs": {"upscale_method": "nearest-exact", "scale_by": 1.5, "samples": ["3", 0]},
               "class_type": "LatentUpscaleBy"}
    prov = read_provenance(png_with(tmp_path, prompt=g))
    assert (prov.seed, prov.steps, prov.sampler) == (156680208700286, 20, "euler")
    assert any("2 sampler nodes" in w for w in prov.warnings)


def test_comfyui_ksampler_advanced_sdxl(tmp_path):
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "a lighthouse", "text_l": "a lighthouse",
                                                             "width": 4096, "height": 4096, "crop_w": 0, "crop_h": 0,
                                                             "target_width": 4096, "target_height": 4096,
                                                             "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "fog", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "5": {"class_type": "KSamplerAdvanced", "inputs": {
            "add_noise": "enable", "noise_seed": 42, "steps": 30, "cfg": 6.5, "sampler_name": "dpmpp_2m_sde",
            "scheduler": "exponential", "start_at_step": 0, "end_at_step": 30,
            "return_with_leftover_noise": "disable", "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
            "latent_image": ["4", 0]}},
    }
    prov = read_provenance(png_with(tmp_path, prompt=g))
    assert (prov.prompt, prov.negative_prompt, prov.seed) == ("a lighthouse", "fog", 42)
    assert (prov.sampler, prov.schedule, prov.width, prov.denoise) == ("dpmpp_2m_sde", "exponential", 1024, None)
    assert prov.model_name == "sd_xl_base_1.0"


def test_comfyui_computed_prompt_and_unknown_sampler_are_warnings(tmp_path):
    g = copy.deepcopy(COMFY_PROMPT)
    g["6"]["inputs"]["text"] = ["20", 0]
    g["20"] = {"class_type": "StringConcatenate", "inputs": {"string_a": ["21", 0], "string_b": "x"}}
    g["3"]["inputs"]["sampler_name"] = "my_custom_sampler"
    prov = read_provenance(png_with(tmp_path, prompt=g))
    assert prov.prompt is None and prov.negative_prompt == "text, watermark"
    assert prov.sampler == "my_custom_sampler"
    assert any("not a literal" in w for w in prov.warnings) and any("my_custom_sampler" in w for w in prov.warnings)


def test_comfyui_workflow_only(tmp_path):
    prov = read_provenance(png_with(tmp_path, workflow=COMFY_WORKFLOW))
    assert prov.source == "comfyui"
    assert (prov.prompt, prov.negative_prompt) == ("a bottle with a galaxy inside", "text, watermark")
    assert (prov.seed, prov.steps, prov.cfg, prov.sampler, prov.schedule) == (156680208700286, 20, 8.0, "dpmpp_2m",
                                                                               "karras")
    assert (prov.width, prov.height, prov.model_name) == (512, 512, "v1-5-pruned-emaonly")
    assert any("UI workflow" in w for w in prov.warnings)


def test_comfyui_graph_without_sampler_and_non_graph_prompt(tmp_path):
    g = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}
    prov = read_provenance(png_with(tmp_path, prompt=g))
    assert prov.source == "comfyui" and prov.seed is None and any("KSampler" in w for w in prov.warnings)
    prov = read_provenance(png_with(tmp_path, "t.png", prompt="just a plain text prompt"))
    assert prov.source == "none" and any("not a ComfyUI graph" in w for w in prov.warnings)


def test_a1111_parameters_win_over_comfy_keys(tmp_path):
    prov = read_provenance(png_with(tmp_path, parameters=A1111_TEXT, prompt=COMFY_PROMPT))
    assert prov.source == "a1111"


def test_invokeai(tmp_path):
    prov = read_provenance(png_with(tmp_path, invokeai_metadata=INVOKEAI, invokeai_graph={"id": "g", "nodes": {}}))
    assert prov.source == "invokeai"
    assert (prov.prompt, prov.negative_prompt) == ("a photo of an astronaut riding a horse on mars", "blurry, lowres")
    assert (prov.seed, prov.steps, prov.cfg, prov.width, prov.height) == (2345678901, 30, 7.5, 1024, 768)
    assert (prov.sampler, prov.schedule) == ("dpmpp_2m", "karras")
    assert (prov.model_name, prov.model_hash, prov.clip_skip) == ("Juggernaut XL v9", "blake3:" + "9f" * 32, 0)
    assert prov.warnings == []


@pytest.mark.parametrize("scheduler,sampler,schedule", [("euler_a", "euler_ancestral", None),
                                                        ("kdpm_2_a_k", "dpm_2_ancestral", "karras"),
                                                        ("unipc", "uni_pc", None), ("lms_k", "lms", "karras")])
def test_invokeai_scheduler_ids(tmp_path, scheduler, sampler, schedule):
    prov = read_provenance(png_with(tmp_path, invokeai_metadata={**INVOKEAI, "scheduler": scheduler}))
    assert (prov.sampler, prov.schedule) == (sampler, schedule)
    assert (schedule is None) == any("does not record" in w for w in prov.warnings)


def test_invokeai_wrong_types_are_warnings(tmp_path):
    bad = {**INVOKEAI, "seed": "lots", "steps": [30], "model": "name only", "scheduler": "warp_drive"}
    prov = read_provenance(png_with(tmp_path, invokeai_metadata=bad))
    assert prov.seed is None and prov.steps is None and prov.model_name is None and prov.sampler == "warp_drive"
    assert len(prov.warnings) == 4
