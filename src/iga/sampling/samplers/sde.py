"""Stochastic exponential solvers in ComfyUI: ER-SDE-Solver-3 and SEEDS-2/3, in data (x0) prediction.

Both are written in the VE coordinates of either model kind (see _common): sigma~ = sigma / alpha and
lambda = -log sigma~, with alpha = 1 (VP) or 1 - sigma (flow); a flow grid starting at sigma = 1 starts at
1 - 1e-4. Their noise is ordinary seeded noise (ComfyUI's default_noise_sampler), not a Brownian tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from iga.sampling.base import NoiseSampler, StepCallback
from iga.sampling.samplers._common import (
    alpha,
    capped_for_lambda,
    option_value,
    check_sigmas,
    denoise,
    draw,
    emit,
    half_log_snr,
    model_kind,
    noise_options,
    require_noise,
    sigma_dtype,
    sigma_of_lambda,
    ve_sigma,
)

# ER-SDE's reference code (and ComfyUI) integrate 1/phi by a left Riemann sum over this many points.
_ER_POINTS = 200


def _er_phi(u):
    """ER-SDE's noise scaler phi(u) = u (e^(u^0.3) + 10) (the paper's choice, ComfyUI's default)."""
    return u * (np.exp(u ** 0.3) + 10.0)


def _er_integrals(lo: float, hi: float) -> tuple[float, float]:
    """(int_lo^hi du / phi(u), int_lo^hi (u - hi) du / phi(u)) by the reference's 200-point left Riemann sum."""
    w = (hi - lo) / _ER_POINTS
    u = lo + np.arange(_ER_POINTS, dtype=np.float64) * w
    inv = 1.0 / _er_phi(u)
    return float(inv.sum() * w), float(((u - hi) * inv).sum() * w)


def sample_er_sde(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                  callback: StepCallback | None = None, s_noise: float = 1.0, max_stage: int = 3) -> torch.Tensor:
    """ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the solution space of extended reverse-time SDE for diffusion
    models", arXiv 2309.06169), VP data-prediction form as in ComfyUI's er_sde.

    With phi the noise scaler, r = phi(sigma~')/phi(sigma~) and D', D'' divided differences of D in sigma~:
    ``x' = (alpha'/alpha) r x + alpha' (1 - r) D + alpha' (dt + S1 phi(sigma~')) D' + alpha' (dt^2/2 + S2
    phi(sigma~')) D'' + alpha' sqrt(sigma~'^2 - (r sigma~)^2) s_noise z``, dt = sigma~' - sigma~,
    S1 = int 1/phi, S2 = int (u - sigma~)/phi over [sigma~', sigma~] (200-point left Riemann sums, as the
    reference code and ComfyUI compute them, so the numbers are ComfyUI's; ComfyUI sums in float32, a ~1e-8
    relative difference). Stage k needs k - 1 earlier D's (min(max_stage, i + 1)).
    It has no deterministic member (s_noise = 0 keeps the SDE's drift, which alone is not the ODE; ComfyUI's
    SamplerER_SDE node reaches the ODE through another noise scaler, not offered here). Declared first order:
    the Riemann sums' O(h/200) error in the stage-2/3 weights makes even the phi(u) = u member first order
    asymptotically (~1.5 measured at 64-256 steps; 2 with exact integrals).
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "er_sde")
    s_noise = option_value("s_noise", s_noise, "er_sde")
    if s_noise > 0 and sig[1] > 0:
        require_noise(noise, "er_sde", "it is an SDE solver (s_noise > 0)")
    stages = option_value("max_stage", max_stage, "er_sde")
    ls, sdt = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x)
    ve = [ve_sigma(kind, s) for s in ls]
    old = old_d1 = None
    for i in range(len(sig) - 1):
        den = denoise(model, x, ls[i], sdt)
        if ls[i + 1] == 0:
            x = den
        else:
            vs, vt, a_t = ve[i], ve[i + 1], alpha(kind, ls[i + 1])
            r = float(_er_phi(vt) / _er_phi(vs))
            x_new = x * (a_t / alpha(kind, ls[i]) * r) + den * (a_t * (1.0 - r))
            stage = min(stages, i + 1)
            if stage >= 2:
                s1, s2 = _er_integrals(vt, vs)
                dt, phi_t = vt - vs, float(_er_phi(vt))
                d1 = (den - old) / (vs - ve[i - 1])
                x_new = x_new + d1 * (a_t * (dt + s1 * phi_t))
                if stage >= 3:
                    d2 = (d1 - old_d1) / ((vs - ve[i - 2]) / 2.0)
                    x_new = x_new + d2 * (a_t * (dt * dt / 2.0 + s2 * phi_t))
                old_d1 = d1
            if s_noise > 0:
                std = math.sqrt(max(vt * vt - (vs * r) ** 2, 0.0))
                x_new = x_new + draw(noise, sig[i], sig[i + 1], x) * (a_t * std * s_noise)
            x = x_new
        old = den
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


# ---- SEEDS -----------------------------------------------------------------------------------------------------

class _SeedsNoise:
    """The correlated noise of one SEEDS step: the stages share one Ornstein-Uhlenbeck path in lambda.

    After a stage ending at fraction r of the step, the running standard-normal value is carried to the next
    stage end r' as ``n e^((r - r') h eta) + sqrt(1 - e^(2 (r - r') h eta)) z``; the stage adds ``sigma_r' n s_noise``.
    """

    def __init__(self, noise: NoiseSampler | None, h: float, eta: float, s_noise: float, on: bool):
        self.noise, self.h, self.eta, self.s_noise, self.on = noise, h, eta, s_noise, on
        self.n: torch.Tensor | None = None
        self.r, self.sigma = 0.0, None

    def add(self, x: torch.Tensor, r: float, sigma_from: float, sigma_to: float) -> torch.Tensor:
        if not self.on:
            return x
        seg = (self.r - r) * self.h * self.eta
        z = draw(self.noise, sigma_from, sigma_to, x)
        fresh = z * math.sqrt(-math.expm1(2.0 * seg))
        self.n = fresh if self.n is None else self.n * math.exp(seg) + fresh
        self.r = r
        return x + self.n * (sigma_to * self.s_noise)


@dataclass
class _SeedsStep:
    """What one SEEDS step knows: the model, the step in sigma and lambda, H = (1 + eta) h, its OU noise path."""

    model: object
    kind: str
    sdt: torch.dtype
    s: float
    s_next: float
    lam: float
    h: float
    big_h: float
    eta: float
    ou: "_SeedsNoise"
    sigma_from: float  # the unclamped sigmas the noise is drawn between
    sigma_to: float


def _seeds_run(name: str, model, x, sigmas, noise, callback, eta, s_noise, step) -> torch.Tensor:
    """The SEEDS loop: a denoise at every sigma, ``step(st, x, den)`` between them, x = D on the step to 0."""
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, name)
    eta, s_noise = noise_options(name, eta, s_noise, sig, noise, "eta > 0 makes it an SDE solver")
    ls, sdt = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x)
    for i in range(len(sig) - 1):
        s, s_next = ls[i], ls[i + 1]
        den = denoise(model, x, s, sdt)
        if s_next == 0:
            x = den
        else:
            lam = half_log_snr(kind, s)
            h = half_log_snr(kind, s_next) - lam
            ou = _SeedsNoise(noise, h, eta, s_noise, eta > 0 and s_noise > 0)
            x = step(_SeedsStep(model, kind, sdt, s, s_next, lam, h, (1.0 + eta) * h, eta, ou, sig[i], sig[i + 1]),
                     x, den)
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def _stage(kind: str, s: float, lam_s: float, h: float, r: float, eta: float) -> tuple[float, float, float]:
    """(sigma_r, (sigma_r / sigma) e^(-r h eta), alpha_r) of the SEEDS stage at lambda + r h."""
    s_r = sigma_of_lambda(kind, lam_s + r * h)
    return s_r, s_r / s * math.exp(-r * h * eta), alpha(kind, s_r)


def _check_fraction(name: str, option: str, r: float) -> float:
    return option_value(option, r, name)


def sample_seeds_2(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                   callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                   r: float = 0.5) -> torch.Tensor:
    """SEEDS-2 (Gonzalez et al. 2023, "SEEDS: Exponential SDE Solvers for Fast High-Quality Sampling from Diffusion
    Models", arXiv 2305.14267), VP data prediction, as ComfyUI's seeds_2.

    With h = lambda' - lambda, H = (1 + eta) h and the stage at lambda + r h:
    ``x_r = (sigma_r/sigma) e^(-r h eta) x + alpha_r (1 - e^(-r H)) D + noise``, D_r = D(x_r, sigma_r);
    ``x' = (sigma'/sigma) e^(-h eta) x + alpha' (1 - e^(-H)) ((1 - 1/(2r)) D + D_r/(2r)) + noise``, the two noises
    being one OU path (:class:`_SeedsNoise`). eta = 0 is DPM-Solver++(2S). Two calls per step, one on the step to 0.
    """
    r = _check_fraction("seeds_2", "r", r)

    def step(st: _SeedsStep, x: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        s_1, c_1, a_1 = _stage(st.kind, st.s, st.lam, st.h, r, st.eta)
        x_2 = st.ou.add(x * c_1 + den * (-a_1 * math.expm1(-r * st.big_h)), r, st.sigma_from, s_1)
        den_2 = denoise(st.model, x_2, s_1, st.sdt)
        fac = 1.0 / (2.0 * r)
        mixed = den * (1.0 - fac) + den_2 * fac
        x = x * (st.s_next / st.s * math.exp(-st.h * st.eta)) + mixed * (-alpha(st.kind, st.s_next)
                                                                           * math.expm1(-st.big_h))
        return st.ou.add(x, 1.0, s_1, st.sigma_to)

    return _seeds_run("seeds_2", model, x, sigmas, noise, callback, eta, s_noise, step)


def _h_phi2(z: float) -> float:
    """(e^z - 1 - z) / z, the h*phi_2 weight of the exponential integrators (z != 0)."""
    return (math.expm1(z) - z) / z


def sample_seeds_3(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                   callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                   r_1: float = 1.0 / 3.0, r_2: float = 2.0 / 3.0) -> torch.Tensor:
    """SEEDS-3 (Gonzalez et al. 2023, arXiv 2305.14267), VP data prediction, as ComfyUI's seeds_3.

    Stages at lambda + r_1 h and lambda + r_2 h, H = (1 + eta) h, E(z) = e^z - 1, P(z) = (e^z - 1 - z)/z:
    ``x_1 = (s_1/s) e^(-r_1 h eta) x - alpha_1 E(-r_1 H) D``;
    ``x_2 = (s_2/s) e^(-r_2 h eta) x - alpha_2 ((E(-r_2 H) - a) D + a D_1)``, a = (r_2/r_1) P(-r_2 H);
    ``x' = (s'/s) e^(-h eta) x - alpha' ((E(-H) - b) D + b D_2)``, b = P(-H)/r_2; each stage adds its share of one
    OU noise path. eta = 0 is a third-order deterministic exponential Runge-Kutta method (DPM-Solver-3 type).
    Three calls per step, one on the step to 0.
    """
    # third order needs r_2 = 2/3 (the default; r_1 is free); other fractions give a second-order method
    r_1, r_2 = _check_fraction("seeds_3", "r_1", r_1), _check_fraction("seeds_3", "r_2", r_2)

    def step(st: _SeedsStep, x: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        s_1, c_1, a_1 = _stage(st.kind, st.s, st.lam, st.h, r_1, st.eta)
        x_1 = st.ou.add(x * c_1 - den * (a_1 * math.expm1(-r_1 * st.big_h)), r_1, st.sigma_from, s_1)
        den_1 = denoise(st.model, x_1, s_1, st.sdt)
        s_2, c_2, a_2 = _stage(st.kind, st.s, st.lam, st.h, r_2, st.eta)
        a32 = r_2 / r_1 * _h_phi2(-r_2 * st.big_h)
        a31 = math.expm1(-r_2 * st.big_h) - a32
        x_2 = st.ou.add(x * c_2 - (den * a31 + den_1 * a32) * a_2, r_2, s_1, s_2)
        den_2 = denoise(st.model, x_2, s_2, st.sdt)
        b3 = _h_phi2(-st.big_h) / r_2
        b1 = math.expm1(-st.big_h) - b3
        x = x * (st.s_next / st.s * math.exp(-st.h * st.eta)) - (den * b1 + den_2 * b3) * alpha(st.kind, st.s_next)
        return st.ou.add(x, 1.0, s_2, st.sigma_to)

    return _seeds_run("seeds_3", model, x, sigmas, noise, callback, eta, s_noise, step)


def nfe_stages(stages: int):
    """Calls of a `stages`-stage single-step method: `stages` per step, one on the step to 0."""
    def count(sig: list[float], kind: str, options: dict) -> int:
        return sum(1 if sig[i + 1] == 0 else stages for i in range(len(sig) - 1))
    return count
