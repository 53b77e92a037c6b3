"""img2img, inpainting and hires fix as the guard sees them: which images a request reads and where on the sigma
grid a partial pass starts.

How steps and a denoising strength ``s`` choose the sigmas differs between tools (N = the requested steps):

* ``diffusers`` (default): the grid has N steps; the last ``int(N * s)`` of them run (``strength`` in the img2img
  pipelines: ``init_timestep = min(int(N * s), N)``).
* ``a1111``: the grid has N steps; the last ``int(min(s, 0.999) * N) + 1`` run (``t_enc + 1`` in
  ``sd_samplers_common``/k-diffusion img2img, option "img2img_fix_steps" off).
* ``comfyui``: the grid has ``int(N / s)`` steps and exactly N run (KSampler's ``denoise``; also A1111 with
  "img2img_fix_steps" on, and A1111's hires fix with explicit hires steps).

So 20 steps at 0.6 run 12 steps (diffusers), 13 (a1111) or 20 of a 33-step grid (comfyui). Hires fix always uses
the comfyui rule, as A1111 does: "Hires steps: 10" runs ten steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iga.recipe.schema import parse_size

from .images import InputImageError, open_input_image
from .plan import DenoiseSteps, Hires, Img2Img, InputImage, ModelIdentity, Request
from .resolution import MAX_PLAN_PIXELS, MAX_PLAN_STEPS, Resolver, Settings
from .sigmas import cut_sigmas, sigmas_and_nfe

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

DEFAULT_DENOISE = 0.75  # A1111's default denoising strength
DEFAULT_HIRES_DENOISE = 0.7  # A1111's hires-fix default
DEFAULT_MASK_BLUR = 4  # A1111's default, in pixels
DEFAULT_INPAINT_PADDING = 32  # A1111's "only masked padding"
MAX_HIRES_SCALE = 8.0


@dataclass
class Inputs:
    """The images one request reads, opened once (records for the plan, decoded pixels for the checks)."""

    init: InputImage | None = None
    init_pixels: "Image.Image | None" = None
    mask: InputImage | None = None


def read_inputs(req: Request) -> Inputs:
    """Open the request's init image and mask, and check the img2img/inpaint/hires fields that cannot work at all;
    InputImageError (a ValueError: the CLI exits 2) names the field and the fix."""
    _check_img2img_fields(req)
    _check_hires_fields(req)
    if req.init_image is None:
        return Inputs()
    init, pixels = open_input_image(req.init_image, "init image")
    out = Inputs(init=init, init_pixels=pixels)
    if req.mask is not None:
        out.mask, _ = open_input_image(req.mask, "mask")
        if (out.mask.width, out.mask.height) != (init.width, init.height):
            raise InputImageError(f"mask {req.mask} is {out.mask.width}x{out.mask.height} but the init image is "
                                  f"{init.width}x{init.height}; the mask must have the init image's size")
    return out


def _check_img2img_fields(req: Request) -> None:
    if req.init_image is None:
        needs = [n for n, v in (("denoise", req.denoise), ("mask", req.mask), ("denoise_steps", req.denoise_steps),
                                ("mask_blur", req.mask_blur), ("inpaint_area", req.inpaint_area),
                                ("inpaint_padding", req.inpaint_padding)) if v is not None]
        if needs:
            raise InputImageError(f"{needs[0]} needs an init image (CLI: --init-image FILE)")
    if req.denoise is not None and not 0.0 <= req.denoise <= 1.0:
        raise InputImageError(f"denoise {req.denoise} is outside [0, 1]: it is the fraction of the sigma grid "
                              "run (0 keeps the image, 1 repaints it); try 0.5-0.75")
    if req.mask is None and (req.mask_blur is not None or req.inpaint_area is not None
                             or req.inpaint_padding is not None):
        raise InputImageError("mask_blur, inpaint_area and inpaint_padding need a mask (CLI: --mask FILE)")
    for name, v in (("mask_blur", req.mask_blur), ("inpaint_padding", req.inpaint_padding)):
        if v is not None and not 0 <= v <= 256:
            raise InputImageError(f"{name} {v} is outside 0..256 pixels")


def _check_hires_fields(req: Request) -> None:
    if req.hires is None:
        given = [n for n, v in (("hires_steps", req.hires_steps), ("hires_denoise", req.hires_denoise),
                                ("hires_upscaler", req.hires_upscaler)) if v is not None]
        if given:
            raise InputImageError(f"{given[0]} needs hires fix (CLI: --hires SCALE)")
        return
    if req.init_image is not None:
        raise InputImageError("hires fix is a second pass of text-to-image; with an init image, render at the "
                              "size you want instead (--size)")
    if not 1.0 < req.hires <= MAX_HIRES_SCALE:
        raise InputImageError(f"hires scale {req.hires} must be above 1 and at most {MAX_HIRES_SCALE:g} (try 1.5 "
                              "or 2)")
    if req.hires_denoise is not None and not 0.0 < req.hires_denoise <= 1.0:
        raise InputImageError(f"hires denoise {req.hires_denoise} is outside (0, 1]; try 0.5-0.7")
    if req.hires_steps is not None and req.hires_steps < 1:
        raise InputImageError(f"hires steps {req.hires_steps} must be at least 1")


def init_size(inputs: Inputs) -> str | None:
    """The size an img2img plan renders at when none is asked for: the init image's, down to multiples of 8."""
    if inputs.init is None:
        return None
    return f"{max(8, inputs.init.width // 8 * 8)}x{max(8, inputs.init.height // 8 * 8)}"


def grid_and_start(convention: DenoiseSteps, steps: int, denoise: float) -> tuple[int, int]:
    """(steps of the grid the sigmas are cut from, index of the first sigma run) for ``steps`` at ``denoise``."""
    if convention == "diffusers":
        run = min(int(steps * denoise), steps)
        return steps, steps - run
    if convention == "a1111":
        run = int(min(denoise, 0.999) * steps) + 1
        return steps, steps - run
    if convention == "comfyui":
        grid = int(steps / denoise) if denoise < 0.9999 else steps  # ComfyUI treats >= 0.9999 as a full pass
        return grid, grid - steps
    raise ValueError(f"unknown denoise convention {convention!r}; use diffusers, a1111 or comfyui")


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The second pass's size: the first pass's times ``scale``, down to multiples of 8 (the latent grid)."""
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


# ------------------------------------------------------------ the guard steps

def partial_pass(r: Resolver, train: dict[str, Any], s: Settings, options: dict[str, Any], model: ModelIdentity,
                  inputs: Inputs, sigmas: list[float], nfe: int | None
                  ) -> tuple[list[float], int | None, Img2Img | None]:
    """img2img: the tail of the sigma grid that runs from the init image (see ``iga.guard.img2img`` for how steps
    and denoise choose it under each tool's convention). The grid itself must satisfy the recipe's step rules."""
    req = r.req
    if inputs.init is None or not sigmas:
        return sigmas, nfe, None
    denoise = req.denoise if req.denoise is not None else DEFAULT_DENOISE
    if req.denoise is None:
        r.info("denoise", f"denoise {denoise} (the default)", None, denoise)
    convention = req.denoise_steps or "diffusers"
    grid, start = grid_and_start(convention, s.steps, denoise)
    if grid != s.steps:
        _check_grid_steps(r, "steps", grid, f"denoise {denoise} under the {convention} convention walks a "
                          f"{grid}-step grid", "raise denoise, or use the diffusers convention (its grid has the "
                          "requested steps)")
        if r.refused():
            return [], None, None
        sigmas, nfe = sigmas_and_nfe(r, r.recipe, train, s.sampler, s.schedule, grid, r.recipe.prediction_type,
                                      model.architecture, None)
    if start >= len(sigmas) - 1:
        r.hard("denoise", f"denoise {denoise} with {s.steps} steps runs no step ({convention} convention)", None,
               denoise, "raise denoise or steps")
        return [], None, None
    cut, nfe = cut_sigmas(r, s.sampler, sigmas, start)
    r.info("denoise", f"img2img: {len(cut) - 1} of {grid} steps from sigma {cut[0]:.4g} (denoise {denoise}, "
           f"{convention} convention)")
    spec = Img2Img(init_image=inputs.init, denoise=denoise, denoise_steps=convention, grid_steps=grid, start=start,
                   mask=inputs.mask)
    if inputs.mask is not None:
        spec = spec.model_copy(update={
            "mask_blur": req.mask_blur if req.mask_blur is not None else DEFAULT_MASK_BLUR,
            "inpaint_area": req.inpaint_area or "whole",
            "inpaint_padding": req.inpaint_padding if req.inpaint_padding is not None else DEFAULT_INPAINT_PADDING,
            "inpaint_method": "model" if model.variant == "inpaint" else "blend"})
    return cut, nfe, spec


def check_inpaint_model(r: Resolver, model: ModelIdentity, inputs: Inputs) -> None:
    """An inpainting UNet reads a mask and a masked image with every call: without them it cannot run."""
    if model.variant == "inpaint" and inputs.mask is None:
        r.hard("mask", "this is an inpainting checkpoint (its UNet also takes a mask and the masked image); it "
               "needs an init image and a mask", None, None, "pass --init-image and --mask, or use the "
               "ordinary (non-inpainting) checkpoint for text-to-image")


def _check_grid_steps(r: Resolver, field: str, grid: int, what: str, fix: str) -> None:
    """A grid a partial pass is cut from: more steps than iga runs is hard; off the recipe's range is soft (its
    sigma spacing is what the recipe validates)."""
    lo, hi = r.recipe.steps.min, r.recipe.steps.max
    if grid > MAX_PLAN_STEPS:
        r.hard(field, f"{what}: more than iga runs ({MAX_PLAN_STEPS})", None, grid, fix)
    elif not lo <= grid <= hi and not r.no_recipe:
        r.soft(field, field, f"{what}, outside the recipe's range {lo}..{hi}", r.recipe.steps.default, grid, fix)


def hires_pass(r: Resolver, train: dict[str, Any], s: Settings, options: dict[str, Any], architecture: str,
           width: int, height: int) -> Hires | None:
    """Hires fix: a second pass at ``scale`` times the size, cut from its own grid by the comfyui rule (exactly
    ``hires_steps`` run). Its size meets the same limits as the first pass's; its grid the recipe's step range."""
    from iga.catalog.upscalers import DEFAULT_UPSCALER, resolve_upscaler

    req = r.req
    if req.hires is None or r.refused():
        return None
    upscaler = resolve_upscaler(req.hires_upscaler) if req.hires_upscaler else DEFAULT_UPSCALER
    hw, hh = hires_size(width, height, req.hires)
    steps = req.hires_steps or s.steps
    denoise = req.hires_denoise if req.hires_denoise is not None else DEFAULT_HIRES_DENOISE
    res = r.recipe.resolution
    if hw * hh > MAX_PLAN_PIXELS:
        r.hard("hires", f"hires fix to {hw}x{hh} is more than iga renders ({MAX_PLAN_PIXELS / 1e6:.0f} megapixels)",
               None, req.hires, "use a smaller scale")
    elif res and res.max:
        mw, mh = parse_size(res.max)
        if hw > mw or hh > mh:
            r.soft("hires", "hires", f"hires fix to {hw}x{hh} is above the recipe's maximum {res.max}", res.max,
                   f"{hw}x{hh}", "use a smaller scale")
    grid, start = grid_and_start("comfyui", steps, denoise)
    _check_grid_steps(r, "hires", grid, f"hires steps {steps} at denoise {denoise} walk a {grid}-step grid",
                      f"use about {round(r.recipe.steps.default * denoise)} hires steps, or another hires denoise")
    if r.refused():
        return None
    sigmas, _ = sigmas_and_nfe(r, r.recipe, train, s.sampler, s.schedule, grid, r.recipe.prediction_type,
                                architecture, None)
    if not sigmas:
        return None
    cut, nfe = cut_sigmas(r, s.sampler, sigmas, start)
    r.info("hires", f"hires fix: {upscaler} to {hw}x{hh}, then {len(cut) - 1} steps at denoise {denoise}")
    return Hires(scale=req.hires, width=hw, height=hh, upscaler=upscaler, steps=steps, denoise=denoise,
                 grid_steps=grid, start=start, sigmas=cut, nfe=nfe)
