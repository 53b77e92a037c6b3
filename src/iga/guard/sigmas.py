"""The exact sigma list a plan's sampler walks and its model-call count, and the tail of it a partial pass runs."""

from __future__ import annotations

from typing import Any

from iga.recipe.schema import Recipe

from .plan import Conventions
from .resolution import Resolver


def conventions_schedule(conventions: Conventions | None, train: dict[str, Any]) -> dict[str, Any]:
    """The training schedule as the chosen tool feeds it to the network: ComfyUI rounds a VP model's timestep to
    the nearest training step (``argmin |log sigma - log sigma_t|``); k-diffusion, A1111 and diffusers' Euler
    interpolate. Flow models take sigma itself in both."""
    if conventions == "comfyui" and train.get("kind") != "flow":
        return {**train, "quantize": True}
    return train


def initial_noise_scaling(conventions: Conventions | None, train: dict[str, Any], sigmas: list[float],
                          partial: bool) -> str:
    """How the first latent is scaled: ``noise * sigma_0`` (k-diffusion, A1111, diffusers Euler), or ComfyUI's
    ``noise * sqrt(1 + sigma_0^2)`` when a VP model starts at its largest sigma (a full-denoise text-to-image pass)."""
    from iga.sampling.parameterization import schedule_from_config

    if conventions != "comfyui" or partial or not sigmas or train.get("kind") == "flow":
        return "sigma"
    sigma_max = float(schedule_from_config(train).sigma_max)
    return "vp_max" if sigmas[0] >= sigma_max * (1 - 1e-5) else "sigma"


def sigmas_and_nfe(r: Resolver, recipe: Recipe, train: dict[str, Any], sampler: str, schedule: str, steps: int,
                    pred: str, architecture: str, explicit: list[float] | None) -> tuple[list[float], int | None]:
    """The exact sigma list the sampler will walk, and its model-call count."""
    import torch

    from iga.sampling import schedules as S
    from iga.sampling.parameterization import schedule_from_config
    from iga.sampling.base import SamplingError
    from iga.sampling.samplers import SAMPLERS, expected_nfe

    spec = SAMPLERS.get(sampler)
    if spec is None:
        r.hard("sampler", f"{sampler} is in the name table but this build has no implementation of it", None,
               sampler, "choose another sampler (`iga samplers`)")
        return [], None
    if pred not in spec.parameterizations:
        r.hard("sampler", f"{sampler} does not support {pred!r} models (it supports "
               f"{', '.join(spec.parameterizations)})", recipe.sampler.name, sampler, f"use {recipe.sampler.name}")
        return [], None
    ts = schedule_from_config(train)
    try:
        if explicit is not None:
            sig = S.validate_sigmas(torch.tensor(explicit, dtype=torch.float32), "requested sigmas")
        else:
            n = steps + 1 if spec.discard_penultimate else steps
            params = dict(recipe.scheduler.params) if schedule == recipe.scheduler.name else {}
            if schedule == "explicit" and not recipe.scheduler.grid:
                r.hard("schedule", "the explicit schedule walks the recipe's own sigma grid, and this recipe has "
                       "none", recipe.scheduler.name, schedule, f"use {recipe.scheduler.name} (the recipe's schedule)")
                return [], None
            if schedule == "explicit":
                sig = S.explicit_grid(recipe.scheduler.grid, n)
            else:
                if schedule == "ays":
                    params.setdefault("model_family", "sdxl" if architecture.startswith("sdxl") else "sd1")
                sig = S.compute_schedule(schedule, n, ts, **params)
            if spec.discard_penultimate:
                sig = S.discard_penultimate(sig)
    except ValueError as e:
        r.hard("sigmas", str(e), None, explicit, "use a strictly decreasing list of sigmas ending in 0")
        return [], None
    try:  # the sampler's own structural checks (e.g. dpm_fast needs two distinct nonzero sigmas)
        nfe = expected_nfe(sampler, sig, kind="flow" if pred == "flow" else "vp")
    except SamplingError as e:
        r.hard("steps", str(e), recipe.steps.default, steps, "use more steps")
        return [], None
    return [float(x) for x in sig.tolist()], nfe


def cut_sigmas(r: Resolver, sampler: str, sigmas: list[float], start: int) -> tuple[list[float], int | None]:
    """The sigmas from index ``start`` on, and the model calls the sampler makes on them."""
    from iga.sampling.base import SamplingError
    from iga.sampling.samplers import expected_nfe
    import torch

    cut = sigmas[start:]
    try:
        nfe = expected_nfe(sampler, torch.tensor(cut), kind="flow" if r.recipe.prediction_type == "flow" else "vp")
    except SamplingError as e:
        r.hard("denoise", str(e), None, None, "raise denoise or steps")
        return [], None
    return cut, nfe
