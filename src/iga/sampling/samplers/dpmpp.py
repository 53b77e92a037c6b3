"""DPM-Solver++ samplers (Lu et al. 2022, "DPM-Solver++", arXiv 2211.01095) in the k-diffusion forms.

All work with the data prediction D in the half-log-SNR lambda = log(alpha / sigma) (``-log sigma`` for VP,
``log((1 - sigma) / sigma)`` for flow). Over one step of length h = lambda' - lambda the linear part of the ODE
is integrated exactly::

    x' = (sigma' / sigma) x + alpha' (1 - e^-h) D          (DDIM / DPM-Solver++ 1)

and the higher-order forms replace D by an extrapolation. The SDE forms (eta > 0) integrate the reverse SDE
family whose eta = 0 member is the ODE::

    x' = (sigma' / sigma) e^(-eta h) x + alpha' (1 - e^-(1+eta)h) D + sigma' sqrt(1 - e^(-2 eta h)) z

(for D = x0 this maps alpha x0 + sigma eps to alpha' x0 + sigma' eps' exactly). Flow grids starting at sigma = 1
start at 1 - 1e-4 (lambda must be finite).
"""

from __future__ import annotations

import math

import torch

from iga.sampling.base import NoiseSampler, StepCallback
from iga.sampling.samplers._common import (
    option_value,
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
    posterior_step,
    sigma_dtype,
    sigma_of_lambda,
    to_d,
)


def sample_dpmpp_2m(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                    callback: StepCallback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M): two-step exponential Adams-Bashforth on D (Lu et al. 2022b, Alg. 2).

    With r = h_prev / h: ``D_d = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}``; ``x' = (s'/s) x + alpha' (1 - e^-h) D_d``.
    The first step (no history) and the step to sigma = 0 (x' = D) are first order.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpmpp_2m")
    ls, sdt = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x)
    old, lam_prev = None, None
    for i in range(len(sig) - 1):
        s, s_next = ls[i], ls[i + 1]
        den = denoise(model, x, s, sdt)
        lam = half_log_snr(kind, s)
        if s_next == 0:
            x = den
        else:
            h = half_log_snr(kind, s_next) - lam
            dd = den
            if old is not None:
                k = 1.0 / (2.0 * ((lam - lam_prev) / h))
                dd = den * (1.0 + k) - old * k
            x = x * (s_next / s) + dd * (-alpha(kind, s_next) * math.expm1(-h))
        old, lam_prev = den, lam
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def sample_dpmpp_2m_sde(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                        callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                        solver_type: str = "midpoint") -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, Sec. 5; k-diffusion form) with Brownian noise.

    With H = (1 + eta) h and r = h_prev / h, after the first-order SDE step above it adds
    ``alpha' c (1/r) (D_i - D_{i-1})`` where c = (1 - e^-H) / 2 ("midpoint") or c = 1 - (1 - e^-H) / H ("heun",
    the exact integral of the linear interpolant). eta = 0 with "midpoint" is dpmpp_2m.
    """
    solver_type = option_value("solver_type", solver_type, "dpmpp_2m_sde")
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpmpp_2m_sde")
    eta, s_noise = noise_options("dpmpp_2m_sde", eta, s_noise, sig, noise, "eta > 0 makes it an SDE solver")
    ls, sdt = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x)
    old, h_last = None, None
    for i in range(len(sig) - 1):
        s, s_next = ls[i], ls[i + 1]
        den = denoise(model, x, s, sdt)
        if s_next == 0:
            x = den
        else:
            h = half_log_snr(kind, s_next) - half_log_snr(kind, s)
            big_h = (1.0 + eta) * h
            one_m = -math.expm1(-big_h)
            a_next = alpha(kind, s_next)
            x = x * (s_next / s * math.exp(-eta * h)) + den * (a_next * one_m)
            if old is not None:
                c = 0.5 * one_m if solver_type == "midpoint" else 1.0 - one_m / big_h
                x = x + (den - old) * (a_next * c * h / h_last)
            if eta > 0:
                x = x + draw(noise, sig[i], sig[i + 1], x) * (s_next * math.sqrt(-math.expm1(-2.0 * eta * h)) * s_noise)
            h_last = h
        old = den
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def sample_dpmpp_2m_sde_heun(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                             callback: StepCallback | None = None, eta: float = 1.0,
                             s_noise: float = 1.0) -> torch.Tensor:
    """dpmpp_2m_sde with solver_type="heun" (its own canonical name in ComfyUI and A1111)."""
    return sample_dpmpp_2m_sde(model, x, sigmas, noise=noise, callback=callback, eta=eta, s_noise=s_noise,
                               solver_type="heun")


def sample_dpmpp_3m_sde(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                        callback: StepCallback | None = None, eta: float = 1.0,
                        s_noise: float = 1.0) -> torch.Tensor:
    """SDE-DPM-Solver++(3M) as in k-diffusion/ComfyUI: three-step exponential multistep on D with Brownian noise.

    With H = (1+eta) h, r0 = h_{-1}/h, r1 = h_{-2}/h, ``d1_0 = (D_i - D_{i-1})/r0``, ``d1_1 = (D_{i-1} - D_{i-2})/r1``,
    ``d1 = d1_0 + (d1_0 - d1_1) r0/(r0+r1)``, ``d2 = (d1_0 - d1_1)/(r0+r1)``, ``phi2 = 1 - (1 - e^-H)/H``,
    ``phi3 = phi2/H - 1/2``: ``x' += alpha' (phi2 d1 - phi3 d2)`` (with one history point: ``alpha' phi2 (D_i -
    D_{i-1})/r``). Note: the quadratic interpolant through the three D's is D + tau d1 + tau^2 d2, whose exact
    integral weight on d2 is ``-2 phi3``; the published/k-diffusion/diffusers weight ``-phi3`` is half of it, so the
    steady-state step has a local error of order h^3 (second order) rather than h^4. We keep the published weight,
    so the name means the same numbers as elsewhere; the global order is 2 either way because of the
    first-order start-up step.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpmpp_3m_sde")
    eta, s_noise = noise_options("dpmpp_3m_sde", eta, s_noise, sig, noise, "eta > 0 makes it an SDE solver")
    ls, sdt = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x)
    d_1 = d_2 = None
    h_1 = h_2 = None
    for i in range(len(sig) - 1):
        s, s_next = ls[i], ls[i + 1]
        den = denoise(model, x, s, sdt)
        if s_next == 0:
            x = den
        else:
            h = half_log_snr(kind, s_next) - half_log_snr(kind, s)
            big_h = (1.0 + eta) * h
            a_next = alpha(kind, s_next)
            x = x * (s_next / s * math.exp(-eta * h)) + den * (-a_next * math.expm1(-big_h))
            phi2 = math.expm1(-big_h) / big_h + 1.0
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (den - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi3 = phi2 / big_h - 0.5
                x = x + (d1 * phi2 - d2 * phi3) * a_next
            elif h_1 is not None:
                x = x + (den - d_1) * (a_next * phi2 * h / h_1)
            if eta > 0:
                x = x + draw(noise, sig[i], sig[i + 1], x) * (s_next * math.sqrt(-math.expm1(-2.0 * eta * h)) * s_noise)
            h_2, h_1 = h_1, h
        d_2, d_1 = d_1, den
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def sample_dpmpp_2s_ancestral(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                              callback: StepCallback | None = None, eta: float = 1.0,
                              s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) (k-diffusion "DPM++ 2S a"): a single-step second-order step to sigma_down.

    lambda_mid = (lambda(sigma_i) + lambda(sigma_down)) / 2; ``x_mid = DDIM(x, D_i; sigma_i -> sigma_mid)``;
    ``x_down = DDIM(x, D(x_mid, sigma_mid); sigma_i -> sigma_down)``; then renoise as in euler_ancestral.
    Two calls per step (one when sigma_down = 0). eta = 0 gives deterministic DPM-Solver++(2S), r = 1/2.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpmpp_2s_ancestral")
    eta, s_noise = noise_options("dpmpp_2s_ancestral", eta, s_noise, sig, noise)
    ls, sdt = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x)
    for i in range(len(sig) - 1):
        s, s_next = ls[i], ls[i + 1]
        den = denoise(model, x, s, sdt)
        down, scale, up = ancestral_step(kind, s, s_next, eta)
        if down == 0:
            x = x + to_d(x, s, den) * (down - s)
        else:
            lam = half_log_snr(kind, s)
            s_mid = sigma_of_lambda(kind, 0.5 * (lam + half_log_snr(kind, down)))
            x2 = ddim_step(kind, x, den, s, s_mid)
            x = ddim_step(kind, x, denoise(model, x2, s_mid, sdt), s, down)
        if up > 0:
            x = x * scale + draw(noise, sig[i], sig[i + 1], x) * (s_noise * up)
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def sample_dpmpp_sde(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                     callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                     r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++ SDE (k-diffusion "DPM++ SDE"): a two-stage step with noise at both stages, Brownian tree.

    lambda_r = lambda_i + r h, sigma_r = sigma(lambda_r). Stage 1: DDIM(eta) from sigma_i to sigma_r with D_i
    (posterior rule of :func:`posterior_step`), noise(sigma_i, sigma_r); D_r = D(x_r, sigma_r). Stage 2: DDIM(eta)
    from sigma_i to sigma_{i+1} with ``(1 - 1/(2r)) D_i + 1/(2r) D_r``, noise(sigma_i, sigma_{i+1}).
    eta = 0 is the deterministic DPM-Solver++(2S). Two calls per step, one on the step to 0.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpmpp_sde")
    r = option_value("r", r, "dpmpp_sde")
    eta, s_noise = noise_options("dpmpp_sde", eta, s_noise, sig, noise, "eta > 0 makes it an SDE solver")
    ls, sdt = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x)
    fac = 1.0 / (2.0 * r)
    for i in range(len(sig) - 1):
        s, s_next = ls[i], ls[i + 1]
        den = denoise(model, x, s, sdt)
        if s_next == 0:
            x = x + to_d(x, s, den) * (s_next - s)
        else:
            lam = half_log_snr(kind, s)
            s_r = sigma_of_lambda(kind, lam + r * (half_log_snr(kind, s_next) - lam))
            down, scale, up = posterior_step(kind, s, s_r, eta)
            x2 = ddim_step(kind, x, den, s, down)
            if up > 0:
                x2 = x2 * scale + draw(noise, sig[i], s_r, x2) * (s_noise * up)
            den2 = denoise(model, x2, s_r, sdt)
            down, scale, up = posterior_step(kind, s, s_next, eta)
            x = ddim_step(kind, x, den * (1.0 - fac) + den2 * fac, s, down)
            if up > 0:
                x = x * scale + draw(noise, sig[i], sig[i + 1], x) * (s_noise * up)
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def nfe_two_stage(sig: list[float], kind: str, options: dict) -> int:
    """dpmpp_sde: two calls per step, one on the step to 0."""
    return sum(1 if sig[i + 1] == 0 else 2 for i in range(len(sig) - 1))


def nfe_2s_ancestral(sig: list[float], kind: str, options: dict) -> int:
    """dpmpp_2s_ancestral: two calls per step, one when sigma_down = 0."""
    eta = float(options.get("eta", 1.0))
    ls = capped_for_lambda(sig, kind)
    return sum(1 if ancestral_step(kind, ls[i], ls[i + 1], eta)[0] == 0 else 2 for i in range(len(sig) - 1))
