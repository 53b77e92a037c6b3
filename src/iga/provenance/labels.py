"""Sampler and schedule spellings for provenance: canonical names <-> A1111 labels, foreign ids -> canonical.

The authority is the project's name table ``iga.recipe.names``. This module only adds a small fallback table
for the common names, so that metadata can still be written and read if that table is missing or lacks a
function (the provenance code must never fail because a name is unknown: an unknown label is kept as written
and reported as a warning).
"""

from __future__ import annotations

import re
from types import ModuleType

# canonical (ComfyUI) sampler -> A1111 "Sampler" label
_SAMPLER_LABELS: dict[str, str] = {
    "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS", "dpmpp_2m": "DPM++ 2M", "dpmpp_sde": "DPM++ SDE", "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun", "dpmpp_2s_ancestral": "DPM++ 2S a", "dpmpp_3m_sde": "DPM++ 3M SDE",
    "ddim": "DDIM", "uni_pc": "UniPC", "lcm": "LCM", "restart": "Restart", "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive",
}
# canonical schedule -> A1111 "Schedule type" label
_SCHEDULE_LABELS: dict[str, str] = {
    "karras": "Karras", "exponential": "Exponential", "normal": "Normal", "simple": "Simple",
    "sgm_uniform": "SGM Uniform", "ddim_uniform": "DDIM", "beta": "Beta", "kl_optimal": "KL Optimal",
    "ays": "Align Your Steps", "polyexponential": "Polyexponential", "uniform": "Uniform",
}
# what A1111's "Automatic" schedule type means per sampler (samplers.md 2.1); others use "Uniform"
_AUTOMATIC: dict[str, str] = {
    "dpmpp_2m": "karras", "dpmpp_sde": "karras", "dpmpp_2s_ancestral": "karras", "dpm_2": "karras",
    "dpm_2_ancestral": "karras", "restart": "karras", "dpmpp_2m_sde": "exponential",
    "dpmpp_2m_sde_heun": "exponential", "dpmpp_3m_sde": "exponential", "ddim": "ddim_uniform",
}
_EXTRA_SAMPLER_ALIASES: dict[str, str] = {
    "k_euler": "euler", "k_euler_a": "euler_ancestral", "k_heun": "heun", "k_lms": "lms", "k_dpm_2": "dpm_2",
    "k_dpm_2_a": "dpm_2_ancestral", "k_dpmpp_2m": "dpmpp_2m", "k_dpmpp_sde": "dpmpp_sde",
    "k_dpmpp_2s_a": "dpmpp_2s_ancestral", "k_dpmpp_2m_sde": "dpmpp_2m_sde", "k_dpmpp_3m_sde": "dpmpp_3m_sde",
    "unipc": "uni_pc", "euler_a": "euler_ancestral",
}
_EXTRA_SCHEDULE_ALIASES: dict[str, str] = {"align_your_steps": "ays", "sgmuniform": "sgm_uniform"}
# InvokeAI scheduler ids; a "_k" suffix means Karras sigmas
_INVOKEAI: dict[str, str] = {
    "euler": "euler", "euler_a": "euler_ancestral", "heun": "heun", "lms": "lms", "dpmpp_2m": "dpmpp_2m",
    "dpmpp_2m_sde": "dpmpp_2m_sde", "dpmpp_sde": "dpmpp_sde", "kdpm_2": "dpm_2", "kdpm_2_a": "dpm_2_ancestral",
    "ddim": "ddim", "ddpm": "ddpm", "deis": "deis", "unipc": "uni_pc", "lcm": "lcm",
}


def _fold(name: str) -> str:
    """Lookup key: case, spaces, '_', '-' and '++' vs 'pp' do not matter."""
    return re.sub(r"[\s_\-.]+", "", name.strip().lower().replace("++", "pp"))


_SAMPLER_INDEX = {_fold(k): k for k in _SAMPLER_LABELS} | {_fold(v): k for k, v in _SAMPLER_LABELS.items()}
_SAMPLER_INDEX |= {_fold(k): v for k, v in _EXTRA_SAMPLER_ALIASES.items()}
_SCHEDULE_INDEX = {_fold(k): k for k in _SCHEDULE_LABELS} | {_fold(v): k for k, v in _SCHEDULE_LABELS.items()}
_SCHEDULE_INDEX |= {_fold(k): v for k, v in _EXTRA_SCHEDULE_ALIASES.items()}


def _names() -> ModuleType | None:
    """The project name table, or None when it is not importable."""
    try:
        from iga.recipe import names
    except ImportError:
        return None
    return names


def sampler_label(sampler: str | None) -> str | None:
    """A1111 'Sampler' label for a canonical sampler name (the name itself when A1111 has none)."""
    if not sampler:
        return None
    names = _names()
    if names is not None:
        try:
            label = names.sampler_info(sampler).a1111_label
            if label:
                return str(label)
        except (AttributeError, ValueError):
            pass
    return _SAMPLER_LABELS.get(sampler, sampler)


def schedule_label(schedule: str | None) -> str | None:
    """A1111 'Schedule type' label for a canonical schedule name (the name itself when A1111 has none)."""
    if not schedule:
        return None
    names = _names()
    if names is not None:
        try:
            label = names.schedule_info(schedule).a1111_label
            if label:
                return str(label)
        except (AttributeError, ValueError):
            pass
    return _SCHEDULE_LABELS.get(schedule, schedule)


def a1111_labels(sampler: str | None, schedule: str | None) -> tuple[str | None, str | None]:
    """A1111 display labels (Sampler, Schedule type) for canonical sampler and schedule names."""
    return sampler_label(sampler), schedule_label(schedule)


def resolve_schedule_label(label: str) -> tuple[str, str | None]:
    """Canonical schedule for a foreign label: (name, None), or (label unchanged, warning) when unknown."""
    names = _names()
    if names is not None:
        try:
            return str(names.resolve_schedule(label)), None
        except (AttributeError, ValueError):
            pass
    canonical = _SCHEDULE_INDEX.get(_fold(label))
    if canonical is not None:
        return canonical, None
    return label, f"unknown schedule {label!r}: kept as written"


def resolve_sampler_label(label: str) -> tuple[str, str | None, str | None]:
    """Canonical sampler for a foreign label, which may carry a schedule ('DPM++ 2M Karras').

    Returns (sampler, schedule embedded in the label or None, warning or None). An unknown label is
    returned unchanged with a warning.
    """
    names = _names()
    if names is not None:
        try:
            sampler, schedule = names.split_combined(label)
            return str(sampler), (str(schedule) if schedule else None), None
        except (AttributeError, ValueError):
            pass
    canonical = _SAMPLER_INDEX.get(_fold(label))
    if canonical is not None:
        return canonical, None, None
    words = label.split()
    for n in (1, 2, 3):  # trailing schedule label of up to three words ("Align Your Steps")
        if len(words) > n:
            head, tail = _fold(" ".join(words[:-n])), _fold(" ".join(words[-n:]))
            if head in _SAMPLER_INDEX and tail in _SCHEDULE_INDEX:
                return _SAMPLER_INDEX[head], _SCHEDULE_INDEX[tail], None
    return label, None, f"unknown sampler {label!r}: kept as written"


def automatic_schedule(sampler: str) -> str | None:
    """The canonical schedule A1111's 'Automatic' schedule type means for a canonical sampler (None if unknown)."""
    names = _names()
    if names is not None:
        try:
            default = names.sampler_info(sampler).a1111_default_schedule
            if default:
                return str(default)
        except (AttributeError, ValueError):
            pass
    if sampler in _AUTOMATIC:
        return _AUTOMATIC[sampler]
    if sampler in _SAMPLER_LABELS:
        return resolve_schedule_label("Uniform")[0]
    return None


def resolve_invokeai_scheduler(scheduler_id: str) -> tuple[str, str | None, str | None]:
    """(sampler, schedule or None, warning or None) for an InvokeAI scheduler id such as 'dpmpp_2m_k'.

    Without a '_k' suffix InvokeAI uses the model's own diffusers spacing, which the metadata does not record,
    so the schedule is None then.
    """
    names = _names()
    if names is not None:
        try:
            sampler, schedule = names.split_combined(scheduler_id)
            return str(sampler), (str(schedule) if schedule else None), None
        except (AttributeError, ValueError):
            pass
    sid = scheduler_id.strip().lower()
    karras = sid.endswith("_k")
    base = sid[:-2] if karras else sid
    if base in _INVOKEAI:
        return _INVOKEAI[base], ("karras" if karras else None), None
    return scheduler_id, None, f"unknown InvokeAI scheduler {scheduler_id!r}: kept as written"
