"""Inference sigma schedules: ``fn(n_steps, schedule, **params) -> sigmas`` (float32, length n+1, ends in 0).

Conventions (all schedules):

* Output is a 1-D **float32** CPU tensor, strictly decreasing, finite, ending in exactly 0. Values are
  computed in float64 from the float32 training sigma table (the table ComfyUI/k-diffusion/diffusers use)
  and cast once at the end; they agree with ComfyUI's float32 arithmetic and with diffusers to ~1e-6
  relative. Every output is checked by :func:`validate_sigmas`.
* ``schedule`` is a :class:`~iga.sampling.parameterization.DiscreteVPSchedule` or
  :class:`~iga.sampling.parameterization.FlowSchedule`. Both expose ``sigmas`` (ascending table),
  ``sigma_min``, ``sigma_max``, ``sigma_to_t`` and ``t_to_sigma``; the table-based schedules (simple,
  ddim_uniform, beta) and the time-based ones (normal, sgm_uniform) therefore also work for flow models and
  reproduce ComfyUI's flow lists. ``ays`` and ``turbo`` are VP-only (their tables are SD's).
* Names are ComfyUI's. Where A1111 or diffusers compute something different under the same name, the
  docstring says so; ``beta_linear`` is the A1111/diffusers "beta".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

MAX_STEPS = 10_000


class ScheduleError(ValueError):
    """A sigma schedule cannot be built or is invalid (not decreasing, non-finite, bad step count...)."""


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def validate_sigmas(sigmas: torch.Tensor, name: str = "sigmas", *, require_zero_end: bool = True) -> torch.Tensor:
    """Check a sigma list: 1-D, >= 2 values, finite, strictly decreasing, non-negative, ends in 0; return it."""
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        raise ScheduleError(f"{name}: expected a 1-D tensor of sigmas")
    if sigmas.numel() < 2:
        raise ScheduleError(f"{name}: need at least 2 sigmas (one step), got {sigmas.numel()}")
    s = sigmas.detach().to("cpu", torch.float64)
    if not torch.isfinite(s).all():
        where = torch.nonzero(~torch.isfinite(s)).flatten().tolist()
        raise ScheduleError(f"{name}: non-finite sigma(s) at index {where}")
    bad = torch.nonzero(s[1:] >= s[:-1]).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ScheduleError(
            f"{name}: sigmas must be strictly decreasing, but sigma[{i}]={s[i]:.6g} <= sigma[{i + 1}]={s[i + 1]:.6g}"
            " (too many steps for this schedule, or a hand-written grid out of order)"
        )
    if s[-1] < 0:
        raise ScheduleError(f"{name}: sigmas must be >= 0, last is {s[-1]:.6g}")
    if require_zero_end and s[-1] != 0:
        raise ScheduleError(f"{name}: the last sigma must be 0, got {s[-1]:.6g}")
    return sigmas


def _check_steps(n: int, name: str, upper: int = MAX_STEPS) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ScheduleError(f"{name}: n_steps must be an integer, got {n!r}")
    if not 1 <= int(n) <= upper:
        raise ScheduleError(f"{name}: n_steps must be in 1..{upper}, got {n}")
    return int(n)


def _finish(values: Sequence[float] | np.ndarray | torch.Tensor, name: str, append_zero: bool = True) -> torch.Tensor:
    arr = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if append_zero:
        arr = torch.cat([arr, arr.new_zeros(1)])
    return validate_sigmas(arr.to(torch.float32), name)


def _table(schedule: Any) -> np.ndarray:
    return schedule.sigmas.detach().cpu().to(torch.float64).numpy()


def _range(schedule: Any, sigma_min: float | None, sigma_max: float | None, name: str) -> tuple[float, float]:
    lo = float(schedule.sigma_min if sigma_min is None else sigma_min)
    hi = float(schedule.sigma_max if sigma_max is None else sigma_max)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ScheduleError(f"{name}: need 0 < sigma_min < sigma_max (finite), got sigma_min={lo}, sigma_max={hi}")
    return lo, hi


def _require_vp(schedule: Any, name: str) -> None:
    if getattr(schedule, "kind", None) != "vp":
        raise ScheduleError(f"{name}: only defined for discrete VP (SD-family) schedules, not {schedule!r}")


def _to_t(schedule: Any, sigma: float) -> float:
    return float(schedule.sigma_to_t(torch.tensor(sigma, dtype=torch.float64), quantize=False))


def _to_sigma(schedule: Any, t: np.ndarray) -> np.ndarray:
    return schedule.t_to_sigma(torch.as_tensor(t, dtype=torch.float64)).to(torch.float64).numpy()


def loglinear_interp(values: Sequence[float], num: int) -> np.ndarray:
    """Resample a decreasing positive list to ``num`` points, linear in log-value over uniform positions."""
    v = np.asarray(values, dtype=np.float64)
    xs = np.linspace(0.0, 1.0, len(v))
    return np.exp(np.interp(np.linspace(0.0, 1.0, num), xs, np.log(v[::-1])))[::-1].copy()


# --------------------------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------------------------


def normal(n_steps: int, schedule: Any) -> torch.Tensor:
    """ComfyUI ``normal``: t = linspace(t(sigma_max), t(sigma_min), n); sigma(t) with log-sigma interpolation; +0.

    A1111 "Normal" is the same. diffusers ``timestep_spacing="linspace"`` uses the same t but interpolates
    sigma *linearly* in t, so they agree exactly only when the t values are integers (e.g. n = 4, 10, 28,
    38 for 1000 training steps) and differ by < 0.5% elsewhere. For flow: ``shift(linspace(sigma_max,
    sigma_min, n))`` = diffusers FlowMatchEulerDiscreteScheduler's default list.
    """
    n = _check_steps(n_steps, "normal")
    t = np.linspace(_to_t(schedule, schedule.sigma_max), _to_t(schedule, schedule.sigma_min), n)
    return _finish(_to_sigma(schedule, t), "normal")


def sgm_uniform(n_steps: int, schedule: Any) -> torch.Tensor:
    """ComfyUI/A1111 ``sgm_uniform``: t = linspace(t(sigma_max), t(sigma_min), n+1)[:-1]; sigma(t); +0.

    diffusers has no exact equivalent ("trailing" spacing = ``simple`` is the documented approximation).
    """
    n = _check_steps(n_steps, "sgm_uniform")
    t = np.linspace(_to_t(schedule, schedule.sigma_max), _to_t(schedule, schedule.sigma_min), n + 1)[:-1]
    return _finish(_to_sigma(schedule, t), "sgm_uniform")


def simple(n_steps: int, schedule: Any) -> torch.Tensor:
    """ComfyUI ``simple``: sigma_k = table[N-1-floor(k N / n)], k = 0..n-1; +0.

    diffusers ``timestep_spacing="trailing"`` uses t = round(N - k N/n) - 1 instead of N - 1 - floor(k N/n):
    identical when n divides N (n = 10, 20, 25, 50 ... for N = 1000), otherwise some steps sit one training
    index higher here (e.g. n = 37: up to 2% more sigma at single steps).
    """
    n = _check_steps(n_steps, "simple")
    table = _table(schedule)
    size = len(table)
    if n > size:
        raise ScheduleError(f"simple: n_steps={n} exceeds the {size} training timesteps")
    idx = [size - 1 - int(k * (size / n)) for k in range(n)]
    return _finish(table[idx], "simple")


def time_uniform(n_steps: int, schedule: Any) -> torch.Tensor:
    """Flow models: flow time spaced uniformly from 1 to 0, sigma_k = shift(1 - k/n), k = 0..n-1; +0.

    Black Forest Labs' Flux reference and diffusers' FluxPipeline use exactly this. ComfyUI's ``simple`` picks
    the same points from its 1000-entry table, so it agrees only when n divides 1000 (n = 28: up to 1.8e-3).
    """
    n = _check_steps(n_steps, "time_uniform")
    if getattr(schedule, "kind", None) != "flow":
        raise ScheduleError("time_uniform: defined for flow models only")
    u = np.linspace(1.0, 1.0 / n, n)
    return _finish(schedule.time_to_sigma(torch.from_numpy(u)).numpy(), "time_uniform")


def ddim_uniform(n_steps: int, schedule: Any) -> torch.Tensor:
    """``ddim_uniform``: t = 1 + k * (N // n) for k = n-1..0 (so the first t is 1 + (n-1) c, not N-1); +0.

    Equals diffusers ``timestep_spacing="leading", steps_offset=1`` and A1111 "DDIM" exactly. When N is not a
    multiple of n, ComfyUI and A1111's timestep samplers keep stepping while ``1 + k c < N`` and so return
    one sigma *more* (e.g. n=7 gives 8 steps there); this function always returns exactly n steps
    (diffusers' rule).
    """
    n = _check_steps(n_steps, "ddim_uniform")
    table = _table(schedule)
    c = len(table) // n
    if c < 1:
        raise ScheduleError(f"ddim_uniform: n_steps={n} exceeds the {len(table)} training timesteps")
    idx = [1 + k * c for k in range(n)][::-1]
    if idx[0] >= len(table):
        raise ScheduleError(f"ddim_uniform: n_steps={n} is too many for {len(table)} training timesteps")
    return _finish(table[idx], "ddim_uniform")


def karras(n_steps: int, schedule: Any, *, rho: float = 7.0, sigma_min: float | None = None,
           sigma_max: float | None = None) -> torch.Tensor:
    """Karras et al. 2022: (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho; +0.

    Same in ComfyUI, A1111 and diffusers ``use_karras_sigmas`` (with "linspace"/"trailing" spacing; diffusers
    Euler with "leading" spacing takes its range from the spaced timesteps instead). Range defaults to the
    schedule's [sigma_min, sigma_max] (for flow: [shift(1/N), 1]).
    """
    n = _check_steps(n_steps, "karras")
    lo, hi = _range(schedule, sigma_min, sigma_max, "karras")
    if not (math.isfinite(rho) and rho > 0):
        raise ScheduleError(f"karras: rho must be > 0, got {rho}")
    ramp = np.linspace(0.0, 1.0, n)
    a, b = hi ** (1.0 / rho), lo ** (1.0 / rho)
    return _finish((a + ramp * (b - a)) ** rho, "karras")


def exponential(n_steps: int, schedule: Any, *, sigma_min: float | None = None,
                sigma_max: float | None = None) -> torch.Tensor:
    """exp(linspace(ln sigma_max, ln sigma_min, n)); +0. Same in ComfyUI, A1111 and diffusers (exponential_sigmas)."""
    n = _check_steps(n_steps, "exponential")
    lo, hi = _range(schedule, sigma_min, sigma_max, "exponential")
    return _finish(np.exp(np.linspace(math.log(hi), math.log(lo), n)), "exponential")


def polyexponential(n_steps: int, schedule: Any, *, rho: float = 1.0, sigma_min: float | None = None,
                    sigma_max: float | None = None) -> torch.Tensor:
    """exp(r^rho (ln sigma_max - ln sigma_min) + ln sigma_min), r = linspace(1, 0, n); +0 (rho=1: exponential)."""
    n = _check_steps(n_steps, "polyexponential")
    lo, hi = _range(schedule, sigma_min, sigma_max, "polyexponential")
    if not (math.isfinite(rho) and rho > 0):
        raise ScheduleError(f"polyexponential: rho must be > 0, got {rho}")
    r = np.linspace(1.0, 0.0, n) ** rho
    return _finish(np.exp(r * (math.log(hi) - math.log(lo)) + math.log(lo)), "polyexponential")


def kl_optimal(n_steps: int, schedule: Any, *, sigma_min: float | None = None,
               sigma_max: float | None = None) -> torch.Tensor:
    """ComfyUI ``kl_optimal``: tan(u atan(sigma_min) + (1 - u) atan(sigma_max)), u = i/(n-1), i = 0..n-1; +0.

    A1111's "KL Optimal" instead uses u = i/n, i = 0..n, and appends no 0 (its list ends at sigma_min).
    """
    n = _check_steps(n_steps, "kl_optimal")
    lo, hi = _range(schedule, sigma_min, sigma_max, "kl_optimal")
    u = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    return _finish(np.tan(u * math.atan(lo) + (1.0 - u) * math.atan(hi)), "kl_optimal")


def _beta_ppf(q: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    from scipy.stats import beta as beta_dist  # scipy is heavy: import on use

    return np.asarray(beta_dist.ppf(q, alpha, beta), dtype=np.float64)


def beta(n_steps: int, schedule: Any, *, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """ComfyUI ``beta`` (arXiv 2407.12173): t_k = rint(BetaPPF(1 - k/n; alpha, beta) (N-1)), sigma = table[t_k]; +0.

    Consecutive duplicate timesteps are dropped (as ComfyUI does), so for large n (where the beta quantiles
    collide after rounding) the list has fewer than n+1 values. A1111 and diffusers' "beta" is the
    continuous variant, see :func:`beta_linear`.
    """
    n = _check_steps(n_steps, "beta")
    _check_beta_params(alpha, beta, "beta")
    table = _table(schedule)
    q = 1.0 - np.arange(n, dtype=np.float64) / n
    ts = np.rint(_beta_ppf(q, alpha, beta) * (len(table) - 1)).astype(np.int64)
    keep = [int(t) for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]]
    return _finish(table[keep], "beta")


def beta_linear(n_steps: int, schedule: Any, *, alpha: float = 0.6, beta: float = 0.6,
                sigma_min: float | None = None, sigma_max: float | None = None) -> torch.Tensor:
    """A1111/diffusers "beta": sigma_min + BetaPPF(1 - k/(n-1)) (sigma_max - sigma_min), k = 0..n-1; +0.

    Linear in sigma between the range ends (diffusers ``use_beta_sigmas``, A1111 "Beta"), unlike ComfyUI's
    table-indexed :func:`beta`.
    """
    n = _check_steps(n_steps, "beta_linear")
    _check_beta_params(alpha, beta, "beta_linear")
    lo, hi = _range(schedule, sigma_min, sigma_max, "beta_linear")
    q = 1.0 - np.linspace(0.0, 1.0, n)
    return _finish(lo + _beta_ppf(q, alpha, beta) * (hi - lo), "beta_linear")


def _check_beta_params(alpha: float, b: float, name: str) -> None:
    if not (math.isfinite(alpha) and math.isfinite(b) and alpha > 0 and b > 0):
        raise ScheduleError(f"{name}: alpha and beta must be > 0, got alpha={alpha}, beta={b}")


def linear_quadratic(n_steps: int, schedule: Any, *, threshold_noise: float = 0.025,
                     linear_steps: int | None = None) -> torch.Tensor:
    """ComfyUI ``linear_quadratic`` (Mochi): s rises linearly to ``threshold_noise`` over ``linear_steps``
    (default n//2) steps, then along the quadratic that continues it with equal slope (C1) and reaches 1 at
    step n; sigma = (1 - s) * sigma_max, ending in exactly 0. Meant for flow models (sigma_max = 1).
    """
    n = _check_steps(n_steps, "linear_quadratic")
    if n == 1:
        return _finish([schedule.sigma_max, 0.0], "linear_quadratic", append_zero=False)
    lin = n // 2 if linear_steps is None else int(linear_steps)
    if not 1 <= lin < n:
        raise ScheduleError(f"linear_quadratic: linear_steps must be in 1..{n - 1}, got {lin}")
    thr = float(threshold_noise)
    if not 0.0 < thr < 1.0:
        raise ScheduleError(f"linear_quadratic: threshold_noise must be in (0, 1), got {thr}")
    quad = n - lin
    a = (lin - thr * n) / (lin * quad**2)  # curvature fixed by q(lin) = thr, q'(lin) = thr / lin, q(n) = 1
    i = np.arange(n + 1, dtype=np.float64)
    s = np.where(i < lin, i * thr / lin, thr + (thr / lin) * (i - lin) + a * (i - lin) ** 2)
    s[-1] = 1.0
    return _finish((1.0 - s) * schedule.sigma_max, "linear_quadratic", append_zero=False)


#: ComfyUI AlignYourSteps NOISE_LEVELS (sigma of SD's table at NVIDIA's AYS timesteps), 11 values = 10 steps.
AYS_NOISE_LEVELS: dict[str, tuple[float, ...]] = {
    "sd1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
            0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "sdxl": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
             0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
}
#: NVIDIA's AYS timesteps (diffusers ``AysSchedules``); ``AYS_NOISE_LEVELS`` are SD's sigmas at these.
AYS_TIMESTEPS: dict[str, tuple[int, ...]] = {
    "sd1": (999, 850, 736, 645, 545, 455, 343, 233, 124, 24),
    "sdxl": (999, 845, 730, 587, 443, 310, 193, 116, 53, 13),
}


def ays(n_steps: int, schedule: Any, *, model_family: str = "sd1") -> torch.Tensor:
    """ComfyUI AlignYourSteps: the 11-value table, log-linearly resampled to n+1 values, last value set to 0.

    At n = 10 this is the table with its final 0.0292 replaced by 0. A1111 instead resamples to n values and
    appends 0 (so at n=10 it does not use the table); diffusers' ``AysSchedules`` sigmas are the table rounded
    to 3 decimals (SDXL differs in the third decimal). The table is SD's (sigma range 0.0292..14.6146); the
    ``schedule`` argument is only checked to be VP.
    """
    n = _check_steps(n_steps, "ays", upper=1000)
    _require_vp(schedule, "ays")
    if model_family not in AYS_NOISE_LEVELS:
        raise ScheduleError(f"ays: model_family must be one of {sorted(AYS_NOISE_LEVELS)}, got {model_family!r}")
    levels = np.asarray(AYS_NOISE_LEVELS[model_family], dtype=np.float64)
    vals = levels.copy() if n + 1 == len(levels) else loglinear_interp(levels, n + 1)
    vals[-1] = 0.0
    return _finish(vals, "ays", append_zero=False)


def turbo(n_steps: int, schedule: Any) -> torch.Tensor:
    """ComfyUI SDTurboScheduler (denoise 1): t = 999, 899, ..., 99, the first n of them; sigma(t); +0. n <= 10."""
    n = _check_steps(n_steps, "turbo", upper=10)
    _require_vp(schedule, "turbo")
    if schedule.num_train_timesteps != 1000:
        raise ScheduleError("turbo: defined for 1000-step training schedules (SD-Turbo / SDXL-Turbo) only")
    t = (np.arange(10, 0, -1) * 100 - 1)[:n].astype(np.float64)
    return _finish(_to_sigma(schedule, t), "turbo")


def explicit_grid(grid: Sequence[float] | torch.Tensor, n: int | None = None) -> torch.Tensor:
    """A recipe's explicit sigma grid, optionally subsampled to ``n`` steps.

    The grid must be strictly decreasing and positive, optionally with a final 0 (a trailing 0 is implied
    if absent). With m non-zero values: ``n`` (default m) must be in 1..m; the kept non-zero values are
    ``grid[round(linspace(0, m-1, n))]`` -- distinct, in order, always keeping the first (largest) value and,
    for n >= 2, the last non-zero value -- followed by 0. Asking for more steps than the grid has is an error
    (a recipe's grid is never interpolated).
    """
    g = torch.as_tensor(grid, dtype=torch.float64).detach().cpu().flatten()
    if g.numel() == 0:
        raise ScheduleError("explicit_grid: the grid is empty")
    if g.numel() > MAX_STEPS + 1:
        raise ScheduleError(f"explicit_grid: grid too long ({g.numel()} > {MAX_STEPS + 1})")
    nonzero = g[:-1] if g[-1] == 0 else g
    if nonzero.numel() == 0:
        raise ScheduleError("explicit_grid: the grid has no non-zero sigma")
    validate_sigmas(torch.cat([nonzero, nonzero.new_zeros(1)]), "explicit_grid (input grid)")
    m = nonzero.numel()
    n = m if n is None else _check_steps(n, "explicit_grid")
    if n > m:
        raise ScheduleError(
            f"explicit_grid: {n} steps requested, but the recipe's grid has only {m} steps; "
            f"choose n_steps <= {m} (grids are subsampled, never interpolated)"
        )
    idx = np.rint(np.linspace(0, m - 1, n)).astype(np.int64)
    return _finish(nonzero.numpy()[idx], "explicit_grid")


def discard_penultimate(sigmas: torch.Tensor) -> torch.Tensor:
    """Drop sigma[-2] (ComfyUI/A1111 for dpm_2, dpm_2_ancestral, uni_pc: compute n+1 steps, then discard)."""
    if sigmas.numel() < 3:
        raise ScheduleError("discard_penultimate: need at least 3 sigmas")
    return torch.cat([sigmas[:-2], sigmas[-1:]])


# --------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleSpec:
    """A named schedule: its function, keyword parameters with defaults, and where it applies."""

    name: str
    fn: Callable[..., torch.Tensor]
    params: dict[str, Any] = field(default_factory=dict)
    kinds: tuple[str, ...] = ("vp", "flow")  # model kinds it is defined for
    may_shorten: bool = False  # can return fewer than n+1 sigmas (duplicates dropped)
    doc: str = ""


SCHEDULES: dict[str, ScheduleSpec] = {
    s.name: s
    for s in (
        ScheduleSpec("normal", normal, {},
                     doc="uniform in training time, log-sigma interpolated, ends at sigma_min, +0"),
        ScheduleSpec("karras", karras, {"rho": 7.0, "sigma_min": None, "sigma_max": None},
                     doc="Karras rho-spaced between sigma_max and sigma_min, +0"),
        ScheduleSpec("exponential", exponential, {"sigma_min": None, "sigma_max": None},
                     doc="uniform in log sigma, +0"),
        ScheduleSpec("polyexponential", polyexponential, {"rho": 1.0, "sigma_min": None, "sigma_max": None},
                     doc="log sigma along r^rho, +0"),
        ScheduleSpec("sgm_uniform", sgm_uniform, {}, doc="uniform in training time over n+1 points minus the last, +0"),
        ScheduleSpec("simple", simple, {}, doc="every N/n-th table sigma from the top (= diffusers trailing), +0"),
        ScheduleSpec("time_uniform", time_uniform, {}, kinds=("flow",),
                     doc="flow time uniform from 1 to 0 through the shift (Flux reference, diffusers), +0"),
        ScheduleSpec("ddim_uniform", ddim_uniform, {},
                     doc="table sigma at t = 1 + k*(N//n) (= diffusers leading + steps_offset 1), +0"),
        ScheduleSpec("beta", beta, {"alpha": 0.6, "beta": 0.6}, may_shorten=True,
                     doc="ComfyUI beta: table sigma at beta-quantile timesteps, +0"),
        ScheduleSpec("beta_linear", beta_linear, {"alpha": 0.6, "beta": 0.6, "sigma_min": None, "sigma_max": None},
                     doc="A1111/diffusers beta: beta quantiles linear in sigma, +0"),
        ScheduleSpec("linear_quadratic", linear_quadratic, {"threshold_noise": 0.025, "linear_steps": None},
                     doc="Mochi linear-then-quadratic (flow), ends in 0"),
        ScheduleSpec("kl_optimal", kl_optimal, {"sigma_min": None, "sigma_max": None},
                     doc="uniform in atan(sigma) (ComfyUI variant: n values + 0)"),
        ScheduleSpec("ays", ays, {"model_family": "sd1"}, kinds=("vp",),
                     doc="Align Your Steps SD1/SDXL table, log-linear resampled (ComfyUI variant)"),
        ScheduleSpec("turbo", turbo, {}, kinds=("vp",), doc="SD-Turbo timesteps 999, 899, ... (n <= 10), +0"),
    )
}


def compute_schedule(name: str, n_steps: int, schedule: Any, **params: Any) -> torch.Tensor:
    """Look up ``name`` in :data:`SCHEDULES`, check params and model kind, and build the sigma list."""
    spec = SCHEDULES.get(name)
    if spec is None:
        import difflib

        close = difflib.get_close_matches(name, list(SCHEDULES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ScheduleError(f"unknown schedule {name!r}{hint} (known: {', '.join(SCHEDULES)})")
    unknown = set(params) - set(spec.params)
    if unknown:
        takes = sorted(spec.params) or "none"
        raise ScheduleError(f"schedule {name!r} does not take {sorted(unknown)}; it takes {takes}")
    kind = getattr(schedule, "kind", None)
    if kind not in spec.kinds:
        raise ScheduleError(f"schedule {name!r} is defined for {'/'.join(spec.kinds)} models, not {kind!r}")
    merged = {k: v for k, v in {**spec.params, **params}.items() if v is not None}
    return spec.fn(n_steps, schedule, **merged)
