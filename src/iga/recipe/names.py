"""The name table: look a sampler or schedule up by any spelling other tools use (the facts are the catalog's).

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
from typing import Any

from iga.catalog.samplers import INVOKEAI_IDS, SamplerInfo
from iga.catalog.samplers import SAMPLERS as CATALOG_SAMPLERS
from iga.catalog.schedules import SCHEDULES as CATALOG_SCHEDULES
from iga.catalog.schedules import ScheduleInfo


class UnknownNameError(ValueError):
    """A sampler or schedule name that the table does not know; lists the closest matches."""

    def __init__(self, kind: str, name: str, suggestions: list[str]):
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Run `iga {kind}s` to list every {kind} iga knows.")
        self.kind, self.name, self.suggestions = kind, name, suggestions


# The tables themselves live in the catalog (one home for every sampler's and schedule's facts).
SAMPLERS: tuple[SamplerInfo, ...] = tuple(CATALOG_SAMPLERS.values())
SCHEDULES: tuple[ScheduleInfo, ...] = tuple(CATALOG_SCHEDULES.values())
_INVOKEAI = INVOKEAI_IDS


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


def sampler_info(name: str) -> SamplerInfo:
    """Look up a sampler by any spelling; raise UnknownNameError listing close matches."""
    e = _SAMPLER_INDEX.get(_key(name))
    if e is None:
        raise UnknownNameError("sampler", name, _suggest(name, SAMPLERS))
    return e


def schedule_info(name: str) -> ScheduleInfo:
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


def find_combined(label: str) -> tuple[str, str | None] | None:
    """``split_combined`` without the error: (sampler, schedule or None) for a known label, else None (cheap: no
    close-match search, for scanning free text)."""
    key = _key(label)
    if key in _SAMPLER_INDEX:
        return _SAMPLER_INDEX[key].name, None
    m = _LEGACY_SUFFIX.match(label.strip().lower())
    if m and _key(m.group(1)) in _SAMPLER_INDEX:  # A1111 v1.6 API aliases: k_dpmpp_2m_ka, k_dpmpp_2m_sde_exp
        return _SAMPLER_INDEX[_key(m.group(1))].name, "karras" if m.group(2) == "ka" else "exponential"
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
    return None


def find_schedule(name: str) -> str | None:
    """The canonical schedule for a spelling, or None (no close-match search)."""
    e = _SCHEDULE_INDEX.get(_key(name))
    return e.name if e is not None else None


def split_combined(label: str) -> tuple[str, str | None]:
    """Split a sampler label that may carry a schedule ('DPM++ 2M Karras', 'k_dpmpp_2m_ka', 'dpmpp_2m_k').

    Returns (canonical sampler, canonical schedule or None). Plain sampler names return (name, None).
    """
    found = find_combined(label)
    if found is None:
        raise UnknownNameError("sampler", label, _suggest(label, SAMPLERS))
    return found


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
