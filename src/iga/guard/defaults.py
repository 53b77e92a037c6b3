"""Per-architecture defaults: what a checkpoint without a recipe resolves against.

These are the settings the big UIs use for each family (A1111: DPM++ 2M + Karras, CFG 7, 20 steps), with
wide ranges, so nothing is refused that those UIs allow; the guard says clearly that no recipe was found.
"""

from __future__ import annotations

from typing import Any

from iga.recipe.schema import RECIPE_VERSION, Recipe

_SD_SCHEDULE = {"kind": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                "num_train_timesteps": 1000, "zero_terminal_snr": False}

# The knob space a UI exposes (A1111's sliders: steps 1-150 by 1, CFG 1-30 by 0.5; clip skip 1-12). The
# stand-in recipe admits it, and the evaluation's baseline arm draws from it.
UI_STEPS: tuple[int, int] = (1, 150)
UI_CFG: tuple[float, float, float] = (1.0, 30.0, 0.5)  # min, max, slider step
UI_CLIP_SKIP: tuple[int, int] = (1, 12)

_ARCH: dict[str, dict[str, Any]] = {
    "sd1": {"prediction_type": "eps", "size": "512x512", "max": "1024x1024"},
    "sd2": {"prediction_type": "v", "size": "768x768", "max": "1536x1536"},
    "sdxl": {"prediction_type": "eps", "size": "1024x1024", "max": "2048x2048"},
    "sdxl_refiner": {"prediction_type": "eps", "size": "1024x1024", "max": "2048x2048"},
    # iga's pixel-space demo family: no VAE to swap, and its text encoder has no CLIP layers to skip
    "demo": {"prediction_type": "v", "size": "32x32", "max": "64x64", "vae": False, "clip_skip": False},
    "unknown": {"prediction_type": "eps", "size": "512x512", "max": "2048x2048"},
    # rectified-flow families: Euler on their own flow grid, as diffusers and ComfyUI run them
    "sd3": {"prediction_type": "flow", "size": "1024x1024", "max": "2048x2048", "sampler": "euler",
            "schedule": "normal", "cfg": (7.0, 0.0, 30.0), "steps": (28, 1, 150)},
    # Flux uses only CLIP's pooled output (no layers to skip). dev is guidance-distilled: it runs at CFG 1 with
    # its guidance as an input; schnell is step-distilled to 1-4 steps. These are facts of the weights, not taste,
    # so even without a recipe they are the ranges.
    "flux-dev": {"prediction_type": "flow", "size": "1024x1024", "max": "2048x2048", "sampler": "euler",
                 "schedule": "time_uniform", "cfg": (1.0, 1.0, 1.0), "steps": (28, 1, 150), "guidance": 3.5,
                 "clip_skip": False},
    "flux-schnell": {"prediction_type": "flow", "size": "1024x1024", "max": "2048x2048", "sampler": "euler",
                     "schedule": "time_uniform", "cfg": (1.0, 1.0, 1.0), "steps": (4, 1, 4), "clip_skip": False},
}

# The released flow families' noise schedules (the scheduler configs diffusers ships for SD3 medium, Flux dev and
# Flux schnell): what a file that states none was trained with.
FLOW_SCHEDULES: dict[str, dict[str, Any]] = {
    "sd3": {"kind": "flow", "shift": 3.0},
    "flux-dev": {"kind": "flow", "dynamic_shift": {"base_shift": 0.5, "max_shift": 1.15, "base_seq_len": 256,
                                                   "max_seq_len": 4096, "pixels_per_token": 16}},
    "flux-schnell": {"kind": "flow", "shift": 1.0},
}


def flow_family(architecture: str, variant: str | None) -> str | None:
    """The defaults key of a flow model ("sd3", "flux-dev", "flux-schnell"), or None for VP models."""
    if architecture == "sd3":
        return "sd3"
    if architecture == "flux":
        return "flux-schnell" if variant == "schnell" else "flux-dev"
    return None


def architecture_default_recipe(architecture: str, prediction_type: str | None = None,
                                training_schedule: dict[str, Any] | None = None, variant: str | None = None) -> Recipe:
    """A permissive stand-in recipe for a checkpoint that carries none (on the schedule it declares, if any;
    ``variant``: "dev"/"schnell" for Flux)."""
    key = flow_family(architecture, variant) or architecture
    a = _ARCH.get(key, _ARCH["unknown"])
    cfg, steps = a.get("cfg", (7.0, 0.0, 30.0)), a.get("steps", (20, UI_STEPS[0], UI_STEPS[1]))
    data: dict[str, Any] = {
        "iga_version": RECIPE_VERSION,
        "model_id": f"{architecture} (no recipe)",
        "architecture": architecture if key in _ARCH else None,
        "prediction_type": prediction_type or a["prediction_type"],
        "training_schedule": training_schedule or FLOW_SCHEDULES.get(key) or _SD_SCHEDULE,
        "sampler": {"name": a.get("sampler", "dpmpp_2m")},
        "scheduler": {"name": a.get("schedule", "karras")},
        "cfg": {"default": cfg[0], "min": cfg[1], "max": cfg[2]},
        "steps": {"default": steps[0], "min": steps[1], "max": steps[2]},
        "resolution": {"preferred": [a["size"]], "max": a["max"]},
    }
    if "guidance" in a:
        data["guidance"] = {"default": a["guidance"], "min": 0.0, "max": 30.0}
    return Recipe.model_validate(data)


def has_component(architecture: str, component: str) -> bool:
    """Whether models of an architecture have a ``component`` ("vae", "clip_skip": CLIP layers to skip)."""
    key = flow_family(architecture, None) or architecture
    return bool(_ARCH.get(key, _ARCH["unknown"]).get(component, True))


def default_training_schedule() -> dict[str, Any]:
    """The SD1/SD2/SDXL training schedule (scaled_linear 0.00085 -> 0.012 over 1000 steps)."""
    return dict(_SD_SCHEDULE)
