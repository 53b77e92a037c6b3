"""Sampler and schedule spellings for provenance: canonical names <-> A1111 labels, foreign ids -> canonical.

The name table (``iga.recipe.names``, over the catalog) is the only authority. Provenance must never fail because a
name is unknown: an unknown label is kept as written and reported as a warning, and a canonical name without an
A1111 label is written as itself.
"""

from __future__ import annotations

from iga.recipe import names


def sampler_label(sampler: str | None) -> str | None:
    """A1111 'Sampler' label for a canonical sampler name (the name itself when A1111 has none)."""
    if not sampler:
        return None
    try:
        return names.sampler_info(sampler).a1111_label or sampler
    except names.UnknownNameError:
        return sampler


def schedule_label(schedule: str | None) -> str | None:
    """A1111 'Schedule type' label for a canonical schedule name (the name itself when A1111 has none)."""
    if not schedule:
        return None
    try:
        return names.schedule_info(schedule).a1111_label or schedule
    except names.UnknownNameError:
        return schedule


def a1111_labels(sampler: str | None, schedule: str | None) -> tuple[str | None, str | None]:
    """A1111 display labels (Sampler, Schedule type) for canonical sampler and schedule names."""
    return sampler_label(sampler), schedule_label(schedule)


def resolve_schedule_label(label: str) -> tuple[str, str | None]:
    """Canonical schedule for a foreign label: (name, None), or (label unchanged, warning) when unknown."""
    try:
        return names.resolve_schedule(label), None
    except names.UnknownNameError:
        return label, f"unknown schedule {label!r}: kept as written"


def resolve_sampler_label(label: str) -> tuple[str, str | None, str | None]:
    """Canonical sampler for a foreign label, which may carry a schedule ('DPM++ 2M Karras').

    Returns (sampler, schedule embedded in the label or None, warning or None). An unknown label is
    returned unchanged with a warning.
    """
    try:
        sampler, schedule = names.split_combined(label)
    except names.UnknownNameError:
        return label, None, f"unknown sampler {label!r}: kept as written"
    return sampler, schedule, None


def automatic_schedule(sampler: str) -> str | None:
    """The canonical schedule A1111's 'Automatic' schedule type means for a canonical sampler (None if unknown)."""
    try:
        return names.sampler_info(sampler).a1111_default_schedule
    except names.UnknownNameError:
        return None


def resolve_invokeai_scheduler(scheduler_id: str) -> tuple[str, str | None, str | None]:
    """(sampler, schedule or None, warning or None) for an InvokeAI scheduler id such as 'dpmpp_2m_k'.

    Without a '_k' suffix InvokeAI uses the model's own diffusers spacing, which the metadata does not record,
    so the schedule is None then.
    """
    try:
        sampler, schedule = names.split_combined(scheduler_id)
    except names.UnknownNameError:
        return scheduler_id, None, f"unknown InvokeAI scheduler {scheduler_id!r}: kept as written"
    return sampler, schedule, None
