"""UniPC (Zhao et al. 2023, arXiv 2302.04867): unified predictor-corrector, data prediction, variants bh1 / bh2.

One step from lambda_s to lambda_t (h = lambda_t - lambda_s) with p - 1 earlier model outputs m_k at relative
positions r_k = (lambda_k - lambda_s)/h < 0 and ``D1_k = (m_k - m_s) / r_k``::

    x_base = (sigma_t/sigma_s) x + alpha_t (1 - e^-h) m_s                      (DDIM)
    UniP-p:  x_t = x_base - alpha_t B(h) sum_k rho_k D1_k,   sum_k rho_k r_k^(n-1) = b_n  (n = 1..p-1)
    UniC-p:  x_t^c = x_base - alpha_t B(h) (sum_k rho^c_k D1_k + rho^c_p (m_t - m_s)),  the same with r_p = 1 (n = 1..p)

where m_t = D(x_t, sigma_t) is the model call the next step needs anyway (so the corrector is free),
``b_n = n! psi_n / B(h)``, ``psi_1 = (e^-h - 1)/(-h) - 1``, ``psi_{n+1} = psi_n/(-h) - 1/(n+1)!``, and
B(h) = -h (bh1) or e^-h - 1 (bh2). With one unknown the paper's simplified rho = 1/2 is used. UniP-p is order p
and UniC raises it to p + 1; the last step (no model call after it) has no corrector.

Two forms differ only in how a list ending in sigma = 0 ends (lambda = inf there, where only the first-order step has
a limit):

* ``uni_pc`` / ``uni_pc_bh2`` -- ComfyUI's (``comfy/extra_samplers/uni_pc.py``, the original implementation, as in
  A1111): the final 0 is replaced by sigma = 1e-3, the last step is an ordinary (first-order, uncorrected) step
  there, and the result is the state at 1e-3 in VE coordinates, x / alpha (= x for VP models).
* ``uni_pc_diffusers`` / ``uni_pc_bh2_diffusers`` -- diffusers' UniPCMultistepScheduler (final_sigmas_type="zero"):
  the last step is that first-order step's limit at sigma = 0, x = D.
"""

from __future__ import annotations

import math

import torch

from iga.sampling.base import NoiseSampler, StepCallback
from iga.sampling.samplers._common import (
    option_value,
    alpha,
    capped_for_lambda,
    check_sigmas,
    denoise,
    emit,
    half_log_snr,
    model_kind,
    sigma_dtype,
    solve_small,
)


def _b_vector(h: float, p: int, variant: str) -> tuple[float, list[float]]:
    """(B(h), [b_1..b_p]) of the UniPC order conditions."""
    hh = -h
    big_b = hh if variant == "bh1" else math.expm1(hh)
    psi = math.expm1(hh) / hh - 1.0
    fact, out = 1.0, []
    for n in range(1, p + 1):
        out.append(psi * fact / big_b)
        fact *= n + 1
        psi = psi / hh - 1.0 / fact
    return big_b, out


# ComfyUI's UniPC cannot step to sigma = 0 (h = inf): a final 0 in the list becomes this sigma.
COMFYUI_FINAL_SIGMA = 1e-3


def _unipc_order(order: int | None, steps: int, name: str) -> int:
    """The order option, by default min(3, steps - 1) as ComfyUI (at least 1)."""
    if order is None:
        return max(1, min(3, steps - 1))
    return option_value("order", order, name)


def _unipc(model, x: torch.Tensor, sigmas: torch.Tensor, noise, callback, *, variant: str, order: int | None,
           lower_order_final: bool, name: str, comfyui_end: bool) -> torch.Tensor:
    kind = model_kind(model)
    sig = check_sigmas(sigmas, kind, name)
    steps = len(sig) - 1
    order = _unipc_order(order, steps, name)
    ls, sdt = capped_for_lambda(sig, kind), sigma_dtype(sigmas, x)
    if comfyui_end and ls[-1] == 0:
        ls = [*ls[:-1], COMFYUI_FINAL_SIGMA]
    lams = [half_log_snr(kind, s) for s in ls]
    m_cur = denoise(model, x, ls[0], sdt)
    hist: list[tuple[float, torch.Tensor]] = []  # earlier (lambda, m), newest first
    for i in range(steps):
        s, s_next = ls[i], ls[i + 1]
        if s_next == 0:
            # The limit of the first-order step as sigma_t -> 0; higher orders are undefined there (h = inf).
            x = m_cur
            emit(callback, i, sig[i], sig[i + 1], x, m_cur)
            break
        p = min(order, i + 1, len(hist) + 1)
        if lower_order_final:
            p = min(p, steps - i)
        h = lams[i + 1] - lams[i]
        a_next = alpha(kind, s_next)
        x_base = x * (s_next / s) + m_cur * (-a_next * math.expm1(-h))
        rks = [(hist[k][0] - lams[i]) / h for k in range(p - 1)]
        d1s = [(hist[k][1] - m_cur) / rks[k] for k in range(p - 1)]
        big_b, b = _b_vector(h, p, variant)
        x_t = x_base
        if d1s:
            rho_p = [0.5] if p == 2 else solve_small([[r ** n for r in rks] for n in range(p - 1)], b[:p - 1])
            x_t = x_base - sum(d * c for d, c in zip(d1s, rho_p)) * (a_next * big_b)
        if i == steps - 1:  # no model call after the last step, so no corrector
            x = x_t
            emit(callback, i, sig[i], sig[i + 1], x, m_cur)
            break
        m_new = denoise(model, x_t, s_next, sdt)
        x = x_base - _corrector_residual(rks, d1s, m_new - m_cur, b, p) * (a_next * big_b)
        emit(callback, i, sig[i], sig[i + 1], x, m_cur)
        hist = [(lams[i], m_cur), *hist][:2]
        m_cur = m_new
    if ls[-1] != sig[-1]:
        x = x / alpha(kind, ls[-1])  # ComfyUI returns x / alpha at its final sigma: the VE state x0 + sigma~ eps
    return x


def _corrector_residual(rks: list[float], d1s: list[torch.Tensor], d1_t: torch.Tensor, b: list[float],
                        p: int) -> torch.Tensor:
    """UniC-p's ``sum_k rho^c_k D1_k + rho^c_p (m_t - m_s)``, the new model output at r_p = 1 (rho = 1/2 for p = 1)."""
    rho_c = [0.5] if p == 1 else solve_small([[r ** n for r in [*rks, 1.0]] for n in range(p)], b[:p])
    residual = d1_t * rho_c[-1]
    for d, c in zip(d1s, rho_c[:-1]):
        residual = residual + d * c
    return residual


def sample_uni_pc(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                  callback: StepCallback | None = None, order: int | None = None,
                  lower_order_final: bool = True) -> torch.Tensor:
    """UniPC multistep, variant bh1 (B(h) = -h), data prediction, order min(3, steps - 1) by default: ComfyUI's.

    Orders ramp up 1, 2, 3 from the start; with ``lower_order_final`` the last steps drop to 2 and 1 (the last,
    uncorrected step is DDIM), which makes the global order 2. A final sigma = 0 is replaced by 1e-3 and the
    result is x / alpha there (ComfyUI); ``uni_pc_diffusers`` ends with x = D instead.
    """
    return _unipc(model, x, sigmas, noise, callback, variant="bh1", order=order,
                  lower_order_final=lower_order_final, name="uni_pc", comfyui_end=True)


def sample_uni_pc_bh2(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                      callback: StepCallback | None = None, order: int | None = None,
                      lower_order_final: bool = True) -> torch.Tensor:
    """UniPC multistep, variant bh2 (B(h) = e^-h - 1); otherwise as uni_pc (ComfyUI's, ending at sigma = 1e-3)."""
    return _unipc(model, x, sigmas, noise, callback, variant="bh2", order=order,
                  lower_order_final=lower_order_final, name="uni_pc_bh2", comfyui_end=True)


def sample_uni_pc_diffusers(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                            callback: StepCallback | None = None, order: int | None = None,
                            lower_order_final: bool = True) -> torch.Tensor:
    """UniPC bh1 as diffusers' UniPCMultistepScheduler runs it: as uni_pc, but the step to sigma = 0 is x = D.

    (diffusers itself returns NaN on that step for bh1, inf * 0; x = D is its limit, as for bh2.)
    """
    return _unipc(model, x, sigmas, noise, callback, variant="bh1", order=order,
                  lower_order_final=lower_order_final, name="uni_pc_diffusers", comfyui_end=False)


def sample_uni_pc_bh2_diffusers(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                                callback: StepCallback | None = None, order: int | None = None,
                                lower_order_final: bool = True) -> torch.Tensor:
    """UniPC bh2 as diffusers' UniPCMultistepScheduler runs it: as uni_pc_bh2, but the step to sigma = 0 is x = D."""
    return _unipc(model, x, sigmas, noise, callback, variant="bh2", order=order,
                  lower_order_final=lower_order_final, name="uni_pc_bh2_diffusers", comfyui_end=False)


def nfe_unipc(sig: list[float], kind: str, options: dict) -> int:
    """One call at the start plus one per step except the last: len(sigmas) - 1 in all."""
    return len(sig) - 1
