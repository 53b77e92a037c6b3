"""Sigma-space Runge-Kutta samplers: Euler, Heun, Heun++ (heunpp2), DPM2, and their ancestral forms.

They integrate the probability-flow ODE ``dx/dsigma = d(x, sigma) = (x - D(x, sigma)) / sigma`` directly in
sigma, which holds for VP (sigma space) and flow models alike. Euler, Heun and DPM2 accept Karras et al.'s
"churn" (Alg. 2: ``s_churn``, ``s_tmin``, ``s_tmax``, ``s_noise``), which is off by default.
"""

from __future__ import annotations

import math

import torch

from iga.sampling.base import NoiseSampler, StepCallback
from iga.sampling.samplers._common import (
    ancestral_step,
    option_value,
    noise_options,
    check_sigmas,
    churn,
    denoise,
    draw,
    emit,
    model_kind,
    sigma_dtype,
    to_d,
)

_INF = math.inf


def _churn_opts(name: str, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> dict:
    return {"s_churn": option_value("s_churn", s_churn, name), "s_tmin": float(s_tmin), "s_tmax": float(s_tmax),
            "s_noise": option_value("s_noise", s_noise, name)}


def sample_euler(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                 callback: StepCallback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = _INF, s_noise: float = 1.0) -> torch.Tensor:
    """Euler's method in sigma (Karras et al. 2022, arXiv 2206.00364, Alg. 2 with its churn).

    Per step: optional churn sigma_hat = sigma_i (1 + gamma) with fresh noise; D = D(x, sigma_hat);
    ``x <- x + (sigma_{i+1} - sigma_hat) (x - D) / sigma_hat``. First order, one model call per step.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "euler")
    opts = _churn_opts("euler", s_churn, s_tmin, s_tmax, s_noise)
    sdt, n = sigma_dtype(sigmas, x), len(sig) - 1
    for i in range(n):
        x, s_hat = churn(kind, x, sig[i], n, noise=noise, sampler="euler", **opts)
        den = denoise(model, x, s_hat, sdt)
        x = x + to_d(x, s_hat, den) * (sig[i + 1] - s_hat)
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def sample_euler_ancestral(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                           callback: StepCallback | None = None, eta: float = 1.0,
                           s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral Euler (k-diffusion "Euler a"; ancestral step from DDIM, Song et al. 2020, arXiv 2010.02502).

    Per step: D = D(x, sigma_i); (sigma_down, scale, up) from :func:`ancestral_step` (VP: DDIM's
    sigma_t(eta); flow: ComfyUI's rectified-flow rule); Euler to sigma_down; then
    ``x <- scale * x + s_noise * up * z`` (no noise on the step to 0). eta = 0 is plain Euler.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "euler_ancestral")
    eta, s_noise = noise_options("euler_ancestral", eta, s_noise, sig, noise)
    sdt = sigma_dtype(sigmas, x)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        den = denoise(model, x, s, sdt)
        down, scale, up = ancestral_step(kind, s, s_next, eta)
        x = x + to_d(x, s, den) * (down - s)
        if up > 0:
            x = x * scale + draw(noise, s, s_next, x) * (s_noise * up)
        emit(callback, i, s, s_next, x, den)
    return x


def sample_heun(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                callback: StepCallback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = _INF, s_noise: float = 1.0) -> torch.Tensor:
    """Heun's method (explicit trapezoidal rule) in sigma, Karras et al. 2022 (arXiv 2206.00364) Alg. 1/2.

    ``x' = x + dt d(x, s_hat)``; ``x <- x + dt (d(x, s_hat) + d(x', s_next)) / 2``. The step to sigma = 0 is an
    Euler step (d is undefined at 0), so it costs one model call instead of two.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "heun")
    opts = _churn_opts("heun", s_churn, s_tmin, s_tmax, s_noise)
    sdt, n = sigma_dtype(sigmas, x), len(sig) - 1
    for i in range(n):
        x, s_hat = churn(kind, x, sig[i], n, noise=noise, sampler="heun", **opts)
        s_next = sig[i + 1]
        den = denoise(model, x, s_hat, sdt)
        d = to_d(x, s_hat, den)
        dt = s_next - s_hat
        if s_next == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            d2 = to_d(x2, s_next, denoise(model, x2, s_next, sdt))
            x = x + (d + d2) * (0.5 * dt)
        emit(callback, i, sig[i], s_next, x, den)
    return x


def sample_heunpp2(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                   callback: StepCallback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                   s_tmax: float = _INF, s_noise: float = 1.0) -> torch.Tensor:
    """Heun++ ("heunpp2", Carzit's sd-webui-samplers-scheduler, as in ComfyUI): three slopes, sigma-weighted.

    Away from the end: x2 = x + dt d1, x3 = x2 + dt2 d2 (dt2 = sigma_{i+2} - sigma_{i+1}), then
    ``x <- x + dt (w1 d1 + w2 d2 + w3 d3)`` with ``w2 = sigma_{i+1} / (3 sigma_0)``,
    ``w3 = sigma_{i+2} / (3 sigma_0)``, ``w1 = 1 - w2 - w3`` (3 calls). On the second-to-last step
    ``w2 = sigma_{i+1} / (2 sigma_0)`` with two slopes (2 calls), and the last step is Euler (1 call).
    The weights sum to 1 but do not satisfy the second-order condition (w2 + 2 w3 = 1/2 would be needed), so the
    method is first order: accurate early, when sigma is near sigma_0, and Euler-like late.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "heunpp2")
    opts = _churn_opts("heunpp2", s_churn, s_tmin, s_tmax, s_noise)
    sdt, n = sigma_dtype(sigmas, x), len(sig) - 1
    s_end = sig[-1]
    for i in range(n):
        x, s_hat = churn(kind, x, sig[i], n, noise=noise, sampler="heunpp2", **opts)
        s1 = sig[i + 1]
        den = denoise(model, x, s_hat, sdt)
        d = to_d(x, s_hat, den)
        dt = s1 - s_hat
        if s1 == s_end:
            x = x + d * dt
        elif sig[i + 2] == s_end:
            x2 = x + d * dt
            d2 = to_d(x2, s1, denoise(model, x2, s1, sdt))
            w2 = s1 / (2.0 * sig[0])
            x = x + (d * (1.0 - w2) + d2 * w2) * dt
        else:
            s2 = sig[i + 2]
            x2 = x + d * dt
            d2 = to_d(x2, s1, denoise(model, x2, s1, sdt))
            x3 = x2 + d2 * (s2 - s1)
            d3 = to_d(x3, s2, denoise(model, x3, s2, sdt))
            w2, w3 = s1 / (3.0 * sig[0]), s2 / (3.0 * sig[0])
            x = x + (d * (1.0 - w2 - w3) + d2 * w2 + d3 * w3) * dt
        emit(callback, i, sig[i], s1, x, den)
    return x


def sample_dpm_2(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                 callback: StepCallback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = _INF, s_noise: float = 1.0) -> torch.Tensor:
    """DPM2 (k-diffusion; after DPM-Solver-2, Lu et al. 2022, arXiv 2206.00927): midpoint rule in log sigma.

    ``sigma_mid = sqrt(s_hat sigma_{i+1})``; ``x_mid = x + (sigma_mid - s_hat) d(x, s_hat)``;
    ``x <- x + (sigma_{i+1} - s_hat) d(x_mid, sigma_mid)``. Second order, 2 calls; the step to 0 is Euler.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpm_2")
    opts = _churn_opts("dpm_2", s_churn, s_tmin, s_tmax, s_noise)
    sdt, n = sigma_dtype(sigmas, x), len(sig) - 1
    for i in range(n):
        x, s_hat = churn(kind, x, sig[i], n, noise=noise, sampler="dpm_2", **opts)
        s_next = sig[i + 1]
        den = denoise(model, x, s_hat, sdt)
        d = to_d(x, s_hat, den)
        if s_next == 0:
            x = x + d * (s_next - s_hat)
        else:
            s_mid = math.exp(0.5 * (math.log(s_hat) + math.log(s_next)))
            x2 = x + d * (s_mid - s_hat)
            d2 = to_d(x2, s_mid, denoise(model, x2, s_mid, sdt))
            x = x + d2 * (s_next - s_hat)
        emit(callback, i, sig[i], s_next, x, den)
    return x


def sample_dpm_2_ancestral(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                           callback: StepCallback | None = None, eta: float = 1.0,
                           s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM2: the DPM2 midpoint step from sigma_i to sigma_down, then renoise as in euler_ancestral.

    The midpoint is sqrt(sigma_i sigma_down); when sigma_down = 0 (the last step) it is an Euler step. eta = 0 is
    exactly dpm_2.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpm_2_ancestral")
    eta, s_noise = noise_options("dpm_2_ancestral", eta, s_noise, sig, noise)
    sdt = sigma_dtype(sigmas, x)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        den = denoise(model, x, s, sdt)
        down, scale, up = ancestral_step(kind, s, s_next, eta)
        d = to_d(x, s, den)
        if down == 0:
            x = x + d * (down - s)
        else:
            s_mid = math.exp(0.5 * (math.log(s) + math.log(down)))
            x2 = x + d * (s_mid - s)
            d2 = to_d(x2, s_mid, denoise(model, x2, s_mid, sdt))
            x = x + d2 * (down - s)
        if up > 0:
            x = x * scale + draw(noise, s, s_next, x) * (s_noise * up)
        emit(callback, i, s, s_next, x, den)
    return x


# ---- exact model-call counts -----------------------------------------------------------------------------------

def nfe_one_per_step(sig: list[float], kind: str, options: dict) -> int:
    """One model call per step."""
    return len(sig) - 1


def nfe_two_unless_last(sig: list[float], kind: str, options: dict) -> int:
    """Two calls per step, one on a step that ends at sigma = 0 (heun, dpm_2)."""
    return sum(1 if sig[i + 1] == 0 else 2 for i in range(len(sig) - 1))


def nfe_heunpp2(sig: list[float], kind: str, options: dict) -> int:
    """3 calls per step, 2 on the second-to-last, 1 on the last."""
    end, total = sig[-1], 0
    for i in range(len(sig) - 1):
        total += 1 if sig[i + 1] == end else (2 if sig[i + 2] == end else 3)
    return total


def nfe_dpm_2_ancestral(sig: list[float], kind: str, options: dict) -> int:
    """Two calls per step, one when the ancestral sigma_down is 0."""
    eta = float(options.get("eta", 1.0))
    return sum(1 if ancestral_step(kind, sig[i], sig[i + 1], eta)[0] == 0 else 2 for i in range(len(sig) - 1))
