"""Linear multistep samplers: LMS, iPNDM, iPNDM-v, DEIS (tAB) and RES multistep.

All reuse the model outputs of earlier steps, so each step costs one model call. They start with lower-order
steps (the first step is Euler, whose local error is O(h^2)), so however high the order of the steady-state
formula, the *global* error of a whole run is O(h^2): a start-up step's error is not damped by later steps.
The steady-state formula order (``max_order`` in the registry) shows when the start-up region contributes
little, e.g. at large sigma where the trajectory is nearly straight.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from iga.sampling.base import NoiseSampler, SamplingError, StepCallback
from iga.sampling.samplers._common import (
    alpha,
    capped_for_lambda,
    check_sigmas,
    denoise,
    emit,
    half_log_snr,
    model_kind,
    sigma_dtype,
    to_d,
)

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


def lagrange_integrals(nodes: list[float], a: float, b: float) -> list[float]:
    """``[int_a^b l_j(t) dt]`` for the Lagrange basis polynomials l_j over ``nodes`` (exact, float64).

    The variable is rescaled to u = (t - a) / (b - a) first, so large or tiny sigmas keep the system well scaled.
    """
    span = b - a
    u = [(t - a) / span for t in nodes]
    out = []
    for j, uj in enumerate(u):
        others = [uk for k, uk in enumerate(u) if k != j]
        poly = np.polynomial.Polynomial.fromroots(others) if others else np.polynomial.Polynomial([1.0])
        denom = math.prod(uj - uk for uk in others)
        anti = poly.integ()
        out.append(float((anti(1.0) - anti(0.0)) / denom * span))
    return out


def _check_order(name: str, order: int, top: int) -> int:
    if isinstance(order, bool) or int(order) != order or not 1 <= int(order) <= top:
        raise SamplingError(f"{name}: option order must be an integer from 1 to {top}, got {order!r}")
    return int(order)


def sample_lms(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
               callback: StepCallback | None = None, order: int = 4) -> torch.Tensor:
    """Linear multistep (variable-step Adams-Bashforth) in sigma, k-diffusion's "LMS".

    ``x_{i+1} = x_i + sum_j c_j d_{i-j}`` with ``c_j = int_{sigma_i}^{sigma_{i+1}} l_j(s) ds``, l_j the Lagrange
    basis over the last min(i+1, order) sigmas (integrated exactly here; k-diffusion uses numerical quadrature).
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "lms")
    order = _check_order("lms", order, 6)
    sdt, ds = sigma_dtype(sigmas, x), []
    for i in range(len(sig) - 1):
        den = denoise(model, x, sig[i], sdt)
        ds.append(to_d(x, sig[i], den))
        ds = ds[-order:]
        k = len(ds)
        coeffs = lagrange_integrals([sig[i - j] for j in range(k)], sig[i], sig[i + 1])
        x = x + sum(ds[-1 - j] * c for j, c in enumerate(coeffs))
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


# Adams-Bashforth coefficients for equal steps (newest first), orders 1..4.
_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def sample_ipndm(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                 callback: StepCallback | None = None, max_order: int = 4) -> torch.Tensor:
    """iPNDM (Zhang & Chen 2022, DEIS, arXiv 2204.13902; after PNDM, Liu et al. 2022): fixed-coefficient AB in sigma.

    ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j b_j d_{i-j}`` with the equal-step Adams-Bashforth weights
    (1), (3/2, -1/2), (23, -16, 5)/12, (55, -59, 37, -9)/24 and an Euler start. On a non-uniform grid the equal-step
    weights are exact only to second order, so the steady-state order is 4 on a uniform sigma grid and 2 on
    others (Karras, exponential, ...).
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "ipndm")
    max_order = _check_order("ipndm", max_order, 4)
    sdt, ds = sigma_dtype(sigmas, x), []
    for i in range(len(sig) - 1):
        den = denoise(model, x, sig[i], sdt)
        ds.append(to_d(x, sig[i], den))
        ds = ds[-max_order:]
        b = _AB[len(ds)]
        x = x + sum(ds[-1 - j] * c for j, c in enumerate(b)) * (sig[i + 1] - sig[i])
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def newton_ab_weights(nodes: list[float], a: float, b: float) -> list[float]:
    """Weights ``w_k = int_a^b prod_{m<k} (t - nodes[m]) dt`` of the Newton form (nodes newest first)."""
    span = b - a
    u = [(t - a) / span for t in nodes]
    out, poly = [], np.polynomial.Polynomial([1.0])
    for k in range(len(nodes)):
        anti = poly.integ()
        out.append(float(anti(1.0) - anti(0.0)) * span ** (k + 1))
        poly = poly * np.polynomial.Polynomial([-u[k], 1.0])
    return out


def sample_ipndm_v(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                   callback: StepCallback | None = None, max_order: int = 4) -> torch.Tensor:
    """iPNDM-v (variable-step iPNDM, zju-pi/diff-sampler): Adams-Bashforth with step-size-aware weights, order <= 4.

    Written in Newton form: ``x_{i+1} = x_i + sum_k w_k d[i, ..., i-k]`` with divided differences of d in sigma
    and ``w_k = int_{sigma_i}^{sigma_{i+1}} prod_{m<k} (s - sigma_{i-m}) ds``. This is the same polynomial as
    lms(order=4) integrates in Lagrange form (a cross-check in the tests).
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "ipndm_v")
    max_order = _check_order("ipndm_v", max_order, 4)
    sdt, ds = sigma_dtype(sigmas, x), []
    for i in range(len(sig) - 1):
        den = denoise(model, x, sig[i], sdt)
        ds.append(to_d(x, sig[i], den))
        ds = ds[-max_order:]
        k = len(ds)
        nodes = [sig[i - j] for j in range(k)]  # newest first
        # divided differences, newest first: table[m] = d[i, ..., i-m]
        col = [ds[-1 - j] for j in range(k)]
        table = [col[0]]
        for m in range(1, k):
            col = [(col[j] - col[j + 1]) / (nodes[j] - nodes[j + m]) for j in range(len(col) - 1)]
            table.append(col[0])
        w = newton_ab_weights(nodes, sig[i], sig[i + 1])
        x = x + sum(t * wk for t, wk in zip(table, w))
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


# DEIS maps sigma to the time of the linear VP-SDE (beta_min = 0.1, beta_d = 19.9; Song et al. 2021).
_BETA_MIN, _BETA_D = 0.1, 19.9


def vp_time(sigma: float) -> float:
    """t with sigma(t)^2 = exp(beta_d t^2 / 2 + beta_min t) - 1."""
    return (-_BETA_MIN + math.sqrt(_BETA_MIN ** 2 + 2.0 * _BETA_D * math.log1p(sigma * sigma))) / _BETA_D


def deis_weights(t_nodes: list[float], s: float, s_next: float) -> list[float]:
    """``c_j = int_{t_i}^{t_{i+1}} sigma'(t) l_j(t) dt = int_{s}^{s'} l_j(t(sigma)) dsigma`` by 24-point Gauss-Legendre.

    Integrating in sigma avoids the 1/sqrt(t) singularity of sigma'(t) at t = 0; l_j(t(sigma)) is smooth.
    """
    half, mid = 0.5 * (s_next - s), 0.5 * (s_next + s)
    ts = [vp_time(mid + half * float(u)) for u in _GL_NODES]
    out = []
    for j, tj in enumerate(t_nodes):
        others = [tk for k, tk in enumerate(t_nodes) if k != j]
        vals = [math.prod((t - tk) / (tj - tk) for tk in others) for t in ts]
        out.append(half * float(np.dot(_GL_WEIGHTS, vals)))
    return out


def sample_deis(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                callback: StepCallback | None = None, max_order: int = 3) -> torch.Tensor:
    """DEIS "tAB" (Zhang & Chen 2022, arXiv 2204.13902; ComfyUI's deis_mode="tab"), order <= 3.

    Extrapolates d = (x - D)/sigma as a polynomial in the VP-SDE time t(sigma) through the last min(i+1, max_order)
    nodes and integrates ``dx = d dsigma`` exactly against it: ``x_{i+1} = x_i + sum_j c_j d_{i-j}`` with
    ``c_j = int sigma'(t) l_j(t) dt``. The first step and the step to sigma = 0 are Euler.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "deis")
    max_order = _check_order("deis", max_order, 3)
    sdt, ds = sigma_dtype(sigmas, x), []
    ts = [vp_time(s) for s in sig]
    for i in range(len(sig) - 1):
        den = denoise(model, x, sig[i], sdt)
        ds.append(to_d(x, sig[i], den))
        ds = ds[-max_order:]
        k = 1 if sig[i + 1] == 0 else len(ds)
        if k == 1:
            x = x + ds[-1] * (sig[i + 1] - sig[i])
        else:
            coeffs = deis_weights([ts[i - j] for j in range(k)], sig[i], sig[i + 1])
            x = x + sum(ds[-1 - j] * c for j, c in enumerate(coeffs))
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def sample_res_multistep(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                         callback: StepCallback | None = None) -> torch.Tensor:
    """RES second-order multistep (Zhang et al. 2023, "Improved order analysis...", arXiv 2308.02157).

    An exponential integrator in lambda with phi functions phi1(z) = (e^z - 1)/z, phi2(z) = (phi1(z) - 1)/z and
    the previous node at relative position c2 = (lambda_{i-1} - lambda_i)/h < 0:
    ``x' = (s'/s) x + alpha' h (b1 D_i + b2 D_{i-1})``, b1 = phi1(-h) - phi2(-h)/c2, b2 = phi2(-h)/c2, i.e. the exact
    integral of the line through the last two D's. First step and step to 0 are first order.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "res_multistep")
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
            phi1 = -math.expm1(-h) / h
            if old is None:
                x = x * (s_next / s) + den * (alpha(kind, s_next) * h * phi1)
            else:
                phi2 = (phi1 - 1.0) / (-h)
                c2 = (lam_prev - lam) / h
                b1, b2 = phi1 - phi2 / c2, phi2 / c2
                x = x * (s_next / s) + (den * b1 + old * b2) * (alpha(kind, s_next) * h)
        old, lam_prev = den, lam
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def nfe_deis(sig: list[float], kind: str, options: dict) -> int:
    """One call per step."""
    return len(sig) - 1
