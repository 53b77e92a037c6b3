"""`iga recipe export`: a recipe in another tool's own terms, with what that tool cannot express said out loud.

Each exporter returns an ``Export``: the files to write (name -> JSON-able content or text) and ``lost``, one
sentence per part of the recipe the target has no place for (ranges, forbid lists, allowed step counts, presets,
schedules it lacks). Nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

FORMATS = ("diffusers", "comfyui", "a1111", "invokeai", "fooocus")


@dataclass
class Export:
    format: str
    files: dict[str, Any]  # file name -> JSON-able object (written as JSON) or str (written as text)
    lost: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "files": self.files, "cannot_express": self.lost}


def _size(recipe: Any) -> tuple[int, int]:
    preferred = recipe.resolution.preferred if recipe.resolution and recipe.resolution.preferred else ["512x512"]
    w, h = preferred[0].lower().split("x")
    return int(w), int(h)


def _common_losses(recipe: Any, *, ranges: bool = True, presets: bool = True, forbids: bool = True) -> list[str]:
    """What most targets lack: ranges, forbid/allow lists, allowed step counts, presets."""
    lost = []
    if ranges:
        lost.append(f"ranges: steps {recipe.steps.min}-{recipe.steps.max} and CFG {recipe.cfg.min:g}-"
                    f"{recipe.cfg.max:g} (only the defaults are exported)")
    c = recipe.constraints
    if forbids and (c.forbid_samplers or c.forbid_schedules or c.allow_samplers or c.allow_schedules):
        parts = [f"forbidden samplers {', '.join(c.forbid_samplers)}" if c.forbid_samplers else "",
                 f"forbidden schedules {', '.join(c.forbid_schedules)}" if c.forbid_schedules else "",
                 f"only samplers {', '.join(c.allow_samplers)}" if c.allow_samplers else "",
                 f"only schedules {', '.join(c.allow_schedules)}" if c.allow_schedules else ""]
        lost.append("constraints: " + "; ".join(p for p in parts if p) + " (nothing in the target enforces them)")
    if recipe.scheduler.subsample:
        lost.append(f"allowed step counts {recipe.scheduler.subsample}")
    if presets and recipe.presets:
        lost.append(f"presets {', '.join(p.name for p in recipe.presets)}")
    if recipe.cfg.variant != "cfg":
        lost.append(f"CFG variant {recipe.cfg.variant}")
    return lost


def to_diffusers(recipe: Any, model_file: str | None = None) -> Export:
    """A scheduler config for the recipe's sampler and schedule, and the pipeline call's keyword arguments."""
    from iga.recipe.names import to_diffusers as diffusers_class

    if recipe.prediction_type == "flow":
        return _flow_to_diffusers(recipe)
    match = diffusers_class(recipe.sampler.name, recipe.scheduler.name)
    if match is None:
        raise ValueError(f"diffusers has no scheduler for {recipe.sampler.name} + {recipe.scheduler.name}: no "
                         f"equivalent to export (iga.integrations.diffusers runs such recipes through iga's engine)")
    cls, flags = match
    ts = recipe.training_schedule
    pred = {"eps": "epsilon", "v": "v_prediction", "x0": "sample", "flow": "flow_prediction"}[recipe.prediction_type]
    config: dict[str, Any] = {"_class_name": cls, **flags, "prediction_type": pred}
    if ts is not None and ts.kind != "flow":
        config.update(beta_schedule=ts.kind, beta_start=ts.beta_start, beta_end=ts.beta_end,
                      num_train_timesteps=ts.num_train_timesteps, rescale_betas_zero_snr=ts.zero_terminal_snr)
    w, h = _size(recipe)
    call = {"num_inference_steps": recipe.steps.default, "guidance_scale": recipe.cfg.default, "width": w,
            "height": h}
    if recipe.cfg.rescale:
        call["guidance_rescale"] = recipe.cfg.rescale
    lost = _common_losses(recipe)
    if recipe.clip_skip and recipe.clip_skip > 1:
        call["clip_skip"] = recipe.clip_skip - 1  # diffusers counts skipped layers from 0 (A1111's 2 = diffusers' 1)
    if recipe.scheduler.grid:
        call["sigmas"] = [float(s) for s in recipe.scheduler.grid[:-1]]  # diffusers appends the final 0 itself
    if recipe.vae is not None and recipe.vae.id and not recipe.vae.embedded:
        lost.append(f"VAE {recipe.vae.id}: load it yourself (AutoencoderKL) and pass it as vae=")
    return Export("diffusers", {"scheduler_config.json": config, "pipeline_call.json": call}, lost)


def _flow_to_diffusers(recipe: Any) -> Export:
    """SD3/Flux: diffusers runs flow models with FlowMatchEulerDiscreteScheduler (Euler on the shifted grid: static
    shift with SD3's spacing, or Flux's dynamic shift over uniform flow time); its pipelines take Flux's distilled
    guidance as ``guidance_scale`` and real CFG as ``true_cfg_scale``."""
    ts = recipe.training_schedule
    spacing = "time_uniform" if ts is not None and ts.dynamic_shift is not None else "normal"
    if recipe.sampler.name != "euler" or recipe.scheduler.name not in ("normal", "time_uniform"):
        raise ValueError(f"diffusers has no scheduler for {recipe.sampler.name} + {recipe.scheduler.name} on a flow "
                         f"model: its pipelines run Euler on the {spacing} grid")
    config: dict[str, Any] = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}
    if ts is not None and ts.dynamic_shift is not None:
        d = ts.dynamic_shift
        config.update(use_dynamic_shifting=True, base_shift=d.base_shift, max_shift=d.max_shift,
                      base_image_seq_len=d.base_seq_len, max_image_seq_len=d.max_seq_len)
    else:
        config["shift"] = ts.shift if ts is not None and ts.shift is not None else 1.0
    w, h = _size(recipe)
    call: dict[str, Any] = {"num_inference_steps": recipe.steps.default, "width": w, "height": h}
    if recipe.guidance is not None:
        call["guidance_scale"] = recipe.guidance.default
        if recipe.cfg.default != 1:
            call["true_cfg_scale"] = recipe.cfg.default
    else:
        call["guidance_scale"] = recipe.cfg.default
    lost = _common_losses(recipe)
    if recipe.scheduler.name != spacing:
        lost.append(f"schedule {recipe.scheduler.name}: diffusers' scheduler for this model spaces steps as "
                    f"{spacing}")
    return Export("diffusers", {"scheduler_config.json": config, "pipeline_call.json": call}, lost)


def to_comfyui(recipe: Any, model_file: str | None = None) -> Export:
    """An API-format workflow: checkpoint loader -> (clip skip) -> prompts -> KSampler -> VAE decode -> save."""
    from iga.catalog.samplers import SAMPLERS
    from iga.catalog.schedules import SCHEDULES

    lost = _common_losses(recipe)
    if not SAMPLERS[recipe.sampler.name].comfyui:
        raise ValueError(f"sampler {recipe.sampler.name} is not one of ComfyUI's KSampler samplers")
    scheduler = recipe.scheduler.name
    if scheduler == "time_uniform":
        lost.append("schedule time_uniform (the Flux reference): ComfyUI's simple takes the same points from a "
                    "1000-entry table; equal when the step count divides 1000")
        scheduler = "simple"
    elif not SCHEDULES[scheduler].comfyui:
        lost.append(f"schedule {scheduler}: not a KSampler scheduler in ComfyUI (it is a separate node there); "
                    f"the workflow uses normal")
        scheduler = "normal"
    w, h = _size(recipe)
    ckpt = model_file or f"{recipe.model_id or 'model'}.safetensors"
    clip = ["4", 1]
    graph: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": w, "height": h, "batch_size": 1}},
    }
    if recipe.clip_skip and recipe.clip_skip > 1:
        graph["10"] = {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -recipe.clip_skip,
                                                                     "clip": ["4", 1]}}
        clip = ["10", 0]
    vae = ["4", 2]
    if recipe.vae is not None and recipe.vae.id and not recipe.vae.embedded:
        graph["11"] = {"class_type": "VAELoader", "inputs": {"vae_name": recipe.vae.id}}
        vae = ["11", 0]
    model, positive = _comfyui_flow_nodes(recipe, graph, (w, h), lost)
    graph.update({
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 0, "steps": recipe.steps.default, "cfg": recipe.cfg.default, "sampler_name": recipe.sampler.name,
            "scheduler": scheduler, "denoise": 1.0, "model": model, "positive": positive,
            "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": vae}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "iga", "images": ["8", 0]}},
    })
    if recipe.prediction_type not in ("eps", "flow"):
        lost.append(f"prediction type {recipe.prediction_type}: ComfyUI detects it from the checkpoint; if it "
                    f"does not, add a ModelSamplingDiscrete node")
    return Export("comfyui", {"workflow_api.json": graph}, lost)


def _comfyui_flow_nodes(recipe: Any, graph: dict[str, Any], size: tuple[int, int],
                        lost: list[str]) -> tuple[list[Any], list[Any]]:
    """A flow recipe's trajectory in ComfyUI's nodes: ModelSamplingSD3 (static shift) or ModelSamplingFlux
    (dynamic shift) on the model, FluxGuidance (distilled guidance) on the positive prompt. Returns the KSampler's
    model and positive inputs."""
    model, positive = ["4", 0], ["6", 0]
    ts = recipe.training_schedule
    if ts is not None and ts.kind == "flow":
        d = ts.dynamic_shift
        if d is None:
            graph["12"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["4", 0], "shift": ts.shift or 1.0}}
        else:
            graph["12"] = {"class_type": "ModelSamplingFlux", "inputs": {
                "model": ["4", 0], "max_shift": d.max_shift, "base_shift": d.base_shift, "width": size[0],
                "height": size[1]}}
            if (d.base_seq_len, d.max_seq_len, d.pixels_per_token) != (256, 4096, 16):
                lost.append(f"dynamic shift over {d.base_seq_len}..{d.max_seq_len} tokens of {d.pixels_per_token} px: "
                            "ComfyUI's ModelSamplingFlux assumes 256..4096 tokens of 16 px")
        model = ["12", 0]
    if recipe.guidance is not None:
        graph["13"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["6", 0],
                                                                 "guidance": recipe.guidance.default}}
        positive = ["13", 0]
        lost.append(f"distilled guidance range {recipe.guidance.min:g}-{recipe.guidance.max:g} (only the default)")
    return model, positive


def _labels(recipe: Any) -> tuple[str, str]:
    from iga.provenance.labels import a1111_labels

    s, h = a1111_labels(recipe.sampler.name, recipe.scheduler.name)
    return s or recipe.sampler.name, h or recipe.scheduler.name


def to_a1111(recipe: Any, model_file: str | None = None) -> Export:
    """A1111's per-checkpoint user-metadata sidecar (``<model>.json``) and an infotext line of the defaults."""
    sampler, schedule = _labels(recipe)
    w, h = _size(recipe)
    line = f"Steps: {recipe.steps.default}, Sampler: {sampler}, Schedule type: {schedule}, CFG scale: " \
           f"{recipe.cfg.default:g}, Size: {w}x{h}"
    if recipe.clip_skip and recipe.clip_skip > 1:
        line += f", Clip skip: {recipe.clip_skip}"
    summary = _summary_text(recipe, sampler, schedule)
    sidecar: dict[str, Any] = {"description": f"iga recipe {recipe.model_id or ''}".strip(), "notes": summary}
    if recipe.vae is not None and recipe.vae.id and not recipe.vae.embedded:
        sidecar["vae"] = recipe.vae.id
    stem = (model_file or recipe.model_id or "model").rsplit(".", 1)[0]
    lost = [f"A1111 applies none of it automatically: the sidecar's notes and the infotext (paste it into the "
            f"prompt box and press the arrow) carry sampler, schedule, steps, CFG and size; "
            f"{'; '.join(_common_losses(recipe))}"]
    return Export("a1111", {f"{stem}.json": sidecar, "infotext.txt": line}, lost)


def _summary_text(recipe: Any, sampler: str, schedule: str) -> str:
    parts = [f"Sampler: {sampler}", f"Schedule type: {schedule}",
             f"Steps: {recipe.steps.default} ({recipe.steps.min}-{recipe.steps.max})",
             f"CFG scale: {recipe.cfg.default:g} ({recipe.cfg.min:g}-{recipe.cfg.max:g})"]
    if recipe.clip_skip:
        parts.append(f"Clip skip: {recipe.clip_skip}")
    c = recipe.constraints
    if c.forbid_samplers:
        parts.append(f"Never use: {', '.join(c.forbid_samplers)}")
    if c.forbid_schedules:
        parts.append(f"Never use schedules: {', '.join(c.forbid_schedules)}")
    return "; ".join(parts)


def _invokeai_scheduler(recipe: Any) -> tuple[str | None, str | None]:
    """InvokeAI's scheduler id for the recipe, and what is lost choosing it (ids with `_k` mean Karras; the others
    use the model's own diffusers spacing)."""
    from iga.catalog.samplers import INVOKEAI_IDS

    sampler, schedule = recipe.sampler.name, recipe.scheduler.name
    exact = [k for k, v in INVOKEAI_IDS.items() if v == (sampler, schedule)]
    if exact:
        return exact[0], None
    plain = [k for k, v in INVOKEAI_IDS.items() if v == (sampler, None)]
    if plain:
        return plain[0], f"schedule {schedule}: InvokeAI's {plain[0]} uses the model's own timestep spacing"
    return None, f"sampler {sampler}: InvokeAI has no scheduler for it"


def to_invokeai(recipe: Any, model_file: str | None = None) -> Export:
    """InvokeAI's per-model default settings (MainModelDefaultSettings)."""
    scheduler, problem = _invokeai_scheduler(recipe)
    w, h = _size(recipe)
    lost = [problem] if problem else []
    settings: dict[str, Any] = {"vae": None, "vae_precision": None, "scheduler": scheduler,
                                "steps": recipe.steps.default, "cfg_scale": max(1.0, recipe.cfg.default),
                                "cfg_rescale_multiplier": recipe.cfg.rescale or None, "width": w, "height": h,
                                "guidance": None}
    if recipe.cfg.default < 1:
        lost.append(f"CFG {recipe.cfg.default:g}: InvokeAI's cfg_scale is at least 1")
    if recipe.vae is not None and recipe.vae.id and not recipe.vae.embedded:
        lost.append(f"VAE {recipe.vae.id}: InvokeAI names VAEs by its own model key; choose it in the model manager")
    if recipe.clip_skip:
        lost.append(f"clip skip {recipe.clip_skip}: InvokeAI has no default for it")
    return Export("invokeai", {"default_settings.json": settings}, lost + _common_losses(recipe))


def to_fooocus(recipe: Any, model_file: str | None = None) -> Export:
    """A Fooocus preset (presets/NAME.json), with its ComfyUI-named sampler and scheduler."""
    from iga.catalog.samplers import SAMPLERS
    from iga.catalog.schedules import SCHEDULES

    w, h = _size(recipe)
    lost = _common_losses(recipe)
    if not SAMPLERS[recipe.sampler.name].comfyui or not SCHEDULES[recipe.scheduler.name].comfyui:
        lost.append(f"{recipe.sampler.name} + {recipe.scheduler.name}: Fooocus takes ComfyUI's names only; check the "
                    f"preset loads")
    preset: dict[str, Any] = {
        "default_model": model_file or f"{recipe.model_id or 'model'}.safetensors",
        "default_refiner": "None", "default_cfg_scale": recipe.cfg.default,
        "default_sampler": recipe.sampler.name, "default_scheduler": recipe.scheduler.name,
        "default_overwrite_step": recipe.steps.default, "default_aspect_ratio": f"{w}*{h}",
        "default_performance": "Speed",
    }
    if recipe.clip_skip:
        preset["default_clip_skip"] = recipe.clip_skip
    if recipe.vae is not None and recipe.vae.id and not recipe.vae.embedded:
        preset["default_vae"] = recipe.vae.id
    name = (recipe.model_id or "iga").replace("/", "_")
    return Export("fooocus", {f"{name}.json": preset}, lost)


EXPORTERS: dict[str, Callable[..., Export]] = {"diffusers": to_diffusers, "comfyui": to_comfyui, "a1111": to_a1111,
                                               "invokeai": to_invokeai, "fooocus": to_fooocus}


def export_recipe(recipe: Any, fmt: str, *, model_file: str | None = None) -> Export:
    """The recipe in ``fmt`` (one of FORMATS); raises ValueError when the target cannot hold its core at all."""
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown format {fmt!r}: choose {', '.join(FORMATS)}")
    return EXPORTERS[fmt](recipe, model_file)
