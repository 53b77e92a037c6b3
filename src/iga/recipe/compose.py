"""Recipe composition: an add-on (a LoRA) may narrow its base model's recipe, never widen it.

A LoRA header may carry ``iga.recipe``: a *partial* recipe (``LoraRecipe``) saying what the LoRA was trained for
(architecture, prediction type), the CFG and step ranges it works in, samplers and schedules it breaks with, and
the weight range of the LoRA itself. ``compose(base, [(lora_recipe, name), ...])`` gives the effective recipe the
guard applies: ranges intersect (an empty intersection is a ``CompositionError``), forbid lists unite, allow lists
intersect, defaults (and presets) are clamped into the narrowed ranges. Every change is a note saying what changed
and which LoRA asked for it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .schema import PREDICTION_ALIASES, Constraints, PredictionType, Recipe


class CompositionError(ValueError):
    """The LoRAs' recipes and the base recipe leave nothing in common (an empty range or allow list)."""


class _Partial(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RangeSpec(_Partial):
    """A range a LoRA narrows: either end (and the default) may be left to the base recipe."""

    default: float | None = None
    min: float | None = None
    max: float | None = None


class WeightSpec(_Partial):
    """The weights the LoRA was validated at (1.0 = as trained)."""

    default: float = 1.0
    min: float = 0.0
    max: float = 1.0


class LoraConstraints(Constraints):
    """Samplers and schedules the LoRA breaks with (added to the base's), or the only ones it allows; unknown keys
    are refused (a constraint the author meant must not be silently dropped)."""

    model_config = ConfigDict(extra="forbid")


class LoraRecipe(_Partial):
    """The ``iga.recipe`` of a LoRA: a partial recipe that narrows the base model's, and the LoRA's weight range.
    Unknown fields are refused: a field the LoRA's author meant as a constraint must not be silently dropped."""

    iga_version: str | None = None
    kind: str | None = Field(None, description="'lora' (informative)")
    architecture: str | None = Field(None, description="the base architecture it was trained on: sd1, sd2, sdxl")
    prediction_type: PredictionType | None = None
    zero_terminal_snr: bool | None = None
    cfg: RangeSpec | None = None
    steps: RangeSpec | None = None
    constraints: LoraConstraints | None = None
    weight: WeightSpec | None = None

    @field_validator("prediction_type", mode="before")
    @classmethod
    def _prediction_alias(cls, v: Any) -> Any:
        return PREDICTION_ALIASES.get(v.strip().lower(), v) if isinstance(v, str) else v


def parse_lora_recipe(data: Any) -> LoraRecipe:
    """Validate a LoRA's partial recipe; ValueError with one line naming the bad fields."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise ValueError("a LoRA's iga.recipe must be a JSON object")
    try:
        lr = LoraRecipe.model_validate(data)
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}" for err in e.errors())
        raise ValueError(f"invalid LoRA recipe ({bad})") from None
    if lr.weight is not None and not lr.weight.min <= lr.weight.default <= lr.weight.max:
        raise ValueError(f"invalid LoRA recipe (weight.default {lr.weight.default:g} is outside "
                         f"{lr.weight.min:g}..{lr.weight.max:g})")
    lr = lr.model_copy(update={"constraints": _canonical_constraints(lr.constraints)})
    return lr


def _canonical_constraints(c: LoraConstraints | None) -> LoraConstraints | None:
    """Names in any spelling iga knows, stored canonical (an unknown name raises, listing the closest)."""
    from . import names

    if c is None:
        return None

    def canon(values: list[str] | None, resolve: Any) -> list[str] | None:
        return None if values is None else list(dict.fromkeys(resolve(v) for v in values))

    return LoraConstraints(forbid_samplers=canon(c.forbid_samplers, names.resolve_sampler) or [],
                           forbid_schedules=canon(c.forbid_schedules, names.resolve_schedule) or [],
                           allow_samplers=canon(c.allow_samplers, names.resolve_sampler),
                           allow_schedules=canon(c.allow_schedules, names.resolve_schedule))


def compose(base: Recipe, loras: list[tuple[LoraRecipe | None, str]]) -> tuple[Recipe, list[str]]:
    """The effective recipe of ``base`` with each LoRA's recipe applied in turn, and notes on what changed.

    Raises CompositionError when a range or allow list becomes empty, or the recipe's own sampler or schedule
    is forbidden (nothing the guard could default to would be valid)."""
    recipe, notes = base, []
    for lr, name in loras:
        if lr is None:
            continue
        recipe, changed = _compose_one(recipe, lr, name)
        notes += changed
    return recipe, notes


def _compose_one(base: Recipe, lr: LoraRecipe, name: str) -> tuple[Recipe, list[str]]:
    data = base.model_dump(mode="python")
    notes: list[str] = []
    for field, cast in (("cfg", float), ("steps", int)):
        spec = getattr(lr, field)
        if spec is not None:
            data[field] = _narrow(field, data[field], spec, cast, name, notes)
    if lr.constraints is not None:
        data["constraints"] = _constraints(data["constraints"], lr.constraints, name, notes)
    for field, value in (("sampler", data["sampler"]["name"]), ("schedule", data["scheduler"]["name"])):
        cons = data["constraints"]
        allowed = cons[f"allow_{field}s"]
        if value in cons[f"forbid_{field}s"] or (allowed is not None and value not in allowed):
            raise CompositionError(f"LoRA {name!r} forbids the recipe's own {field} {value!r}: no default is left "
                                   "that both accept")
    data["presets"] = _fit_presets(data, name, notes)
    if data.get("default_preset") and not any(p["name"] == data["default_preset"] for p in data["presets"]):
        data["default_preset"] = None
    return Recipe.model_validate(data), notes


def _narrow(field: str, current: dict[str, Any], spec: RangeSpec, cast: Any, name: str,
            notes: list[str]) -> dict[str, Any]:
    lo = max(current["min"], cast(spec.min)) if spec.min is not None else current["min"]
    hi = min(current["max"], cast(spec.max)) if spec.max is not None else current["max"]
    if lo > hi:
        raise CompositionError(f"LoRA {name!r} wants {field} {_fmt(spec.min)}..{_fmt(spec.max)} but the recipe "
                               f"allows {_fmt(current['min'])}..{_fmt(current['max'])}: nothing is in both")
    default = cast(spec.default) if spec.default is not None else current["default"]
    default = min(max(default, lo), hi)
    out = {**current, "min": lo, "max": hi, "default": default}
    if (lo, hi, default) != (current["min"], current["max"], current["default"]):
        notes.append(f"LoRA {name!r} narrows {field} {_fmt(current['min'])}..{_fmt(current['max'])} "
                     f"(default {_fmt(current['default'])}) to {_fmt(lo)}..{_fmt(hi)} (default {_fmt(default)})")
    return out


def _constraints(current: dict[str, Any], lc: LoraConstraints, name: str, notes: list[str]) -> dict[str, Any]:
    out = dict(current)
    for field in ("samplers", "schedules"):
        added = [v for v in getattr(lc, f"forbid_{field}") if v not in current[f"forbid_{field}"]]
        if added:
            out[f"forbid_{field}"] = list(current[f"forbid_{field}"]) + added
            notes.append(f"LoRA {name!r} forbids {field} {', '.join(added)}")
        theirs, ours = getattr(lc, f"allow_{field}"), current[f"allow_{field}"]
        if theirs is not None:
            both = [v for v in theirs if ours is None or v in ours]
            if not both:
                raise CompositionError(f"LoRA {name!r} allows only {field} {', '.join(theirs)}, none of which the "
                                       f"recipe allows ({', '.join(ours or [])})")
            if both != ours:
                out[f"allow_{field}"] = both
                notes.append(f"LoRA {name!r} allows only {field} {', '.join(both)}")
    return out


def _fit_presets(data: dict[str, Any], name: str, notes: list[str]) -> list[dict[str, Any]]:
    """Presets clamped into the narrowed ranges; a preset whose sampler or schedule is now forbidden is dropped."""
    cons, out = data["constraints"], []
    for p in data["presets"]:
        banned = [v for f, v in (("sampler", p.get("sampler")), ("schedule", p.get("schedule"))) if v is not None
                  and (v in cons[f"forbid_{f}s"] or (cons[f"allow_{f}s"] is not None and v not in cons[f"allow_{f}s"]))]
        if banned:
            notes.append(f"preset {p['name']!r} is unavailable with LoRA {name!r} (it uses {', '.join(banned)})")
            continue
        p = dict(p)
        for field in ("cfg", "steps"):
            v = p.get(field)
            if v is not None and not data[field]["min"] <= v <= data[field]["max"]:
                p[field] = min(max(v, data[field]["min"]), data[field]["max"])
                notes.append(f"preset {p['name']!r}: {field} {_fmt(v)} -> {_fmt(p[field])} (LoRA {name!r})")
        out.append(p)
    return out


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
