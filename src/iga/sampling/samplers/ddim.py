"""DDIM, DDPM and LCM samplers, written for both VP (sigma space) and flow models.

For a state x = alpha x0 + sigma eps, the VP coordinates are ``x_vp = x / sqrt(alpha^2 + sigma^2)`` with
``abar = alpha^2 / (alpha^2 + sigma^2)`` (for VP models in sigma space: abar = 1 / (1 + sigma^2)).
"""

from __future__ import annotations

import math

import torch

from iga.sampling.base import NoiseSampler, StepCallback
from iga.sampling.samplers._common import (
    alpha,
    option_value,
    noise_options,
    check_sigmas,
    ddim_step,
    denoise,
    draw,
    emit,
    model_kind,
    posterior_step,
    require_noise,
    sigma_dtype,
)


def sample_ddim(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                callback: StepCallback | None = None, eta: float = 0.0, s_noise: float = 1.0) -> torch.Tensor:
    """DDIM (Song et al. 2020, arXiv 2010.02502, eq. 12) in sigma space.

    ``x_{t-1} = sqrt(abar') D + sqrt(1 - abar' - s_t^2) eps + s_t z`` with
    ``s_t = eta sqrt((1 - abar')/(1 - abar)) sqrt(1 - abar/abar')``. In VE coordinates this is: go to
    sigma~_down = sqrt(sigma~'^2 - sigma~_up^2), sigma~_up = eta sigma~' sqrt(1 - (sigma~'/sigma~)^2), with the
    first-order step ``x_down = (s_down/s) x + (a_down - a s_down/s) D``, then add ``sigma~_up`` noise
    (:func:`posterior_step`). eta = 0 is the deterministic DDIM = Euler in sigma (ComfyUI's "ddim" is Euler);
    eta = 1 is the DDPM posterior (= ddpm).
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "ddim")
    eta, s_noise = noise_options("ddim", eta, s_noise, sig, noise)
    sdt = sigma_dtype(sigmas, x)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        den = denoise(model, x, s, sdt)
        down, scale, up = posterior_step(kind, s, s_next, eta)
        x = ddim_step(kind, x, den, s, down)
        if up > 0:
            x = x * scale + draw(noise, s, s_next, x) * (up * s_noise)
        emit(callback, i, s, s_next, x, den)
    return x


def _abar(kind: str, s: float) -> tuple[float, float]:
    """(abar, sqrt(alpha^2 + sigma^2)) of a noise level."""
    a = alpha(kind, s)
    norm = math.sqrt(a * a + s * s)
    return (a / norm) ** 2, norm


def sample_ddpm(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                callback: StepCallback | None = None) -> torch.Tensor:
    """Ancestral DDPM (Ho et al. 2020, arXiv 2006.11239): sample q(x_{t'} | x_t, x0 = D) in VP coordinates.

    With a = abar_t / abar_t', the posterior mean is
    ``sqrt(abar_t') (1 - a) / (1 - abar_t) D + sqrt(a) (1 - abar_t') / (1 - abar_t) x_vp``,
    variance ``(1 - a)(1 - abar_t') / (1 - abar_t)`` (beta-tilde); x is mapped to VP coordinates and back
    around the step. For VP models this equals euler_ancestral and ddim with eta = 1.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "ddpm")
    if sig[1] > 0:
        require_noise(noise, "ddpm", "every step but the last samples the posterior")
    sdt = sigma_dtype(sigmas, x)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        den = denoise(model, x, s, sdt)
        ab, norm = _abar(kind, s)
        ab_next, norm_next = _abar(kind, s_next)
        a = ab / ab_next
        mean = den * (math.sqrt(ab_next) * (1.0 - a) / (1.0 - ab)) + (x / norm) * (
            math.sqrt(a) * (1.0 - ab_next) / (1.0 - ab))
        var = (1.0 - a) * (1.0 - ab_next) / (1.0 - ab)
        if s_next > 0:
            mean = mean + draw(noise, s, s_next, x) * math.sqrt(max(var, 0.0))
        x = mean * norm_next
        emit(callback, i, s, s_next, x, den)
    return x


def sample_lcm(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
               callback: StepCallback | None = None, s_noise: float = 1.0) -> torch.Tensor:
    """Latent Consistency Model multistep sampling (Luo et al. 2023, arXiv 2310.04378, Alg. 1).

    ``x <- D(x, sigma_i)``; unless sigma_{i+1} = 0: ``x <- alpha_{i+1} x + s_noise sigma_{i+1} z`` (fresh noise, no
    memory of the previous noise). Meant for consistency-distilled models; not a convergent ODE/SDE solver.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "lcm")
    s_noise = option_value("s_noise", s_noise, "lcm")
    if sig[1] > 0:
        require_noise(noise, "lcm", "every step but the last draws fresh noise")
    sdt = sigma_dtype(sigmas, x)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        den = denoise(model, x, s, sdt)
        x = den
        if s_next > 0:
            x = den * alpha(kind, s_next) + draw(noise, s, s_next, x) * (s_next * s_noise)
        emit(callback, i, s, s_next, x, den)
    return x
