"""SA-Solver: Stochastic Adams predictor-corrector (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast
Sampling of Diffusion Models", arXiv 2309.05019, NeurIPS 2023), data prediction, as ComfyUI's sa_solver(_pece).

The SDE family with stochasticity tau is integrated exactly in its linear part; over [lambda_s, lambda_t] (h =
lambda_t - lambda_s, a = 1 + tau^2)::

    x_t = (sigma_t / sigma_s) e^(-tau^2 h) x_s + alpha_t sum_j b_j D_j + sigma_t sqrt(1 - e^(-2 tau^2 h)) z,
    b_j = a int_{lambda_s}^{lambda_t} e^(a (u - lambda_t)) l_j(u) du

with l_j the Lagrange basis through the history nodes (the Adams idea, with an exponential weight). The
predictor extrapolates through the last ``predictor_order`` D's; the corrector redoes the step just taken with
the new D included (``corrector_order`` nodes), reusing the predictor's noise. tau = eta inside a sigma window
(ComfyUI: 20 % to 80 % of the model's training timesteps) and 0 (ODE) outside. Works in the VE coordinates of
VP and flow models alike (lambda = half-log-SNR).
"""

from __future__ import annotations

import functools
import math

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
    require_noise,
    sigma_dtype,
)

_SERIES_TERMS = 40
_INV_FACT = [1.0 / math.factorial(n) for n in range(_SERIES_TERMS + 8)]


def phi_functions(w: float, kmax: int) -> list[float]:
    """[phi_1(w), ..., phi_kmax(w)] with phi_k(w) = sum_m w^m / (m + k)! = int_0^1 e^((1-v) w) v^(k-1)/(k-1)! dv."""
    if abs(w) <= 2.0:
        # the Taylor series has no cancellation here, where the recursion below would divide by small w
        powers = [w ** m for m in range(_SERIES_TERMS)]
        return [math.fsum(p * _INV_FACT[m + k] for m, p in enumerate(powers)) for k in range(1, kmax + 1)]
    out, prev = [], math.expm1(w) / w
    for k in range(1, kmax + 1):
        out.append(prev)
        prev = (prev - _INV_FACT[k]) / w
    return out


def adams_weights(nodes: list[float], lam_s: float, lam_t: float, tau: float) -> list[float]:
    """``b_j = a int_{lam_s}^{lam_t} e^(a (u - lam_t)) l_j(u) du`` (a = 1 + tau^2), l_j the Lagrange basis on nodes.

    Exact: in v = (u - lam_s) / h the integral is ``a h sum_p c_jp p! phi_{p+1}(-a h)`` where l_j(v) = sum_p c_jp v^p.
    """
    a, h = 1.0 + tau * tau, lam_t - lam_s
    v = [(n - lam_s) / h for n in nodes]
    phis = phi_functions(-a * h, len(nodes))
    moments = [math.factorial(p) * phis[p] for p in range(len(nodes))]  # int_0^1 e^(-a h (1 - v)) v^p dv
    out = []
    for j, vj in enumerate(v):
        others = [vk for k, vk in enumerate(v) if k != j]
        coef = np.poly(others)[::-1] if others else np.array([1.0])  # ascending powers of prod (v - v_k)
        denom = math.prod(vj - vk for vk in others)
        out.append(a * h * float(np.dot(coef, moments[:len(coef)])) / denom)
    return out


def simple_order2_weights(nodes: list[float], lam_s: float, lam_t: float, tau: float,
                          corrector: bool) -> list[float]:
    """The paper's simplified two-node weights (SA-Solver, Appendix D), [older, newer] as ComfyUI's simple_order_2."""
    a, h = 1.0 + tau * tau, lam_t - lam_s
    total = -math.expm1(-a * h)
    older = total - 0.5 * a * h if corrector else 0.5 * a * h * h / (nodes[0] - lam_s)
    return [older, total - older]


@functools.lru_cache(maxsize=1)
def _sd_schedule():
    from iga.sampling.parameterization import sd_schedule
    return sd_schedule()


def percent_to_sigma(model, kind: str, percent: float) -> float:
    """The sigma at a fraction of the model's training timesteps, counted from the noisy end (ComfyUI's
    ``model_sampling.percent_to_sigma``): VP sigma(t = (1 - p)(N - 1)), flow shift(1 - p).

    The schedule comes from ``model.param.schedule`` (iga's model denoisers); a bare denoiser is taken as SD's
    training schedule (VP) or an unshifted flow.
    """
    if percent <= 0:
        return math.inf
    if percent >= 1:
        return 0.0
    sched = getattr(getattr(model, "param", None), "schedule", None)
    if kind == "flow":
        shift = getattr(sched, "time_to_sigma", None)
        return float(shift(1.0 - percent)) if callable(shift) else 1.0 - percent
    if not hasattr(sched, "t_to_sigma") or not hasattr(sched, "num_train_timesteps"):
        sched = _sd_schedule()
    return float(sched.t_to_sigma((1.0 - percent) * (sched.num_train_timesteps - 1)))


def _check_order(name: str, option: str, value) -> int:
    return option_value(option, value, name)


def _weights(nodes: list[float], lam_s: float, lam_t: float, tau: float, simple: bool, corrector: bool):
    if simple and len(nodes) == 2:
        return simple_order2_weights(nodes, lam_s, lam_t, tau, corrector)
    return adams_weights(nodes, lam_s, lam_t, tau)


def _combine(hist: list[torch.Tensor], weights: list[float], scale: float) -> torch.Tensor:
    """scale * sum_j weights[j] D_j over the newest len(weights) D's (oldest first)."""
    used = hist[len(hist) - len(weights):]
    return sum(d * (w * scale) for d, w in zip(used, weights))


def _sa_solver(name: str, model, x: torch.Tensor, sigmas: torch.Tensor, noise: NoiseSampler | None,
               callback: StepCallback | None, opts: dict, pece: bool) -> torch.Tensor:
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, name)
    eta, s_noise = option_value("eta", opts["eta"], name), option_value("s_noise", opts["s_noise"], name)
    p_order = _check_order(name, "predictor_order", opts["predictor_order"])
    c_order = _check_order(name, "corrector_order", opts["corrector_order"])
    hi = percent_to_sigma(model, kind, float(opts["sde_start_percent"]))
    lo = percent_to_sigma(model, kind, float(opts["sde_end_percent"]))
    tau_of = lambda s: eta if lo <= s <= hi else 0.0  # noqa: E731
    if s_noise > 0 and any(tau_of(s) > 0 for s in sig[1:] if s > 0):
        require_noise(noise, name, "its stochasticity tau = eta > 0 inside the SDE window adds noise")
    ls, sdt, simple = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x), bool(opts["simple_order_2"])
    lams = [half_log_snr(kind, s) for s in ls]
    n, to_end = len(sig), sig[-1] == 0  # ending at 0, the last steps lower their orders (stability)
    hist: list[torch.Tensor] = []
    x_pred, tau, h, z_prev = x, 0.0, 0.0, None
    for i in range(n - 1):
        den = denoise(model, x_pred, ls[i], sdt)
        hist = (hist + [den])[-max(p_order, c_order):]
        p_used = min(p_order, len(hist))
        c_used = 0 if i == 0 or (ls[i + 1] == 0 and not pece) else min(c_order, len(hist))
        if to_end:
            p_used, c_used = min(p_used, n - 2 - i), min(c_used, n - 1 - i)
        if c_used == 0:
            x = x_pred
        else:  # redo the step from x_{i-1}, now that D at its end is known
            b = _weights(lams[i - c_used + 1:i + 1], lams[i - 1], lams[i], tau, simple, corrector=True)
            x = x * (ls[i] / ls[i - 1] * math.exp(-tau * tau * h)) + _combine(hist, b, alpha(kind, ls[i]))
            if z_prev is not None:
                x = x + z_prev  # the predictor's noise: it belongs to the step, not to the prediction
            if pece:
                den = hist[-1] = denoise(model, x, ls[i], sdt)
        if ls[i + 1] == 0:
            x_pred = den
        else:
            tau, h = tau_of(ls[i + 1]), lams[i + 1] - lams[i]
            b = _weights(lams[i - p_used + 1:i + 1], lams[i], lams[i + 1], tau, simple, corrector=False)
            x_pred = x * (ls[i + 1] / ls[i] * math.exp(-tau * tau * h)) + _combine(hist, b, alpha(kind, ls[i + 1]))
            z_prev = None
            if tau > 0 and s_noise > 0:
                std = ls[i + 1] * math.sqrt(-math.expm1(-2.0 * tau * tau * h)) * s_noise
                z_prev = draw(noise, sig[i], sig[i + 1], x) * std
                x_pred = x_pred + z_prev
        emit(callback, i, sig[i], sig[i + 1], x_pred, den)
    return x_pred


def sample_sa_solver(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                     callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                     predictor_order: int = 3, corrector_order: int = 4, sde_start_percent: float = 0.2,
                     sde_end_percent: float = 0.8, simple_order_2: bool = False) -> torch.Tensor:
    """SA-Solver (Xue et al. 2023, arXiv 2309.05019) as ComfyUI's sa_solver: stochastic Adams predictor (order
    <= predictor_order) + corrector (order <= corrector_order), one call per step.

    Step i evaluates D_i at the predicted state, corrects the previous step with it (x_i = C(x_{i-1}; D_{i-c+1..i})
    + the predictor's noise), then predicts x_{i+1} = P(x_i; D_{i-p+1..i}) + fresh noise (formulas in the module
    docstring). tau = eta for sigma in [percent_to_sigma(sde_end_percent), percent_to_sigma(sde_start_percent)],
    else 0; eta = 0 is the ODE solver. The first step has no corrector; ending at 0, the last steps lower their
    orders and the step to 0 returns D. A list not ending at 0 returns the prediction at its last sigma (ComfyUI
    returns the corrected state one sigma earlier there).
    """
    opts = dict(eta=eta, s_noise=s_noise, predictor_order=predictor_order, corrector_order=corrector_order,
                sde_start_percent=sde_start_percent, sde_end_percent=sde_end_percent, simple_order_2=simple_order_2)
    return _sa_solver("sa_solver", model, x, sigmas, noise, callback, opts, pece=False)


def sample_sa_solver_pece(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                          callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                          predictor_order: int = 3, corrector_order: int = 4, sde_start_percent: float = 0.2,
                          sde_end_percent: float = 0.8, simple_order_2: bool = False) -> torch.Tensor:
    """SA-Solver in PECE mode (predict-evaluate-correct-evaluate; Xue et al. 2023, arXiv 2309.05019): sa_solver
    with D re-evaluated at every corrected state, which then replaces the predicted-state D in the history.
    Two calls per step (one on the first step, which has no corrector).
    """
    opts = dict(eta=eta, s_noise=s_noise, predictor_order=predictor_order, corrector_order=corrector_order,
                sde_start_percent=sde_start_percent, sde_end_percent=sde_end_percent, simple_order_2=simple_order_2)
    return _sa_solver("sa_solver_pece", model, x, sigmas, noise, callback, opts, pece=True)


def nfe_sa_solver(sig: list[float], kind: str, options: dict) -> int:
    """sa_solver: one call per step."""
    return len(sig) - 1


def nfe_sa_solver_pece(sig: list[float], kind: str, options: dict) -> int:
    """sa_solver_pece: one call on the first step, two on every later one (one each when corrector_order = 0)."""
    steps = len(sig) - 1
    return steps if int(options.get("corrector_order", 4)) == 0 else 2 * steps - 1
