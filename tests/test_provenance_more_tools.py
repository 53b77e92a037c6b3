"""Reading Fooocus, SwarmUI and Civitai-style metadata, and `iga replay --model` of other tools' images.

Fixtures follow the documented shapes: Fooocus writes a ``parameters`` tEXt chunk (a JSON object, or A1111
infotext) and a ``fooocus_scheme`` chunk; SwarmUI writes ``{"sui_image_params": ..., "sui_extra_data": ...,
"sui_models": ...}`` in ``parameters`` (PNG) or EXIF UserComment (JPEG); Civitai appends ``Civitai resources: [...]``
(unquoted JSON) to the A1111 parameter line. Replay runs on the bundled demo model (dpmpp_2m + karras, steps 15-40,
cfg 1.5-4, 32x32).
"""

from __future__ import annotations

import copy
import io
import json

import piexif
import piexif.helper
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from iga.provenance import read_provenance
from test_generate_support import cli, file_sha256, one_thread  # noqa: F401  (one_thread: module fixture)

FOOOCUS = {
    "adaptive_cfg": 7, "adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "juggernautXL_v8Rundiffusion.safetensors",
    "base_model_hash": "aeb7e9e689", "clip_skip": 2, "full_negative_prompt": ["(worst quality:1.3)", "blurry"],
    "full_prompt": ["a cat on a sofa, intricate, highly detailed", "cinematic still, moody"],
    "guidance_scale": 4, "loras": [["sd_xl_offset_example-lora_1.0.safetensors", 0.1, "4852686128"]],
    "lora_combined_1": "sd_xl_offset_example-lora_1.0 : 0.1", "metadata_scheme": "fooocus", "negative_prompt": "",
    "performance": "Speed", "prompt": "a cat on a sofa", "refiner_model": "None", "refiner_switch": 0.5,
    "resolution": "(896, 1152)", "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras", "seed": "1234567890123",
    "sharpness": 2, "steps": 30, "styles": "['Fooocus V2', 'Fooocus Enhance', 'Fooocus Sharp']",
    "vae": "Default (model)", "version": "Fooocus v2.5.5",
}

FOOOCUS_A1111 = (
    "a cat on a sofa, intricate, highly detailed, cinematic still\n"
    "Negative prompt: (worst quality:1.3), blurry\n"
    'Steps: 30, Sampler: DPM++ 2M SDE, Seed: 987, Size: 896x1152, CFG scale: 4, Sharpness: 2, '
    'ADM Guidance: "(1.5, 0.8, 0.3)", Model: juggernautXL_v8Rundiffusion, Performance: Speed, '
    'Scheduler: exponential, VAE: Default (model), Styles: "[\'Fooocus V2\', \'Fooocus Enhance\']", '
    'Raw prompt: a cat on a sofa, Version: Fooocus v2.5.5'
)

SWARM = {
    "sui_image_params": {
        "prompt": "a dog in the snow", "negativeprompt": "blurry", "images": 1, "seed": 42, "steps": 20,
        "cfgscale": 7.0, "aspectratio": "1:1", "width": 1024, "height": 1024, "sampler": "dpmpp_2m",
        "scheduler": "karras", "clipstopatlayer": -2, "model": "OfficialStableDiffusion/sd_xl_base_1.0",
        "swarm_version": "0.9.4.0",
    },
    "sui_extra_data": {"date": "2024-10-01", "prep_time": "0.01 sec", "generation_time": "3.2 sec"},
    "sui_models": [{"name": "OfficialStableDiffusion/sd_xl_base_1.0.safetensors", "param": "model",
                    "hash": "0x" + "ab" * 32}],
}

CIVITAI = (
    "a cat, masterpiece\nNegative prompt: lowres\n"
    "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 512x768, Clip skip: 2, "
    "Created Date: 2024-05-01T12:00:00.0000000Z, "
    'Civitai resources: [{"type":"checkpoint","modelVersionId":290640,"modelName":"Pony Diffusion V6 XL",'
    '"modelVersionName":"V6, start with this one"},{"type":"lora","weight":0.8,"modelVersionId":12,'
    '"modelName":"Detail Tweaker","modelVersionName":"v1"}], Civitai metadata: {"remixOfId":123}'
)


def png(tmp_path, name="x.png", size=(32, 32), **texts) -> str:
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    path = tmp_path / name
    Image.new("RGB", size).save(path, pnginfo=info)
    return path


def jpeg_with_user_comment(tmp_path, comment: str, name="x.jpg"):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "JPEG")
    exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(comment,
                                                                                              encoding="unicode")}})
    path = tmp_path / name
    piexif.insert(exif, buf.getvalue(), str(path))
    return path


def settings(prov):
    return (prov.prompt, prov.negative_prompt, prov.seed, prov.steps, prov.cfg, prov.sampler, prov.schedule,
            prov.width, prov.height, prov.model_name, prov.model_hash, prov.clip_skip)


# ---------------------------------------------------------------- reading
def test_fooocus_json(tmp_path):
    prov = read_provenance(png(tmp_path, parameters=json.dumps(FOOOCUS), fooocus_scheme="fooocus"))
    assert prov.source == "fooocus" and prov.warnings == []
    assert settings(prov) == ("a cat on a sofa", "", 1234567890123, 30, 4.0, "dpmpp_2m_sde_gpu", "karras", 896, 1152,
                              "juggernautXL_v8Rundiffusion", "aeb7e9e689", 2)


def test_fooocus_json_is_recognised_without_its_scheme_chunk(tmp_path):
    prov = read_provenance(png(tmp_path, parameters=json.dumps(FOOOCUS)))
    assert prov.source == "fooocus" and prov.seed == 1234567890123


def test_fooocus_odd_values_are_warnings(tmp_path):
    odd = {**FOOOCUS, "resolution": "__import__('os').system('x')", "seed": [1], "sampler": "no_such_sampler"}
    prov = read_provenance(png(tmp_path, parameters=json.dumps(odd), fooocus_scheme="fooocus"))
    assert prov.source == "fooocus" and prov.width is None and prov.seed is None
    assert prov.sampler == "no_such_sampler"
    assert any("resolution" in w for w in prov.warnings) and any("seed" in w for w in prov.warnings)
    assert any("unknown sampler" in w for w in prov.warnings)


def test_fooocus_a1111_scheme(tmp_path):
    prov = read_provenance(png(tmp_path, parameters=FOOOCUS_A1111, fooocus_scheme="a1111"))
    assert prov.source == "fooocus" and prov.warnings == []
    # 'Scheduler: exponential' (Fooocus' key) wins over A1111's Automatic schedule for the label
    assert (prov.sampler, prov.schedule, prov.seed, prov.width, prov.height) == ("dpmpp_2m_sde", "exponential", 987,
                                                                                 896, 1152)
    assert prov.prompt.startswith("a cat on a sofa, intricate") and prov.model_name == "juggernautXL_v8Rundiffusion"


def test_swarmui_png(tmp_path):
    prov = read_provenance(png(tmp_path, parameters=json.dumps(SWARM)))
    assert prov.source == "swarmui" and prov.warnings == []
    assert settings(prov) == ("a dog in the snow", "blurry", 42, 20, 7.0, "dpmpp_2m", "karras", 1024, 1024,
                              "sd_xl_base_1.0", "0x" + "ab" * 32, 2)


def test_swarmui_jpeg_exif(tmp_path):
    prov = read_provenance(jpeg_with_user_comment(tmp_path, json.dumps(SWARM)))
    assert prov.source == "swarmui" and prov.format == "jpeg"
    assert settings(prov)[:9] == ("a dog in the snow", "blurry", 42, 20, 7.0, "dpmpp_2m", "karras", 1024, 1024)


def test_swarmui_odd_values_are_warnings(tmp_path):
    odd = copy.deepcopy(SWARM)
    odd["sui_image_params"].update(clipstopatlayer=3, steps="many", width=None)
    prov = read_provenance(png(tmp_path, parameters=json.dumps(odd)))
    assert prov.source == "swarmui" and prov.clip_skip is None and prov.steps is None
    assert any("clipstopatlayer" in w for w in prov.warnings) and any("steps" in w for w in prov.warnings)
    bare = read_provenance(png(tmp_path, "b.png", parameters=json.dumps({"sui_image_params": "x"})))
    assert bare.source == "swarmui" and bare.prompt is None and bare.warnings


def test_civitai_resources_name_the_model(tmp_path):
    prov = read_provenance(png(tmp_path, parameters=CIVITAI))
    assert prov.source == "a1111" and prov.warnings == []
    assert (prov.model_name, prov.sampler, prov.schedule, prov.seed, prov.steps, prov.clip_skip) == (
        "Pony Diffusion V6 XL", "dpmpp_2m", "karras", 5, 25, 2)
    with_model = read_provenance(png(tmp_path, "m.png", parameters=CIVITAI.replace("Steps: 25,", "Steps: 25, "
                                                                                    "Model: ponyV6,")))
    assert with_model.model_name == "ponyV6"


def test_show_names_the_new_sources(tmp_path):
    res = cli(["show", png(tmp_path, parameters=json.dumps(SWARM))])
    assert res.exit_code == 0 and "SwarmUI metadata" in res.stdout
    res = cli(["show", png(tmp_path, "f.png", parameters=json.dumps(FOOOCUS), fooocus_scheme="fooocus"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["source"] == "fooocus"


# ---------------------------------------------------------------- replay of other tools' images
def demo_model():
    from iga.paths import default_model_path

    return default_model_path()


def a1111(steps=20, extra=""):
    return ("a red circle on a blue background\nNegative prompt: \n"
            f"Steps: {steps}, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 3, Seed: 7, Size: 32x32{extra}")


def replay_json(args):
    res = cli(["replay", *args, "--json"])
    return res, (json.loads(res.stdout) if res.exit_code == 0 else None)


def test_replay_a1111_image_inside_the_recipe(tmp_path, offline_audit):
    image = png(tmp_path, parameters=a1111(extra=", Model hash: 0123456789, Model: elsewhere"))
    res, out = replay_json([image, "--model", demo_model(), "--out", tmp_path / "out"])
    assert res.exit_code == 0, res.stdout + res.stderr
    assert out["schema"] == "iga.replay-foreign/1" and out["source"] == "a1111"
    plan = read_provenance(out["image"]).plan  # a new image with its full plan
    assert (plan["seed"], plan["steps"], plan["cfg"], plan["sampler"], plan["schedule"]) == (7, 20, 3.0, "dpmpp_2m",
                                                                                            "karras")
    assert plan["prompt"] == "a red circle on a blue background" and out["plan"]["seed"] == 7
    assert any(c.startswith("RNG: GPU") and "CPU" in c for c in out["caveats"])
    assert any("model hash 0123456789" in c for c in out["caveats"])


def test_replay_caveats_follow_what_the_image_says(tmp_path, offline_audit):
    autov2 = file_sha256(demo_model())[:10]
    extra = (f", Model hash: {autov2}, RNG: CPU, ENSD: 31337, Hires upscale: 2, Denoising strength: 0.5, "
             'Lora hashes: "detail: 62e1fbd6b3ba", ADetailer model: face_yolov8n.pt')
    res, out = replay_json([png(tmp_path, parameters=a1111(extra=extra)), "--model", demo_model(),
                            "--out", tmp_path / "out"])
    assert res.exit_code == 0, res.stdout + res.stderr
    text = "\n".join(out["caveats"])
    assert "RNG: GPU" not in text and "model hash" not in text  # CPU noise and the same model file
    assert "ENSD 31337" in text and "hires fix" in text and "LoRAs" in text and "ADetailer model" in text
    res = cli(["replay", png(tmp_path, "t.png", parameters=a1111()), "--model", demo_model(), "--out",
               tmp_path / "out"])
    assert res.exit_code == 0 and "cannot reproduce exactly:" in res.stdout and "  - RNG: GPU" in res.stdout


def test_replay_outside_the_recipe_is_refused_unless_overridden(tmp_path, offline_audit):
    image = png(tmp_path, parameters=a1111(steps=60))
    res = cli(["replay", image, "--model", demo_model(), "--out", tmp_path / "out"])
    assert res.exit_code == 3 and "refused" in res.stderr
    assert not (tmp_path / "out").exists()
    res, out = replay_json([image, "--model", demo_model(), "--out", tmp_path / "out", "--override", "steps",
                            "--reason", "x"])
    assert res.exit_code == 0, res.stdout + res.stderr
    assert out["plan"]["steps"] == 60 and [o["field"] for o in out["plan"]["overrides"]] == ["steps"]
    import os

    records = [json.loads(line) for line in open(os.environ["IGA_AUDIT_LOG"])]
    assert [(r["action"], r["field"], r["reason"]) for r in records] == [("replay", "steps", "x")]


def test_replay_comfyui_image(tmp_path, offline_audit):
    from test_provenance_foreign import COMFY_PROMPT

    graph = copy.deepcopy(COMFY_PROMPT)
    graph["3"]["inputs"].update(seed=11, steps=16, cfg=2.5, sampler_name="dpmpp_2m", scheduler="karras")
    graph["5"]["inputs"].update(width=32, height=32)
    graph["6"]["inputs"]["text"], graph["7"]["inputs"]["text"] = "a red circle on a blue background", ""
    res, out = replay_json([png(tmp_path, prompt=json.dumps(graph)), "--model", demo_model(),
                            "--out", tmp_path / "out"])
    assert res.exit_code == 0, res.stdout + res.stderr
    assert out["source"] == "comfyui" and (out["plan"]["seed"], out["plan"]["steps"]) == (11, 16)
    assert any("no model hash" in c for c in out["caveats"])
    assert not any(c.startswith("RNG") for c in out["caveats"])


def test_replay_fooocus_image_permissive(tmp_path, offline_audit):
    record = {**FOOOCUS, "resolution": "(32, 32)", "steps": 20, "guidance_scale": 3, "clip_skip": 1,
              "full_prompt": ["a red circle", "on a blue background"], "full_negative_prompt": []}
    image = png(tmp_path, parameters=json.dumps(record), fooocus_scheme="fooocus")
    assert cli(["replay", image, "--model", demo_model(), "--out", tmp_path / "out"]).exit_code == 3  # sampler
    res, out = replay_json([image, "--model", demo_model(), "--out", tmp_path / "out", "--mode", "permissive"])
    assert res.exit_code == 0, res.stdout + res.stderr
    assert out["plan"]["sampler"] == "dpmpp_2m_sde_gpu"
    assert out["plan"]["prompt"] == "a red circle, on a blue background"  # Fooocus' expanded prompt parts
    text = "\n".join(out["caveats"])
    assert "Fooocus styles" in text and "sharpness 2" in text and "LoRAs" in text
    assert "Brownian tree" in text  # the catalog's variant note for the *_gpu sampler


def test_foreign_image_without_model_names_the_fix(tmp_path):
    res = cli(["replay", png(tmp_path, parameters=a1111())])
    assert res.exit_code == 2
    assert "has no iga plan (source: a1111)" in res.stderr and "name a model with --model" in res.stderr
    plain = png(tmp_path, "plain.png")
    res = cli(["replay", plain, "--model", demo_model()])
    assert res.exit_code == 2 and "nothing to replay" in res.stderr
