"""The doctor's instruments: experiments that need the model's insides, not just another point of a sweep.

* ``trace``: one render of a plan with its x0 previews and a watch on every component, so the first non-finite
  value is located (text encoder, UNet at step k, the sampler's state, or the VAE decoder);
* ``render_as``: the same plan with one setting the guard would never issue changed (the prediction type), for
  the prediction-type probe;
* ``vae_round_trip``: encode-decode PSNR of an image through the plan's VAE;
* ``precision``: the plan in half precision against float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iga.guard import Plan


@dataclass
class NonFinite:
    """Where a run first produced NaN/Inf."""

    component: str  # "text encoder", "UNet", "sampler", "VAE decoder"
    step: int | None = None  # 1-based step (UNet, sampler)
    sigma: float | None = None

    def describe(self) -> str:
        """'the UNet's output at step 7 (sigma 1.23)'."""
        if self.step is None:
            return f"the {self.component}'s output"
        return f"the {self.component}'s output at step {self.step} (sigma {self.sigma:.4g})"


@dataclass
class Trace:
    """One instrumented render: its pixels (None when it failed), previews, and where it went non-finite."""

    pixels: np.ndarray | None
    frames: list[Any] = field(default_factory=list)
    non_finite: NonFinite | None = None
    error: str = ""


def _finite(obj: Any) -> bool:
    import torch

    if isinstance(obj, torch.Tensor):
        return bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite(v) for v in obj)
    return True


class _Watch:
    """Wraps a backend's raw model: records the step of the first call whose output is not finite."""

    def __init__(self, raw_model: Any):
        self.raw_model, self.step, self.first = raw_model, 1, None
        self.sigma: float | None = None

    def __call__(self, x, t, cond):
        out = self.raw_model(x, t, cond)
        if self.first is None and not _finite(out):
            self.first = (self.step, self.sigma)
        return out

    def after_step(self, info) -> None:
        self.step, self.sigma = info.i + 2, float(info.sigma_next)


def trace(model: Any, plan: Plan, *, every: int = 1, decoder: str = "auto") -> Trace:
    """Render a plan with x0 previews, locating the first non-finite value by component and step."""
    from iga.diagnostics.preview import PreviewStream
    from iga.generate import encode, passes_per_image, render, steps_run
    from iga.sampling.base import NonFiniteError, SamplingError

    backend = model.backend_for(plan)
    try:
        encoded = encode(plan, backend)
    except (ValueError, RuntimeError) as e:  # e.g. clip skip past the encoder's layers
        return Trace(None, error=f"{type(e).__name__}: {e}")
    if not _finite(encoded):
        return Trace(None, non_finite=NonFinite("text encoder"), error="the prompt encoding is NaN/Inf")
    stream = PreviewStream(backend, every=every, decoder=decoder, total=steps_run(plan),
                           passes=passes_per_image(plan))
    watch = _Watch(backend.raw_model)
    last: list[Any] = []

    def callback(info) -> None:
        stream(info)
        watch.after_step(info)
        last[:] = [info.x]

    watch.sigma = float(plan.sigmas[0])
    had, previous = "raw_model" in vars(backend), backend.raw_model
    backend.raw_model = watch  # an instance attribute shadows the method for this render only
    try:
        images, _ = render(plan, backend, callback=callback, encoded=encoded,
                           controlnets=model.controlnets_for(plan, backend), refiner=model.refiner_for(plan))
    except NonFiniteError as e:
        where = NonFinite("UNet", *watch.first) if watch.first else NonFinite("sampler", e.step + 1, e.sigma)
        return Trace(None, stream.frames, where, str(e))
    except (SamplingError, ValueError, RuntimeError) as e:
        return Trace(None, stream.frames, error=f"{type(e).__name__}: {e}")
    finally:
        if had:
            backend.raw_model = previous
        else:
            del backend.raw_model
    if last and not _decodes_finite(backend, last[0]):
        return Trace(None, stream.frames, NonFinite("VAE decoder"), "the decoded image is NaN/Inf")
    return Trace(images[0], stream.frames)


def _decodes_finite(backend: Any, latent: Any) -> bool:
    import torch

    with torch.inference_mode():
        return _finite(backend.decode(latent))


def render_as(model: Any, plan: Plan, **changes: Any) -> tuple[np.ndarray | None, str]:
    """(pixels, "") of the plan with ``changes`` applied, or (None, what failed)."""
    from iga.sampling.base import SamplingError

    try:
        [img] = model.generate(plan=plan.model_copy(update=changes))
    except (SamplingError, ValueError, RuntimeError) as e:
        return None, f"{type(e).__name__}: {e}"
    return img.pixels, ""


def vae_round_trip(model: Any, plan: Plan, pixels: np.ndarray) -> float | None:
    """PSNR (dB) of an image encoded and decoded by the plan's VAE; None for models without a VAE."""
    import torch

    from iga.generate import pixel_difference, to_uint8

    backend = model.backend_for(plan)
    if not hasattr(backend, "encode_image"):
        return None
    with torch.inference_mode():
        x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float() / 255.0
        again = to_uint8(backend.decode(backend.encode_image(x))[0])
    psnr = pixel_difference(again, pixels)["psnr"]
    return psnr if math.isfinite(psnr) else 99.0


def precision(model_path: str, plan: Plan, dtype: str = "bfloat16") -> tuple[np.ndarray | None, str]:
    """The plan rendered in half precision (bfloat16 on the CPU, which has no float16 kernels)."""
    from iga.generate import Model

    return render_as(Model(model_path, dtype=dtype), plan)  # a dtype the device lacks fails as a RuntimeError
