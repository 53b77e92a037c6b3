"""Analytic denoisers and a simple seeded noise source, for testing samplers against closed-form answers.

Data x0 ~ N(mu, std^2) independently per dimension. With x = alpha x0 + sigma eps (VP sigma space: alpha = 1;
flow: alpha = 1 - sigma), x ~ N(alpha mu, alpha^2 std^2 + sigma^2) and the exact denoiser is the posterior mean

    D(x, sigma) = mu + alpha std^2 / (alpha^2 std^2 + sigma^2) (x - alpha mu)
                = (std^2 x + sigma^2 mu) / (std^2 + sigma^2)          (VP)

The probability-flow ODE dx/dsigma = (x - D)/sigma is linear and maps N(m0, v0) onto N(m1, v1), so it keeps the
standardised value z = (x - m(sigma)) / sd(sigma) constant: x(sigma1) = m1 + (x(sigma0) - m0) sd1 / sd0
(for VP: mu + (x0 - mu) sqrt(std^2 + sigma1^2) / sqrt(std^2 + sigma0^2)).
"""

from __future__ import annotations

import torch


class GaussianDenoiser:
    """Exact D(x, sigma) for x0 ~ N(mu, std^2) per dimension; ``kind`` "vp" or "flow"; counts calls in ``nfe``."""

    def __init__(self, mu: float | torch.Tensor, std: float | torch.Tensor, kind: str = "vp"):
        if kind not in ("vp", "flow"):
            raise ValueError(f"kind must be 'vp' or 'flow', got {kind!r}")
        self.mu = torch.as_tensor(mu, dtype=torch.float64)
        self.std = torch.as_tensor(std, dtype=torch.float64)
        self.kind = kind
        self.nfe = 0
        self.sigmas_seen: list[float] = []

    def _alpha(self, s):
        return torch.ones_like(s) if self.kind == "vp" else 1.0 - s

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The posterior mean E[x0 | x] at per-image noise levels ``sigma`` (shape [B])."""
        self.nfe += 1
        self.sigmas_seen.append(float(sigma.flatten()[0]))
        s = sigma.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        mu, var = self.mu.to(x), self.std.to(x) ** 2
        a = self._alpha(s)
        return mu + a * var / (a * a * var + s * s) * (x - a * mu)

    def marginal(self, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of x at noise level sigma."""
        s = torch.tensor(float(sigma), dtype=torch.float64)
        a = self._alpha(s)
        return a * self.mu, torch.sqrt(a * a * self.std ** 2 + s * s)

    def ode_solution(self, x_start: torch.Tensor, sigma_start: float, sigma_end: float) -> torch.Tensor:
        """The exact probability-flow ODE solution at sigma_end from x_start at sigma_start."""
        m0, sd0 = self.marginal(sigma_start)
        m1, sd1 = self.marginal(sigma_end)
        return (m1 + (x_start.double() - m0) * (sd1 / sd0)).to(x_start.dtype)

    def sample_marginal(self, sigma: float, shape, generator: torch.Generator) -> torch.Tensor:
        """Draw x ~ N(mean, std^2) at noise level sigma (float64)."""
        m, sd = self.marginal(sigma)
        return m + sd * torch.randn(shape, generator=generator, dtype=torch.float64)


class GuidedGaussianDenoiser:
    """Classifier-free guidance over two analytic Gaussians (cond, uncond): D_u + scale (D_c - D_u).

    One ``denoise_with_uncond`` (or plain) call counts as one NFE, as a CFG-batched model call does.
    """

    def __init__(self, cond: GaussianDenoiser, uncond: GaussianDenoiser, scale: float):
        if cond.kind != uncond.kind:
            raise ValueError("cond and uncond must have the same kind")
        self.cond, self.uncond, self.scale = cond, uncond, float(scale)
        self.kind = cond.kind
        self.nfe = 0

    def denoise_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided, uncond) denoised estimates from one (counted) call."""
        self.nfe += 1
        d_c, d_u = self.cond(x, sigma), self.uncond(x, sigma)
        return d_u + self.scale * (d_c - d_u), d_u

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The guided estimate alone."""
        return self.denoise_with_uncond(x, sigma)[0]


class TorchNoise:
    """A minimal seeded NoiseSampler: each call draws the next standard normal from one torch.Generator."""

    def __init__(self, like: torch.Tensor, seed: int):
        self.shape, self.dtype, self.device = like.shape, like.dtype, like.device
        self.generator = torch.Generator("cpu").manual_seed(seed)
        self.calls: list[tuple[float, float]] = []

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        """Standard-normal noise shaped like x (the sigma arguments are only recorded)."""
        self.calls.append((float(sigma), float(sigma_next)))
        z = torch.randn(self.shape, generator=self.generator, dtype=torch.float64)
        return z.to(device=self.device, dtype=self.dtype)
