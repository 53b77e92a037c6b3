"""Training noise schedules and the wrappers that turn a raw network into a denoiser ``D(x, sigma)``.

Two families:

* **Discrete VP** (SD1/SD2/SDXL): ``x = x0 + sigma * eps`` in sigma space; the network sees
  ``x_in = x / sqrt(sigma^2 + 1)`` and an integer-indexed (here: fractional) training timestep.
  :class:`DiscreteVPSchedule` holds ``alphas_cumprod`` (float64) and the float32 sigma table
  ``sigma_t = sqrt((1 - abar_t) / abar_t)`` that ComfyUI, k-diffusion and diffusers all use.
* **Rectified flow** (SD3/Flux style): ``x = (1 - sigma) * x0 + sigma * eps`` with sigma in [0, 1];
  the network sees ``x`` unchanged and ``t = sigma * multiplier`` and predicts the velocity
  ``v = eps - x0``. :class:`FlowSchedule` holds the shift.

A *parameterization* (``VPParameterization``, ``FlowParameterization``) is the pure affine map between
the network's raw output and the denoised estimate; :class:`ModelDenoiser` couples it with a raw model
and conditioning. The CFG wrapper in ``iga.sampling.guidance`` uses the same parameterization objects,
so guidance works unchanged for VP and flow models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import numpy as np
import torch

from iga.sampling.base import Conditioning, ModelKind, RawModel

#: diffusers' clamp for the terminal alphas_cumprod of a zero-terminal-SNR schedule (``2**-24``); it keeps the
#: last sigma finite (``sigma_max ~= 4096``). ComfyUI's ``zsnr`` uses 4.8973451890853435e-08 instead.
DIFFUSERS_ZSNR_TERMINAL_ALPHA_CUMPROD = 2.0**-24
COMFY_ZSNR_TERMINAL_ALPHA_CUMPROD = 4.8973451890853435e-08

_MAX_TRAIN_TIMESTEPS = 100_000


class ScheduleConfigError(ValueError):
    """A training-schedule description is invalid (unknown kind, bad beta range, unknown key...)."""


# --------------------------------------------------------------------------------------------------------------
# Training beta schedules (float64 numpy)
# --------------------------------------------------------------------------------------------------------------


def betas_scaled_linear(beta_start: float, beta_end: float, n: int) -> np.ndarray:
    """SD's schedule (LDM "linear", diffusers "scaled_linear"): ``linspace(sqrt(b0), sqrt(b1), n)**2``."""
    return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), n, dtype=np.float64) ** 2


def betas_linear(beta_start: float, beta_end: float, n: int) -> np.ndarray:
    """DDPM's linear schedule: ``linspace(b0, b1, n)``."""
    return np.linspace(beta_start, beta_end, n, dtype=np.float64)


def betas_squaredcos_cap_v2(n: int, max_beta: float = 0.999) -> np.ndarray:
    """Improved-DDPM cosine schedule: ``abar(u) = cos((u + 0.008) / 1.008 * pi / 2)^2``, betas capped at 0.999."""
    u = np.arange(n + 1, dtype=np.float64) / n
    abar = np.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2024 (arXiv 2305.08891, Alg. 1): shift/scale sqrt(abar) so the last step has SNR 0.

    The first ``sqrt(abar)`` is kept, the last becomes exactly 0 (so the last beta is 1).
    """
    sqrt_abar = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


# --------------------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------------------


def _as_f64(v: torch.Tensor | float | np.ndarray) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.to(torch.float64)
    return torch.as_tensor(np.asarray(v, dtype=np.float64))


class DiscreteVPSchedule:
    """A discrete VP training schedule: ``alphas_cumprod`` (float64) and the float32 sigma table.

    ``sigmas[t]`` (ascending in t) is computed in float64 from ``alphas_cumprod`` and cast to float32, i.e.
    it is the exact value rounded once. diffusers and ComfyUI evaluate ``(1 - abar) / abar`` in float32,
    which loses digits where abar ~ 1: for SD their sigma_0 is 0.0291675 vs the exact 0.0291672 here
    (1.3e-5 relative at the small end, < 1e-6 relative above sigma ~ 0.6; invisible at 4 decimals).
    For a zero-terminal-SNR schedule ``alphas_cumprod[-1] == 0`` is kept exact, and only for the sigma
    table it is clamped to ``terminal_alpha_cumprod`` (default ``2**-24`` as diffusers; pass
    ``COMFY_ZSNR_TERMINAL_ALPHA_CUMPROD`` for ComfyUI's value), giving ``sigma_max ~= 4096``.

    ``sigma_to_t`` interpolates linearly in log-sigma between table entries and returns a fractional t
    (k-diffusion / diffusers Euler). With ``quantize=True`` it rounds to the nearest integer, which equals
    ComfyUI's ``argmin |log sigma - log sigma_t|`` and diffusers DPMSolver-with-Karras' ``.round()``.
    """

    kind: ModelKind = "vp"

    def __init__(
        self,
        alphas_cumprod: np.ndarray | torch.Tensor,
        *,
        quantize: bool = False,
        terminal_alpha_cumprod: float = DIFFUSERS_ZSNR_TERMINAL_ALPHA_CUMPROD,
        config: Mapping[str, Any] | None = None,
    ):
        abar = _as_f64(alphas_cumprod).flatten().cpu()
        n = abar.numel()
        if not 2 <= n <= _MAX_TRAIN_TIMESTEPS:
            raise ScheduleConfigError(f"alphas_cumprod must have 2..{_MAX_TRAIN_TIMESTEPS} entries, got {n}")
        if not torch.isfinite(abar).all() or (abar < 0).any() or (abar >= 1).any():
            raise ScheduleConfigError("alphas_cumprod must be finite and in [0, 1)")
        if not (abar[1:] < abar[:-1]).all():
            raise ScheduleConfigError("alphas_cumprod must be strictly decreasing (betas > 0)")
        if not 0.0 < terminal_alpha_cumprod < 1.0:
            raise ScheduleConfigError("terminal_alpha_cumprod must be in (0, 1)")
        self.alphas_cumprod = abar
        clamped = abar.clamp_min(terminal_alpha_cumprod)
        sig64 = ((1.0 - clamped) / clamped).sqrt()
        self.sigmas = sig64.to(torch.float32)
        if not (self.sigmas[1:] > self.sigmas[:-1]).all():
            raise ScheduleConfigError(
                "the float32 sigma table is not strictly increasing (alphas_cumprod entries too close or below "
                f"the terminal clamp {terminal_alpha_cumprod:g})"
            )
        self.log_sigmas = self.sigmas.to(torch.float64).log()
        self.num_train_timesteps = n
        self.quantize = bool(quantize)
        self.terminal_alpha_cumprod = float(terminal_alpha_cumprod)
        self.config: dict[str, Any] = dict(config or {})

    @classmethod
    def from_betas(cls, betas: np.ndarray | torch.Tensor, **kwargs: Any) -> DiscreteVPSchedule:
        """Build from a beta sequence (float64 cumulative product)."""
        b = np.asarray(betas.cpu().numpy() if isinstance(betas, torch.Tensor) else betas, dtype=np.float64)
        if b.ndim != 1 or not np.all(np.isfinite(b)) or np.any(b <= 0) or np.any(b > 1):
            raise ScheduleConfigError("betas must be a 1-D array of values in (0, 1]")
        return cls(np.cumprod(1.0 - b), **kwargs)

    @property
    def sigma_min(self) -> float:
        """Smallest table sigma (t = 0)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """Largest table sigma (t = N-1)."""
        return float(self.sigmas[-1])

    def with_quantize(self, quantize: bool) -> DiscreteVPSchedule:
        """Return a copy whose ``sigma_to_t`` rounds (or not) to integer timesteps."""
        other = object.__new__(DiscreteVPSchedule)
        other.__dict__.update(self.__dict__)
        other.quantize = bool(quantize)
        return other

    def _table_on(self, device: torch.device) -> tuple[torch.Tensor, torch.dtype]:
        """log-sigma table on a device (cached), float64 where the device supports it."""
        dtype = torch.float32 if device.type == "mps" else torch.float64
        key = (str(device), dtype)
        cache = self.__dict__.setdefault("_log_sigma_cache", {})
        if key not in cache:
            cache[key] = self.log_sigmas.to(device=device, dtype=dtype)
        return cache[key], dtype

    def _lookup_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype]:
        """(log-sigma table, its inner entries 1..N-2, the steps ls[k] - ls[k+1], dtype) on a device (cached).

        sigma_to_t runs once per model call; the precomputed pieces save it five tensor ops (~40% of its time)
        and give bit-identical results: searchsorted over the inner entries is the clamped interval index, and
        the step table holds the same float subtractions.
        """
        cache = self.__dict__.setdefault("_lookup_cache", {})
        hit = cache.get(device)
        if hit is None:
            ls, dtype = self._table_on(device)
            hit = cache[device] = (ls, ls[1:-1].contiguous(), ls[:-1] - ls[1:], dtype)
        return hit

    def sigma_to_t(self, sigma: torch.Tensor | float, quantize: bool | None = None) -> torch.Tensor:
        """Fractional training timestep for sigma (log-sigma linear interpolation, clamped to [0, N-1])."""
        s = torch.as_tensor(sigma)
        ls, inner, step, dtype = self._lookup_on(s.device)
        log_s = s.detach().to(dtype).clamp_min(torch.finfo(dtype).tiny).log()
        # = (searchsorted(ls, log_s, right=True) - 1).clamp(0, N - 2): the interval [ls[low], ls[low + 1]]
        low = torch.searchsorted(inner, log_s.contiguous(), right=True)
        w = ((ls[low] - log_s) / step[low]).clamp(0.0, 1.0)
        t = low.to(dtype) + w
        if self.quantize if quantize is None else quantize:
            t = t.round()
        return t.to(torch.float32)

    def t_to_sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """Sigma at a (fractional) timestep: log-sigma linear interpolation in the table."""
        tt = torch.as_tensor(t)
        ls, dtype = self._table_on(tt.device)
        t64 = tt.detach().to(dtype).clamp(0, self.num_train_timesteps - 1)
        low = t64.floor().long().clamp(max=self.num_train_timesteps - 2)
        w = t64 - low.to(dtype)
        return ((1.0 - w) * ls[low] + w * ls[low + 1]).exp().to(torch.float32)

    def __repr__(self) -> str:
        return (
            f"DiscreteVPSchedule(N={self.num_train_timesteps}, sigma_min={self.sigma_min:.6g}, "
            f"sigma_max={self.sigma_max:.6g}, quantize={self.quantize})"
        )


class FlowSchedule:
    """Rectified-flow schedule: sigma in [0, 1], ``x = (1 - sigma) x0 + sigma eps``, SD3-style shift.

    ``shift_sigma(u) = s u / (1 + (s - 1) u)`` maps uniform time ``u`` to sigma. The table ``sigmas`` holds
    ``shift_sigma(k / N)`` for k = 1..N (ascending), so ``sigma_min = shift_sigma(1/N)`` and ``sigma_max = 1``.

    ``sigma_to_t(sigma) = sigma * multiplier`` is the timestep the network is fed (diffusers
    ``FlowMatchEulerDiscreteScheduler`` and ComfyUI ``ModelSamplingDiscreteFlow``), while
    ``t_to_sigma(t) = shift_sigma(t / multiplier)`` applies the shift to an *unshifted* time. With
    ``shift != 1`` the two are therefore NOT inverses -- deliberately: both tools build their flow
    schedules as ``shift(linspace(sigma_to_t(sigma_max), sigma_to_t(sigma_min)) / multiplier)``, which
    shifts the low end twice; using the same pair reproduces their sigma lists exactly.
    ``time_to_sigma``/``sigma_to_time`` are the exact inverse pair on [0, 1].
    """

    kind: ModelKind = "flow"

    def __init__(
        self,
        shift: float = 1.0,
        multiplier: float = 1000.0,
        num_train_timesteps: int = 1000,
        config: Mapping[str, Any] | None = None,
    ):
        if not (math.isfinite(shift) and shift > 0):
            raise ScheduleConfigError(f"flow shift must be a positive finite number, got {shift!r}")
        if not (math.isfinite(multiplier) and multiplier > 0):
            raise ScheduleConfigError(f"flow multiplier must be a positive finite number, got {multiplier!r}")
        if not 2 <= int(num_train_timesteps) <= _MAX_TRAIN_TIMESTEPS:
            raise ScheduleConfigError(f"num_train_timesteps must be in 2..{_MAX_TRAIN_TIMESTEPS}")
        self.shift = float(shift)
        self.multiplier = float(multiplier)
        self.num_train_timesteps = int(num_train_timesteps)
        u = torch.arange(1, self.num_train_timesteps + 1, dtype=torch.float64) / self.num_train_timesteps
        self.sigmas = self.time_to_sigma(u).to(torch.float32)
        self.quantize = False
        self.config: dict[str, Any] = dict(config or {})

    def time_to_sigma(self, u: torch.Tensor | float) -> torch.Tensor:
        """The shift: ``s u / (1 + (s - 1) u)`` (dtype of the input, float64 for Python numbers)."""
        u = torch.as_tensor(u, dtype=torch.float64) if not isinstance(u, torch.Tensor) else u
        return self.shift * u / (1.0 + (self.shift - 1.0) * u)

    def sigma_to_time(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Inverse of the shift: ``u = sigma / (s - (s - 1) sigma)``."""
        s = torch.as_tensor(sigma, dtype=torch.float64) if not isinstance(sigma, torch.Tensor) else sigma
        return s / (self.shift - (self.shift - 1.0) * s)

    @property
    def sigma_min(self) -> float:
        """``shift_sigma(1 / N)``."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """Always 1."""
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor | float, quantize: bool | None = None) -> torch.Tensor:
        """The network's timestep: ``sigma * multiplier`` (float32)."""
        s = torch.as_tensor(sigma)
        return (s.to(torch.float64) * self.multiplier).to(torch.float32)

    def t_to_sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """``shift_sigma(t / multiplier)`` (see the class docstring on why this is not sigma_to_t's inverse)."""
        tt = torch.as_tensor(t)
        return self.time_to_sigma(tt.to(torch.float64) / self.multiplier).to(torch.float32)

    def __repr__(self) -> str:
        return f"FlowSchedule(shift={self.shift:g}, multiplier={self.multiplier:g}, N={self.num_train_timesteps})"


TrainingSchedule = DiscreteVPSchedule | FlowSchedule

_VP_KINDS = ("scaled_linear", "linear", "squaredcos_cap_v2")
_VP_KEYS = {"kind", "beta_start", "beta_end", "num_train_timesteps", "zero_terminal_snr", "terminal_alpha_cumprod",
            "quantize"}
_FLOW_KEYS = {"kind", "shift", "multiplier", "num_train_timesteps"}
_DEFAULT_BETAS = {"scaled_linear": (0.00085, 0.012), "linear": (0.0001, 0.02)}


def _num(d: Mapping[str, Any], key: str, default: float) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ScheduleConfigError(f"training_schedule.{key} must be a finite number, got {v!r}")
    return float(v)


def schedule_from_config(d: Mapping[str, Any]) -> TrainingSchedule:
    """Build a schedule from a recipe's ``training_schedule`` dict.

    VP: ``{"kind": "scaled_linear"|"linear"|"squaredcos_cap_v2", "beta_start", "beta_end",
    "num_train_timesteps", "zero_terminal_snr", ["terminal_alpha_cumprod"], ["quantize"]}``
    (missing betas default to SD's 0.00085/0.012 for scaled_linear and DDPM's 1e-4/0.02 for linear).
    Flow: ``{"kind": "flow", "shift": 1.0, "multiplier": 1000, "num_train_timesteps": 1000}``.
    Unknown keys are an error (a silently ignored key could change the math).
    """
    if not isinstance(d, Mapping):
        raise ScheduleConfigError(f"training_schedule must be a mapping, got {type(d).__name__}")
    kind = d.get("kind")
    if kind == "flow":
        unknown = set(d) - _FLOW_KEYS
        if unknown:
            raise ScheduleConfigError(f"unknown key(s) {sorted(unknown)} in flow training_schedule; "
                                      f"allowed: {sorted(_FLOW_KEYS)}")
        n = d.get("num_train_timesteps", 1000)
        if isinstance(n, bool) or not isinstance(n, int):
            raise ScheduleConfigError(f"training_schedule.num_train_timesteps must be an integer, got {n!r}")
        return FlowSchedule(_num(d, "shift", 1.0), _num(d, "multiplier", 1000.0), n, config=dict(d))
    if kind not in _VP_KINDS:
        raise ScheduleConfigError(
            f"unknown training_schedule.kind {kind!r}; expected one of {list(_VP_KINDS) + ['flow']}"
        )
    unknown = set(d) - _VP_KEYS
    if unknown:
        raise ScheduleConfigError(
            f"unknown key(s) {sorted(unknown)} in training_schedule; allowed: {sorted(_VP_KEYS)}"
        )
    n = d.get("num_train_timesteps", 1000)
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= _MAX_TRAIN_TIMESTEPS:
        raise ScheduleConfigError(
            f"training_schedule.num_train_timesteps must be an integer in 2..{_MAX_TRAIN_TIMESTEPS}, got {n!r}"
        )
    zsnr = d.get("zero_terminal_snr", False)
    quantize = d.get("quantize", False)
    for key, val in (("zero_terminal_snr", zsnr), ("quantize", quantize)):
        if not isinstance(val, bool):
            raise ScheduleConfigError(f"training_schedule.{key} must be true or false, got {val!r}")
    if kind == "squaredcos_cap_v2":
        betas = betas_squaredcos_cap_v2(n)
    else:
        b0_default, b1_default = _DEFAULT_BETAS[kind]
        b0, b1 = _num(d, "beta_start", b0_default), _num(d, "beta_end", b1_default)
        if not 0.0 < b0 < b1 < 1.0:
            raise ScheduleConfigError(f"need 0 < beta_start < beta_end < 1, got beta_start={b0}, beta_end={b1}")
        betas = betas_scaled_linear(b0, b1, n) if kind == "scaled_linear" else betas_linear(b0, b1, n)
    if zsnr:
        betas = rescale_zero_terminal_snr(betas)
    terminal = _num(d, "terminal_alpha_cumprod", DIFFUSERS_ZSNR_TERMINAL_ALPHA_CUMPROD)
    abar = np.cumprod(1.0 - betas)
    if zsnr:
        abar[-1] = 0.0  # exact zero, not the ~1e-17 rounding residue
    return DiscreteVPSchedule(abar, quantize=quantize, terminal_alpha_cumprod=terminal, config=dict(d))


def sd_schedule(**overrides: Any) -> DiscreteVPSchedule:
    """SD1/SD2/SDXL's schedule (scaled_linear 0.00085 -> 0.012, 1000 steps), with optional config overrides."""
    cfg: dict[str, Any] = {"kind": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                           "num_train_timesteps": 1000, "zero_terminal_snr": False}
    cfg.update(overrides)
    sched = schedule_from_config(cfg)
    assert isinstance(sched, DiscreteVPSchedule)
    return sched


# --------------------------------------------------------------------------------------------------------------
# Parameterizations and denoisers
# --------------------------------------------------------------------------------------------------------------


def _sigma_batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Per-image sigma as a float32 tensor of shape [B] on x's device."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    if s.ndim == 0 or s.numel() == 1:
        return s.reshape(1).expand(x.shape[0])
    if s.ndim != 1 or s.shape[0] != x.shape[0]:
        raise ValueError(f"sigma must be a scalar or have shape [B]=[{x.shape[0]}], got {tuple(s.shape)}")
    return s


def _bcast(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return s.reshape(-1, *([1] * (x.ndim - 1)))


class ModelParameterization(Protocol):
    """The affine map between a network's raw output and the denoised estimate, plus its inputs."""

    kind: ModelKind
    prediction: str  # "eps" | "v" | "x0" | "flow"

    def model_inputs(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x_in, t)`` for the network from sigma-space x and per-image sigma [B]."""
        ...

    def to_denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Raw output -> denoised estimate (x0)."""
        ...

    def to_prediction(self, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """Denoised estimate -> raw output (the inverse of ``to_denoised``; needs sigma > 0 for eps/v/flow)."""
        ...


class VPParameterization:
    """VP model in sigma space: ``x_in = x / sqrt(sigma^2 + 1)``, ``t = schedule.sigma_to_t(sigma)``.

    With ``a = 1/sqrt(sigma^2+1)`` and ``s = sigma/sqrt(sigma^2+1)`` (so ``x_in = a x0 + s eps``):

    * eps:  ``x0 = x - sigma * eps``
    * v:    ``v = a eps - s x0``  =>  ``x0 = a x_in - s v = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v``
    * x0:   ``x0 = out``
    """

    kind: ModelKind = "vp"

    def __init__(self, schedule: Any, prediction: Literal["eps", "v", "x0"] = "eps"):
        if prediction not in ("eps", "v", "x0"):
            raise ValueError(f"VP prediction must be 'eps', 'v' or 'x0', got {prediction!r} "
                             "(use FlowParameterization for flow models)")
        if not hasattr(schedule, "sigma_to_t"):
            raise TypeError("schedule must provide sigma_to_t(sigma)")
        self.schedule = schedule
        self.prediction = prediction

    def model_inputs(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x / sqrt(sigma^2 + 1), sigma_to_t(sigma))``."""
        c_in = _bcast((sigma.to(torch.float32) ** 2 + 1.0).rsqrt(), x)
        return (x * c_in).to(x.dtype), self.schedule.sigma_to_t(sigma)

    def to_denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Raw eps/v/x0 output -> x0."""
        s = _bcast(sigma.to(torch.float32), x)
        out = out.to(torch.promote_types(x.dtype, torch.float32))
        if self.prediction == "eps":
            d = x - s * out
        elif self.prediction == "v":
            d = x / (s**2 + 1.0) - s * (s**2 + 1.0).rsqrt() * out
        else:
            d = out
        return d.to(x.dtype)

    def to_prediction(self, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """x0 -> raw eps/v/x0 output (inverse of ``to_denoised``)."""
        s = _bcast(sigma.to(torch.float32), x)
        denoised = denoised.to(torch.promote_types(x.dtype, torch.float32))
        if self.prediction == "eps":
            p = (x - denoised) / s
        elif self.prediction == "v":
            p = (x / (s**2 + 1.0) - denoised) * (s**2 + 1.0).sqrt() / s
        else:
            p = denoised
        return p.to(x.dtype)


class FlowParameterization:
    """Rectified-flow velocity model: ``x_in = x``, ``t = sigma * multiplier``, ``x0 = x - sigma * v``."""

    kind: ModelKind = "flow"
    prediction = "flow"

    def __init__(self, schedule: FlowSchedule):
        if not hasattr(schedule, "sigma_to_t"):
            raise TypeError("schedule must provide sigma_to_t(sigma)")
        self.schedule = schedule

    def model_inputs(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, sigma * multiplier)``."""
        return x, self.schedule.sigma_to_t(sigma)

    def to_denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Velocity -> x0."""
        s = _bcast(sigma.to(torch.float32), x)
        return (x - s * out.to(torch.promote_types(x.dtype, torch.float32))).to(x.dtype)

    def to_prediction(self, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """x0 -> velocity."""
        s = _bcast(sigma.to(torch.float32), x)
        return ((x - denoised.to(torch.promote_types(x.dtype, torch.float32))) / s).to(x.dtype)


def make_parameterization(prediction: str, schedule: Any) -> VPParameterization | FlowParameterization:
    """``"flow"`` -> FlowParameterization, ``"eps"/"v"/"x0"`` -> VPParameterization."""
    if prediction == "flow":
        return FlowParameterization(schedule)
    return VPParameterization(schedule, prediction)  # type: ignore[arg-type]


def _check_cond(cond: Conditioning, batch: int, where: str) -> Conditioning:
    """Expand batch-1 conditioning to the image batch; refuse mismatched batches."""
    out: Conditioning = {}
    for key, val in cond.items():
        if not isinstance(val, torch.Tensor) or val.ndim == 0:
            raise TypeError(f"{where}[{key!r}] must be a batch-first tensor")
        if val.shape[0] == batch:
            out[key] = val
        elif val.shape[0] == 1:
            out[key] = val.expand(batch, *val.shape[1:])
        else:
            raise ValueError(f"{where}[{key!r}] has batch {val.shape[0]}, but x has batch {batch} (or use batch 1)")
    return out


class ModelDenoiser:
    """``D(x, sigma)`` for one conditioning: one raw-model call per evaluation (``nfe`` += 1)."""

    def __init__(self, raw: RawModel, param: ModelParameterization, cond: Conditioning | None = None):
        self.raw = raw
        self.param = param
        self.cond: Conditioning = dict(cond or {})
        self.kind: ModelKind = param.kind
        self.prediction: str = param.prediction
        self.nfe = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Denoised estimate of x at per-image sigma."""
        s = _sigma_batch(sigma, x)
        x_in, t = self.param.model_inputs(x, s)
        out = self.raw(x_in, t, _check_cond(self.cond, x.shape[0], "cond"))
        self.nfe += 1
        return self.param.to_denoised(x, s, out)


class VPDenoiser(ModelDenoiser):
    """A VP (eps / v / x0) network as a denoiser."""

    def __init__(self, raw: RawModel, schedule: Any, prediction: Literal["eps", "v", "x0"] = "eps",
                 cond: Conditioning | None = None):
        super().__init__(raw, VPParameterization(schedule, prediction), cond)


class FlowDenoiser(ModelDenoiser):
    """A rectified-flow velocity network as a denoiser."""

    def __init__(self, raw: RawModel, schedule: FlowSchedule, cond: Conditioning | None = None):
        super().__init__(raw, FlowParameterization(schedule), cond)
