"""Sampler options (name, type, allowed values) and the guidance modes: the limits the guard and the engine share.

An option means the same thing in every sampler that takes it (eta scales injected noise everywhere); where one
sampler allows a narrower range (``order`` is 2 or 3 for dpm_adaptive, 1..6 for lms), its catalog entry narrows
the shared spec. ``option_problems`` is the one check: the guard turns its messages into findings at plan time,
the engine raises them, so nothing the guard accepts is refused later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

# Classifier-free guidance modes (the guidance formula, independent of the sampler):
CFG_VARIANTS: tuple[str, ...] = ("cfg", "cfg_pp", "cfg_zero_star", "apg")
CFG_VARIANT_DOCS = {
    "cfg": "classifier-free guidance, uncond + scale x (cond - uncond) (Ho & Salimans 2022)",
    "cfg_pp": "CFG++ (Chung et al. 2024, arXiv 2406.08070): renoise with the unconditional prediction; needs a "
              "*_cfg_pp sampler",
    "cfg_zero_star": "CFG-Zero* (Fan et al. 2025, arXiv 2503.18886): optimised scale, zeroed first steps",
    "apg": "adaptive projected guidance (Sadat et al. 2024, arXiv 2410.02416)",
}


@dataclass(frozen=True)
class OptionSpec:
    """One sampler option: its type ("float", "int", "bool", "choice", "restart_list"), bounds, choices."""

    name: str
    kind: str
    doc: str
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # inclusive
    low_open: bool = False
    choices: tuple[str, ...] = ()

    def narrowed(self, **bounds: Any) -> "OptionSpec":
        """The same option with a sampler's narrower bounds or choices."""
        return replace(self, **bounds)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if self.kind == "choice":
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}, got {value!r}"
        if self.kind == "restart_list":
            return _restart_list_problem(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        if self.kind == "int" and value != int(value):
            return f"must be a whole number, got {value!r}"
        if math.isnan(value) or (math.isinf(value) and self.high is not None):
            return f"must be a finite number, got {value!r}"
        return self._bounds_problem(float(value))

    def _bounds_problem(self, v: float) -> str | None:
        lo_ok = self.low is None or (v > self.low if self.low_open else v >= self.low)
        hi_ok = self.high is None or v <= self.high
        if lo_ok and hi_ok:
            return None
        lo = "" if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
        hi = "" if self.high is None else f"<= {self.high:g}"
        return f"must be {' and '.join(b for b in (lo, hi) if b)}, got {v:g}"

    def describe(self) -> str:
        """'float >= 0', 'int 1..6', 'midpoint|heun' — for `iga samplers --long`."""
        if self.kind == "choice":
            return "|".join(self.choices)
        if self.kind in ("bool", "restart_list"):
            return self.kind
        if self.low is not None and self.high is not None:
            return f"{self.kind} {self.low:g}..{self.high:g}" + (" (low excluded)" if self.low_open else "")
        if self.low is not None:
            return f"{self.kind} {'>' if self.low_open else '>='} {self.low:g}"
        return self.kind


def _restart_list_problem(value: Any) -> str | None:
    """Restart's {sigma_step: [restart_steps, restart_times, max_sigma]} (Xu et al. 2023)."""
    if not isinstance(value, Mapping):
        return f"must map a step to [restart_steps, restart_times, max_sigma], got {value!r}"
    for key, val in value.items():
        if not isinstance(val, (list, tuple)) or len(val) != 3:
            return f"entry {key}: values are [restart_steps, restart_times, max_sigma], got {val!r}"
        steps, times, _ = val
        if not isinstance(steps, int) or not isinstance(times, int) or steps < 2 or times < 0:
            return f"entry {key}: restart_steps must be an integer >= 2 and restart_times an integer >= 0"
    return None


_F = OptionSpec
# Shared meanings; a sampler's catalog entry may narrow them (see SAMPLER_OPTIONS).
OPTIONS: dict[str, OptionSpec] = {o.name: o for o in (
    _F("eta", "float", "scale of the noise injected per step (0: deterministic)", 0.0, 100.0),
    _F("s_noise", "float", "scale of the injected noise's standard deviation", 0.0, 100.0),
    _F("s_churn", "float", "Karras et al. churn: noise added per step (0: none)", 0.0, None),
    _F("s_tmin", "float", "churn only at sigma >= s_tmin", 0.0, None),
    _F("s_tmax", "float", "churn only at sigma <= s_tmax", 0.0, None),
    _F("order", "int", "order of the multistep / adaptive formula", 1.0, 6.0),
    _F("max_order", "int", "highest order of the multistep formula", 1.0, 4.0),
    _F("r", "float", "position of the intermediate stage, as a fraction of the step in log-SNR", 0.0, 1.0,
       low_open=True),
    _F("solver_type", "choice", "second-order correction of the 2M SDE solver", choices=("midpoint", "heun")),
    _F("rtol", "float", "relative error tolerance of the adaptive solver", 0.0, None, low_open=True),
    _F("atol", "float", "absolute error tolerance of the adaptive solver", 0.0, None, low_open=True),
    _F("h_init", "float", "first step size (log-SNR) of the adaptive solver", 0.0, None, low_open=True),
    _F("pcoeff", "float", "PID step-size controller: proportional gain", None, None),
    _F("icoeff", "float", "PID step-size controller: integral gain", None, None),
    _F("dcoeff", "float", "PID step-size controller: derivative gain", None, None),
    _F("accept_safety", "float", "accept a step when its error is below this fraction of the tolerance", 0.0, 1.0,
       low_open=True),
    _F("max_nfe", "int", "stop the adaptive solver after this many model calls", 1.0, 100_000.0),
    _F("lower_order_final", "bool", "UniPC: lower the order on the last steps (stabler at few steps)"),
    _F("restart_list", "restart_list", "restart schedule {step: [restart_steps, restart_times, max_sigma]}"),
    _F("ge_gamma", "float", "gradient estimation: weight gamma of the slope-change term (1: Euler)", 0.0, 100.0),
    _F("max_stage", "int", "ER-SDE: highest stage (number of past model outputs used + 1)", 1.0, 3.0),
    _F("r_1", "float", "SEEDS-3: position of the first intermediate stage, as a fraction of the step in log-SNR",
       0.0, 1.0, low_open=True),
    _F("r_2", "float", "SEEDS-3: position of the second intermediate stage, as a fraction of the step in log-SNR",
       0.0, 1.0, low_open=True),
    _F("predictor_order", "int", "SA-Solver: highest order of the predictor", 1.0, 6.0),
    _F("corrector_order", "int", "SA-Solver: highest order of the corrector (0: no corrector)", 0.0, 6.0),
    _F("sde_start_percent", "float", "SA-Solver: noise from this fraction of the model's noise range on", 0.0, 1.0),
    _F("sde_end_percent", "float", "SA-Solver: noise up to this fraction of the model's noise range", 0.0, 1.0),
    _F("simple_order_2", "bool", "SA-Solver: the paper's simplified weights when two nodes are used"),
)}


def option_spec(sampler_options: Mapping[str, OptionSpec], name: str) -> OptionSpec | None:
    """A sampler's spec for option ``name`` (its narrowed one, else None when it does not take it)."""
    return sampler_options.get(name)


def option_problems(sampler: str, sampler_options: Mapping[str, OptionSpec],
                    options: Mapping[str, Any]) -> dict[str, str]:
    """option -> what is wrong with it, for every option a sampler does not take or whose value it refuses."""
    problems = {}
    for name, value in options.items():
        spec = sampler_options.get(name)
        if spec is None:
            takes = ", ".join(sorted(sampler_options)) or "none"
            why = "injects no noise" if name == "eta" else f"does not take option {name!r}"
            problems[name] = f"{sampler} {why} (it takes: {takes})"
            continue
        bad = spec.problem(value)
        if bad:
            problems[name] = f"{sampler}: option {name} {bad}"
    return problems


# Where a sampler allows less than the shared spec (its formula has no higher order, r must be <= 1, ...).
NARROWED: dict[tuple[str, str], dict[str, Any]] = {
    ("dpm_adaptive", "order"): {"low": 2.0, "high": 3.0},
    ("uni_pc", "order"): {"high": 3.0},
    ("uni_pc_bh2", "order"): {"high": 3.0},
    ("uni_pc_diffusers", "order"): {"high": 3.0},
    ("uni_pc_bh2_diffusers", "order"): {"high": 3.0},
}


def sampler_options(sampler: str, names: tuple[str, ...]) -> dict[str, OptionSpec]:
    """The option specs of a sampler that takes ``names`` (shared meanings, narrowed where it allows less)."""
    out = {}
    for name in names:
        spec = OPTIONS[name]
        narrow = NARROWED.get((sampler, name))
        out[name] = spec.narrowed(**narrow) if narrow else spec
    return out
