"""Gradient-estimation sampling (Permenter & Yuan 2024, "Interpreting and Improving Diffusion Models from an
Optimization Perspective", arXiv 2306.04848, ICML 2024), as ComfyUI's gradient_estimation(_cfg_pp).

The paper reads the denoiser as an approximate gradient of a distance function and Euler in sigma as gradient
descent on it; its sampler adds a momentum-like term that extrapolates the slope: with d = (x - D)/sigma and
dt = sigma' - sigma,

    x' = x + d dt + (gamma - 1) (d - d_prev) dt          (gamma = 2 by default; the first step is Euler)

With gamma = 2 this is the equal-step Adams-Bashforth-2 form with the variable-step weight 1/(2 r) replaced by 1,
so its local error is O(h^2) and a whole run is first order (measured in the order tests); the paper reports
better images at few steps, not a higher order. The step to sigma = 0 returns D. Works in sigma for VP and flow
models alike (the probability-flow ODE is dx/dsigma = (x - D)/sigma for both).
"""

from __future__ import annotations


import torch

from iga.sampling.base import NoiseSampler, StepCallback
from iga.sampling.samplers._common import check_sigmas, emit, model_kind, option_value, sigma_dtype, to_d
from iga.sampling.samplers.cfgpp import cfgpp_step, predictions


def _gradient_estimation(name: str, model, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None,
                         ge_gamma: float, cfg_pp: bool) -> torch.Tensor:
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, name)
    gamma = option_value("ge_gamma", ge_gamma, name)
    pair, sdt = predictions(model, name, cfg_pp), sigma_dtype(sigmas, x)
    d_prev = None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        den, unc = pair(x, s, sdt)
        # CFG++ extrapolates the unconditional slope; for a plain sampler unc is den
        d = to_d(x, s, unc)
        if s_next == 0:
            x = den
        else:
            dt = s_next - s
            x = cfgpp_step(kind, x, den, unc, s, s_next) if cfg_pp else x + d * dt
            if d_prev is not None:
                x = x + (d - d_prev) * ((gamma - 1.0) * dt)
        d_prev = d
        emit(callback, i, s, s_next, x, den)
    return x


def sample_gradient_estimation(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                               callback: StepCallback | None = None, ge_gamma: float = 2.0) -> torch.Tensor:
    """Gradient estimation (Permenter & Yuan 2024, arXiv 2306.04848, Alg. 2; ComfyUI's gradient_estimation).

    ``x' = x + d dt + (ge_gamma - 1)(d - d_prev) dt`` with d = (x - D)/sigma, dt = sigma' - sigma; Euler on the
    first step, x' = D on the step to 0. ge_gamma = 1 is Euler. First order (see the module docstring).
    """
    return _gradient_estimation("gradient_estimation", model, x, sigmas, callback, ge_gamma, cfg_pp=False)


def sample_gradient_estimation_cfg_pp(model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                      noise: NoiseSampler | None = None, callback: StepCallback | None = None,
                                      ge_gamma: float = 2.0) -> torch.Tensor:
    """Gradient estimation with CFG++ renoising (ComfyUI's gradient_estimation_cfg_pp; Chung et al. 2024,
    arXiv 2406.08070).

    ``x' = alpha' D_cfg + (s'/s)(x - alpha D_u) + (ge_gamma - 1)(d_u - d_u,prev) dt`` with the unconditional slope
    d_u = (x - D_u)/sigma (VP: ``D_cfg + sigma' d_u + ...``). At guidance scale 1 it is gradient_estimation.
    """
    return _gradient_estimation("gradient_estimation_cfg_pp", model, x, sigmas, callback, ge_gamma, cfg_pp=True)
