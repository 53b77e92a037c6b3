"""Shared helpers for the samplers: sigma checks, model calls, and noise-level algebra for VP and flow models.

Coordinates. A VP model in k-diffusion "sigma space" has ``x = x0 + sigma * eps`` (alpha = 1); a flow
(rectified-flow) model has ``x = (1 - sigma) * x0 + sigma * eps`` (alpha = 1 - sigma). Both are
``x = alpha * x0 + sigma * eps``. Dividing by alpha gives the equivalent VE state
``x~ = x / alpha = x0 + sigma~ * eps`` with ``sigma~ = sigma / alpha`` and the half-log-SNR
``lambda = log(alpha / sigma) = -log(sigma~)``. For VP models all of this is the identity.

Two facts make one implementation serve both kinds:

* The probability-flow ODE is ``dx/dsigma = (x - D(x, sigma)) / sigma`` for *both* kinds (for flow:
  ``(x - x0) / sigma = eps - x0 = dx/dsigma``), so sigma-space solvers (Euler, Heun, LMS, ...) run unchanged.
* The exponential integrators (DDIM, DPM-Solver(++), UniPC, ...) are the k-diffusion formulas applied in the
  VE coordinates (x~, sigma~); mapped back to x they read
  ``x_next = (sigma_next / sigma) * x + alpha_next * (1 - e^-h) * D`` with ``e^-h = sigma~_next / sigma~``,
  which never divides by alpha (so a flow grid may start at sigma = 1 for the first-order step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from iga.sampling.base import NoiseSampler, SamplingError, StepCallback, StepInfo

# The largest first sigma the half-log-SNR samplers use for flow models: lambda(1) = -inf, so a grid that starts
# at sigma = 1 starts at 1 - 1e-4 instead (ComfyUI's offset_first_sigma_for_snr does the same).
FLOW_SIGMA_CAP = 1.0 - 1e-4


def model_kind(model: object) -> str:
    """The model's kind ("vp" or "flow"); a denoiser without a ``kind`` attribute is taken as VP."""
    kind = getattr(model, "kind", "vp")
    if kind not in ("vp", "flow"):
        raise SamplingError(f"denoiser.kind must be 'vp' or 'flow', got {kind!r}")
    return kind


def check_sigmas(sigmas: torch.Tensor | Sequence[float], kind: str, sampler: str) -> list[float]:
    """Validate a sigma list (1-D, >= 2 values, finite, >= 0, strictly decreasing; <= 1 for flow); return floats."""
    if isinstance(sigmas, torch.Tensor):
        if sigmas.ndim != 1:
            raise SamplingError(f"{sampler}: sigmas must be a 1-D tensor, got shape {tuple(sigmas.shape)}")
        vals = [float(v) for v in sigmas.detach().to("cpu", torch.float64).tolist()]
    else:
        vals = [float(v) for v in sigmas]
    if len(vals) < 2:
        raise SamplingError(f"{sampler}: need at least 2 sigmas (one step), got {len(vals)}")
    for i, v in enumerate(vals):
        if not math.isfinite(v) or v < 0:
            raise SamplingError(f"{sampler}: sigma[{i}]={v!r} is not a finite value >= 0")
    for i in range(len(vals) - 1):
        if not vals[i + 1] < vals[i]:
            raise SamplingError(
                f"{sampler}: sigmas must be strictly decreasing, but sigma[{i}]={vals[i]:.6g} and "
                f"sigma[{i + 1}]={vals[i + 1]:.6g}; build the list with a schedule from iga.sampling.schedules"
            )
    if kind == "flow" and vals[0] > 1.0:
        raise SamplingError(f"{sampler}: flow models need sigmas in [0, 1], got sigma[0]={vals[0]:.6g}")
    return vals


def capped_for_lambda(sig: list[float], kind: str) -> list[float]:
    """The sigma list the half-log-SNR samplers use: a flow list starting at 1 starts at FLOW_SIGMA_CAP instead."""
    if kind == "flow" and sig[0] >= 1.0:
        return [max(FLOW_SIGMA_CAP, 0.5 * (1.0 + sig[1])), *sig[1:]]
    return sig


def denoise(model, x: torch.Tensor, sigma: float, sigma_dtype: torch.dtype) -> torch.Tensor:
    """Call the denoiser at one noise level for the whole batch."""
    return model(x, x.new_ones([x.shape[0]], dtype=sigma_dtype) * sigma)


def sigma_dtype(sigmas: torch.Tensor | Sequence[float], x: torch.Tensor) -> torch.dtype:
    """The dtype of the per-image sigma tensor handed to the model: the sigma list's, at least float32."""
    if isinstance(sigmas, torch.Tensor) and sigmas.is_floating_point():
        return torch.promote_types(sigmas.dtype, torch.float32)
    return torch.promote_types(x.dtype, torch.float32)


def emit(callback: StepCallback | None, i: int, sigma: float, sigma_next: float, x: torch.Tensor,
         denoised: torch.Tensor) -> None:
    """Report a finished step to the callback, if any."""
    if callback is not None:
        callback(StepInfo(i, float(sigma), float(sigma_next), x, denoised))


def require_noise(noise: NoiseSampler | None, sampler: str, why: str) -> NoiseSampler:
    """Return the noise sampler or raise a SamplingError that says why one is needed."""
    if noise is None:
        raise SamplingError(
            f"{sampler} needs a noise sampler ({why}); pass noise=... (see iga.sampling.noise.make_noise_sampler), "
            "or set eta=0 / s_churn=0 where the sampler allows it"
        )
    return noise


def draw(noise: NoiseSampler, sigma: float, sigma_next: float, like: torch.Tensor) -> torch.Tensor:
    """One standard-normal draw shaped like ``like``, checked."""
    z = noise(sigma, sigma_next)
    if not isinstance(z, torch.Tensor) or z.shape != like.shape:
        raise SamplingError(
            f"the noise sampler returned {getattr(z, 'shape', type(z))}, expected a tensor of shape {tuple(like.shape)}"
        )
    return z.to(device=like.device, dtype=like.dtype)


def option_value(name: str, value: Any, sampler: str) -> Any:
    """``value`` if the catalog allows it for this sampler's option ``name`` (the guard checks the same), else
    raise: direct callers of the engine get the refusal a plan would have got."""
    from iga.catalog import option_problems
    from iga.catalog.samplers import SAMPLERS as CATALOG

    specs = CATALOG[sampler].option_specs
    if name not in specs:  # a shared loop's fixed internal value (res_multistep runs its ancestral loop at eta 0)
        return value
    problems = option_problems(sampler, specs, {name: value})
    if problems:
        raise SamplingError(problems[name])
    return float(value) if specs[name].kind == "float" else int(value) if specs[name].kind == "int" else value


def noise_options(sampler: str, eta: float, s_noise: float, sig: Sequence[float], noise: NoiseSampler | None,
                  why: str = "eta > 0 injects noise") -> tuple[float, float]:
    """Check eta and s_noise; require a noise sampler when eta > 0 and a step actually adds noise."""
    eta = option_value("eta", eta, sampler)
    s_noise = option_value("s_noise", s_noise, sampler)
    if eta > 0 and sig[1] > 0:
        require_noise(noise, sampler, why)
    return eta, s_noise


# ---- noise-level algebra -------------------------------------------------------------------------------------

def alpha(kind: str, s: float) -> float:
    """Signal scale: 1 for VP (sigma space), 1 - sigma for flow."""
    return 1.0 if kind == "vp" else 1.0 - s


def ve_sigma(kind: str, s: float) -> float:
    """The equivalent VE noise level sigma / alpha (inf for flow at sigma = 1)."""
    if kind == "vp":
        return s
    a = 1.0 - s
    return math.inf if a <= 0 else s / a


def half_log_snr(kind: str, s: float) -> float:
    """lambda = log(alpha / sigma); +inf at sigma = 0, -inf for flow at sigma = 1."""
    if s <= 0:
        return math.inf
    a = alpha(kind, s)
    if a <= 0:
        return -math.inf
    return math.log(a) - math.log(s)


def sigma_of_lambda(kind: str, lam: float) -> float:
    """Inverse of half_log_snr."""
    if kind == "vp":
        return math.exp(-lam)
    # sigma / (1 - sigma) = e^-lam  =>  sigma = 1 / (1 + e^lam), written to avoid overflow
    if lam >= 0:
        e = math.exp(-lam)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(lam))


def ve_ratio(kind: str, s: float, s_next: float) -> float:
    """e^-h = sigma~_next / sigma~ (0 when the step starts at a flow sigma of 1)."""
    return (s_next * alpha(kind, s)) / (s * alpha(kind, s_next))


def ddim_step(kind: str, x: torch.Tensor, denoised: torch.Tensor, s: float, s_next: float) -> torch.Tensor:
    """First-order exponential step (DDIM, = Euler in sigma): x_next = (s'/s) x + (alpha' - alpha s'/s) D."""
    r = s_next / s
    return x * r + denoised * (alpha(kind, s_next) - alpha(kind, s) * r)


def to_d(x: torch.Tensor, s: float, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE derivative dx/dsigma = (x - D) / sigma (both kinds)."""
    return (x - denoised) / s


def ancestral_step(kind: str, s: float, s_next: float, eta: float) -> tuple[float, float, float]:
    """(sigma_down, scale, up) of the ancestral samplers: x_next = scale * step(x -> sigma_down) + up * z.

    VP (k-diffusion, from DDIM's sigma_t(eta)): up = min(s', eta * sqrt(s'^2 (s^2 - s'^2) / s^2)),
    down = sqrt(s'^2 - up^2), scale = 1.
    Flow (ComfyUI's ``_RF`` rule): down = s' * (1 + eta * (s'/s - 1)), and the state at sigma_down,
    ``x_down = a_down x0 + down * eps``, is renoised with the flow scaling
    ``x = (a'/a_down) x_down + sqrt(s'^2 - (down a'/a_down)^2) z``, which has the marginal
    ``a' x0 + s' eps'`` for any down <= s' (a = 1 - sigma).
    """
    if s_next <= 0 or eta == 0:
        return s_next, 1.0, 0.0
    if kind == "vp":
        up = min(s_next, eta * math.sqrt(max(s_next * s_next * (s * s - s_next * s_next) / (s * s), 0.0)))
        return math.sqrt(max(s_next * s_next - up * up, 0.0)), 1.0, up
    down = max(s_next * (1.0 + eta * (s_next / s - 1.0)), 0.0)
    scale = (1.0 - s_next) / (1.0 - down)
    up = math.sqrt(max(s_next * s_next - (down * scale) ** 2, 0.0))
    return down, scale, up


def posterior_step(kind: str, s: float, s_next: float, eta: float) -> tuple[float, float, float]:
    """(sigma_down, scale, up) of the DDIM(eta) / SDE rule, taken in the VE coordinates of either kind.

    With rho = sigma~'/sigma~ = e^-h and q = min(1, eta * sqrt(1 - rho^2)): sigma~_down = sigma~' sqrt(1 - q^2),
    up = s' * q (noise std in x), scale = a'/a_down. For VP this equals :func:`ancestral_step`; eta = 1 is the
    DDPM posterior q(x' | x, x0 = D).
    """
    if s_next <= 0 or eta == 0:
        return s_next, 1.0, 0.0
    rho = ve_ratio(kind, s, s_next)
    q = min(1.0, eta * math.sqrt(max(1.0 - rho * rho, 0.0)))
    ve_down = ve_sigma(kind, s_next) * math.sqrt(max(1.0 - q * q, 0.0))
    down = ve_down if kind == "vp" else ve_down / (1.0 + ve_down)
    scale = alpha(kind, s_next) / alpha(kind, down)
    return down, scale, s_next * q


def raise_noise(kind: str, x: torch.Tensor, s: float, s_hi: float, z: torch.Tensor) -> torch.Tensor:
    """Add noise to go from level s up to s_hi (> s): VP x + sqrt(s_hi^2 - s^2) z; flow with alpha rescaling."""
    if kind == "vp":
        return x + z * math.sqrt(s_hi * s_hi - s * s)
    scale = (1.0 - s_hi) / (1.0 - s)
    return x * scale + z * math.sqrt(max(s_hi * s_hi - (s * scale) ** 2, 0.0))


def churn(kind: str, x: torch.Tensor, s: float, n_steps: int, *, s_churn: float, s_tmin: float, s_tmax: float,
          s_noise: float, noise: NoiseSampler | None, sampler: str) -> tuple[torch.Tensor, float]:
    """Karras et al. (2022) Alg. 2 "churn": raise sigma to s_hat = s (1 + gamma) by adding fresh noise.

    gamma = min(s_churn / n_steps, sqrt(2) - 1) when s_tmin <= s <= s_tmax, else 0. Flow models cap s_hat at 1.
    """
    if s_churn <= 0 or not (s_tmin <= s <= s_tmax):
        return x, s
    gamma = min(s_churn / n_steps, math.sqrt(2.0) - 1.0)
    s_hat = s * (1.0 + gamma)
    if kind == "flow":
        s_hat = min(s_hat, 1.0)
    if s_hat <= s:
        return x, s
    z = draw(require_noise(noise, sampler, "s_churn > 0 adds noise"), s, s_hat, x)
    return raise_noise(kind, x, s, s_hat, z * s_noise), s_hat


def solve_small(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Solve a small dense linear system in float64 (Gaussian elimination with partial pivoting)."""
    n = len(rhs)
    a = [list(map(float, row)) + [float(b)] for row, b in zip(matrix, rhs)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        if a[p][c] == 0:
            raise SamplingError("singular coefficient system (two history nodes coincide?)")
        a[c], a[p] = a[p], a[c]
        for r in range(c + 1, n):
            f = a[r][c] / a[c][c]
            for k in range(c, n + 1):
                a[r][k] -= f * a[c][k]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (a[r][n] - sum(a[r][k] * out[k] for k in range(r + 1, n))) / a[r][r]
    return out
