"""Per-architecture defaults: what a checkpoint without a recipe resolves against.

These are the settings the big UIs use for each family (A1111: DPM++ 2M + Karras, CFG 7, 20 steps), with
wide ranges, so nothing is refused that those UIs allow; the guard says clearly that no recipe was found.
"""

from __future__ import annotations

from typing import Any

from iga.recipe.schema import Recipe

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
}


def architecture_default_recipe(architecture: str, prediction_type: str | None = None,
                                training_schedule: dict[str, Any] | None = None) -> Recipe:
    """A permissive stand-in recipe for a checkpoint that carries none (on the schedule it declares, if any)."""
    a = _ARCH.get(architecture, _ARCH["unknown"])
    return Recipe.model_validate({
        "iga_version": "1.0.0",
        "model_id": f"{architecture} (no recipe)",
        "architecture": architecture if architecture in _ARCH else None,
        "prediction_type": prediction_type or a["prediction_type"],
        "training_schedule": training_schedule or _SD_SCHEDULE,
        "sampler": {"name": "dpmpp_2m"},
        "scheduler": {"name": "karras"},
        "cfg": {"default": 7.0, "min": 0.0, "max": 30.0},
        "steps": {"default": 20, "min": UI_STEPS[0], "max": UI_STEPS[1]},
        "resolution": {"preferred": [a["size"]], "max": a["max"]},
    })


def has_component(architecture: str, component: str) -> bool:
    """Whether models of an architecture have a ``component`` ("vae", "clip_skip": CLIP layers to skip)."""
    return bool(_ARCH.get(architecture, _ARCH["unknown"]).get(component, True))


def default_training_schedule() -> dict[str, Any]:
    """The SD1/SD2/SDXL training schedule (scaled_linear 0.00085 -> 0.012 over 1000 steps)."""
    return dict(_SD_SCHEDULE)
