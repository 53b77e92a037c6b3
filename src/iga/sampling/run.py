"""``sample()``: the one entry point that runs a sampler over a denoiser and a sigma list.

It scales the initial noise, hands the sampler its noise source and a watched callback (NaN/Inf check
once per step, cancellation), and returns the final latent. Samplers have the signature
``fn(model, x, sigmas, *, noise=None, callback=None, **options) -> Tensor`` and call
``callback(StepInfo(...))`` after every step.

Initial noise (``noise_scaling``):

* ``"sigma"`` (default): ``x = noise * sigma_0`` -- k-diffusion, A1111, diffusers Euler with "linspace" or
  "trailing" spacing. For flow models this is ``(1 - sigma_0) * 0 + sigma_0 * noise``, i.e. the same formula.
* ``"vp_max"``: ``x = noise * sqrt(sigma_0^2 + 1)`` -- ComfyUI at full denoise, diffusers "leading" spacing,
  A1111's ``sgm_noise_multiplier``. VP models only.

With ``latent`` (img2img) the noise is added to it: ``latent + sigma_0 * noise`` (VP) or
``(1 - sigma_0) * latent + sigma_0 * noise`` (flow).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Protocol

import torch

from iga.catalog import option_problems, sampler_options
from iga.sampling.base import Cancelled, Denoiser, NoiseSampler, NonFiniteError, SamplerSpec, SamplingError, StepInfo


class _CancelFlag(Protocol):
    def is_set(self) -> bool: ...


def check_sigmas(sigmas: torch.Tensor) -> None:
    """Raise SamplingError unless sigmas is 1-D, >= 2 long, finite, non-negative and strictly decreasing.

    The last value need not be 0 (a split schedule may hand over to a refiner), but normally is.
    """
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise SamplingError("sigmas must be a 1-D tensor with at least 2 values (one step)")
    s = sigmas.detach().to("cpu", torch.float64)
    if not torch.isfinite(s).all():
        raise SamplingError("sigmas contain NaN/Inf")
    if (s < 0).any():
        raise SamplingError("sigmas must be >= 0")
    bad = torch.nonzero(s[1:] >= s[:-1]).flatten()
    if bad.numel():
        i = int(bad[0])
        raise SamplingError(f"sigmas must be strictly decreasing: sigma[{i}]={s[i]:.6g}, sigma[{i + 1}]={s[i + 1]:.6g}")


def sample(
    sampler: SamplerSpec | Callable[..., torch.Tensor],
    denoiser: Denoiser,
    x_init_noise: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    options: dict[str, Any] | None = None,
    noise_scaling: Literal["sigma", "vp_max"] = "sigma",
    latent: torch.Tensor | None = None,
    cancel: _CancelFlag | None = None,
) -> torch.Tensor:
    """Run ``sampler`` from standard-normal ``x_init_noise`` along ``sigmas``; return the final x.

    Raises NonFiniteError(step, sigma, what) when x turns NaN/Inf, Cancelled when ``cancel.is_set()`` (checked
    after every step) or when ``callback`` raises it, and SamplingError for invalid inputs. With a
    SamplerSpec, the denoiser's prediction type and the option names are checked against what it declares.
    """
    options = dict(options or {})
    if isinstance(sampler, SamplerSpec):
        fn = sampler.fn
        prediction = getattr(denoiser, "prediction", None)
        if prediction is not None and sampler.parameterizations and prediction not in sampler.parameterizations:
            raise SamplingError(
                f"sampler {sampler.name!r} supports {'/'.join(sampler.parameterizations)} models, not {prediction!r}"
            )
        problems = option_problems(sampler.name, sampler_options(sampler.name, sampler.options), options)
        if problems:  # the guard refuses the same at plan time; this guards direct callers of the engine
            raise SamplingError("; ".join(problems.values()))
        name = sampler.name
    elif callable(sampler):
        fn, name = sampler, getattr(sampler, "__name__", "sampler")
    else:
        raise SamplingError(f"sampler must be a SamplerSpec or a callable, got {type(sampler).__name__}")

    check_sigmas(sigmas)
    sigmas = sigmas.to(x_init_noise.device)
    sigma0 = float(sigmas[0])
    kind = getattr(denoiser, "kind", "vp")
    if noise_scaling == "sigma":
        scale = sigma0
    elif noise_scaling == "vp_max":
        if kind != "vp":
            raise SamplingError("noise_scaling='vp_max' (sqrt(sigma^2 + 1)) applies to VP models only")
        scale = math.sqrt(sigma0 * sigma0 + 1.0)
    else:
        raise SamplingError(f"noise_scaling must be 'sigma' or 'vp_max', got {noise_scaling!r}")
    x = x_init_noise * scale
    if latent is not None:
        if latent.shape != x_init_noise.shape:
            raise SamplingError(f"latent shape {tuple(latent.shape)} != noise shape {tuple(x_init_noise.shape)}")
        from iga.sampling.inpaint import noised

        latent = latent.to(device=x.device, dtype=x.dtype)
        x = noised(latent, x_init_noise, sigma0, kind) if noise_scaling == "sigma" else x + latent

    reset = getattr(denoiser, "reset_run", None)
    if callable(reset):
        reset()

    def watched(info: StepInfo) -> None:
        if not bool(torch.isfinite(info.x).all()):
            what = "x (the sampler's update)"
            if info.denoised is not None and not bool(torch.isfinite(info.denoised).all()):
                what = "denoised (the model's prediction)"
            raise NonFiniteError(info.i, info.sigma, what)
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"sampling cancelled after step {info.i}")
        if callback is not None:
            callback(info)

    out = fn(denoiser, x, sigmas, noise=noise_sampler, callback=watched, **options)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise SamplingError(f"sampler {name!r} returned {getattr(out, 'shape', type(out))}, expected {tuple(x.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteError(len(sigmas) - 2, float(sigmas[-2]), "the final x")
    return out
