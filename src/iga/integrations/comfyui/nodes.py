"""iga's ComfyUI nodes: IGA Checkpoint Loader, IGA KSampler, IGA Save Image.

Imported by ComfyUI only (through the loader `iga comfyui install` writes): this module imports ComfyUI's own
modules. The decisions (recipe, verification, the guard's plan) are made in ``guard``, which needs no ComfyUI; here
they meet ComfyUI's loader, sampler and output folder.
"""

from __future__ import annotations

import json
import logging

import comfy.samplers
import comfy.sd
import folder_paths
import nodes as comfy_nodes

from iga.integrations.comfyui.guard import (
    FROM_LOADER, FROM_RECIPE, MODES, RECIPE_DEFAULT, NodeError, comfyui_problems, conditioning_text, graph_clip_skip,
    ksampler_request, load_source, loader_settings, recipe_presets, sigma_mismatch,
)

SAMPLERS = comfy.samplers.KSampler.SAMPLERS
SCHEDULERS = comfy.samplers.KSampler.SCHEDULERS
LATENT_SCALE = 8  # pixels per latent cell: the VAEs of every family ComfyUI's KSampler serves downsample 8x
CATEGORY = "iga"
_log = logging.getLogger("iga")


def _checkpoint_paths() -> list[str]:
    names = folder_paths.get_filename_list("checkpoints")
    return [p for p in (folder_paths.get_full_path("checkpoints", n) for n in names) if p]


def _presets() -> list[str]:
    return recipe_presets(_checkpoint_paths())


class IgaCheckpointLoader:
    """A checkpoint through ComfyUI's own loader, with its recipe read and verified and its settings as outputs."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (folder_paths.get_filename_list("checkpoints"), {"tooltip": "The checkpoint to load."}),
            "mode": (list(MODES), {"default": "guarded", "tooltip": "guarded: deviations from the recipe only as "
                                   "named overrides with a reason; strict: none; permissive: any, with a warning "
                                   "recorded. Forbidden samplers and schedules are refused in every mode."}),
            "preset": ([RECIPE_DEFAULT, *_presets()], {"tooltip": "A preset of the recipe (the list gathers the "
                       "presets of every checkpoint here; one this checkpoint lacks is refused with its list)."}),
            "verify": ("BOOLEAN", {"default": False, "tooltip": "Recompute the weights' SHA-256 from the file (as "
                       "`iga verify --rehash`) instead of trusting iga's hash cache. The recipe's hashes are "
                       "checked either way: a file that no longer matches stops here unless permissive."}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE", "IGA_RECIPE", SAMPLERS, SCHEDULERS, "INT", "FLOAT")
    RETURN_NAMES = ("MODEL", "CLIP", "VAE", "recipe", "sampler_name", "scheduler", "steps", "cfg")
    OUTPUT_TOOLTIPS = ("The model.", "The text encoder.", "The VAE.", "The recipe and the model's identity, for the "
                       "IGA KSampler.", "The recipe's (or preset's) sampler.", "Its scheduler.", "Its steps.",
                       "Its CFG.")
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads a checkpoint with ComfyUI's loader, reads and verifies its iga recipe, and outputs the "
                   "recipe's (or a preset's) sampler, scheduler, steps and CFG, ready for any KSampler.")

    def load(self, ckpt_name, mode, preset, verify):
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        handle = load_source(path, mode, preset, rehash=verify)  # before the weights: a bad file stops early
        plan = loader_settings(handle)
        problems = comfyui_problems(plan, SAMPLERS, SCHEDULERS)
        if plan.sampler not in SAMPLERS or plan.schedule not in SCHEDULERS:
            raise NodeError(f"{ckpt_name}: ComfyUI's KSampler cannot run this recipe (use `iga generate`): "
                            + "; ".join(problems))
        for problem in problems:  # the weights still load: the graph may apply these itself (clip skip)
            _log.warning("iga: %s: %s", ckpt_name, problem)
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(
            path, output_vae=True, output_clip=True,
            embedding_directory=folder_paths.get_folder_paths("embeddings"))[:3]
        return (model, clip, vae, handle, plan.sampler, plan.schedule, plan.steps, plan.cfg)


class IgaKSampler:
    """ComfyUI's sampling with iga's guard in front: the plan decides sampler, schedule, steps, CFG and seed."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "recipe": ("IGA_RECIPE", {"tooltip": "From the IGA Checkpoint Loader."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True}),
                "preset": ([FROM_LOADER, RECIPE_DEFAULT, *_presets()], {"tooltip": "A preset of the recipe; "
                           "'from loader': the loader's choice."}),
            },
            "optional": {
                "sampler_name": ([FROM_RECIPE, *SAMPLERS], {"default": FROM_RECIPE}),
                "scheduler": ([FROM_RECIPE, *SCHEDULERS], {"default": FROM_RECIPE}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": "0: from the preset or recipe."}),
                "cfg": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "0: from the preset or recipe."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "overrides": ("STRING", {"default": "", "tooltip": "Deviations from the recipe you accept, e.g. "
                              "'sampler, steps' (sampler, schedule, steps, cfg, size, ...)."}),
                "override_reason": ("STRING", {"default": "", "tooltip": "Why (required with overrides): written "
                                    "to iga's audit log and into every image."}),
            },
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("LATENT", "IGA_PLAN")
    RETURN_NAMES = ("LATENT", "plan")
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = ("ComfyUI's KSampler behind iga's guard: a forbidden sampler or schedule stops the run with the "
                   "reason; a deviation from the recipe runs only as a named override with a reason (audit log).")

    def sample(self, model, positive, negative, latent_image, recipe, seed, preset, sampler_name=FROM_RECIPE,
               scheduler=FROM_RECIPE, steps=0, cfg=0.0, denoise=1.0, overrides="", override_reason="",
               prompt=None, unique_id=None):
        samples = latent_image["samples"]
        links = (prompt or {}).get(str(unique_id), {}).get("inputs", {})
        clip_skip = graph_clip_skip(prompt, links.get("positive"))
        request = ksampler_request(
            recipe, seed=seed, preset=preset, sampler=sampler_name, scheduler=scheduler, steps=steps, cfg=cfg,
            overrides=overrides, override_reason=override_reason, width=samples.shape[-1] * LATENT_SCALE,
            height=samples.shape[-2] * LATENT_SCALE, prompt=conditioning_text(prompt, links.get("positive")),
            negative_prompt=conditioning_text(prompt, links.get("negative")), clip_skip=clip_skip)
        plan = recipe.resolve(request)
        _check_runnable(model, plan, clip_skip)
        plan = plan.model_validate({**plan.to_dict(), "comfyui": {
            "node": "IGA KSampler", "denoise": denoise, "batch_size": int(samples.shape[0])}})
        (out,) = comfy_nodes.common_ksampler(model, plan.seed, plan.steps, plan.cfg, plan.sampler, plan.schedule,
                                             positive, negative, latent_image, denoise=denoise)
        out["iga_plan"] = plan
        return (out, plan)


def _check_runnable(model, plan, clip_skip) -> None:
    """ComfyUI's KSampler must run what the plan says, sigma for sigma; else the run stops, saying what differs."""
    problems = comfyui_problems(plan, SAMPLERS, SCHEDULERS, clip_skip)
    if not problems:
        grid = comfy.samplers.KSampler(model, steps=plan.steps, device="cpu", sampler=plan.sampler,
                                       scheduler=plan.schedule).sigmas
        why = sigma_mismatch(plan.sigmas, [float(s) for s in grid])
        problems = [f"{why} (the recipe's training schedule or schedule parameters differ from this model's in "
                    "ComfyUI)"] if why else []
    if problems:
        raise NodeError("ComfyUI's KSampler cannot run iga's plan as planned: " + "; ".join(problems) +
                        ". Change the request, or use `iga generate`")


class IgaSaveImage:
    """Saves PNGs with iga's plan (``iga_metadata``) and A1111 ``parameters`` beside ComfyUI's prompt and workflow."""

    @classmethod
    def INPUT_TYPES(cls):
        from iga.provenance import DEFAULT_PATTERN

        return {
            "required": {
                "images": ("IMAGE",),
                "plan": ("IGA_PLAN", {"tooltip": "From the IGA KSampler."}),
            },
            "optional": {
                "filename_pattern": ("STRING", {"default": DEFAULT_PATTERN, "tooltip": "iga's file name pattern "
                                     "([datetime], [seed], [checkpoint_name], [sampler], [steps], [CFG], ...)."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = ("Saves PNGs into ComfyUI's output folder with iga's plan and A1111 parameters beside ComfyUI's "
                   "workflow: `iga show` and `iga replay` read them.")

    def save(self, images, plan, filename_pattern="", prompt=None, extra_pnginfo=None):
        import numpy as np
        import torch
        from comfy.cli_args import args
        from comfyui_version import __version__ as comfyui_version
        from PIL import Image

        from iga.generate import pixels_sha256
        from iga.provenance import save_image

        extra = {}
        if not args.disable_metadata:  # ComfyUI's own chunks, as its SaveImage writes them
            extra = {"prompt": json.dumps(prompt)} if prompt is not None else {}
            extra.update({k: json.dumps(v) for k, v in (extra_pnginfo or {}).items()})
        runtime = {"tool": f"ComfyUI {comfyui_version}", "torch": torch.__version__,
                   "threads": torch.get_num_threads()}
        results = []
        for k, image in enumerate(images):
            px = np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)
            update = {"pixels_sha256": pixels_sha256(px), "runtime": runtime}
            if len(images) > 1:
                update["batch_index"] = k
            path = save_image(Image.fromarray(px), plan.model_copy(update=update), folder_paths.get_output_directory(),
                              "png", filename_pattern or None, extra_text=extra)
            results.append({"filename": path.name, "subfolder": "", "type": "output"})
        return {"ui": {"images": results}}


NODE_CLASS_MAPPINGS = {"IgaCheckpointLoader": IgaCheckpointLoader, "IgaKSampler": IgaKSampler,
                       "IgaSaveImage": IgaSaveImage}
NODE_DISPLAY_NAME_MAPPINGS = {"IgaCheckpointLoader": "IGA Checkpoint Loader", "IgaKSampler": "IGA KSampler",
                              "IgaSaveImage": "IGA Save Image"}
