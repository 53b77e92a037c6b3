"""The name table: canonical sampler and schedule identifiers and every spelling other tools use for them.

Canonical names follow ComfyUI's lowercase identifiers. Aliases cover A1111 display labels (``Euler a``,
``DPM++ 2M``), A1111 API aliases (``k_dpmpp_2m``), InvokeAI ids (``euler_a``, ``dpmpp_2m_k``), legacy
combined labels (``DPM++ 2M Karras`` -> sampler + schedule) and diffusers scheduler classes with their flags.

Where one name means different maths in different tools, the canonical name means **ComfyUI's** variant and
the entry's ``variant`` note says how the others differ (beta, kl_optimal, ays, dpmpp_3m_sde).
Sources: ``shared/reference/samplers.md`` sections 1-4.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any


class UnknownNameError(ValueError):
    """A sampler or schedule name that the table does not know; lists the closest matches."""

    def __init__(self, kind: str, name: str, suggestions: list[str]):
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Run `iga {kind}s` to list every {kind} iga knows.")
        self.kind, self.name, self.suggestions = kind, name, suggestions


@dataclass(frozen=True)
class SamplerName:
    """One sampler: its canonical id, the names other tools use, and the properties it declares."""

    name: str
    a1111_label: str | None
    order: int  # measured global order of a whole run (start-up and final steps included), as iga declares it
    nfe_per_step: int  # model calls per ordinary step; dpm_adaptive is 0 (adaptive)
    stochastic: bool
    a1111_default_schedule: str = "normal"  # what A1111's "Automatic" schedule type means for it
    aliases: tuple[str, ...] = ()
    diffusers: str | None = None  # scheduler class
    diffusers_flags: dict[str, Any] = field(default_factory=dict)
    variant: str = ""  # how tools differ, when they do
    description: str = ""
    formula_order: int | None = None  # order of the repeating update when it exceeds the global order


@dataclass(frozen=True)
class ScheduleName:
    """One schedule (sigma spacing): canonical id, other tools' names, and the diffusers flags that match it."""

    name: str
    a1111_label: str | None
    aliases: tuple[str, ...] = ()
    diffusers_flags: dict[str, Any] | None = None  # None: diffusers has no equivalent
    variant: str = ""
    description: str = ""


_S = SamplerName
SAMPLERS: tuple[SamplerName, ...] = (
    _S("euler", "Euler", 1, 1, False, aliases=("k_euler",), diffusers="EulerDiscreteScheduler",
       description="Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 2)."),
    _S("euler_ancestral", "Euler a", 1, 1, True, aliases=("k_euler_a", "k_euler_ancestral", "euler_a"),
       diffusers="EulerAncestralDiscreteScheduler", description="Euler step down to sigma_down, then fresh noise."),
    _S("euler_cfg_pp", "Euler CFG++", 1, 1, False, description="Euler with CFG++ renoising (Chung et al. 2024)."),
    _S("euler_ancestral_cfg_pp", "Euler a CFG++", 1, 1, True, description="Euler ancestral with CFG++ renoising."),
    _S("heun", "Heun", 2, 2, False, aliases=("k_heun",), diffusers="HeunDiscreteScheduler",
       description="Heun's 2nd-order method (Karras et al. 2022, Alg. 1); the last step is Euler."),
    _S("heunpp2", "Heun++ 2", 1, 3, False, description="Heun++: three-stage Heun variant."),
    _S("dpm_2", "DPM2", 2, 2, False, "karras", aliases=("k_dpm_2", "kdpm_2"),
       diffusers="KDPM2DiscreteScheduler",
       description="DPM-Solver-2 midpoint in log-sigma (not DPM++ 2M); ComfyUI drops the penultimate sigma."),
    _S("dpm_2_ancestral", "DPM2 a", 2, 2, True, "karras", aliases=("k_dpm_2_a", "kdpm_2_a"),
       diffusers="KDPM2AncestralDiscreteScheduler", description="DPM2 with ancestral noise."),
    _S("lms", "LMS", 2, 1, False, aliases=("k_lms",), formula_order=4,
       variant="canonical = ComfyUI (the step to sigma 0 is x = D); k-diffusion (A1111) and diffusers "
               "LMSDiscreteScheduler integrate the polynomial down to 0: that is `lms_exact`.",
       description="Linear multistep (order 4) on the ODE in sigma."),
    _S("lms_exact", None, 2, 1, False, aliases=("lms_a1111", "lms_diffusers"), diffusers="LMSDiscreteScheduler",
       formula_order=4, description="Linear multistep with the Adams-Bashforth step also on the step to sigma 0."),
    _S("dpm_fast", "DPM fast", 2, 1, False, aliases=("k_dpm_fast",),
       formula_order=3, description="DPM-Solver-fast: a fixed NFE budget of `steps` split into 3rd/2nd/1st-order stages."),
    _S("dpm_adaptive", "DPM adaptive", 3, 0, False, aliases=("k_dpm_ad", "k_dpm_adaptive"),
       description="DPM-Solver-12/23 with adaptive step size; ignores the schedule's shape."),
    _S("dpmpp_2s_ancestral", "DPM++ 2S a", 2, 2, True, "karras", aliases=("k_dpmpp_2s_a",),
       description="DPM-Solver++(2S) single-step with ancestral noise."),
    _S("dpmpp_sde", "DPM++ SDE", 2, 2, True, "karras", aliases=("k_dpmpp_sde",),
       diffusers="DPMSolverSDEScheduler", description="DPM-Solver++ SDE (r=1/2) with Brownian-tree noise."),
    _S("dpmpp_2m", "DPM++ 2M", 2, 1, False, "karras", aliases=("k_dpmpp_2m",),
       diffusers="DPMSolverMultistepScheduler", diffusers_flags={"algorithm_type": "dpmsolver++", "solver_order": 2},
       description="DPM-Solver++(2M) multistep (Lu et al. 2022)."),
    _S("dpmpp_2m_cfg_pp", "DPM++ 2M CFG++", 2, 1, False, "karras", description="DPM++ 2M with CFG++ renoising."),
    _S("dpmpp_2m_sde", "DPM++ 2M SDE", 2, 1, True, "exponential", aliases=("k_dpmpp_2m_sde",),
       diffusers="DPMSolverMultistepScheduler",
       diffusers_flags={"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "midpoint"},
       variant="diffusers draws plain randn noise, not a Brownian tree: not bit-comparable with ComfyUI/A1111.",
       description="DPM-Solver++(2M) SDE, midpoint form, Brownian-tree noise."),
    _S("dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun", 2, 1, True, "exponential", aliases=("k_dpmpp_2m_sde_heun",),
       diffusers="DPMSolverMultistepScheduler",
       diffusers_flags={"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
       description="DPM-Solver++(2M) SDE, Heun form, Brownian-tree noise."),
    _S("dpmpp_3m_sde", "DPM++ 3M SDE", 2, 1, True, "exponential", aliases=("k_dpmpp_3m_sde",),
       diffusers="DPMSolverMultistepScheduler",
       diffusers_flags={"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
       variant="canonical = ComfyUI (keeps the penultimate sigma); A1111 discards it; diffusers is only approximate.",
       description="DPM-Solver++(3M) SDE with Brownian-tree noise."),
    _S("ddpm", "DDPM", 1, 1, True, diffusers="DDPMScheduler", description="Ancestral DDPM posterior step."),
    _S("ddim", "DDIM", 1, 1, False, "ddim_uniform", diffusers="DDIMScheduler",
       description="DDIM (eta=0 is Euler in sigma space for eps models); eta > 0 adds noise."),
    _S("lcm", "LCM", 0, 1, True, diffusers="LCMScheduler",
       description="Latent consistency sampling: denoise, then renoise to the next sigma."),
    _S("ipndm", "iPNDM", 2, 1, False,
       variant="canonical = ComfyUI (the step to sigma 0 is x = D); diffusers IPNDMScheduler takes the "
               "Adams-Bashforth step there too: that is `ipndm_diffusers`.",
       description="Improved pseudo-numerical (Adams-Bashforth, fixed coefficients)."),
    _S("ipndm_diffusers", None, 2, 1, False, diffusers="IPNDMScheduler",
       description="iPNDM with the Adams-Bashforth step also on the step to sigma 0 (diffusers)."),
    _S("ipndm_v", "iPNDM v", 2, 1, False, formula_order=3,
       variant="ComfyUI's = zju-pi/diff-sampler's weights, which are not the exact variable-step Adams-Bashforth "
               "ones beyond 2nd order; the exact form is `lms` / `lms_exact`.",
       description="iPNDM with step-size-aware Adams-Bashforth coefficients (diff-sampler's formula)."),
    _S("deis", "DEIS", 2, 1, False, diffusers="DEISMultistepScheduler", formula_order=3,
       variant="canonical = ComfyUI (tAB: polynomial in the time of a VP-SDE fitted to EDM's range); diffusers' "
               "DEISMultistepScheduler is log-rho DEIS, equal only at order 1.",
       description="Diffusion exponential integrator sampler (Zhang & Chen 2022), order <= 3."),
    _S("uni_pc", "UniPC", 2, 1, False, aliases=("unipc", "uni_pc_bh1"), formula_order=4,
       variant="canonical = ComfyUI/A1111 (original UniPC code: a final sigma 0 becomes 1e-3); diffusers' "
               "UniPCMultistepScheduler ends with x = D: that is `uni_pc_diffusers`.",
       description="UniPC predictor-corrector, B(h)=h (bh1)."),
    _S("uni_pc_bh2", "UniPC BH2", 2, 1, False, formula_order=4,
       variant="canonical = ComfyUI (ends at sigma 1e-3); diffusers' form is `uni_pc_bh2_diffusers`.",
       description="UniPC predictor-corrector, B(h)=e^h-1 (bh2)."),
    _S("uni_pc_diffusers", None, 2, 1, False, diffusers="UniPCMultistepScheduler",
       diffusers_flags={"solver_type": "bh1"}, formula_order=4,
       description="UniPC bh1 as diffusers runs it: the step to sigma 0 is x = D."),
    _S("uni_pc_bh2_diffusers", None, 2, 1, False, diffusers="UniPCMultistepScheduler",
       diffusers_flags={"solver_type": "bh2"}, formula_order=4,
       description="UniPC bh2 as diffusers runs it: the step to sigma 0 is x = D."),
    _S("res_multistep", "RES multistep", 2, 1, False, description="Refined exponential solver, multistep."),
    _S("restart", "Restart", 2, 2, True, "karras",
       description="Restart sampling (Xu et al. 2023): Heun steps with forward-noised restart segments."),
    _S("dpmpp_2s_ancestral_cfg_pp", None, 2, 2, True, aliases=("DPM++ 2S a CFG++",),
       description="DPM++ 2S a with CFG++ renoising (ComfyUI)."),
    _S("dpmpp_sde_gpu", None, 2, 2, True, aliases=("DPM++ SDE GPU",),
       variant="the Brownian tree is generated on the model's device: equal to dpmpp_sde on the CPU, not on a GPU.",
       description="DPM++ SDE with its Brownian-tree noise generated on the model's device."),
    _S("dpmpp_2m_sde_gpu", None, 2, 1, True, aliases=("DPM++ 2M SDE GPU",),
       variant="the Brownian tree is generated on the model's device: equal to dpmpp_2m_sde on the CPU.",
       description="DPM++ 2M SDE with its Brownian-tree noise generated on the model's device."),
    _S("dpmpp_2m_sde_heun_gpu", None, 2, 1, True, aliases=("DPM++ 2M SDE Heun GPU",),
       variant="the Brownian tree is generated on the model's device: equal to dpmpp_2m_sde_heun on the CPU.",
       description="DPM++ 2M SDE Heun with its Brownian-tree noise generated on the model's device."),
    _S("dpmpp_3m_sde_gpu", None, 2, 1, True, aliases=("DPM++ 3M SDE GPU",),
       variant="the Brownian tree is generated on the model's device: equal to dpmpp_3m_sde on the CPU.",
       description="DPM++ 3M SDE with its Brownian-tree noise generated on the model's device."),
    _S("res_multistep_cfg_pp", None, 2, 1, False, aliases=("RES multistep CFG++",),
       description="RES multistep with CFG++ renoising (ComfyUI)."),
    _S("res_multistep_ancestral", None, 2, 1, True, description="RES multistep step to sigma_down, then fresh noise."),
    _S("res_multistep_ancestral_cfg_pp", None, 2, 1, True, description="Ancestral RES multistep with CFG++."),
    _S("gradient_estimation", None, 1, 1, False,
       description="Gradient estimation (Permenter & Yuan 2024): Euler plus a slope-change term (ge_gamma = 2)."),
    _S("gradient_estimation_cfg_pp", None, 1, 1, False, description="Gradient estimation with CFG++ renoising."),
    _S("er_sde", None, 1, 1, True, aliases=("ER-SDE",),
       description="Extended reverse-time SDE solver, ER-SDE-Solver-3 (Cui et al. 2023)."),
    _S("seeds_2", None, 2, 2, True, aliases=("SEEDS-2",),
       description="SEEDS-2 exponential SDE solver (Gonzalez et al. 2023), two stages."),
    _S("seeds_3", None, 3, 3, True, aliases=("SEEDS-3",),
       description="SEEDS-3 exponential SDE solver (Gonzalez et al. 2023), three stages."),
    _S("sa_solver", None, 3, 1, True, aliases=("SA-Solver",), formula_order=4,
       description="Stochastic Adams predictor-corrector (Xue et al. 2023), noise in a 20-80 % window."),
    _S("sa_solver_pece", None, 3, 2, True, aliases=("SA-Solver PECE",), formula_order=4,
       description="SA-Solver re-evaluating the model after each correction (PECE)."),
)

_H = ScheduleName
SCHEDULES: tuple[ScheduleName, ...] = (
    _H("normal", "Normal", aliases=("uniform", "Uniform", "linspace"),
       diffusers_flags={"timestep_spacing": "linspace"},
       variant="A1111 'Uniform' is the same spacing; diffusers 'linspace' interpolates sigma linearly in t "
               "(ComfyUI interpolates log sigma): close, not identical.",
       description="Timesteps evenly spaced from t(sigma_max) to t(sigma_min), then 0."),
    _H("karras", "Karras", diffusers_flags={"use_karras_sigmas": True},
       description="Karras et al. 2022 rho-spacing (rho=7) between sigma_max and sigma_min, then 0."),
    _H("exponential", "Exponential", diffusers_flags={"use_exponential_sigmas": True},
       description="Evenly spaced in log sigma, then 0."),
    _H("polyexponential", "Polyexponential", description="exp(r^rho (ln smax - ln smin) + ln smin), rho=1."),
    _H("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), diffusers_flags={"timestep_spacing": "trailing"},
       variant="diffusers 'trailing' equals 'simple' exactly and is only close to sgm_uniform.",
       description="Evenly spaced timesteps over n+1 points, last dropped, then 0 (SDXL-Lightning/Hyper)."),
    _H("simple", "Simple", aliases=("trailing",), diffusers_flags={"timestep_spacing": "trailing"},
       description="Every (1000/n)-th training sigma from the top, then 0 (= diffusers 'trailing')."),
    _H("ddim_uniform", "DDIM", aliases=("ddim_schedule", "leading"),
       diffusers_flags={"timestep_spacing": "leading", "steps_offset": 1},
       description="Stride 1000//n from t=1 upwards (= diffusers 'leading' with steps_offset=1), then 0."),
    _H("beta", "Beta",
       variant="canonical = ComfyUI (Beta(0.6,0.6) quantiles index the training sigma table); A1111 and diffusers "
               "use_beta_sigmas place sigmas linearly between sigma_min and sigma_max: that is `beta_linear`.",
       description="Beta-distribution spacing, alpha=beta=0.6 (Lee et al. 2024)."),
    _H("beta_linear", None, aliases=("beta_a1111", "beta_diffusers"), diffusers_flags={"use_beta_sigmas": True},
       description="A1111/diffusers beta schedule: sigma_min + Beta^-1 quantile x (sigma_max - sigma_min)."),
    _H("linear_quadratic", "Linear Quadratic",
       description="Linear then quadratic in (1 - sigma); meant for flow models (Mochi)."),
    _H("kl_optimal", "KL Optimal",
       variant="canonical = ComfyUI (n values then 0); A1111 returns n+1 values ending at sigma_min with no 0.",
       description="tan-spaced between atan(sigma_max) and atan(sigma_min) (Sabour et al. 2024)."),
    _H("ays", "Align Your Steps", aliases=("align_your_steps", "AYS"),
       variant="canonical = ComfyUI (interpolate the 11-value table log-linearly to n+1, last set to 0); A1111 "
               "interpolates to n and appends 0, so at 10 steps it does not use the table.",
       description="NVIDIA Align-Your-Steps tables for SD1 and SDXL, log-linear interpolation."),
    _H("turbo", "Turbo", aliases=("sd_turbo", "SDTurbo", "sdturbo"),
       description="ComfyUI SDTurboScheduler: timesteps 999, 899, ... (first n of 10), then 0."),
    _H("explicit", "Explicit grid", aliases=("grid", "custom"),
       description="The recipe's own sigma grid, monotonically subsampled for other step counts."),
)

# InvokeAI scheduler ids (SCHEDULER_MAP keys): `_k` means Karras sigmas.
_INVOKEAI = {
    "euler": ("euler", None), "euler_k": ("euler", "karras"), "euler_a": ("euler_ancestral", None),
    "heun": ("heun", None), "heun_k": ("heun", "karras"), "lms": ("lms", None), "lms_k": ("lms", "karras"),
    "dpmpp_2m": ("dpmpp_2m", None), "dpmpp_2m_k": ("dpmpp_2m", "karras"),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", None), "dpmpp_2m_sde_k": ("dpmpp_2m_sde", "karras"),
    "dpmpp_sde": ("dpmpp_sde", None), "dpmpp_sde_k": ("dpmpp_sde", "karras"),
    "dpmpp_3m": ("dpmpp_3m_sde", None), "dpmpp_3m_k": ("dpmpp_3m_sde", "karras"),
    "kdpm_2": ("dpm_2", None), "kdpm_2_k": ("dpm_2", "karras"), "kdpm_2_a": ("dpm_2_ancestral", None),
    "kdpm_2_a_k": ("dpm_2_ancestral", "karras"), "ddim": ("ddim", None), "ddpm": ("ddpm", None),
    "deis": ("deis", None), "deis_k": ("deis", "karras"), "unipc": ("uni_pc", None), "unipc_k": ("uni_pc", "karras"),
    "lcm": ("lcm", None),
}


def _key(name: str) -> str:
    """Fold a spelling to a lookup key: case, spaces, '_', '-', '.' and '++' vs 'pp' do not matter."""
    s = name.strip().lower().replace("++", "pp")
    return re.sub(r"[\s_\-.]+", "", s)


def _build_index(entries: tuple[Any, ...]) -> dict[str, Any]:
    index: dict[str, Any] = {}
    for e in entries:
        for spelling in (e.name, e.a1111_label, *e.aliases):
            if spelling:
                k = _key(spelling)
                if k in index and index[k] is not e:
                    raise AssertionError(f"name table: {spelling!r} is ambiguous")
                index[k] = e
    return index


_SAMPLER_INDEX = _build_index(SAMPLERS)
_SCHEDULE_INDEX = _build_index(SCHEDULES)
SAMPLER_NAMES: tuple[str, ...] = tuple(s.name for s in SAMPLERS)
SCHEDULE_NAMES: tuple[str, ...] = tuple(s.name for s in SCHEDULES)


def _suggest(name: str, entries: tuple[Any, ...]) -> list[str]:
    spellings = {}
    for e in entries:
        for sp in (e.name, e.a1111_label, *e.aliases):
            if sp:
                spellings.setdefault(_key(sp), e.name)
    close = difflib.get_close_matches(_key(name), list(spellings), n=6, cutoff=0.6)
    out: list[str] = []
    for c in close:
        if spellings[c] not in out:
            out.append(spellings[c])
    # a prefix match catches shortened names such as "dpmpp" that difflib scores low
    if not out:
        out = [e.name for e in entries if e.name.startswith(_key(name)[:4])][:6]
    return out[:4]


def sampler_info(name: str) -> SamplerName:
    """Look up a sampler by any spelling; raise UnknownNameError listing close matches."""
    e = _SAMPLER_INDEX.get(_key(name))
    if e is None:
        raise UnknownNameError("sampler", name, _suggest(name, SAMPLERS))
    return e


def schedule_info(name: str) -> ScheduleName:
    """Look up a schedule by any spelling; raise UnknownNameError listing close matches."""
    e = _SCHEDULE_INDEX.get(_key(name))
    if e is None:
        raise UnknownNameError("schedule", name, _suggest(name, SCHEDULES))
    return e


def resolve_schedule(name: str) -> str:
    """Canonical schedule name for any spelling."""
    return schedule_info(name).name


def resolve_sampler(name: str) -> str:
    """Canonical sampler name for a plain sampler spelling (use ``split_combined`` for 'DPM++ 2M Karras')."""
    return sampler_info(name).name


_LEGACY_SUFFIX = re.compile(r"^(k_.+?)_(ka|exp)$")


def split_combined(label: str) -> tuple[str, str | None]:
    """Split a sampler label that may carry a schedule ('DPM++ 2M Karras', 'k_dpmpp_2m_ka', 'dpmpp_2m_k').

    Returns (canonical sampler, canonical schedule or None). Plain sampler names return (name, None).
    """
    key = _key(label)
    if key in _SAMPLER_INDEX:
        return _SAMPLER_INDEX[key].name, None
    m = _LEGACY_SUFFIX.match(label.strip().lower())
    if m:  # A1111 v1.6 API aliases: k_dpmpp_2m_ka, k_dpmpp_2m_sde_exp
        return sampler_info(m.group(1)).name, "karras" if m.group(2) == "ka" else "exponential"
    inv = _INVOKEAI.get(label.strip().lower())
    if inv:
        return inv
    words = label.strip().split()
    # strip a trailing schedule label of one or two words ("SGM Uniform", "Align Your Steps" has three)
    for n in (1, 2, 3):
        if len(words) > n:
            head, tail = " ".join(words[:-n]), " ".join(words[-n:])
            if _key(tail) in _SCHEDULE_INDEX and _key(head) in _SAMPLER_INDEX:
                return _SAMPLER_INDEX[_key(head)].name, _SCHEDULE_INDEX[_key(tail)].name
    raise UnknownNameError("sampler", label, _suggest(label, SAMPLERS))


def a1111_labels(sampler: str, schedule: str) -> tuple[str, str]:
    """A1111 display labels ('Sampler', 'Schedule type') for canonical names; falls back to the canonical id."""
    s, h = sampler_info(sampler), schedule_info(schedule)
    return s.a1111_label or s.name, h.a1111_label or h.name


def from_diffusers(class_name: str, config: dict[str, Any] | None = None) -> tuple[str, str]:
    """Map a diffusers scheduler class and its config flags to (canonical sampler, canonical schedule)."""
    cfg = config or {}
    sampler: str | None = None
    if class_name == "DPMSolverMultistepScheduler":
        algo = cfg.get("algorithm_type", "dpmsolver++")
        order = int(cfg.get("solver_order", 2))
        if "sde" in algo:
            sampler = "dpmpp_3m_sde" if order >= 3 else (
                "dpmpp_2m_sde_heun" if cfg.get("solver_type") == "heun" else "dpmpp_2m_sde")
        else:
            sampler = "dpmpp_2m"
    elif class_name == "UniPCMultistepScheduler":
        sampler = "uni_pc_bh2_diffusers" if cfg.get("solver_type", "bh2") == "bh2" else "uni_pc_diffusers"
    else:
        for s in SAMPLERS:
            if s.diffusers == class_name:
                sampler = s.name
                break
    if sampler is None:
        known = sorted({s.diffusers for s in SAMPLERS if s.diffusers})
        raise UnknownNameError("sampler", class_name, difflib.get_close_matches(class_name, known, n=3))
    if cfg.get("use_karras_sigmas"):
        schedule = "karras"
    elif cfg.get("use_exponential_sigmas"):
        schedule = "exponential"
    elif cfg.get("use_beta_sigmas"):
        schedule = "beta_linear"
    else:
        spacing = cfg.get("timestep_spacing", "leading" if class_name in {"DDIMScheduler", "DDPMScheduler",
                                                                           "LCMScheduler"} else "linspace")
        schedule = {"trailing": "simple", "leading": "ddim_uniform"}.get(spacing, "normal")
    return sampler, schedule


def to_diffusers(sampler: str, schedule: str) -> tuple[str, dict[str, Any]] | None:
    """The diffusers scheduler class and flags for (sampler, schedule), or None when diffusers has no match."""
    s, h = sampler_info(sampler), schedule_info(schedule)
    if s.diffusers is None or h.diffusers_flags is None:
        return None
    if s.diffusers == "EulerAncestralDiscreteScheduler" and any(k.startswith("use_") for k in h.diffusers_flags):
        return None  # EulerAncestralDiscreteScheduler has no sigma-schedule flags
    flags = {**s.diffusers_flags, **h.diffusers_flags}
    if "timestep_spacing" not in flags:
        flags["timestep_spacing"] = "linspace"
    return s.diffusers, flags
