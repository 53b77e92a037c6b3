"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes", arXiv 2306.14878).

Heun steps down the schedule; at chosen points the state is pushed back up to a higher noise level with fresh
noise and integrated down again ("restart"), which contracts accumulated errors like an SDE while keeping ODE
steps. This is A1111's "Restart" sampler:

* ``restart_list`` maps ``min_sigma -> [restart_steps, restart_times, max_sigma]``: after reaching the grid point
  nearest min_sigma, jump to the grid point nearest max_sigma and run ``restart_steps - 1`` Heun steps down a
  Karras (rho = 7) grid between the two, ``restart_times`` times.
* Default (``restart_list=None``), as A1111: with fewer than 20 steps there are no restarts (plain Heun); with
  20 or more, restart_steps = 9 and restart_times = 1 (36 or more: steps // 4 and 2), the base grid is
  **replaced** by a Karras grid of ``steps - restart_steps * restart_times`` steps between sigmas[0] and
  sigmas[-2] (plus 0), and restart_list = {0.1: [restart_steps + 1, restart_times, 2.0]}. So the total number
  of segments stays close to the requested steps. :func:`restart_segments` returns the effective plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from iga.sampling.base import NoiseSampler, SamplingError, StepCallback
from iga.sampling.samplers._common import (
    option_value,
    check_sigmas,
    denoise,
    draw,
    emit,
    model_kind,
    require_noise,
    sigma_dtype,
    to_d,
)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """n Karras et al. (2022) noise levels from sigma_max down to sigma_min (no trailing 0)."""
    if n == 1:
        return [sigma_max]
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return [(hi + k / (n - 1) * (lo - hi)) ** rho for k in range(n)]


def _nearest(sig: Sequence[float], value: float) -> int:
    return min(range(len(sig)), key=lambda k: (abs(sig[k] - value), k))


def restart_segments(sigmas: torch.Tensor | Sequence[float],
                     restart_list: Mapping[float, Sequence[float]] | None = None) -> list[tuple[float, float]]:
    """The (sigma_from, sigma_to) Heun segments the restart sampler runs; a segment going up means renoising first."""
    sig = check_sigmas(sigmas, "vp", "restart")
    steps = len(sig) - 1
    if restart_list is None:
        if steps >= 20:
            r_steps, r_times = (steps // 4, 2) if steps >= 36 else (9, 1)
            if sig[-1] != 0 or len(sig) < 3:
                raise SamplingError("restart's default plan needs a sigma list ending in 0")
            sig = karras_sigmas(steps - r_steps * r_times, sig[-2], sig[0]) + [0.0]
            restart_list = {0.1: [r_steps + 1, r_times, 2.0]}
        else:
            restart_list = {}
    plan: dict[int, tuple[int, int, float]] = {}
    for key, val in restart_list.items():
        if len(val) != 3:
            raise SamplingError(f"restart_list values are [restart_steps, restart_times, max_sigma], got {val!r}")
        r_steps, r_times, r_max = int(val[0]), int(val[1]), float(val[2])
        if r_steps < 2 or r_times < 0:
            raise SamplingError(f"restart_list entry {key}: restart_steps must be >= 2 and restart_times >= 0")
        plan[_nearest(sig, float(key))] = (r_steps, r_times, r_max)
    segments: list[tuple[float, float]] = []
    for i in range(len(sig) - 1):
        segments.append((sig[i], sig[i + 1]))
        if i + 1 in plan:
            r_steps, r_times, r_max = plan[i + 1]
            lo_idx, hi_idx = i + 1, _nearest(sig, r_max)
            if hi_idx < lo_idx and sig[lo_idx] > 0:
                grid = karras_sigmas(r_steps, sig[lo_idx], sig[hi_idx])
                for _ in range(r_times):
                    segments.extend(zip(grid[:-1], grid[1:]))
    return segments


def sample_restart(model, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSampler | None = None,
                   callback: StepCallback | None = None, s_noise: float = 1.0,
                   restart_list: Mapping[float, Sequence[float]] | None = None) -> torch.Tensor:
    """Restart sampler (A1111): Heun segments from :func:`restart_segments`; before a segment that starts above the
    current level, ``x += s_noise sqrt(sigma_hi^2 - sigma_lo^2) z``. Heun costs 2 calls per segment (1 to sigma = 0).
    VP models only (the default restart levels 0.1 -> 2 are VP sigmas)."""
    kind = model_kind(model)
    if kind != "vp":
        raise SamplingError("restart supports VP (eps/v/x0) models only: its restart levels are VP sigmas")
    check_sigmas(sigmas, kind, "restart")
    s_noise = option_value("s_noise", s_noise, "restart")
    segments = restart_segments(sigmas, restart_list)
    if any(b > a for (_, a), (b, _) in zip(segments, segments[1:])):
        require_noise(noise, "restart", "each restart adds fresh noise")
    sdt = sigma_dtype(sigmas, x)
    last = None
    for i, (s, s_next) in enumerate(segments):
        if last is not None and last < s:
            x = x + draw(noise, last, s, x) * (s_noise * math.sqrt(s * s - last * last))
        den = denoise(model, x, s, sdt)
        d = to_d(x, s, den)
        if s_next == 0:
            x = x + d * (s_next - s)
        else:
            x2 = x + d * (s_next - s)
            d2 = to_d(x2, s_next, denoise(model, x2, s_next, sdt))
            x = x + (d + d2) * (0.5 * (s_next - s))
        last = s_next
        emit(callback, i, s, s_next, x, den)
    return x


def nfe_restart(sig: list[float], kind: str, options: dict) -> int:
    """Two calls per Heun segment of the restart plan, one on a segment ending at 0."""
    return sum(1 if b == 0 else 2 for _, b in restart_segments(sig, options.get("restart_list")))
