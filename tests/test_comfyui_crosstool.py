"""Cross-tool reproducibility: ComfyUI's stock KSampler and `iga generate` make the same image.

One checkpoint (tests/comfyui_support.py: SD1.5's full-size CLIP-L and VAE around a 64-channel UNet, random
weights), one prompt, seed, sampler, schedule, step count and CFG, 64x64 on the CPU: through ComfyUI's stock graph
(CheckpointLoaderSimple, CLIPSetLastLayer -1, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode, SaveImage)
in its own virtual environment, and through the `iga generate` command line in iga's. The images must agree to
2/255 per pixel with iga's ``--conventions comfyui`` (timesteps rounded to the nearest training step; the first
noise scaled by sqrt(1 + sigma_max^2) at full denoise). The same comparison without it is printed, not asserted.

Conventions the two tools share without any flag, checked here rather than assumed: SD1's token rows (BOS, the
prompt, EOS, then EOS as padding, 77 ids) and the conditioning layer (ComfyUI's CLIPSetLastLayer -1 is iga's clip
skip 1: the last layer, after the final layer norm).

Not the same, and within the tolerance: ComfyUI keeps the text encoder in float16 on the CPU (its default; iga uses
float32), and its SaveImage truncates to 8 bits where iga rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_support import comfyui_env, txt2img_workflow

PROMPT = "a red circle on a blue background"
SETTINGS = dict(seed=1234, steps=6, cfg=7.0, width=64, height=64)
TOLERANCE = 2 / 255
IGA = str(Path(sys.executable).with_name("iga"))


def iga_generate(checkpoint: Path, out: Path, sampler: str, scheduler: str, conventions: str | None) -> dict:
    """`iga generate` (the command line, iga's own venv); its JSON report."""
    s = SETTINGS
    cmd = [IGA, "generate", PROMPT, "--model", str(checkpoint), "--negative", "", "--sampler", sampler,
           "--schedule", scheduler, "--steps", str(s["steps"]), "--cfg", str(s["cfg"]), "--seed", str(s["seed"]),
           "--size", f"{s['width']}x{s['height']}", "--clip-skip", "1", "-o", str(out), "--json"]
    if conventions:
        cmd += ["--conventions", conventions]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "IGA_AUDIT_LOG": str(out / "audit.jsonl")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"iga generate failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_comfyui_ksampler_and_iga_generate_make_the_same_image(comfyui, tmp_path, sampler):
    made = comfyui.run(txt2img_workflow(comfyui.checkpoint_name, PROMPT, sampler=sampler, scheduler="karras",
                                        clip_skip=1, prefix=f"crosstool-{sampler}", **SETTINGS))
    assert made["status"] == "success", f"ComfyUI: {made['error']}\n{comfyui.log()}"
    theirs = pixels(made["images"][0])
    # a flat or saturated image would agree with anything: the comparison means something only on a varied one
    unsaturated = ((theirs > 0) & (theirs < 1)).mean()
    assert theirs.std() > 0.05 and unsaturated > 0.5, f"ComfyUI's image is degenerate: std {theirs.std():.3f}, " \
                                                       f"{unsaturated:.0%} of values unsaturated"
    images, diffs = {}, {}
    for conventions in ("comfyui", None):
        report = iga_generate(comfyui.checkpoint_path, tmp_path / str(conventions), sampler, "karras", conventions)
        plan = report["plans"][0]
        assert (plan["sampler"], plan["schedule"], plan["steps"], plan["cfg"], plan["clip_skip"]) == (
            sampler, "karras", SETTINGS["steps"], SETTINGS["cfg"], 1)
        images[conventions] = pixels(Path(report["images"][0]))
        assert images[conventions].shape == theirs.shape
        diffs[conventions] = np.abs(images[conventions] - theirs)
    signed = np.unique(np.rint((images["comfyui"] - theirs) * 255).astype(int), return_counts=True)
    changed = np.abs(images["comfyui"] - images[None])
    print(f"\n{sampler} + karras, {SETTINGS['steps']} steps, CFG {SETTINGS['cfg']:g}, 64x64: max |iga - ComfyUI| = "
          f"{diffs['comfyui'].max() * 255:.0f}/255 (mean {diffs['comfyui'].mean() * 255:.2f}/255) with "
          f"--conventions comfyui, {diffs[None].max() * 255:.0f}/255 (mean {diffs[None].mean() * 255:.2f}/255) "
          f"without; iga - ComfyUI in 1/255: {dict(zip(*(v.tolist() for v in signed)))} (ComfyUI's SaveImage "
          f"truncates, iga rounds); the conventions change {(changed > 0).mean():.1%} of iga's values, by up to "
          f"{changed.max() * 255:.0f}/255")
    assert diffs["comfyui"].max() <= TOLERANCE + 1e-9, (
        f"{sampler}: iga differs from ComfyUI by {diffs['comfyui'].max() * 255:.0f}/255 (allowed 2/255)")


def test_comfyui_and_iga_give_sd1_the_same_token_rows_and_layer():
    """ComfyUI's SD1 tokenizer (its own code, in its venv) pads with the end token as iga's SD1 family does, and its
    CLIPSetLastLayer -1 selects the last layer's output with the final norm, which is iga's clip skip 1."""
    from iga.models.configs import family
    from iga.models.text import TextEncoderSlot
    from iga.models.tokenizer import clip_tokenizer, tokenize

    folder, python = comfyui_env()
    spec = family("sd1")["text"][0]
    slot = TextEncoderSlot(model=None, tokenizer=clip_tokenizer(spec["pad"]), layer=spec["layer"], pooled=False)
    texts = [PROMPT, ""]
    ours = [slot.rows(tokenize(t, spec["pad"]), 1) for t in texts]
    code = ("import json, sys, comfy.cli_args\n"
            "comfy.cli_args.args.cpu = True\n"  # as --cpu: no CUDA probe at import
            "import comfy.sd1_clip as c\n"
            "t = c.SD1Tokenizer()\n"
            "texts = json.load(sys.stdin)\n"
            "rows = [[[tok[0] for tok in row] for row in t.tokenize_with_weights(x)['l']] for x in texts]\n"
            "m = c.SD1ClipModel(device='cpu')\n"
            "m.set_clip_options({'layer': -1})\n"  # what CLIPSetLastLayer -1 does
            "l = m.clip_l\n"
            "layer = [l.layer, l.layer_idx, l.num_layers, l.layer_norm_hidden_state]\n"
            "print(json.dumps({'rows': rows, 'layer': layer}))")
    done = subprocess.run([str(python), "-c", code], cwd=folder, input=json.dumps(texts), capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert theirs["rows"] == ours
    # ComfyUI: hidden state -1 of 12, final norm applied; iga's clip skip 1 on SD1: final_layer_norm(hidden[-1])
    assert theirs["layer"] == ["hidden", -1, 12, True]
    assert (spec["layer"], spec["final_norm"], spec["config"]["num_hidden_layers"]) == ("last", True, 12)
