"""Masked sampling on an ordinary checkpoint: only the masked region is denoised; the rest follows the init latent
along the noise trajectory.

Before every model call the unmasked region of x is replaced by the init latent noised to the current sigma with
the run's own initial noise, and after the last step by the init latent itself. Blending the input of each call is
diffusers' convention (its inpainting pipeline blends after each scheduler step, with the latent noised to the next
timestep: the same values reach the model), so it holds for every sampler, multistep and ancestral ones included,
without reaching into their state.
"""

from __future__ import annotations

from typing import Any

import torch


def noised(latent: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float, kind: str) -> torch.Tensor:
    """The latent at noise level sigma: ``latent + sigma * noise`` (VP, k-diffusion's sigma) or
    ``(1 - sigma) * latent + sigma * noise`` (flow)."""
    if kind == "flow":
        return (1.0 - sigma) * latent + sigma * noise
    return latent + sigma * noise


class MaskedDenoiser:
    """A denoiser that repaints only where ``mask`` is 1 (mask: [B or 1, 1, h, w] in {0, 1}, latent resolution)."""

    def __init__(self, inner: Any, latent: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor):
        if mask.shape[-2:] != latent.shape[-2:]:
            raise ValueError(f"mask {tuple(mask.shape[-2:])} does not match the latent {tuple(latent.shape[-2:])}")
        self.inner, self.latent, self.noise = inner, latent, noise
        self.mask = mask.to(device=latent.device, dtype=latent.dtype)
        self.kind = inner.kind

    def __getattr__(self, name: str) -> Any:  # nfe, prediction, reset_run, skips_uncond ... of the inner denoiser
        return getattr(self.inner, name)

    def keep(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """x with its unmasked region set to the init latent at noise level sigma."""
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))) if isinstance(sigma, torch.Tensor) and sigma.ndim else sigma
        return self.mask * x + (1 - self.mask) * noised(self.latent, self.noise, s, self.kind)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return self.inner(self.keep(x, sigma), sigma)

    def denoise_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.denoise_with_uncond(self.keep(x, sigma), sigma)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The final latent: the sampled masked region over the untouched init latent."""
        return self.mask * x + (1 - self.mask) * self.latent
