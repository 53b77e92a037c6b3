"""Generation end to end: a model path -> guard -> Plan -> sampling engine -> backend -> images with their Plans.

    model = iga.load("model.safetensors")       # reads the header and recipe; weights load on first use
    model.recipe                                 # the Recipe (or None)
    plan = model.plan(sampler="DPM++ 2M Karras", overrides=["sampler"])
    images = model.generate("a red circle on a blue background", seed=1)
    images[0].image.save("out.png")              # or iga.provenance to save with provenance

A second generation in the same process reuses the loaded backend (nothing is reloaded).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from iga.guard import Plan, Request
from iga.guard.plan import Mode
from iga.guard.source import ModelSource, describe_model

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from iga.sampling.base import StepInfo


@dataclass
class GeneratedImage:
    """One image and the Plan that made it (its own seed; replayable alone)."""

    image: "Image.Image"
    plan: Plan
    pixels: "np.ndarray"  # uint8 H x W x 3, exactly what was encoded
    nfe: int  # model calls made per image (the most any image of the batch needed)


class Model:
    """A checkpoint bound to its recipe: plan and generate through the guard."""

    def __init__(self, path: str | os.PathLike[str], *, device: str = "cpu", dtype: str = "float32",
                 source: ModelSource | None = None):
        """``source``: the model already described (recipe, identity, hashes), so it is not read again."""
        self.path = str(path)
        self.device, self.dtype = device, dtype
        self.source: ModelSource = source if source is not None else describe_model(self.path)
        self._backends: dict[tuple, Any] = {}
        self._controlnets: dict[tuple, Any] = {}  # loaded ControlNets by (file SHA-256, device, dtype)
        from iga.store.used import remember

        remember(self.source.identity.weights_sha256, self.path, self.source.identity.name)

    @property
    def recipe(self):
        """The model's Recipe (embedded or sidecar), or None."""
        return self.source.recipe

    def plan(self, prompt: str = "", *, mode: Mode = "guarded", request: Request | None = None,
             **fields: Any) -> Plan:
        """Resolve a request (a Request or its fields as keywords) against the recipe; raise GuardRefused."""
        req = request or Request(prompt=prompt, **fields)
        if request is not None and prompt:
            req = req.model_copy(update={"prompt": prompt})
        plan, _ = self.source.resolve(req, mode)
        return plan

    def backend(self, vae: str | None = None, loras: tuple[tuple[str, str, float], ...] = ()):
        """The loaded backend, loading weights on first use; cached per VAE and LoRA set (``loras``: (file
        SHA-256, path, weight) each). LoRAs live in their own backend, so one never leaks into a plan without it."""
        key = (vae, tuple((sha, weight) for sha, _path, weight in loras))
        if key not in self._backends:
            from iga.models.loader import load_backend

            backend = load_backend(self.path, vae=vae, device=self.device, dtype=self.dtype)
            if loras:
                from iga.models.lora import with_loras

                backend = with_loras(backend, [(path, weight) for _sha, path, weight in loras])
            self._backends[key] = backend
        return self._backends[key]

    def backend_for(self, plan: Plan):
        """The backend a plan runs on (the checkpoint's own VAE or the plan's VAE file, and the plan's LoRAs)."""
        from iga.store.used import lora_files, vae_file

        return self.backend(vae_file(plan), lora_files(plan))

    def controlnets_for(self, plan: Plan, backend: Any) -> list[Any]:
        """The plan's ControlNets, loaded on first use and kept (like backends)."""
        from iga.models.control import load_controls

        return load_controls(plan, backend, self._controlnets)

    def refiner_for(self, plan: Plan):
        """The loaded SDXL refiner a plan's second stage runs on (None without one), found by its weights hash and
        cached like the base model's backend."""
        from iga.store.used import refiner_model

        path = refiner_model(plan)
        if path is None:
            return None
        key = ("refiner", path)
        if key not in self._backends:
            from iga.models.loader import load_backend

            self._backends[key] = load_backend(path, device=self.device, dtype=self.dtype)
        return self._backends[key]

    def generate(self, prompt: str = "", *, plan: Plan | None = None, mode: Mode = "guarded",
                 callback: Callable[["StepInfo"], None] | None = None, cancel: Any = None,
                 encoded: tuple[dict, dict] | None = None, **fields: Any) -> list[GeneratedImage]:
        """Generate images for a prompt (or replay a given Plan); each image carries its own Plan.

        ``encoded``: the plan's prompt conditioning from ``encode`` when the caller caches it across plans.
        """
        if plan is None:
            plan = self.plan(prompt, mode=mode, **fields)
        backend = self.backend_for(plan)
        images, nfe = render(plan, backend, callback=callback, cancel=cancel, encoded=encoded,
                             controlnets=self.controlnets_for(plan, backend), refiner=self.refiner_for(plan))
        runtime = runtime_info(backend)
        out = []
        for k, px in enumerate(images):
            p = plan.for_image(k) if len(plan.seeds) > 1 else plan
            p = p.model_copy(update={"pixels_sha256": pixels_sha256(px), "runtime": runtime})
            out.append(GeneratedImage(image=_to_pil(px), plan=p, pixels=px, nfe=nfe))
        return out


def runtime_info(backend: Any) -> dict[str, Any]:
    """The software and thread count that computed an image (convolution results depend on them)."""
    import torch

    from iga import __version__

    return {"iga": __version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(backend.device), "dtype": str(backend.dtype).replace("torch.", "")}


def load(path: str | os.PathLike[str] | None = None, *, device: str = "cpu", dtype: str = "float32") -> Model:
    """Open a checkpoint (default: the bundled demo model) with its recipe; weights load lazily."""
    from iga.paths import default_model_path

    return Model(path if path is not None else default_model_path(), device=device, dtype=dtype)


def guidance_hooks(variant: str) -> list[Any]:
    """The guidance hooks a CFG variant needs (plain CFG and CFG++ need none)."""
    if variant in ("cfg", "cfg_pp"):
        return []
    from iga.sampling import guidance

    if variant == "cfg_zero_star":
        return [guidance.CFGZeroStar()]
    if variant == "apg":
        return [guidance.APG()]
    from iga.catalog import CFG_VARIANTS

    raise ValueError(f"unknown CFG variant {variant!r}; use one of {', '.join(CFG_VARIANTS)}")


def build_denoiser(plan: Plan, backend: Any, cond: dict, uncond: dict, controls: list[Any] = (),
                   sigmas: "torch.Tensor | None" = None):
    """The guided denoiser D(x, sigma) for a plan: parameterization from the plan, CFG around the backend (with
    ``controls``, ControlNets run inside each model call; ``sigmas``: the pass's, which place their windows)."""
    from iga.sampling.guidance import CFGDenoiser
    from iga.sampling.parameterization import make_parameterization, schedule_from_config

    param = make_parameterization(plan.prediction_type, schedule_from_config(plan.training_schedule or {}))
    raw = backend.raw_model
    if controls:
        import torch

        from iga.models.control import ControlledModel

        assert sigmas is not None, "controls need the pass's sigmas"
        step_ts = param.model_inputs(torch.zeros(len(sigmas), 1), sigmas)[1]
        raw = ControlledModel(backend, list(controls), step_ts)
    return CFGDenoiser(raw, param, cond, uncond, plan.cfg, plan.cfg_rescale, guidance_hooks(plan.cfg_variant))


def encode(plan: Plan, backend: Any) -> tuple[dict, dict]:
    """The (cond, uncond) conditioning of a plan's prompt; plans that share prompt, negative prompt, clip skip and
    size share it, so a sweep encodes each prompt once."""
    import torch

    with torch.inference_mode():
        cond, uncond = backend.encode_prompt([plan.prompt], [plan.negative_prompt], clip_skip=plan.clip_skip,
                                             width=plan.width, height=plan.height)
    if plan.guidance is not None:  # a guidance-distilled model takes its guidance as an input, like the prompt
        g = torch.tensor([plan.guidance], dtype=torch.float32)
        cond, uncond = {**cond, "guidance": g}, {**uncond, "guidance": g}
    return cond, uncond


def encoding_key(plan: Plan) -> tuple:
    """What a prompt encoding depends on (see ``encode``)."""
    return (plan.prompt, plan.negative_prompt, plan.clip_skip, plan.width, plan.height, plan.guidance)


def render(plan: Plan, backend: Any, *, callback: Callable[["StepInfo"], None] | None = None,
           cancel: Any = None, encoded: tuple[dict, dict] | None = None,
           inputs: tuple[Any, Any] | None = None, controlnets: list[Any] | None = None, refiner: Any = None
           ) -> tuple[list["np.ndarray"], int]:
    """Run one plan on a loaded backend; return (uint8 HxWx3 arrays, model calls per image).

    Image k is computed exactly as seed k alone would be (same shapes, same kernels), so each image's own
    plan replays to identical pixels. ``encoded`` is the plan's conditioning when the caller already has it;
    ``inputs`` the (init image, mask) of an img2img plan when the caller has them (else found by hash);
    ``controlnets`` the plan's loaded ControlNets (``Model.controlnets_for``; else loaded here); ``refiner`` the
    loaded SDXL refiner of a plan with one (``Model.refiner_for``): the base model runs the plan's sigmas up to
    ``plan.refiner.switch_index`` and the refiner the rest (``_refine``).
    """
    import numpy as np
    import torch

    from iga import stages
    from iga.sampling.samplers import SAMPLERS

    spec = SAMPLERS[plan.sampler]
    images: list[np.ndarray] = []
    nfe = 0
    cond, uncond = encoded if encoded is not None else encode(plan, backend)
    prepared = None
    with torch.inference_mode():
        if plan.img2img is not None:
            init, mask = inputs if inputs is not None else stages.images_given(plan.img2img)
            prepared = stages.prepare(plan, backend, init, mask)
            if prepared.concat is not None:  # an inpainting UNet reads the mask and masked image as extra channels
                cond, uncond = {**cond, "concat": prepared.concat}, {**uncond, "concat": prepared.concat}
        hires_cond = encode(at_hires_size(plan), backend) if plan.hires is not None else None
        refined = refiner_conditioning(plan, refiner) if plan.refiner is not None else None
        base_sigmas = plan.sigmas[:plan.refiner.switch_index + 1] if plan.refiner is not None else plan.sigmas
        controls = stages.controls_at(plan, backend, controlnets)  # (first pass, hires pass): images at each size
        # One image at a time: the network's float rounding depends on the batch size (oneDNN/cuDNN pick
        # different kernels), so a batched image would differ from its seed alone by ~1/255 and could not
        # be replayed from its own plan. The prompt is encoded once for the whole batch.
        for seed in plan.seeds:
            x, calls = _pass(plan, backend, spec, seed, (cond, uncond), base_sigmas, plan.width, plan.height,
                             prepared, callback, cancel, controls[0])
            if refined is not None:
                x, more = _refine(plan, refiner, spec, seed, refined, x, callback, cancel)
                calls += more
            if plan.hires is not None:
                h = plan.hires
                start = stages.upscale(x, backend, h.upscaler, h.width, h.height)
                x, more = _pass(plan, backend, spec, seed, hires_cond, h.sigmas, h.width, h.height,
                                stages.Prepared(latent=start), callback, cancel, controls[1])
                calls += more
            px = to_uint8(backend.decode(x)[0])
            if prepared is not None and prepared.crop is not None:
                px = np.asarray(stages.paste_back(prepared, _to_pil(px)))
            images.append(px)
            nfe = max(nfe, calls)
    return images, nfe


def _pass(plan: Plan, backend: Any, spec: Any, seed: int, conditioning: tuple[dict, dict], sigma_list: list[float],
          width: int, height: int, prepared: Any, callback: Any, cancel: Any,
          controls: list[Any] = ()) -> tuple["torch.Tensor", int]:
    """One sampling pass of one seed: from noise, or from ``prepared.latent`` noised to the first sigma (with the
    unmasked region held to it when there is a mask and no inpainting UNet; ``controls``: the ControlNets acting in
    this pass, ``iga.models.control.ActiveControl``); returns (latent, model calls)."""
    import torch

    from iga.sampling.inpaint import MaskedDenoiser
    from iga.sampling.noise import initial_noise, make_noise_sampler
    from iga.sampling.run import sample

    sigmas = torch.tensor(sigma_list, dtype=torch.float32)
    shape = backend.latent_shape(width, height)
    den = build_denoiser(plan, backend, *conditioning, controls=controls, sigmas=sigmas)
    noise = initial_noise(shape, [seed], device=backend.device, dtype=backend.dtype)
    latent = None if prepared is None else prepared.latent.to(noise.device, noise.dtype)
    if prepared is not None and prepared.mask is not None and prepared.concat is None:
        den = MaskedDenoiser(den, latent, noise, prepared.mask)
    ns = make_noise_sampler(spec.noise, noise, [seed], sigmas)
    x = sample(spec, den, noise, sigmas, noise_sampler=ns, callback=callback, options=plan.sampler_options,
               noise_scaling=plan.noise_scaling if prepared is None else "sigma", latent=latent, cancel=cancel)
    if isinstance(den, MaskedDenoiser):
        x = den.finish(x)
    return x, den.nfe


def refiner_conditioning(plan: Plan, refiner: Any) -> tuple[dict, dict]:
    """The refiner's own (cond, uncond): its bigG encoding of the plan's prompts, with the plan's aesthetic scores."""
    import torch

    if refiner is None:
        raise ValueError("this plan has an SDXL refiner stage: pass its loaded refiner (Model.refiner_for(plan))")
    r = plan.refiner
    with torch.inference_mode():
        return refiner.scored(r.aesthetic_score, r.negative_aesthetic_score).encode_prompt(
            [plan.prompt], [plan.negative_prompt], clip_skip=plan.clip_skip, width=plan.width, height=plan.height)


def _refine(plan: Plan, refiner: Any, spec: Any, seed: int, conditioning: tuple[dict, dict], x: "torch.Tensor",
            callback: Any, cancel: Any) -> tuple["torch.Tensor", int]:
    """The refiner's stage: its own sampler run on the rest of the plan's sigmas, continuing the base model's latent
    exactly (zero fresh noise); an ancestral sampler's noise is seeded as the base stage's was, as a second diffusers
    pipeline or ComfyUI sampler given the same seed would. The image is decoded by the base backend (the plan's VAE;
    the SDXL base and refiner ship the same VAE)."""
    import torch

    from iga.sampling.noise import make_noise_sampler
    from iga.sampling.run import sample

    assert plan.refiner is not None
    sigmas = torch.tensor(plan.sigmas[plan.refiner.switch_index:], dtype=torch.float32)
    stage = plan if plan.refiner.cfg is None else plan.model_copy(update={"cfg": plan.refiner.cfg})
    den = build_denoiser(stage, refiner, *conditioning)
    ns = make_noise_sampler(spec.noise, x, [seed], sigmas)
    out = sample(spec, den, torch.zeros_like(x), sigmas, noise_sampler=ns, callback=callback,
                 options=plan.sampler_options, latent=x, cancel=cancel)
    return out, den.nfe


def at_hires_size(plan: Plan) -> Plan:
    """The plan as its hires pass sees it (SDXL's size conditioning follows the size rendered)."""
    assert plan.hires is not None
    return plan.model_copy(update={"width": plan.hires.width, "height": plan.hires.height})


def passes_per_image(plan: Plan) -> int:
    """Sampler runs per image: the first pass, plus a hires fix's and a refiner's (each restarts its step count)."""
    return 1 + (plan.hires is not None) + (plan.refiner is not None)


def steps_run(plan: Plan) -> int:
    """Sampler steps a plan runs per image, over all its passes (progress bars count these)."""
    return len(plan.sigmas) - 1 + (len(plan.hires.sigmas) - 1 if plan.hires is not None else 0)


def to_uint8(img: "torch.Tensor") -> "np.ndarray":
    """(3, H, W) float in [0, 1] -> H x W x 3 uint8, rounding half up like PIL/diffusers."""
    return (img.clamp(0, 1).permute(1, 2, 0).float().numpy() * 255.0).round().astype("uint8")


def pixels_sha256(px: "np.ndarray") -> str:
    """SHA-256 of an image's uint8 pixels with its shape (the identity replay checks)."""
    import hashlib

    h = hashlib.sha256(f"{px.shape[0]}x{px.shape[1]}x{px.shape[2]}:".encode())
    h.update(px.tobytes())
    return h.hexdigest()


def _to_pil(px: "np.ndarray") -> "Image.Image":
    from PIL import Image

    return Image.fromarray(px, "RGB")


def pixel_difference(a: "np.ndarray", b: "np.ndarray") -> dict[str, float]:
    """Max abs difference (0-255) and PSNR (dB; inf when identical) between two uint8 images."""
    import numpy as np

    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {a.shape} vs {b.shape}")
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = float((d**2).mean())
    return {"max_abs": float(np.abs(d).max()), "psnr": math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)}
