"""The axes an experiment varies, their values, and the two setting spaces the protocol compares.

The protocol (IGA proposal, section 3.3) varies exactly one of sampler, schedule, steps or CFG; ``vae`` and
``clip_skip`` are extensions. An axis's values are explicit, ``recipe`` (what the model's recipe admits) or
``knobs`` (what a UI's controls admit, ``iga.guard.defaults.UI_*``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from iga.guard.defaults import UI_CFG, UI_CLIP_SKIP, UI_STEPS
from iga.recipe import names
from iga.recipe.schema import Recipe

PROTOCOL_AXES = ("sampler", "schedule", "steps", "cfg")
AXES = (*PROTOCOL_AXES, "vae", "clip_skip")
# A grid (`iga grid`) may also vary what the protocol holds fixed: the seed, the prompt (search and replace),
# the noise of ancestral/SDE samplers and CFG rescale.
GRID_AXES = (*AXES, "seed", "prompt", "eta", "cfg_rescale")
WHOLE_AXES = ("steps", "clip_skip", "seed")  # their values are whole numbers
NUMERIC_AXES = (*WHOLE_AXES, "cfg", "eta", "cfg_rescale")
VALUE_KEYWORDS = ("recipe", "knobs")
MAX_LISTED = 8  # a range that `recipe` or `knobs` expands to is thinned to this many values (ends kept)
# Knob positions a sweep visits when an axis is `knobs` (the whole slider would be 150 steps x 59 CFG values):
# dense where images change fastest, both ends of each slider included.
KNOB_STEPS = (1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 50, 75, 100, 150)
KNOB_CFG = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0)


class SpecError(ValueError):
    """An experiment that cannot run as written; the message says what, where and how to fix it."""


def check_axis(axis: str, allowed: Sequence[str] = AXES) -> str:
    """The axis name, or SpecError listing the axes."""
    if axis not in allowed:
        if allowed is AXES:
            raise SpecError(f"unknown axis {axis!r}: vary one of {', '.join(PROTOCOL_AXES)} (the protocol), or "
                            f"{', '.join(AXES[len(PROTOCOL_AXES):])}")
        raise SpecError(f"unknown axis {axis!r}: choose one of {', '.join(allowed)}")
    return axis


def _number(axis: str, text: Any) -> int | float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise SpecError(f"{axis} value {text!r} is not a number") from None
    if axis in WHOLE_AXES:
        if v != int(v):
            raise SpecError(f"{axis} value {text!r} must be a whole number")
        return int(v)
    return v


def _range(axis: str, text: str) -> list[int | float]:
    """'10-40:10' -> 10, 20, 30, 40 (the step defaults to 1)."""
    body, _, step = text.partition(":")
    lo, _, hi = body.partition("-")
    a, b, s = _number(axis, lo), _number(axis, hi), _number(axis, step or 1)
    if s <= 0 or b < a:
        raise SpecError(f"{axis} range {text!r}: write LOW-HIGH[:STEP] with LOW <= HIGH and STEP > 0")
    n = int((b - a) / s + 1e-9) + 1  # the values LOW, LOW+STEP, ... that do not pass HIGH
    if n > 1000:
        raise SpecError(f"{axis} range {text!r} has {n} values; at most 1000")
    return [a + i * s if isinstance(a + s, int) else round(a + i * s, 6) for i in range(n)]


def parse_values(axis: str, values: str | Sequence[Any], allowed: Sequence[str] = AXES) -> list[Any] | str:
    """Explicit values (a comma list, a LOW-HIGH[:STEP] range, or a list) or one of the keywords.

    Prompt values are comma-separated too; quote one that holds a comma ("red, glossy",blue).
    """
    check_axis(axis, allowed)
    if isinstance(values, str):
        text = values.strip()
        if text in VALUE_KEYWORDS and axis != "prompt":
            return text
        items: list[Any] = _split(text) if axis == "prompt" else [v.strip() for v in text.split(",") if v.strip()]
    else:
        items = list(values)
    if not items:
        raise SpecError(f"the {axis} axis has no values: give a list (e.g. {_example(axis)})"
                        + ("" if axis in ("prompt", "seed", "eta", "cfg_rescale") else ", 'recipe' or 'knobs'"))
    out: list[Any] = []
    for v in items:
        if axis in NUMERIC_AXES and isinstance(v, str) and "-" in v.lstrip("-")[1:]:
            out.extend(_range(axis, v))
        else:
            out.append(_canonical(axis, v))
    if len(set(map(str, out))) != len(out):
        raise SpecError(f"the {axis} axis lists a value twice: {', '.join(map(str, out))}")
    return out


def _split(text: str) -> list[str]:
    import csv

    return [v.strip() for v in next(csv.reader([text], skipinitialspace=True), []) if v.strip()]


def _example(axis: str) -> str:
    return {"sampler": "euler,heun,dpmpp_2m", "schedule": "karras,normal", "steps": "10,20,30 or 10-40:10",
            "cfg": "2,3,5", "vae": "path/to/vae.safetensors", "clip_skip": "1,2", "seed": "1,2,3 or 1-4",
            "prompt": "red,green,blue (the first is searched for, each replaces it)", "eta": "0,0.5,1",
            "cfg_rescale": "0,0.3,0.7"}[axis]


def _canonical(axis: str, v: Any) -> Any:
    if axis == "sampler":
        sampler, implied = names.split_combined(str(v))  # UnknownNameError lists close matches
        if implied:
            raise SpecError(f"sampler value {v!r} also sets the schedule ({implied}); varying both at once breaks "
                            f"the protocol: write {sampler!r} and vary the schedule separately")
        return sampler
    if axis == "schedule":
        return names.resolve_schedule(str(v))
    if axis in NUMERIC_AXES:
        n = _number(axis, v)
        low = 1 if axis in ("steps", "clip_skip") else 0
        if n < low:
            raise SpecError(f"{axis} value {v!r} is out of range (at least {low})")
        return n
    return str(v)


def thin(values: Sequence[Any], keep: Sequence[Any] = (), most: int = MAX_LISTED) -> list[Any]:
    """At most ``most`` values spread evenly over a sorted list, both ends and ``keep`` included."""
    vals = list(values)
    if len(vals) <= most:
        return vals
    keep_set = {k for k in keep if k in vals}
    for spread in range(most, 1, -1):  # fewer spread points when a kept value is not among them
        chosen = {vals[round(i * (len(vals) - 1) / (spread - 1))] for i in range(spread)} | keep_set
        if len(chosen) <= most:
            return sorted(chosen)
    return sorted({vals[0], vals[-1]} | keep_set)


def _cfg_positions(lo: float, hi: float) -> list[float]:
    step = UI_CFG[2]
    first = -(-lo // step) * step
    out, v = [], first
    while v <= hi + 1e-9:
        out.append(round(v, 4))
        v += step
    return out or [lo]


def knob_values(axis: str) -> list[Any]:
    """What a UI's control for the axis offers (KNOB_STEPS / KNOB_CFG positions for the sliders)."""
    if axis == "sampler":
        return list(names.SAMPLER_NAMES)
    if axis == "schedule":
        return [s for s in names.SCHEDULE_NAMES if s != "explicit"]
    if axis == "steps":
        return list(KNOB_STEPS)
    if axis == "cfg":
        return list(KNOB_CFG)
    if axis == "clip_skip":
        return list(range(UI_CLIP_SKIP[0], 5))
    raise SpecError("the vae axis has no knob space: list the VAE files to compare")


def recipe_values(axis: str, recipe: Recipe) -> list[Any]:
    """What the recipe admits on one axis (every value that is not refused outright), thinned for ranges."""
    cons = recipe.constraints
    if axis == "sampler":
        pool = cons.allow_samplers or [s for s in names.SAMPLER_NAMES if s not in cons.forbid_samplers]
        return _native_first(recipe.sampler.name, pool)
    if axis == "schedule":
        pool = cons.allow_schedules or [s for s in names.SCHEDULE_NAMES
                                        if s not in cons.forbid_schedules and s != "explicit"]
        return _native_first(recipe.scheduler.name, pool)
    if axis == "steps":
        allowed = recipe.allowed_steps() or list(range(recipe.steps.min, recipe.steps.max + 1))
        return thin(allowed, keep=[recipe.steps.default])
    if axis == "cfg":
        return thin(_cfg_positions(recipe.cfg.min, recipe.cfg.max), keep=[recipe.cfg.default])
    if axis == "clip_skip":
        return [recipe.clip_skip or 1]
    raise SpecError("the vae axis has no recipe space beyond the model's own VAE: list the VAE files to compare")


def _native_first(native: str, pool: Sequence[str]) -> list[str]:
    return [native] + [s for s in pool if s != native] if native in pool else list(pool)


@dataclass(frozen=True)
class SettingSpace:
    """Where an arm of the headline experiment draws complete settings from."""

    name: str
    samplers: tuple[str, ...]
    schedules: tuple[str, ...]
    steps: tuple[int, ...]
    cfgs: tuple[float, ...]

    def draw(self, rng: random.Random) -> dict[str, Any]:
        """One setting, each field drawn uniformly and independently."""
        return {"sampler": rng.choice(self.samplers), "schedule": rng.choice(self.schedules),
                "steps": rng.choice(self.steps), "cfg": rng.choice(self.cfgs)}


def recipe_space(recipe: Recipe) -> SettingSpace:
    """The recipe's compatibility set: admitted samplers and schedules, every allowed step count, CFG range."""
    steps = recipe.allowed_steps() or list(range(recipe.steps.min, recipe.steps.max + 1))
    return SettingSpace("iga", tuple(recipe_values("sampler", recipe)), tuple(recipe_values("schedule", recipe)),
                        tuple(steps), tuple(_cfg_positions(recipe.cfg.min, recipe.cfg.max)))


def knob_space() -> SettingSpace:
    """A UI's knob space: every sampler and schedule it lists, steps 1-150, CFG 1-30 by 0.5."""
    return SettingSpace("baseline", tuple(knob_values("sampler")), tuple(knob_values("schedule")),
                        tuple(range(UI_STEPS[0], UI_STEPS[1] + 1)), tuple(_cfg_positions(UI_CFG[0], UI_CFG[1])))


def knob_recipe(recipe: Recipe) -> Recipe:
    """The model's facts (prediction type, training schedule, VAE, size) with none of its choices: what a UI
    without a guard runs. No forbidden or allow lists, no presets, steps and CFG open to the knob space."""
    data = recipe.to_dict()
    data.pop("hashes", None)
    data.pop("default_preset", None)
    data["presets"] = []
    data["constraints"] = {}
    data["steps"] = {"default": recipe.steps.default, "min": UI_STEPS[0], "max": UI_STEPS[1]}
    data["cfg"] = {**data["cfg"], "min": 0.0, "max": UI_CFG[1]}
    data["scheduler"] = {k: v for k, v in data["scheduler"].items() if k not in ("subsample", "canonical_steps")}
    data["model_id"] = f"{recipe.model_id or 'model'} (knob space, no guard)"
    return Recipe.model_validate(data)
