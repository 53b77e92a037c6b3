"""CFG++ samplers (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance", arXiv 2406.08070).

CFG++ takes the guided x0 estimate D_cfg but renoises along the *unconditional* noise direction:
``x_next = alpha' D_cfg + sigma' eps_u`` with ``eps_u = (x - alpha D_u) / sigma``. In sigma space (alpha = 1) the
Euler form is ``x_next = D_cfg + sigma' (x - D_u) / sigma``. With guided == unconditional (scale 1) each sampler
reduces to its plain counterpart. They need a GuidedDenoiser (``denoise_with_uncond``); users typically run
guidance scales of about 0.5-2 with them.
"""

from __future__ import annotations

import math

import torch

from iga.sampling.base import NoiseSampler, SamplingError, StepCallback
from iga.sampling.samplers._common import (
    alpha,
    ancestral_step,
    capped_for_lambda,
    noise_options,
    check_sigmas,
    ddim_step,
    denoise,
    draw,
    emit,
    half_log_snr,
    model_kind,
    sigma_dtype,
    sigma_of_lambda,
)


def _guided(model, name: str):
    fn = getattr(model, "denoise_with_uncond", None)
    if not callable(fn):
        raise SamplingError(
            f"{name} is a CFG++ sampler: it needs a guided denoiser with denoise_with_uncond(x, sigma) -> "
            "(guided, uncond) (see iga.sampling.guidance), got a plain denoiser"
        )
    return fn


def _call(fn, x: torch.Tensor, s: float, sdt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return fn(x, x.new_ones([x.shape[0]], dtype=sdt) * s)


def cfgpp_step(kind: str, x, den, unc, s: float, s_to: float) -> torch.Tensor:
    """x_to = alpha_to D_cfg + (s_to / s) (x - alpha D_u): the CFG++ first-order step."""
    return den * alpha(kind, s_to) + (x - unc * alpha(kind, s)) * (s_to / s)


def predictions(model, name: str, cfg_pp: bool):
    """``pair(x, sigma, sigma_dtype) -> (D, D_u)``: the guided and unconditional estimates from one call.

    For a plain sampler (cfg_pp False) both are the model's D, so one code path serves a sampler and its CFG++ form.
    """
    if cfg_pp:
        fn = _guided(model, name)
        return lambda x, s, sdt: _call(fn, x, s, sdt)

    def plain(x, s, sdt):
        den = denoise(model, x, s, sdt)
        return den, den
    return plain


def sample_euler_cfg_pp(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                        callback: StepCallback | None = None) -> torch.Tensor:
    """Euler CFG++: ``x' = alpha' D_cfg + (sigma'/sigma) (x - alpha D_u)`` (VP: D_cfg + sigma' (x - D_u) / sigma)."""
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "euler_cfg_pp")
    fn, sdt = _guided(model, "euler_cfg_pp"), sigma_dtype(sigmas, x)
    for i in range(len(sig) - 1):
        den, unc = _call(fn, x, sig[i], sdt)
        x = cfgpp_step(kind, x, den, unc, sig[i], sig[i + 1])
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def sample_euler_ancestral_cfg_pp(model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                  noise: NoiseSampler | None = None, callback: StepCallback | None = None,
                                  eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral Euler CFG++: the CFG++ step to sigma_down, then renoise as in euler_ancestral (eta, s_noise)."""
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "euler_ancestral_cfg_pp")
    eta, s_noise = noise_options("euler_ancestral_cfg_pp", eta, s_noise, sig, noise)
    fn, sdt = _guided(model, "euler_ancestral_cfg_pp"), sigma_dtype(sigmas, x)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        den, unc = _call(fn, x, s, sdt)
        down, scale, up = ancestral_step(kind, s, s_next, eta)
        x = cfgpp_step(kind, x, den, unc, s, down)
        if up > 0:
            x = x * scale + draw(noise, s, s_next, x) * (s_noise * up)
        emit(callback, i, s, s_next, x, den)
    return x


def sample_dpmpp_2m_cfg_pp(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                           callback: StepCallback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) CFG++ (ComfyUI's form of CFG++).

    ``x' = alpha' D_cfg + (sigma'/sigma)(x - alpha D_u) + alpha' (1 - e^-h)/(2r) (D_cfg - D_u,prev)``.

    The multistep correction uses the previous step's *unconditional* estimate (ComfyUI's dpmpp_2m_cfg_pp); at
    guidance scale 1 it is dpmpp_2m. First step and step to 0 are first order.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpmpp_2m_cfg_pp")
    fn, sdt = _guided(model, "dpmpp_2m_cfg_pp"), sigma_dtype(sigmas, x)
    ls = capped_for_lambda(sig, kind)
    old_unc, lam_prev = None, None
    for i in range(len(sig) - 1):
        s, s_next = ls[i], ls[i + 1]
        den, unc = _call(fn, x, s, sdt)
        lam = half_log_snr(kind, s)
        x_new = cfgpp_step(kind, x, den, unc, s, s_next)
        if old_unc is not None and s_next > 0:
            h = half_log_snr(kind, s_next) - lam
            r = (lam - lam_prev) / h
            x_new = x_new + (den - old_unc) * (-alpha(kind, s_next) * math.expm1(-h) / (2.0 * r))
        x = x_new
        old_unc, lam_prev = unc, lam
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def sample_dpmpp_2s_ancestral_cfg_pp(model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                     noise: NoiseSampler | None = None, callback: StepCallback | None = None,
                                     eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) CFG++ (ComfyUI's dpmpp_2s_ancestral_cfg_pp; Chung et al. 2024, arXiv 2406.08070).

    Both DPM-Solver++(2S) stages (Lu et al. 2022b, arXiv 2211.01095) start from the CFG++-shifted state
    ``y = x + alpha (D_cfg - D_u)``: ``x_mid = DDIM(y, D_cfg; sigma -> sigma_mid)`` and
    ``x_down = DDIM(y, D(x_mid, sigma_mid); sigma -> sigma_down)``, then renoise as in euler_ancestral. (DDIM from
    y with D_cfg is exactly the CFG++ Euler step.) At guidance scale 1, y = x and it is dpmpp_2s_ancestral.
    Two calls per step (one when sigma_down = 0, where x = D_cfg). D_u is the step's first (not the midpoint's)
    unconditional estimate: ComfyUI up to at least a125cd8 (2025-10) lets the midpoint call overwrite it before
    the final update, which leaves an O(1) error at guidance 1; its PR #11914 fixes that, and iga follows the fix.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpmpp_2s_ancestral_cfg_pp")
    eta, s_noise = noise_options("dpmpp_2s_ancestral_cfg_pp", eta, s_noise, sig, noise)
    fn, sdt = _guided(model, "dpmpp_2s_ancestral_cfg_pp"), sigma_dtype(sigmas, x)
    ls = capped_for_lambda(sig, kind)
    for i in range(len(sig) - 1):
        s, s_next = ls[i], ls[i + 1]
        den, unc = _call(fn, x, s, sdt)
        down, scale, up = ancestral_step(kind, s, s_next, eta)
        if down == 0:
            x = den
        else:
            y = x + (den - unc) * alpha(kind, s)
            s_mid = sigma_of_lambda(kind, 0.5 * (half_log_snr(kind, s) + half_log_snr(kind, down)))
            den2 = denoise(model, ddim_step(kind, y, den, s, s_mid), s_mid, sdt)
            x = ddim_step(kind, y, den2, s, down)
        if up > 0:
            x = x * scale + draw(noise, sig[i], sig[i + 1], x) * (s_noise * up)
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x
