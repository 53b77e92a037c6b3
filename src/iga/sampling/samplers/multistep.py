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

from iga.sampling.base import NoiseSampler, StepCallback
from iga.sampling.samplers._common import (
    option_value,
    alpha,
    ancestral_step,
    capped_for_lambda,
    check_sigmas,
    denoise,
    draw,
    emit,
    half_log_snr,
    model_kind,
    noise_options,
    sigma_dtype,
    to_d,
)
from iga.sampling.samplers.cfgpp import cfgpp_step, predictions

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


def _check_order(name: str, option: str, value: int) -> int:
    return option_value(option, value, name)


def _multistep(name: str, model, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None,
               history: int, weights, *, denoise_at_zero: bool) -> torch.Tensor:
    """The loop every linear multistep sampler here shares: ``x_{i+1} = x_i + sum_j c_j d_{i-j}``.

    d = (x - D)/sigma are the slopes of the last min(i + 1, history) steps, newest first, and
    ``weights(sig, i, k) -> [c_0, ..., c_{k-1}]`` the method's coefficients. With ``denoise_at_zero`` the step to
    sigma = 0 is Euler instead, x + (0 - sigma) d = D (ComfyUI's lms, ipndm, ipndm_v and deis).
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, name)
    sdt, ds = sigma_dtype(sigmas, x), []
    for i in range(len(sig) - 1):
        den = denoise(model, x, sig[i], sdt)
        ds = [*ds, to_d(x, sig[i], den)][-history:]
        if denoise_at_zero and sig[i + 1] == 0:
            x = den
        else:
            x = x + sum(d * c for d, c in zip(reversed(ds), weights(sig, i, len(ds))))
        emit(callback, i, sig[i], sig[i + 1], x, den)
    return x


def _lms_weights(sig: list[float], i: int, k: int) -> list[float]:
    return lagrange_integrals([sig[i - j] for j in range(k)], sig[i], sig[i + 1])


def sample_lms(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
               callback: StepCallback | None = None, order: int = 4) -> torch.Tensor:
    """Linear multistep (variable-step Adams-Bashforth) in sigma, ComfyUI's "lms".

    ``x_{i+1} = x_i + sum_j c_j d_{i-j}`` with ``c_j = int_{sigma_i}^{sigma_{i+1}} l_j(s) ds``, l_j the Lagrange
    basis over the last min(i+1, order) sigmas (integrated exactly here; ComfyUI uses scipy's quad, exact to
    rounding on these polynomials). The step to sigma = 0 is ComfyUI's denoising step x = D (Euler);
    ``lms_exact`` integrates the polynomial down to 0 instead.
    """
    order = _check_order("lms", "order", order)
    return _multistep("lms", model, x, sigmas, callback, order, _lms_weights, denoise_at_zero=True)


def sample_lms_exact(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                     callback: StepCallback | None = None, order: int = 4) -> torch.Tensor:
    """lms with the Adams-Bashforth polynomial integrated on every step, the one to sigma = 0 included.

    k-diffusion's original ``sample_lms`` (A1111) and diffusers' LMSDiscreteScheduler. On the last step the
    extrapolated polynomial replaces ComfyUI's Euler step (x = D): a higher-order step where d = eps is smooth.
    """
    order = _check_order("lms_exact", "order", order)
    return _multistep("lms_exact", model, x, sigmas, callback, order, _lms_weights, denoise_at_zero=False)


# Adams-Bashforth coefficients for equal steps (newest first), orders 1..4.
_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def _equal_step_ab_weights(sig: list[float], i: int, k: int) -> list[float]:
    return [b * (sig[i + 1] - sig[i]) for b in _AB[k]]


def sample_ipndm(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                 callback: StepCallback | None = None, max_order: int = 4) -> torch.Tensor:
    """iPNDM (Zhang & Chen 2022, DEIS, arXiv 2204.13902; after PNDM, Liu et al. 2022): fixed-coefficient AB in sigma.

    ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j b_j d_{i-j}`` with the equal-step Adams-Bashforth weights
    (1), (3/2, -1/2), (23, -16, 5)/12, (55, -59, 37, -9)/24 and an Euler start; the step to sigma = 0 is x = D
    (ComfyUI). On a non-uniform grid the equal-step weights are exact only to second order, so the steady-state
    order is 4 on a uniform sigma grid and 2 on others (Karras, exponential, ...).
    """
    max_order = _check_order("ipndm", "max_order", max_order)
    return _multistep("ipndm", model, x, sigmas, callback, max_order, _equal_step_ab_weights, denoise_at_zero=True)


def sample_ipndm_diffusers(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                           callback: StepCallback | None = None, max_order: int = 4) -> torch.Tensor:
    """ipndm with the Adams-Bashforth step also on the step to sigma = 0 (diffusers' IPNDMScheduler)."""
    max_order = _check_order("ipndm_diffusers", "max_order", max_order)
    return _multistep("ipndm_diffusers", model, x, sigmas, callback, max_order, _equal_step_ab_weights,
                      denoise_at_zero=False)


def ipndm_v_weights(h: list[float]) -> list[float]:
    """zju-pi/diff-sampler's variable-step iPNDM weights b (newest first): ``x_{i+1} = x_i + h_0 sum_k b_k d_{i-k}``.

    ``h = [h_0, ..., h_{p-1}]`` for order p: h_0 = sigma_{i+1} - sigma_i, h_k = sigma_{i-k+1} - sigma_{i-k}. With
    a = h_1/h_2 and c = h_1 (h_1 + h_2) / (h_2 (h_2 + h_3)) the weights are
    ``b = [1 + r/2, -r/2] + w_2 [1, -(1 + a), a] + w_3 [1, -(1 + a + c), a + c (1 + h_2/h_3), -a c]``, r = h_0/h_1.
    The first part is the exact variable-step AB2. ``w_2 [1, -(1 + a), a]`` is w_2 h_1 (h_1 + h_2) d[i, i-1, i-2],
    but with w_2 = (1 - h_0^2 / (3 h_1 (h_1 + h_2))) / 2 where the exact AB3 has h_0 (2 h_0 + 3 h_1) / (6 h_1 (h_1 +
    h_2)); the two agree for equal steps. The third-difference vector needs -c h_2/h_3 as its last entry, not -a c,
    so on grids whose step ratio varies the order-4 weights do not even sum to 1; w_3 is diff-sampler's expression.
    """
    if len(h) == 1:
        return [1.0]
    r = h[0] / h[1]
    b = [1.0 + 0.5 * r, -0.5 * r]
    if len(h) >= 3:
        h0, h1, h2 = h[:3]
        a = h1 / h2
        w2 = 0.5 * (1.0 - h0 * h0 / (3.0 * h1 * (h1 + h2)))
        b = [b[0] + w2, b[1] - w2 * (1.0 + a), w2 * a]
        if len(h) == 4:
            h3 = h[3]
            c = h1 * (h1 + h2) / (h2 * (h2 + h3))
            w3 = ((1.0 - h0 / (3.0 * (h0 + h1))) / 2.0 + (1.0 - h0 / (2.0 * (h0 + h1))) * h0 / (6.0 * (h0 + h1 + h2))) \
                * (h0 * (h0 + h1) * (h0 + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
            b = [b[0] + w3, b[1] - w3 * (1.0 + a + c), b[2] + w3 * (a + c * (1.0 + h2 / h3)), -w3 * a * c]
    return b


def _ipndm_v_step_weights(sig: list[float], i: int, k: int) -> list[float]:
    h = [sig[i + 1] - sig[i]] + [sig[i - m + 1] - sig[i - m] for m in range(1, k)]
    return [b * h[0] for b in ipndm_v_weights(h)]


def sample_ipndm_v(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                   callback: StepCallback | None = None, max_order: int = 4) -> torch.Tensor:
    """iPNDM-v, ComfyUI's variable-step iPNDM (zju-pi/diff-sampler's formula), order <= 4, x = D on the step to 0.

    ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_k b_k d_{i-k}`` with :func:`ipndm_v_weights`: exact
    variable-step AB2, but the 3rd- and 4th-order corrections are not the variable-step Adams-Bashforth ones (on
    equal steps they reduce to AB3, and at order 4 to a 3rd-order formula: weights (57, -65, 43, -11)/24 where AB4
    has (55, -59, 37, -9)/24). The exact variable-step AB is ``lms`` / ``lms_exact``.
    """
    max_order = _check_order("ipndm_v", "max_order", max_order)
    return _multistep("ipndm_v", model, x, sigmas, callback, max_order, _ipndm_v_step_weights, denoise_at_zero=True)


def fitted_vp_sde(sigma_lo: float = 0.002, sigma_hi: float = 80.0, t_lo: float = 1e-3) -> tuple[float, float]:
    """(beta_min, beta_d) of the linear VP-SDE ``log(1 + sigma(t)^2) = beta_d t^2 / 2 + beta_min t`` with
    sigma(t_lo) = sigma_lo and sigma(1) = sigma_hi: the time variable of ComfyUI's DEIS (deis.py ``edm2t``, EDM's
    range whatever the model's; Song et al. 2021 use beta_min = 0.1, beta_d = 19.9 instead)."""
    lo, hi = math.log1p(sigma_lo * sigma_lo), math.log1p(sigma_hi * sigma_hi)
    beta_d = 2.0 * (lo / t_lo - hi) / (t_lo - 1.0)
    return hi - 0.5 * beta_d, beta_d


_BETA_MIN, _BETA_D = fitted_vp_sde()


def vp_time(sigma: float) -> float:
    """t with sigma(t)^2 = exp(beta_d t^2 / 2 + beta_min t) - 1 for :func:`fitted_vp_sde`'s betas."""
    return (math.sqrt(_BETA_MIN ** 2 + 2.0 * _BETA_D * math.log1p(sigma * sigma)) - _BETA_MIN) / _BETA_D


def _geometric_pieces(a: float, b: float) -> list[tuple[float, float]]:
    """[lo, hi] (0 < lo < hi) split into pieces with hi/lo <= 2, so each stays far from sigma = 0 relative to its width
    (t(sigma) has branch points at |sigma| ~ 1e-3 on the imaginary axis; Gauss-Legendre converges fast then)."""
    lo, hi = min(a, b), max(a, b)
    n = max(1, math.ceil(math.log2(hi / lo)))
    edges = [lo * (hi / lo) ** (k / n) for k in range(n)] + [hi]
    return list(zip(edges[:-1], edges[1:]))


def deis_weights(t_nodes: list[float], s: float, s_next: float) -> list[float]:
    """``c_j = int_{t_i}^{t_{i+1}} sigma'(t) l_j(t) dt = int_{s}^{s'} l_j(t(sigma)) dsigma`` (s, s' > 0).

    Integrated in sigma, where l_j(t(sigma)) is smooth (sigma'(t) is not, near sigma = 0), by 24-point
    Gauss-Legendre on :func:`_geometric_pieces`: exact to rounding. ComfyUI sums sigma'(t) l_j(t) over 10000 points
    in t (float32), which is within ~1e-4 of this integral.
    """
    out = [0.0] * len(t_nodes)
    for lo, hi in _geometric_pieces(s, s_next):
        half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
        ts = [vp_time(mid + half * float(u)) for u in _GL_NODES]
        for j, tj in enumerate(t_nodes):
            others = [tk for k, tk in enumerate(t_nodes) if k != j]
            vals = [math.prod((t - tk) / (tj - tk) for tk in others) for t in ts]
            out[j] += half * float(np.dot(_GL_WEIGHTS, vals))
    sign = 1.0 if s_next > s else -1.0
    return [sign * c for c in out]


def sample_deis(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                callback: StepCallback | None = None, max_order: int = 3) -> torch.Tensor:
    """DEIS "tAB" (Zhang & Chen 2022, arXiv 2204.13902), ComfyUI's ``deis`` (deis_mode="tab"), order <= 4.

    Extrapolates d = (x - D)/sigma as a polynomial in the VP-SDE time t(sigma) (:func:`vp_time`) through the last
    min(i+1, max_order) nodes and integrates ``dx = d dsigma`` exactly against it: ``x_{i+1} = x_i + sum_j c_j
    d_{i-j}`` with ``c_j = int sigma'(t) l_j(t) dt``. The first step is Euler and the step to sigma = 0 is x = D.
    """
    max_order = _check_order("deis", "max_order", max_order)
    kind = model_kind(model)
    ts = [vp_time(s) for s in check_sigmas(sigmas, kind, "deis")]

    def weights(sig: list[float], i: int, k: int) -> list[float]:
        if k == 1:
            return [sig[i + 1] - sig[i]]
        return deis_weights([ts[i - j] for j in range(k)], sig[i], sig[i + 1])

    return _multistep("deis", model, x, sigmas, callback, max_order, weights, denoise_at_zero=True)


def _res_multistep(name: str, model, x: torch.Tensor, sigmas: torch.Tensor, noise: NoiseSampler | None,
                   callback: StepCallback | None, *, eta: float, s_noise: float, cfg_pp: bool) -> torch.Tensor:
    """The RES multistep loop shared by res_multistep and its ancestral / CFG++ forms (see those docstrings)."""
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, name)
    eta, s_noise = noise_options(name, eta, s_noise, sig, noise)
    pair = predictions(model, name, cfg_pp)
    ls, sdt = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x)
    old, h_prev = None, None  # previous D (D_u for CFG++) and the lambda length of its deterministic sub-step
    for i in range(len(sig) - 1):
        s = ls[i]
        den, unc = pair(x, s, sdt)
        down, scale, up = ancestral_step(kind, s, ls[i + 1], eta)
        lam = half_log_snr(kind, s)
        if down == 0:
            x = den
        else:
            h = half_log_snr(kind, down) - lam
            phi1 = -math.expm1(-h) / h
            if old is None:
                x = (cfgpp_step(kind, x, den, unc, s, down) if cfg_pp
                     else x * (down / s) + den * (alpha(kind, down) * h * phi1))
            else:
                # the previous D sits one deterministic sub-step back: c2 = (lambda_{i-1} - lambda_down,{i-1}) / h
                phi2 = (phi1 - 1.0) / (-h)
                c2 = -h_prev / h
                b1, b2 = phi1 - phi2 / c2, phi2 / c2
                if cfg_pp:  # ComfyUI's CFG++ form: guidance shifts the carried state, the integral uses D_u
                    x = x + (den - unc) * alpha(kind, s)
                x = x * (down / s) + (unc * b1 + old * b2) * (alpha(kind, down) * h)
            h_prev = h
        if up > 0:
            x = x * scale + draw(noise, sig[i], sig[i + 1], x) * (s_noise * up)
        old = unc
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
    return _res_multistep("res_multistep", model, x, sigmas, noise, callback, eta=0.0, s_noise=1.0, cfg_pp=False)


def sample_res_multistep_ancestral(model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                   noise: NoiseSampler | None = None, callback: StepCallback | None = None,
                                   eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral RES multistep (ComfyUI's res_multistep_ancestral; RES: Zhang et al. 2023, arXiv 2308.02157).

    Each step is the res_multistep step to sigma_down (:func:`ancestral_step`), then fresh noise as in
    euler_ancestral. The previous D enters at c2 = (lambda_{i-1} - lambda(sigma_down,{i-1})) / h, i.e. one
    deterministic sub-step back. eta = 0 is res_multistep.
    """
    return _res_multistep("res_multistep_ancestral", model, x, sigmas, noise, callback, eta=eta, s_noise=s_noise,
                          cfg_pp=False)


def sample_res_multistep_cfg_pp(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                                callback: StepCallback | None = None) -> torch.Tensor:
    """RES multistep CFG++ (ComfyUI's res_multistep_cfg_pp; CFG++: Chung et al. 2024, arXiv 2406.08070).

    First step: the CFG++ Euler step ``x' = alpha' D_cfg + (s'/s)(x - alpha D_u)``. Later steps integrate the line
    through the unconditional estimates from the guided-shifted state:
    ``x' = (s'/s)(x + alpha (D_cfg - D_u)) + alpha' h (b1 D_u,i + b2 D_u,i-1)``. Guidance scale 1 is res_multistep.
    """
    return _res_multistep("res_multistep_cfg_pp", model, x, sigmas, noise, callback, eta=0.0, s_noise=1.0,
                          cfg_pp=True)


def sample_res_multistep_ancestral_cfg_pp(model, x: torch.Tensor, sigmas: torch.Tensor, *,
                                          noise: NoiseSampler | None = None, callback: StepCallback | None = None,
                                          eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral RES multistep CFG++: res_multistep_cfg_pp's step to sigma_down, then fresh noise (eta, s_noise)."""
    return _res_multistep("res_multistep_ancestral_cfg_pp", model, x, sigmas, noise, callback, eta=eta,
                          s_noise=s_noise, cfg_pp=True)


def nfe_deis(sig: list[float], kind: str, options: dict) -> int:
    """One call per step."""
    return len(sig) - 1
