"""The guard's LoRA and ControlNet steps: each adapter read and checked against the base model (what it was trained
for is a fact no mode overrides), a LoRA's own recipe narrowing the model's, strengths and weights against the
ranges the recipes give."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from iga.recipe.schema import Recipe
from iga.store import lookup as store_lookup

from .plan import ControlUse, LoraUse, ModelIdentity
from .resolution import Resolver

def loras_step(r: Resolver, model: ModelIdentity) -> list[LoraUse]:
    """Each LoRA read and checked against the base model (what it was trained for is a fact: no mode overrides a
    mismatch); its own recipe narrows ``r.recipe`` and its weight range is the recipe's to enforce."""
    from iga.recipe.compose import CompositionError, compose

    uses = []
    for lr in r.req.loras:
        info = _read_lora(lr.path)
        if not _lora_fits(r, info, model, lr.weight):
            continue
        try:
            effective, notes = compose(r.recipe, [(info.recipe, info.name)])
        except CompositionError as e:
            r.hard("lora", f"{e}", None, info.name, f"drop --lora {lr.path}, or use a LoRA made for this model")
            continue
        for note in notes:
            r.info("lora", note)
        r.recipe = effective
        uses.append(_lora_use(info, lr.weight, notes, effective))
    return uses


def _read_lora(given: str):
    """The LoRA's description. A file that is missing, a pickle or not a LoRA raises LoraError (a ValueError):
    like an unknown sampler name, it is bad input to correct, not a setting for the recipe to judge (CLI: exit 2)."""
    from iga.models.lora import LoraError, read_lora
    from iga.store.used import remember

    path = Path(given).expanduser()
    if not path.is_file():
        if Path(given).suffix or "/" in given or "\\" in given:
            raise LoraError(f"LoRA not found: {given} (give a .safetensors LoRA file)")
        from iga.store import find  # an id in the model store; ModelNotFound (a ValueError) lists close ids

        path = Path(find(given, kind="lora").path)
    info = read_lora(path.resolve())
    remember(info.file_sha256, str(path.resolve()), info.name)  # replay finds it again by its hash
    return info


def _lora_fits(r: Resolver, info: Any, model: ModelIdentity, weight: float) -> bool:
    """A LoRA for another architecture or prediction type is hard; a weight outside its recipe's range is soft."""
    arch, pred, ok = model.architecture, r.recipe.prediction_type, True
    where = f" ({info.architecture_source})" if info.architecture_source else ""
    if arch not in ("sd1", "sd2", "sdxl", "unknown"):
        r.hard("lora", f"LoRA {info.name!r}: LoRAs apply to SD1/SD2/SDXL models here, not {arch}", arch, info.name,
               "drop --lora")
        ok = False
    elif info.architecture and arch != "unknown" and info.architecture != arch:
        r.hard("lora", f"LoRA {info.name!r} was trained for {info.architecture}{where} but the model is {arch}: its "
               "layers do not fit this network", arch, info.architecture, f"use a LoRA trained for {arch}")
        ok = False
    elif info.architecture is None:
        r.info("lora", f"LoRA {info.name!r} does not say which architecture it was trained for; applied as is")
    if info.prediction_type and info.prediction_type != pred:
        r.hard("lora", f"LoRA {info.name!r} was trained for {info.prediction_type!r} prediction "
               f"({info.prediction_source}) but the model predicts {pred!r}: it would push every step the wrong "
               "way", pred, info.prediction_type, f"use a LoRA trained on a {pred} model")
        ok = False
    ts = r.recipe.training_schedule
    if info.zero_terminal_snr and not (ts is not None and ts.zero_terminal_snr):
        r.info("lora", f"LoRA {info.name!r} was trained with zero-terminal SNR on a model without it: its darkest "
               "and brightest tones may shift")
    if info.recipe_problem:
        r.soft("lora", "lora", f"LoRA {info.name!r}: {info.recipe_problem}; its constraints cannot be applied", None,
               info.name, "fix the LoRA's iga.recipe")
    if not math.isfinite(weight):
        r.hard("lora", f"LoRA {info.name!r}: weight {weight} is not a number", 1.0, weight, "use a weight like 0.8")
        ok = False
    elif info.recipe is not None and info.recipe.weight is not None:
        w = info.recipe.weight
        if not w.min <= weight <= w.max:
            r.soft("lora", "lora", f"LoRA {info.name!r} at weight {weight:g} is outside its recipe's range "
                   f"{w.min:g}..{w.max:g}", w.default, weight, f"use {min(max(weight, w.min), w.max):g}")
    return ok


def _lora_use(info: Any, weight: float, notes: list[str], effective: Recipe) -> LoraUse:
    import os

    from iga.guard.source import RECORD_PATH_ENV

    w = info.recipe.weight if info.recipe is not None else None
    narrowed = {"cfg": effective.cfg.model_dump(include={"default", "min", "max"}),
                "steps": effective.steps.model_dump(include={"default", "min", "max"}),
                "constraints": effective.constraints.model_dump(exclude_none=True)} if notes else None
    return LoraUse(name=info.name, path=info.path if os.environ.get(RECORD_PATH_ENV) == "1" else None,
                   file_sha256=info.file_sha256, addnet_sha256=info.addnet_sha256, weight=float(weight),
                   architecture=info.architecture, prediction_type=info.prediction_type, format=info.format,
                   weight_range=[w.min, w.max] if w is not None else None, narrowed=notes, effective=narrowed)


def controls_step(r: Resolver, model: ModelIdentity, model_path: str | None) -> list[ControlUse]:
    """Each ControlNet read and checked against the base model's UNet (a misfit is a fact: hard in every mode), its
    conditioning image opened, its strength and window decided. A missing or unreadable adapter, image, strength
    or window is bad input (ValueError: CLI exit 2), not a setting for the recipe to judge."""
    from iga.guard.images import open_input_image
    from iga.models.control import base_unet_shape, fit_problem

    uses = []
    base = base_unet_shape(model_path) if model_path and model.architecture in ("sd1", "sd2", "sdxl", "unknown") \
        else None
    for cr in r.req.controls:
        info = _read_control(cr.path)
        problem = fit_problem(info, model.architecture, base)
        if problem:
            r.hard("control", f"ControlNet {info.name!r}: {problem}", model.architecture, info.name,
                   f"use a ControlNet made for this model ({model.architecture})")
            continue
        image, _ = open_input_image(cr.image, "control image")
        if not 0.0 <= cr.start < cr.end <= 1.0:
            raise ValueError(f"ControlNet {info.name!r}: its window start {cr.start:g} .. end {cr.end:g} cannot work; "
                             "give 0 <= start < end <= 1 (fractions of the steps, e.g. --control-start 0 "
                             "--control-end 0.8)")
        strength = _control_strength(r, info, cr.strength)
        uses.append(_control_use(info, image, strength, cr.start, cr.end))
    return uses


def _read_control(given: str):
    """The ControlNet's description (a path, or its id in the model store); remembered by hash for replay."""
    from iga.models.control import ControlError, read_control
    from iga.store.used import remember

    path = Path(given).expanduser()
    if not path.exists():
        entry, why = store_lookup(given, "controlnet")
        if entry is None:
            raise ControlError(f"ControlNet not found: {given} ({why}); give a diffusers ControlNet folder or "
                               ".safetensors file")
        path = Path(entry.path)
    info = read_control(path.resolve())
    remember(info.file_sha256, info.path, info.name)  # replay finds it again by its hash
    return info


def _control_strength(r: Resolver, info: Any, asked: float | None) -> float:
    """The request's strength, else the recipe's for this adapter, else 1.0; outside the recipe adapter's range is
    soft; an adapter the recipe does not list is soft when it lists some (info when it lists none)."""
    from iga.models.control import ControlError

    listed = r.recipe.control
    match = next((a for a in listed if a.sha256 == info.file_sha256), None) or \
        next((a for a in listed if not a.sha256 and a.id == info.name), None)
    if asked is not None and not (math.isfinite(asked) and asked >= 0):
        raise ControlError(f"ControlNet {info.name!r}: strength {asked} cannot work; give a finite number >= 0 "
                           "(1.0 is full strength)")
    if match is None and listed:
        r.soft("control", "control", f"ControlNet {info.name!r} is not one the recipe lists for this model "
               f"({', '.join(a.id for a in listed)}); the publisher did not validate it", [a.id for a in listed],
               info.name, f"use {listed[0].id}")
    elif match is None:
        r.info("control", f"the recipe lists no ControlNets; {info.name!r} applied as is")
    strength = asked if asked is not None else (match.strength.default if match is not None else 1.0)
    if match is not None and asked is not None and not match.strength.min <= asked <= match.strength.max:
        rng = match.strength
        r.soft("control", "control", f"ControlNet {info.name!r} at strength {asked:g} is outside the recipe's range "
               f"{rng.min:g}..{rng.max:g}", rng.default, asked, f"use {min(max(asked, rng.min), rng.max):g}")
    return float(strength)


def _control_use(info: Any, image: Any, strength: float, start: float, end: float) -> ControlUse:
    import os

    from iga.guard.source import RECORD_PATH_ENV

    return ControlUse(name=info.name, path=info.path if os.environ.get(RECORD_PATH_ENV) == "1" else None,
                      file_sha256=info.file_sha256, image=image, strength=strength, start=float(start),
                      end=float(end))
