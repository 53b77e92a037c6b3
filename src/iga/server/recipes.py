"""A model's recipe as the page shows it: ranges, presets with their model calls and expected time, and, for every
sampler and schedule, what the guard would say about choosing it (asked of the guard, never re-derived here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iga.server.pool import ModelEntry


def _range(block: Any) -> dict[str, Any]:
    return {"default": getattr(block, "default", None), "min": getattr(block, "min", None),
            "max": getattr(block, "max", None)}


def recipe_summary(entry: "ModelEntry") -> dict[str, Any]:
    """The recipe's defaults, ranges and presets (each preset resolved by the guard: its model calls, and the
    expected seconds from this server's measured time per call once a job has run)."""
    recipe = entry.source.recipe
    res = recipe.resolution
    if entry.preset_plans is None:  # the recipe does not change while the server runs: resolve each preset once
        entry.preset_plans = {p.name: _preset_plan(entry, p.name) for p in recipe.presets}
    presets = []
    for p in recipe.presets:
        plan = entry.preset_plans[p.name]
        nfe = plan.nfe if plan is not None else None
        expected = round(nfe * entry.seconds_per_call, 2) if nfe and entry.seconds_per_call else None
        presets.append({"name": p.name, "description": p.description, "steps": plan.steps if plan else p.steps,
                        "cfg": plan.cfg if plan else p.cfg, "sampler": plan.sampler if plan else p.sampler,
                        "schedule": plan.schedule if plan else p.schedule, "nfe": nfe, "expected_seconds": expected})
    return {"sampler": recipe.sampler.name, "schedule": recipe.scheduler.name, "steps": _range(recipe.steps),
            "cfg": _range(recipe.cfg), "size": (res.preferred or [None])[0] if res else None,
            "sizes": list(res.preferred or []) if res else [], "max_size": getattr(res, "max", None) if res else None,
            "clip_skip": getattr(recipe, "clip_skip", None), "prediction_type": recipe.prediction_type,
            "default_preset": getattr(recipe, "default_preset", None), "presets": presets,
            "forbid_samplers": list(recipe.constraints.forbid_samplers),
            "forbid_schedules": list(recipe.constraints.forbid_schedules)}


def _preset_plan(entry: "ModelEntry", preset: str):
    from iga.guard import GuardRefused, Request

    try:
        plan, _ = entry.source.resolve(Request(preset=preset, seed=0), "guarded")
    except (GuardRefused, ValueError, KeyError):
        return None
    return plan


def knob_status(entry: "ModelEntry") -> dict[str, list[dict[str, Any]]]:
    """For every sampler and schedule: recipe (its own), allowed (runs as asked), override (a soft deviation: runs
    only named as an override in guarded mode) or forbidden (hard: never runs), with the guard's reason.
    Computed once per model (its recipe does not change while the server runs)."""
    if entry.knobs is None:
        from iga.catalog.samplers import SAMPLERS
        from iga.catalog.schedules import SCHEDULES

        recipe = entry.source.recipe
        knobs: dict[str, list[dict[str, Any]]] = {"samplers": [], "schedules": []}
        for kind, infos, native in (("sampler", SAMPLERS, recipe.sampler.name if recipe else None),
                                    ("schedule", SCHEDULES, recipe.scheduler.name if recipe else None)):
            for info in infos.values():
                status, reason = _ask_guard(entry.source, kind, info.name, native)
                knobs[f"{kind}s"].append({"name": info.name, "label": getattr(info, "a1111_label", None),
                                          "status": status, "reason": reason})
        entry.knobs = knobs
    return entry.knobs


def _ask_guard(source: Any, kind: str, name: str, native: str | None) -> tuple[str, str | None]:
    from iga.guard import GuardRefused, Request

    if name == native:
        return "recipe", None
    try:
        source.resolve(Request(**{kind: name}, seed=0), "guarded")
    except GuardRefused as e:
        mine = [f for f in e.findings if f.outcome == "refused" and f.field == kind]
        other = [f for f in e.findings if f.outcome == "refused"]
        finding = (mine or other)[0]
        return ("override" if finding.severity == "soft" else "forbidden"), finding.reason
    except (ValueError, KeyError) as e:
        return "forbidden", str(e)
    return "allowed", None
