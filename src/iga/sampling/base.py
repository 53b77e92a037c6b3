"""The contracts every part of the sampling engine shares.

The engine is pure math over a denoiser ``D(x, sigma) -> x0`` in the k-diffusion convention:
``x`` lives in "sigma space" (for VP models ``x = x0 + sigma * eps`` before input scaling; for
flow models ``x = (1 - sigma) * x0 + sigma * eps``), and every sampler only ever sees a denoiser,
a descending sigma list ending in 0, a noise source and a callback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, runtime_checkable

import torch

Parameterization = Literal["eps", "v", "x0", "flow"]
ModelKind = Literal["vp", "flow"]


@runtime_checkable
class Denoiser(Protocol):
    """A model turned into ``D(x, sigma) -> denoised`` (an estimate of x0), counting its calls."""

    kind: ModelKind  # "vp" (discrete or continuous VP/VE, sigma in (0, inf)) or "flow" (sigma in [0, 1])
    nfe: int  # model calls made so far; one CFG-batched evaluation counts once

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Return the denoised estimate for a batch ``x`` at per-image noise levels ``sigma`` (shape [B])."""
        ...


@runtime_checkable
class GuidedDenoiser(Denoiser, Protocol):
    """A denoiser that can also hand back the unconditional prediction (for CFG++ samplers)."""

    def denoise_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(guided_denoised, uncond_denoised)`` from one batched model call."""
        ...


class NoiseSampler(Protocol):
    """Per-step noise: ``noise(sigma, sigma_next)`` returns a standard-normal tensor shaped like x.

    Seeded generators ignore the arguments and draw the next sample; Brownian-tree samplers return
    ``(W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|)`` so the noise depends only on the interval.
    """

    def __call__(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor: ...


@dataclass(frozen=True)
class StepInfo:
    """What a sampler reports after each step (for progress bars, previews, NaN watch, cancellation)."""

    i: int  # step index, 0-based
    sigma: float  # sigma at the start of the step
    sigma_next: float  # sigma at the end of the step
    x: torch.Tensor  # state after the step
    denoised: torch.Tensor  # the last denoised estimate used in the step


StepCallback = Callable[[StepInfo], None]


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler's function and the properties it declares."""

    name: str
    fn: Callable[..., torch.Tensor]
    nfe_per_step: int  # model calls per ordinary step (the final step to sigma=0 may take fewer)
    order: int  # declared convergence order of the deterministic solver
    stochastic: bool  # injects noise by default
    parameterizations: tuple[str, ...]  # which of eps/v/x0/flow it supports
    # the noise source it wants; "brownian_device": the Brownian tree generated on the model's device (ComfyUI *_gpu)
    noise: Literal["none", "seeded", "brownian", "brownian_device"]
    discard_penultimate: bool = False  # ComfyUI/A1111 compute steps+1 sigmas and drop sigma[-2]
    options: tuple[str, ...] = ()  # keyword options it accepts (eta, s_noise, ...)
    doc: str = ""
    # Order of the highest-order update formula it uses, when start-up/final steps keep the global `order` lower
    # (e.g. lms: max_order 4, order 2). None means the same as `order`.
    max_order: int | None = None
    adaptive: bool = False  # chooses its own steps (dpm_adaptive): the NFE is not known in advance
    needs_uncond: bool = False  # CFG++: needs a GuidedDenoiser (denoise_with_uncond)
    # Exact model-call count for a sigma list: nfe_fn(sigmas: list[float], kind: str, options: dict) -> int | None.
    nfe_fn: Callable[[list[float], str, dict[str, Any]], int | None] | None = None


class SamplingError(RuntimeError):
    """Raised when sampling cannot go on (non-finite values, bad sigma list, cancelled)."""


class NonFiniteError(SamplingError):
    """The state or the denoised estimate became NaN/Inf at a given step."""

    def __init__(self, step: int, sigma: float, what: str):
        super().__init__(
            f"non-finite values (NaN/Inf) in {what} at step {step} (sigma={sigma:.6g}); "
            "common causes: fp16 overflow in the VAE or UNet, a CFG scale far too high, or a sigma grid "
            "the model was not trained on. Try float32, a lower CFG, or the recipe's schedule."
        )
        self.step, self.sigma, self.what = step, sigma, what


class Cancelled(SamplingError):
    """Raised from a callback to stop sampling cleanly."""


Options = dict[str, Any]


# Conditioning for one batch: a dict of batch-first tensors (e.g. "encoder_hidden_states", "text_embeds",
# "time_ids"). CFG concatenates [uncond, cond] key by key along dim 0 so both run in one model call.
Conditioning = dict[str, torch.Tensor]


class RawModel(Protocol):
    """A network as the backend exposes it: scaled input, timestep (or flow time) and conditioning -> raw output.

    The raw output is whatever the network was trained to predict (eps, v, x0 or flow velocity); the
    parameterization wrappers in ``iga.sampling.parameterization`` turn it into a ``Denoiser``.
    """

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor: ...
