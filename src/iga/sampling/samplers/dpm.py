"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927): single-step solvers on the noise prediction, fast and adaptive.

With eps = (x - alpha D) / sigma and h = lambda_t - lambda_s (lambda = log(alpha/sigma)), the paper's steps are

* DPM-Solver-1: ``x_t = (a_t/a_s) x - sigma_t (e^h - 1) eps_s``   (= DDIM)
* DPM-Solver-2 (r1): ``u = (a_1/a_s) x - sigma_1 (e^(r1 h) - 1) eps_s`` at lambda_s + r1 h; then
  ``x_t = (a_t/a_s) x - sigma_t (e^h - 1) eps_s - sigma_t/(2 r1) (e^h - 1) (eps(u) - eps_s)``
* DPM-Solver-3 (r1 = 1/3, r2 = 2/3): ``u2 = (a_2/a_s) x - sigma_2 (e^(r2 h) - 1) eps_s
  - sigma_2 (r2/r1) ((e^(r2 h) - 1)/(r2 h) - 1) (eps(u1) - eps_s)``;
  ``x_t = (a_t/a_s) x - sigma_t (e^h - 1) eps_s - (sigma_t/r2) ((e^h - 1)/h - 1) (eps(u2) - eps_s)``

As in k-diffusion and ComfyUI these samplers use only the first and the last nonzero sigma of the list (the
schedule's shape is ignored) and return x at that last nonzero sigma, without a final denoising call.
"""

from __future__ import annotations

import math

import torch

from iga.sampling.base import NoiseSampler, SamplingError, StepCallback
from iga.sampling.samplers._common import (
    FLOW_SIGMA_CAP,
    alpha,
    option_value,
    check_sigmas,
    denoise,
    draw,
    emit,
    half_log_snr,
    model_kind,
    posterior_step,
    require_noise,
    sigma_dtype,
    sigma_of_lambda,
)


class _DPMSolver:
    """The DPM-Solver steps above over one denoiser, counting its own calls."""

    def __init__(self, model, kind: str, sdt: torch.dtype):
        self.model, self.kind, self.sdt, self.calls = model, kind, sdt, 0

    def sigma(self, lam: float) -> float:
        return sigma_of_lambda(self.kind, lam)

    def eps(self, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.sigma(lam)
        den = denoise(self.model, x, s, self.sdt)
        self.calls += 1
        return (x - den * alpha(self.kind, s)) / s, den

    def _ratio(self, s_from: float, s_to: float) -> float:
        return alpha(self.kind, s_to) / alpha(self.kind, s_from)

    def step1(self, x: torch.Tensor, ls: float, lt: float, e0: torch.Tensor) -> torch.Tensor:
        s, t = self.sigma(ls), self.sigma(lt)
        return x * self._ratio(s, t) - e0 * (t * math.expm1(lt - ls))

    def _u1(self, x, ls, l1, e0, cache):
        if l1 not in cache:
            s, s1 = self.sigma(ls), self.sigma(l1)
            u1 = x * self._ratio(s, s1) - e0 * (s1 * math.expm1(l1 - ls))
            cache[l1] = self.eps(u1, l1)[0]
        return cache[l1]

    def step2(self, x: torch.Tensor, ls: float, lt: float, e0: torch.Tensor, cache: dict,
              r1: float = 0.5) -> torch.Tensor:
        h = lt - ls
        e1 = self._u1(x, ls, ls + r1 * h, e0, cache)
        s, t = self.sigma(ls), self.sigma(lt)
        em = math.expm1(h)
        return x * self._ratio(s, t) - e0 * (t * em) - (e1 - e0) * (t / (2.0 * r1) * em)

    def step3(self, x: torch.Tensor, ls: float, lt: float, e0: torch.Tensor, cache: dict) -> torch.Tensor:
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        h = lt - ls
        e1 = self._u1(x, ls, ls + r1 * h, e0, cache)
        l2 = ls + r2 * h
        s, s2, t = self.sigma(ls), self.sigma(l2), self.sigma(lt)
        em2 = math.expm1(r2 * h)
        u2 = x * self._ratio(s, s2) - e0 * (s2 * em2) - (e1 - e0) * (s2 * (r2 / r1) * (em2 / (r2 * h) - 1.0))
        e2 = self.eps(u2, l2)[0]
        em = math.expm1(h)
        return x * self._ratio(s, t) - e0 * (t * em) - (e2 - e0) * (t / r2 * (em / h - 1.0))


def _endpoints(sig: list[float], kind: str, name: str) -> tuple[float, float]:
    s_max = min(sig[0], FLOW_SIGMA_CAP) if kind == "flow" else sig[0]
    s_min = sig[-1] if sig[-1] > 0 else sig[-2]
    if not s_min < s_max:
        raise SamplingError(
            f"{name} integrates from the first to the last nonzero sigma, which coincide here "
            f"({s_max:.6g}); use at least 2 steps when the list ends at 0"
        )
    return s_max, s_min


def _renoise_plan(kind: str, s: float, s_next: float, eta: float, lam_end: float) -> tuple[float, float, float]:
    """(lambda_down, scale, up): the eta > 0 step goes to sigma_down (no further than the end), then renoises."""
    if eta == 0:
        return half_log_snr(kind, s_next), 1.0, 0.0
    down = posterior_step(kind, s, s_next, eta)[0]
    lam_down = min(lam_end, half_log_snr(kind, down)) if down > 0 else lam_end
    down = sigma_of_lambda(kind, lam_down)
    scale = alpha(kind, s_next) / alpha(kind, down)
    up = math.sqrt(max(s_next * s_next - (down * scale) ** 2, 0.0))
    return lam_down, scale, up


def sample_dpm_fast(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                    callback: StepCallback | None = None, eta: float = 0.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-fast (Lu et al. 2022, Sec. 3.4): a fixed budget of n = len(sigmas) - 1 model calls.

    K = n // 3 + 1 steps uniform in lambda between the first and the last nonzero sigma, with orders
    [3, ..., 3, 2, 1] (n % 3 == 0) or [3, ..., 3, n % 3]. When a first- (second-) order step comes last it limits
    the global order to 2 (3): the order is 3 only for n % 3 == 2.
    """
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpm_fast")
    eta = option_value("eta", eta, "dpm_fast")
    s_noise = option_value("s_noise", s_noise, "dpm_fast")
    s_max, s_min = _endpoints(sig, kind, "dpm_fast")
    if eta > 0:
        require_noise(noise, "dpm_fast", "eta > 0 injects noise")
    n = len(sig) - 1
    solver = _DPMSolver(model, kind, sigma_dtype(sigmas, x))
    m = n // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    l0, l1 = half_log_snr(kind, s_max), half_log_snr(kind, s_min)
    lams = [l0 + (l1 - l0) * k / len(orders) for k in range(len(orders))] + [l1]
    for i, order in enumerate(orders):
        lam, lam_next = lams[i], lams[i + 1]
        s, s_next = solver.sigma(lam), solver.sigma(lam_next)
        lam_down, scale, up = _renoise_plan(kind, s, s_next, eta, l1)
        e0, den = solver.eps(x, lam)
        cache: dict = {}
        if order == 1:
            x = solver.step1(x, lam, lam_down, e0)
        elif order == 2:
            x = solver.step2(x, lam, lam_down, e0, cache)
        else:
            x = solver.step3(x, lam, lam_down, e0, cache)
        if up > 0:
            x = x * scale + draw(noise, s, s_next, x) * (up * s_noise)
        emit(callback, i, s, s_next, x, den)
    return x


class PIDStepController:
    """PID step-size control with an arctan limiter (Soderlind 2003, "Digital filters in adaptive time-stepping").

    factor = prod_k (1/err_k)^beta_k with beta = ((p+i+d), -(p+2d), d) / order; limited by 1 + atan(factor - 1);
    a step is accepted when the factor is >= accept_safety; h is multiplied by the factor either way.
    """

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float,
                 accept_safety: float, eps: float = 1e-8):
        self.h = h
        self.b = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2.0 * dcoeff) / order, dcoeff / order)
        self.accept_safety, self.eps = accept_safety, eps
        self.inv_errs: list[float] = []

    def propose(self, error: float) -> bool:
        """Update h from this attempt's scaled error; return whether the attempt is accepted."""
        inv = 1.0 / (float(error) + self.eps)
        if not self.inv_errs:
            self.inv_errs = [inv, inv, inv]
        self.inv_errs[0] = inv
        e = self.inv_errs
        factor = e[0] ** self.b[0] * e[1] ** self.b[1] * e[2] ** self.b[2]
        factor = 1.0 + math.atan(factor - 1.0)
        accept = factor >= self.accept_safety
        if accept:
            self.inv_errs = [e[0], e[0], e[1]]
        self.h *= factor
        return accept


def sample_dpm_adaptive(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                        callback: StepCallback | None = None, order: int = 3, rtol: float = 0.05,
                        atol: float = 0.0078, h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0,
                        dcoeff: float = 0.0, accept_safety: float = 0.81, eta: float = 0.0, s_noise: float = 1.0,
                        max_nfe: int = 10000) -> torch.Tensor:
    """DPM-Solver-12/23 with adaptive steps in lambda (Lu et al. 2022, Sec. 3.4 / App. C), PID-controlled.

    Each attempt from lambda_s with step h computes a low- and a high-order solution sharing model calls
    (order 3: DPM-Solver-2 with r1 = 1/3 and DPM-Solver-3, 3 calls; order 2: DPM-Solver-1 and -2, 2 calls), the error
    ``||(x_low - x_high) / max(atol, rtol max(|x_low|, |x_prev|))|| / sqrt(numel)``, and lets the PID controller
    accept or shrink. The call at lambda_s is reused after a rejection. The NFE is not known in advance
    (at most ``max_nfe``).
    """
    order = option_value("order", order, "dpm_adaptive")
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, "dpm_adaptive")
    eta = option_value("eta", eta, "dpm_adaptive")
    s_noise = option_value("s_noise", s_noise, "dpm_adaptive")
    rtol, atol, h_init, accept_safety = (option_value(nm, v, "dpm_adaptive") for nm, v in (
        ("rtol", rtol), ("atol", atol), ("h_init", h_init), ("accept_safety", accept_safety)))
    s_max, s_min = _endpoints(sig, kind, "dpm_adaptive")
    if eta > 0:
        require_noise(noise, "dpm_adaptive", "eta > 0 injects noise")
    solver = _DPMSolver(model, kind, sigma_dtype(sigmas, x))
    lam, lam_end = half_log_snr(kind, s_max), half_log_snr(kind, s_min)
    pid = PIDStepController(abs(float(h_init)), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    atol_t = float(atol)
    x_prev, e0, den, i = x, None, None, 0
    while lam < lam_end - 1e-5:
        if solver.calls > max_nfe:
            raise SamplingError(
                f"dpm_adaptive used more than max_nfe={max_nfe} model calls before reaching sigma={s_min:.6g}; "
                "loosen rtol/atol or raise max_nfe"
            )
        lam_t = min(lam_end, lam + pid.h)
        s, s_t = solver.sigma(lam), solver.sigma(lam_t)
        lam_down, scale, up = _renoise_plan(kind, s, s_t, eta, lam_end)
        if e0 is None:
            e0, den = solver.eps(x, lam)
        cache: dict = {}
        if order == 2:
            x_low = solver.step1(x, lam, lam_down, e0)
            x_high = solver.step2(x, lam, lam_down, e0, cache)
        else:
            x_low = solver.step2(x, lam, lam_down, e0, cache, r1=1.0 / 3.0)
            x_high = solver.step3(x, lam, lam_down, e0, cache)
        delta = torch.clamp(torch.maximum(x_low.abs(), x_prev.abs()) * float(rtol), min=atol_t)
        error = float(torch.linalg.vector_norm(((x_low - x_high) / delta).double())) / math.sqrt(x.numel())
        if pid.propose(error):
            x_prev = x_low
            x = x_high
            if up > 0:
                x = x * scale + draw(noise, s, s_t, x) * (up * s_noise)
            emit(callback, i, s, s_t, x, den)
            lam, e0, i = lam_t, None, i + 1
        if pid.h <= 1e-12:
            raise SamplingError("dpm_adaptive: the step size collapsed to 0 (the error never met the tolerance)")
    return x


def nfe_dpm_fast(sig: list[float], kind: str, options: dict) -> int:
    """dpm_fast spends exactly len(sigmas) - 1 model calls (raises, as the sampler does, on a list it cannot run)."""
    _endpoints(sig, kind, "dpm_fast")
    return len(sig) - 1


def nfe_adaptive(sig: list[float], kind: str, options: dict) -> None:
    """dpm_adaptive's call count depends on the error control; it is not known in advance (the list is checked
    as the sampler checks it)."""
    _endpoints(sig, kind, "dpm_adaptive")
    return None
