"""resolve(recipe, request, mode) -> Plan: apply a model's recipe, refuse what cannot work, record overrides.

Where a value comes from: the request, else the chosen preset, else the recipe default. The preset used when
the request names none is the recipe's ``default_preset`` if it declares one; otherwise no preset applies and
the recipe's own defaults (sampler, scheduler, steps.default, cfg.default) are used.

Hard findings are always refused. Soft findings depend on the mode: ``strict`` refuses them, ``guarded``
(default) accepts them only for fields the request names in ``overrides``, ``permissive`` accepts them with a
warning. Every accepted soft deviation becomes an OverrideRecord in the Plan (and in the audit log).
"""

from __future__ import annotations

import math
from pathlib import Path
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from iga import __version__
from iga.recipe import names
from iga.catalog import CFG_VARIANTS
from iga.recipe.schema import PREDICTION_ALIASES, Preset, Recipe, parse_size

from .defaults import architecture_default_recipe, default_training_schedule, has_component
from .img2img import (DEFAULT_DENOISE, DEFAULT_HIRES_DENOISE, DEFAULT_INPAINT_PADDING, DEFAULT_MASK_BLUR, Inputs,
                      grid_and_start, hires_size, init_size, read_inputs)
from .refiner import refiner_stage
from .plan import (OVERRIDABLE, ControlUse, Hires, Img2Img, Finding, LoraUse, Mode, ModelIdentity, OverrideRecord,
                   Plan, Request, VaeIdentity)

MAX_SEED = 2**64 - 1
MAX_BATCH = 64
# Hard caps whatever the mode: far beyond any real use (A1111 stops at 150 steps and 2048 px), low enough that a
# hostile plan (an image's stored plan is a request too) cannot make iga run for hours or allocate gigabytes.
MAX_PLAN_STEPS = 1000
MAX_PLAN_PIXELS = 4096 * 4096


class GuardRefused(Exception):
    """The guard refused the request; ``findings`` says why, field by field."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        refused = [f for f in findings if f.outcome == "refused"]
        lines = "\n".join(f"  - {f.field}: {f.reason}" + (f" ({f.suggestion})" if f.suggestion else "")
                          for f in refused)
        super().__init__(f"refused by the guard ({len(refused)} problem(s)):\n{lines}")


# Why a sampler or schedule is commonly forbidden: taught when the recipe forbids it.
_WHY_FORBIDDEN = {
    ("sampler", "ddim", "v"): "ddim steps on the 'leading' timestep grid, which starts at t=901 instead of 999; "
    "a v-prediction model then starts from a partly noised state it never saw, which washes out contrast "
    "and colour (Lin et al. 2024, 'Common Diffusion Noise Schedules and Sample Steps are Flawed')",
    ("sampler", "lcm", None): "LCM sampling only works on consistency-distilled models; on an ordinary "
    "checkpoint it gives flat, blurry images",
    ("schedule", "turbo", None): "the Turbo schedule is for adversarially distilled 1-4 step models "
    "(SD-Turbo); an ordinary model needs many more, smaller steps",
    ("schedule", "beta", None): "the beta schedule puts most steps at the ends of the noise range; the "
    "publisher found it degrades this model",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Resolver:
    """One resolution: collects findings and overrides as the fields are decided."""

    def __init__(self, recipe: Recipe, request: Request, mode: Mode, no_recipe: bool, time: str):
        self.recipe, self.req, self.mode, self.no_recipe, self.time = recipe, request, mode, no_recipe, time
        self.findings: list[Finding] = []
        self.overrides: list[OverrideRecord] = []
        self.soft_fields: set[str] = set()

    def refused(self) -> bool:
        return any(f.outcome == "refused" for f in self.findings)

    def info(self, field: str, reason: str, recipe_value: Any = None, requested: Any = None) -> None:
        self.findings.append(Finding(field=field, severity="info", outcome="applied", recipe_value=recipe_value,
                                     requested_value=requested, reason=reason))

    def hard(self, field: str, reason: str, recipe_value: Any = None, requested: Any = None,
             suggestion: str | None = None) -> None:
        self.findings.append(Finding(field=field, severity="hard", outcome="refused", recipe_value=recipe_value,
                                     requested_value=requested, reason=reason, suggestion=suggestion))

    def soft(self, field: str, override_key: str, reason: str, recipe_value: Any, requested: Any,
             suggestion: str | None = None) -> None:
        """A deviation the mode decides on; accepted ones become OverrideRecords."""
        self.soft_fields.add(override_key)
        if self.mode == "strict":
            outcome, reason = "refused", f"{reason} (strict mode refuses every deviation from the recipe)"
        elif self.mode == "permissive":
            outcome, reason = "warned", f"{reason}; accepted (permissive mode)"
        elif override_key in self.req.overrides:
            outcome, reason = "overridden", f"{reason}; accepted as an explicit override"
        else:
            outcome = "refused"
            how = (f"override it explicitly: name {override_key} as an override with a reason (CLI: --override "
                   f"{override_key} --reason '...')")
            suggestion = f"{suggestion}, or {how}" if suggestion else how
        self.findings.append(Finding(field=field, severity="soft", outcome=outcome, recipe_value=recipe_value,
                                     requested_value=requested, reason=reason, suggestion=suggestion))
        if outcome != "refused":
            self.overrides.append(OverrideRecord(field=field, recipe_value=recipe_value, requested_value=requested,
                                                 mode=self.mode, reason=self.req.reason or (
                                                     "permissive mode" if self.mode == "permissive" else None),
                                                 time=self.time))


def _pick_preset(recipe: Recipe, request: Request) -> Preset | None:
    if request.preset:
        return recipe.preset(request.preset)  # KeyError lists the presets
    if recipe.default_preset:
        return recipe.preset(recipe.default_preset)
    return None


def _first(*pairs: tuple[Any, str]) -> tuple[Any, str]:
    for value, source in pairs:
        if value is not None:
            return value, source
    return None, "none"


def resolve(
    recipe: Recipe | None,
    request: Request | None = None,
    mode: Mode = "guarded",
    *,
    model: ModelIdentity | None = None,
    detected_prediction: str | None = None,
    detected_schedule: dict[str, Any] | None = None,
    integrity: list[tuple[str, str]] | None = None,
    signature: str | None = None,
    own_vae: bool | None = None,
    model_path: str | None = None,
) -> tuple[Plan, list[Finding]]:
    """Resolve a request against a recipe; return (Plan, findings) or raise GuardRefused.

    ``model_path``: the checkpoint, whose UNet a ControlNet must fit (without it only the architecture is
    compared). ``own_vae``: whether the checkpoint holds a VAE of its own (None: not known; a recipe's separate VAE that is
    missing then falls back to it as a soft finding, and is hard when it is known to have none).

    Unknown sampler/schedule names raise ``names.UnknownNameError``; an unknown preset or override field
    raises ``KeyError``/``ValueError`` naming the valid choices.
    """
    req = request or Request()
    _check_mode_and_overrides(req, mode)
    inputs = read_inputs(req)
    model = model or ModelIdentity(name="model")
    no_recipe = recipe is None
    if recipe is None:
        recipe = architecture_default_recipe(model.architecture, detected_prediction, detected_schedule,
                                             model.variant)
    r = _Resolver(recipe, req, mode, no_recipe, _now())
    arch = model.architecture
    _check_trust(r, arch, signature, integrity)
    loras = _loras(r, model)  # first: the recipe the later steps check is the one the LoRAs' recipes narrowed
    recipe = r.recipe
    preset = _preset(r)
    s = _settings(r, preset)
    _check_prediction_and_architecture(r, arch, detected_prediction)
    _check_names(r, s)
    _check_steps(r, s)
    _check_cfg(r, s.cfg)
    guidance = _guidance(r, recipe, req, preset)
    cfg_variant = _cfg_variant(r, recipe, req, s.sampler)
    cfg_rescale = _cfg_rescale(r)
    width, height = _size(r, init_size(inputs))
    train = _plan_training_schedule(r, recipe, req, width, height)
    clip_skip = _clip_skip(r, arch)
    vae = _vae(r, arch, own_vae)
    seeds = _seeds(r)
    eta, options = _sampler_options(r, s.sampler)
    sigmas, nfe = _sigmas_unless_refused(r, train, s, options, arch)
    _check_inpaint_model(r, model, inputs)
    sigmas, nfe, img2img = _partial_pass(r, train, s, options, model, inputs, sigmas, nfe)
    hires = _hires(r, train, s, options, arch, width, height)
    controls = _controls(r, model, model_path)
    refiner, nfe = refiner_stage(r, model, train, s.sampler, sigmas, nfe, inputs, (hires, controls))
    _note_unused_overrides(r)
    if r.refused():
        raise GuardRefused(r.findings)

    plan = Plan(
        iga_version=__version__, created=r.time, mode=mode, preset=preset.name if preset else None, model=model,
        prompt=req.prompt, negative_prompt=req.negative_prompt, seed=seeds[0], seeds=seeds,
        prediction_type=recipe.prediction_type, training_schedule=train, guidance=guidance,
        sampler=s.sampler, sampler_options=options, eta=eta, schedule=s.schedule,
        schedule_params=dict(recipe.scheduler.params) if s.schedule == recipe.scheduler.name else {},
        steps=s.steps, sigmas=sigmas, nfe=nfe, cfg=float(s.cfg), cfg_variant=cfg_variant, cfg_rescale=cfg_rescale,
        width=width, height=height, clip_skip=clip_skip, vae=vae, img2img=img2img, hires=hires,
        loras=loras, controls=controls, refiner=refiner, findings=r.findings, overrides=r.overrides,
    )
    return plan, r.findings


@dataclass(frozen=True)
class _Settings:
    """The four settings a preset can set, and where each came from ("request", "preset '...'" or "recipe")."""

    sampler: str
    schedule: str
    steps: Any  # an int once _check_steps has accepted it; anything the request sent until then
    cfg: Any
    source: dict[str, str]

    def requested(self, field: str) -> bool:
        return self.source[field] == "request"


def _loras(r: _Resolver, model: ModelIdentity) -> list[LoraUse]:
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


def _lora_fits(r: _Resolver, info: Any, model: ModelIdentity, weight: float) -> bool:
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


def _controls(r: _Resolver, model: ModelIdentity, model_path: str | None) -> list[ControlUse]:
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
        entry, why = _store_lookup(given, "controlnet")
        if entry is None:
            raise ControlError(f"ControlNet not found: {given} ({why}); give a diffusers ControlNet folder or "
                               ".safetensors file")
        path = Path(entry.path)
    info = read_control(path.resolve())
    remember(info.file_sha256, info.path, info.name)  # replay finds it again by its hash
    return info


def _control_strength(r: _Resolver, info: Any, asked: float | None) -> float:
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


def _check_mode_and_overrides(req: Request, mode: Mode) -> None:
    """Malformed calls are errors, not findings: they name no field of the recipe to judge."""
    if mode not in ("strict", "guarded", "permissive"):
        raise ValueError(f"unknown mode {mode!r}; choose strict, guarded or permissive")
    bad = [o for o in req.overrides if o not in OVERRIDABLE]
    if bad:
        raise ValueError(f"cannot override {', '.join(bad)}; overridable fields: {', '.join(OVERRIDABLE)}")


def _check_trust(r: _Resolver, architecture: str, signature: str | None,
                 integrity: list[tuple[str, str]] | None) -> None:
    """Whether the recipe can be trusted to describe these weights: missing, unsigned, or no longer matching."""
    if r.no_recipe:
        r.info("recipe", f"this checkpoint carries no recipe; resolved against {architecture} defaults "
               "(A1111-style: dpmpp_2m + karras, CFG 7, 20 steps). Ask the publisher for a recipe, or embed one "
               "with `iga embed`")
    if signature:  # a signature the user demands (--require-signed): no mode runs without it
        r.hard("signature", signature, "signed by a trusted key", None, "ask the publisher for a signed recipe, or "
               "drop --require-signed")
    for name, problem in integrity or ():  # the file no longer matches what its recipe vouches for
        if name == "hashes" and r.mode != "strict":  # nothing to compare: not a mismatch, but never silent
            r.info("integrity", problem)
        elif r.mode == "permissive":
            r.soft("integrity", "integrity", f"{problem}; the recipe may not describe these weights", name, None)
        else:
            r.hard("integrity", problem, name, None, "run `iga verify` on the model, re-embed the recipe if the "
                   "change is yours, or use --mode permissive to run it anyway (recorded)")


def _preset(r: _Resolver) -> Preset | None:
    """The preset in force; a default preset the request did not name is said out loud."""
    preset = _pick_preset(r.recipe, r.req)
    if preset and not r.req.preset:
        r.info("preset", f"the recipe's default preset {preset.name!r} applies")
    return preset


def _settings(r: _Resolver, preset: Preset | None) -> _Settings:
    """Sampler, schedule, steps and CFG: the request's, else the preset's, else the recipe's (a combined legacy
    label such as "DPM++ 2M Karras" sets both sampler and schedule). Values not from the request are noted."""
    req, recipe = r.req, r.recipe
    pname = f"preset {preset.name!r}" if preset else ""
    req_sampler, implied = (names.split_combined(req.sampler) if req.sampler else (None, None))
    req_schedule = names.resolve_schedule(req.schedule) if req.schedule else implied
    sampler, s_src = _first((req_sampler, "request"), (preset and preset.sampler, pname),
                            (recipe.sampler.name, "recipe"))
    schedule, h_src = _first((req_schedule, "request"), (preset and preset.schedule, pname),
                             (recipe.scheduler.name, "recipe"))
    steps, st_src = _first((req.steps, "request"), (preset and preset.steps, pname), (recipe.steps.default, "recipe"))
    cfg, c_src = _first((req.cfg, "request"), (preset and preset.cfg, pname), (recipe.cfg.default, "recipe"))
    s = _Settings(sampler, schedule, steps, cfg, {"sampler": s_src, "schedule": h_src, "steps": st_src, "cfg": c_src})
    for field, value in (("sampler", sampler), ("schedule", schedule), ("steps", steps), ("cfg", cfg)):
        if not s.requested(field):
            r.info(field, f"{value} (from the {s.source[field]})", recipe_value=value)
    return s


def _check_prediction_and_architecture(r: _Resolver, architecture: str, detected_prediction: str | None) -> None:
    """What the model predicts and what it is are facts about the weights: no mode can override them."""
    pred, recipe = r.recipe.prediction_type, r.recipe
    if r.req.prediction_type is not None:
        asked = PREDICTION_ALIASES.get(r.req.prediction_type.strip().lower())
        if asked is None:
            raise ValueError(f"unknown prediction type {r.req.prediction_type!r}; use eps, v, x0 or flow")
        if asked != pred:
            r.hard("prediction_type", f"the model predicts {pred!r}; treating its output as {asked!r} decodes every "
                   "step wrongly (colour shifts, noise or mush), so this is never allowed", pred, asked,
                   "drop --prediction-type")
    # a stand-in recipe was made from the detected facts, so only a real recipe can contradict them
    if detected_prediction and detected_prediction != pred and not r.no_recipe:
        r.hard("prediction_type", f"the recipe says {pred!r} but the checkpoint's markers say "
               f"{detected_prediction!r}: the recipe does not belong to these weights", pred, detected_prediction,
               "fix the recipe's prediction_type, then re-embed it")
    if recipe.architecture and architecture not in ("unknown", recipe.architecture) and not r.no_recipe:
        r.hard("architecture", f"the recipe is for {recipe.architecture!r} but the weights are "
               f"{architecture!r}", recipe.architecture, architecture, "use the recipe made for this model")


def _check_names(r: _Resolver, s: _Settings) -> None:
    """Sampler and schedule against the recipe: forbidden or outside its allow-list is hard; merely different from
    the recipe's is soft, and only when the request chose it (presets are validated with the recipe)."""
    cons, recipe = r.recipe.constraints, r.recipe
    for field, value, forbidden, allowed, native in (
        ("sampler", s.sampler, cons.forbid_samplers, cons.allow_samplers, recipe.sampler.name),
        ("schedule", s.schedule, cons.forbid_schedules, cons.allow_schedules, recipe.scheduler.name),
    ):
        if value in forbidden:
            why = _WHY_FORBIDDEN.get((field, value, recipe.prediction_type)) or \
                _WHY_FORBIDDEN.get((field, value, None)) or \
                "the model's publisher tested it and forbids it for this checkpoint"
            r.hard(field, f"{value} is forbidden by this model's recipe: {why}", native, value,
                   f"use {native} (the recipe's {field}) or a preset")
        elif allowed is not None and value not in allowed:
            r.hard(field, f"{value} is not among the {field}s this recipe allows ({', '.join(allowed)})", native,
                   value, f"choose one of: {', '.join(allowed)}")
        elif value != native and not r.no_recipe and s.requested(field):
            r.soft(field, field, f"{value} is not the recipe's {field} {native}; results will differ from what the "
                   "publisher validated", native, value, f"use {native}, or a preset")


def _check_steps(r: _Resolver, s: _Settings) -> None:
    """Step counts (and sigma lists) that cannot run are hard, whatever the mode; runnable ones go on to the
    recipe's range."""
    recipe, steps, sigmas = r.recipe, s.steps, r.req.sigmas
    grid = recipe.scheduler.grid
    if isinstance(steps, int) and steps > MAX_PLAN_STEPS:
        r.hard("steps", f"{steps} steps is more than iga runs ({MAX_PLAN_STEPS})", recipe.steps.default, steps,
               f"use at most {MAX_PLAN_STEPS} steps")
    elif sigmas is not None and len(sigmas) > MAX_PLAN_STEPS + 1:
        r.hard("sigmas", f"{len(sigmas)} sigmas is more than iga runs ({MAX_PLAN_STEPS + 1})", None,
               len(sigmas), f"use at most {MAX_PLAN_STEPS + 1} sigmas")
    elif not isinstance(steps, int) or steps < 1:
        r.hard("steps", f"{steps} steps cannot run: at least 1 step is needed", recipe.steps.default, steps,
               f"use {recipe.steps.default}")
    elif s.schedule == "explicit" and grid and steps > len(grid) - 1:
        r.hard("steps", f"the recipe's explicit grid has {len(grid) - 1} steps; it can be subsampled but not "
               "refined", len(grid) - 1, steps, f"use at most {len(grid) - 1} steps")
    elif s.schedule == "turbo" and steps > 10:
        r.hard("steps", "the turbo schedule has at most 10 steps", None, steps, "use 1-10 steps")
    else:
        _check_steps_against_recipe(r, steps)


def _check_steps_against_recipe(r: _Resolver, steps: int) -> None:
    """Outside the recipe's range or off its validated subsample is soft. Presets and defaults are validated with
    the recipe, so only requested values can trip these."""
    recipe = r.recipe
    lo, hi = recipe.steps.min, recipe.steps.max
    allowed = recipe.allowed_steps()
    if not lo <= steps <= hi:
        near = min(max(steps, lo), hi)
        r.soft("steps", "steps", f"{steps} steps is outside the recipe's range {lo}..{hi}",
               recipe.steps.default, steps, f"use {near} (the nearest allowed)")
    elif allowed is not None and steps not in allowed:
        below = [a for a in allowed if a < steps]
        above = [a for a in allowed if a > steps]
        near_list = [str(x) for x in (below[-1:] + above[:1])]
        r.soft("steps", "steps", f"{steps} steps is off the allowed subsample {allowed}: the schedule is only "
               "validated at those counts", recipe.steps.default, steps,
               f"the nearest allowed are {' and '.join(near_list)}")


def _check_cfg(r: _Resolver, cfg: Any) -> None:
    """CFG that cannot work is hard; outside the recipe's range is soft, with its own explanation on a
    guidance-distilled model, where CFG is not the prompt-strength knob users expect."""
    c = r.recipe.cfg
    if not isinstance(cfg, (int, float)) or not math.isfinite(cfg) or cfg < 0:
        r.hard("cfg", f"CFG {cfg} cannot work: it must be a finite number >= 0", c.default, cfg, f"use {c.default}")
    elif r.recipe.guidance is not None and not c.min <= cfg <= c.max:
        g = r.recipe.guidance.default
        r.soft("cfg", "cfg", f"CFG {cfg} on a guidance-distilled model: it follows the prompt through its "
               f"distilled guidance (the recipe's {g:g}) and was trained at CFG {c.default:g}; real CFG "
               "adds a second model call per step and burns the image", c.default, cfg,
               f"use CFG {c.default:g} and set the strength as distilled guidance (e.g. guidance {g:g}; "
               "Forge: Distilled CFG Scale, ComfyUI: FluxGuidance)")
    elif not c.min <= cfg <= c.max:
        r.soft("cfg", "cfg", f"CFG {cfg} is outside the recipe's range {c.min}..{c.max}; too low loses the prompt, "
               "too high burns colours and detail", c.default, cfg,
               f"use {min(max(cfg, c.min), c.max)} (the nearest allowed)")


def _cfg_rescale(r: _Resolver) -> float:
    """Guidance rescale: the request's, else the recipe's; it is a blend factor, so only [0, 1] means anything."""
    rescale = r.req.cfg_rescale if r.req.cfg_rescale is not None else r.recipe.cfg.rescale
    if not 0.0 <= rescale <= 1.0:
        r.hard("cfg_rescale", "guidance rescale is a blend factor in [0, 1]", r.recipe.cfg.rescale, rescale,
               "use 0.0-1.0 (0.7 is typical)")
    return rescale


def _size(r: _Resolver, init_size: str | None = None) -> tuple[int, int]:
    """Width and height: the request's, else the init image's (img2img), else the recipe's preferred size. Sizes
    the latent grid or iga cannot take are hard; above the recipe's maximum is soft (the model was not trained
    that large)."""
    res = r.recipe.resolution
    default_size = init_size or (res.preferred[0] if res and res.preferred else "512x512")
    size_text = r.req.size or default_size
    try:
        width, height = parse_size(size_text)
    except ValueError as e:
        raise ValueError(f"size: {e}") from None
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        r.hard("size", f"{size_text} cannot work: width and height must be positive multiples of 8 (the latent "
               "grid is 1/8 of the image)", default_size, size_text,
               f"use {max(8, width // 8 * 8)}x{max(8, height // 8 * 8)}")
    elif width * height > MAX_PLAN_PIXELS:
        r.hard("size", f"{size_text} is {width * height / 1e6:.0f} megapixels, more than iga renders "
               f"({MAX_PLAN_PIXELS / 1e6:.0f})", default_size, size_text, "use at most 4096x4096")
    elif r.req.size is None:
        r.info("size", f"{size_text} (the {'init image' if init_size else 'recipe'}'s size)", default_size)
    elif res and res.max:
        mw, mh = parse_size(res.max)
        if width > mw or height > mh:
            r.soft("size", "size", f"{size_text} is above the recipe's maximum {res.max}; expect duplicated "
                   "subjects and broken composition", res.max, size_text, f"use at most {res.max}")
    return width, height


def _clip_skip(r: _Resolver, architecture: str) -> int:
    """Clip skip: the request's, else the recipe's, else 1 (none); a model without CLIP layers takes only 1."""
    req, recipe = r.req, r.recipe
    clip_skip = req.clip_skip if req.clip_skip is not None else (recipe.clip_skip or 1)
    if clip_skip != 1 and not has_component(architecture, "clip_skip"):
        r.hard("clip_skip", f"{architecture} models have no CLIP text-encoder layers to skip; clip skip "
               f"{clip_skip} would be recorded but could not apply", 1, clip_skip, "drop --clip-skip")
    elif clip_skip < 1:
        r.hard("clip_skip", "clip skip counts layers from the end and starts at 1 (no skip)", recipe.clip_skip,
               clip_skip, "use 1 or 2")
    elif req.clip_skip is not None and recipe.clip_skip is not None and req.clip_skip != recipe.clip_skip:
        r.soft("clip_skip", "clip_skip", f"clip skip {req.clip_skip} differs from the recipe's {recipe.clip_skip}; "
               "the text encoder layer changes what the prompt means to the model", recipe.clip_skip, req.clip_skip)
    return clip_skip


def _vae(r: _Resolver, architecture: str, own_vae: bool | None = None) -> VaeIdentity | None:
    """The VAE; asking for one on a pixel-space model is hard (there is none to replace). ``own_vae``: whether the
    checkpoint holds a VAE of its own (None: not known, assumed)."""
    if r.req.vae is not None and not has_component(architecture, "vae"):
        r.hard("vae", f"{architecture} models sample pixels and have no VAE to replace", None, r.req.vae,
               "drop --vae")
        return None
    return _resolve_vae(r, r.recipe, r.req, architecture, own_vae)


def _seeds(r: _Resolver) -> list[int]:
    """One seed per image: the request's list, else consecutive seeds from its seed (A1111's convention), else from
    a random one, said out loud so the image can be reproduced. Batch size and seed range are checked here too."""
    req = r.req
    if not 1 <= req.batch <= MAX_BATCH:
        r.hard("batch", f"batch {req.batch} is outside 1..{MAX_BATCH}", None, req.batch, "use a batch of 1-64")
    seeds = list(req.seeds) if req.seeds else None
    if seeds is None:
        seed = req.seed if req.seed is not None else secrets.randbelow(2**32)
        if req.seed is None:
            r.info("seed", f"random seed {seed} (record it to reproduce the image)")
        seeds = [seed + k for k in range(max(1, req.batch))]
    bad_seeds = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad_seeds:
        r.hard("seed", f"seed {bad_seeds[0]} is outside 0..2^64-1", None, bad_seeds[0], "use a non-negative seed")
    return seeds


def _sampler_options(r: _Resolver, sampler: str) -> tuple[float | None, dict[str, Any]]:
    """(eta, sampler options). The recipe's sampler options (eta included) belong to its sampler; another sampler
    starts from none. A requested eta applies to whichever sampler runs."""
    params = r.recipe.sampler.params
    native = sampler == r.recipe.sampler.name
    eta = r.req.eta if r.req.eta is not None else (params.get("eta") if native else None)
    options = {k: v for k, v in params.items() if k not in ("order", "eta")} if native else {}
    if eta is not None:
        options["eta"] = eta
    return eta, options


def _sigmas_unless_refused(r: _Resolver, train: dict[str, Any], s: _Settings, options: dict[str, Any],
                           architecture: str) -> tuple[list[float], int | None]:
    """The sampler's checks and its sigma list, each only while nothing is refused: they build on settings that
    must already be valid (a refused step count has no sigma list)."""
    if not r.refused():
        _check_sampler(r, s.sampler, options)
    if r.refused():
        return [], None
    return _sigmas_and_nfe(r, r.recipe, train, s.sampler, s.schedule, s.steps, r.recipe.prediction_type,
                           architecture, r.req.sigmas)


def _partial_pass(r: _Resolver, train: dict[str, Any], s: _Settings, options: dict[str, Any], model: ModelIdentity,
                  inputs: Inputs, sigmas: list[float], nfe: int | None
                  ) -> tuple[list[float], int | None, Img2Img | None]:
    """img2img: the tail of the sigma grid that runs from the init image (see ``iga.guard.img2img`` for how steps
    and denoise choose it under each tool's convention). The grid itself must satisfy the recipe's step rules."""
    req = r.req
    if inputs.init is None or not sigmas:
        return sigmas, nfe, None
    denoise = req.denoise if req.denoise is not None else DEFAULT_DENOISE
    if req.denoise is None:
        r.info("denoise", f"denoise {denoise} (the default)", None, denoise)
    convention = req.denoise_steps or "diffusers"
    grid, start = grid_and_start(convention, s.steps, denoise)
    if grid != s.steps:
        _check_grid_steps(r, "steps", grid, f"denoise {denoise} under the {convention} convention walks a "
                          f"{grid}-step grid", "raise denoise, or use the diffusers convention (its grid has the "
                          "requested steps)")
        if r.refused():
            return [], None, None
        sigmas, nfe = _sigmas_and_nfe(r, r.recipe, train, s.sampler, s.schedule, grid, r.recipe.prediction_type,
                                      model.architecture, None)
    if start >= len(sigmas) - 1:
        r.hard("denoise", f"denoise {denoise} with {s.steps} steps runs no step ({convention} convention)", None,
               denoise, "raise denoise or steps")
        return [], None, None
    cut, nfe = _cut(r, s.sampler, sigmas, start)
    r.info("denoise", f"img2img: {len(cut) - 1} of {grid} steps from sigma {cut[0]:.4g} (denoise {denoise}, "
           f"{convention} convention)")
    spec = Img2Img(init_image=inputs.init, denoise=denoise, denoise_steps=convention, grid_steps=grid, start=start,
                   mask=inputs.mask)
    if inputs.mask is not None:
        spec = spec.model_copy(update={
            "mask_blur": req.mask_blur if req.mask_blur is not None else DEFAULT_MASK_BLUR,
            "inpaint_area": req.inpaint_area or "whole",
            "inpaint_padding": req.inpaint_padding if req.inpaint_padding is not None else DEFAULT_INPAINT_PADDING,
            "inpaint_method": "model" if model.variant == "inpaint" else "blend"})
    return cut, nfe, spec


def _check_inpaint_model(r: _Resolver, model: ModelIdentity, inputs: Inputs) -> None:
    """An inpainting UNet reads a mask and a masked image with every call: without them it cannot run."""
    if model.variant == "inpaint" and inputs.mask is None:
        r.hard("mask", "this is an inpainting checkpoint (its UNet also takes a mask and the masked image); it "
               "needs an init image and a mask", None, None, "pass --init-image and --mask, or use the "
               "ordinary (non-inpainting) checkpoint for text-to-image")


def _cut(r: _Resolver, sampler: str, sigmas: list[float], start: int) -> tuple[list[float], int | None]:
    """The sigmas from index ``start`` on, and the model calls the sampler makes on them."""
    from iga.sampling.base import SamplingError
    from iga.sampling.samplers import expected_nfe
    import torch

    cut = sigmas[start:]
    try:
        nfe = expected_nfe(sampler, torch.tensor(cut), kind="flow" if r.recipe.prediction_type == "flow" else "vp")
    except SamplingError as e:
        r.hard("denoise", str(e), None, None, "raise denoise or steps")
        return [], None
    return cut, nfe


def _check_grid_steps(r: _Resolver, field: str, grid: int, what: str, fix: str) -> None:
    """A grid a partial pass is cut from: more steps than iga runs is hard; off the recipe's range is soft (its
    sigma spacing is what the recipe validates)."""
    lo, hi = r.recipe.steps.min, r.recipe.steps.max
    if grid > MAX_PLAN_STEPS:
        r.hard(field, f"{what}: more than iga runs ({MAX_PLAN_STEPS})", None, grid, fix)
    elif not lo <= grid <= hi and not r.no_recipe:
        r.soft(field, field, f"{what}, outside the recipe's range {lo}..{hi}", r.recipe.steps.default, grid, fix)


def _hires(r: _Resolver, train: dict[str, Any], s: _Settings, options: dict[str, Any], architecture: str,
           width: int, height: int) -> Hires | None:
    """Hires fix: a second pass at ``scale`` times the size, cut from its own grid by the comfyui rule (exactly
    ``hires_steps`` run). Its size meets the same limits as the first pass's; its grid the recipe's step range."""
    from iga.catalog.upscalers import DEFAULT_UPSCALER, resolve_upscaler

    req = r.req
    if req.hires is None or r.refused():
        return None
    upscaler = resolve_upscaler(req.hires_upscaler) if req.hires_upscaler else DEFAULT_UPSCALER
    hw, hh = hires_size(width, height, req.hires)
    steps = req.hires_steps or s.steps
    denoise = req.hires_denoise if req.hires_denoise is not None else DEFAULT_HIRES_DENOISE
    res = r.recipe.resolution
    if hw * hh > MAX_PLAN_PIXELS:
        r.hard("hires", f"hires fix to {hw}x{hh} is more than iga renders ({MAX_PLAN_PIXELS / 1e6:.0f} megapixels)",
               None, req.hires, "use a smaller scale")
    elif res and res.max:
        mw, mh = parse_size(res.max)
        if hw > mw or hh > mh:
            r.soft("hires", "hires", f"hires fix to {hw}x{hh} is above the recipe's maximum {res.max}", res.max,
                   f"{hw}x{hh}", "use a smaller scale")
    grid, start = grid_and_start("comfyui", steps, denoise)
    _check_grid_steps(r, "hires", grid, f"hires steps {steps} at denoise {denoise} walk a {grid}-step grid",
                      f"use about {round(r.recipe.steps.default * denoise)} hires steps, or another hires denoise")
    if r.refused():
        return None
    sigmas, _ = _sigmas_and_nfe(r, r.recipe, train, s.sampler, s.schedule, grid, r.recipe.prediction_type,
                                architecture, None)
    if not sigmas:
        return None
    cut, nfe = _cut(r, s.sampler, sigmas, start)
    r.info("hires", f"hires fix: {upscaler} to {hw}x{hh}, then {len(cut) - 1} steps at denoise {denoise}")
    return Hires(scale=req.hires, width=hw, height=hh, upscaler=upscaler, steps=steps, denoise=denoise,
                 grid_steps=grid, start=start, sigmas=cut, nfe=nfe)


def _note_unused_overrides(r: _Resolver) -> None:
    """An override that nothing needed is harmless but worth saying: it may mean a typo in another field."""
    for o in r.req.overrides:
        if o not in r.soft_fields:
            r.info(o, f"an override of {o} was asked for but nothing needed overriding")


def _guidance(r: _Resolver, recipe: Recipe, req: Request, preset: Preset | None) -> float | None:
    """The distilled guidance a guidance-distilled model takes as an input; None for every other model."""
    g = recipe.guidance
    if g is None:
        if req.guidance is not None:
            r.hard("guidance", f"this model has no distilled-guidance input: guidance {req.guidance:g} would be "
                   "recorded but change nothing", None, req.guidance, "drop --guidance (prompt strength is --cfg)")
        return None
    value, src = _first((req.guidance, "request"), (preset and preset.guidance, "preset"), (g.default, "recipe"))
    if src != "request":
        r.info("guidance", f"distilled guidance {value:g} (from the {src})", g.default)
    elif not math.isfinite(value) or value < 0:
        r.hard("guidance", f"distilled guidance {value} cannot work: it must be a finite number >= 0", g.default,
               value, f"use {g.default:g}")
    elif not g.min <= value <= g.max:
        r.soft("guidance", "guidance", f"distilled guidance {value:g} is outside the recipe's range "
               f"{g.min:g}..{g.max:g}", g.default, value, f"use {min(max(value, g.min), g.max):g}")
    return float(value)


def flow_shift(schedule: Any, width: int, height: int) -> float | None:
    """The shift a flow model runs with at ``width`` x ``height``: its static shift, or its dynamic rule
    (mu linear in the token count L between base and max, shift = exp(mu)); None for VP models."""
    if schedule is None or schedule.kind != "flow":
        return None
    d = schedule.dynamic_shift
    if d is None:
        return float(schedule.shift if schedule.shift is not None else 1.0)
    tokens = (width / d.pixels_per_token) * (height / d.pixels_per_token)
    slope = (d.max_shift - d.base_shift) / (d.max_seq_len - d.base_seq_len)
    return math.exp(d.base_shift + slope * (tokens - d.base_seq_len))


def _plan_training_schedule(r: _Resolver, recipe: Recipe, req: Request, width: int, height: int) -> dict[str, Any]:
    """The training schedule the engine runs, as a plan records it: a VP schedule as the recipe states it; a flow
    schedule with the one shift that applies at this size (a requested other shift is a soft deviation)."""
    ts = recipe.training_schedule
    native = flow_shift(ts, width, height)
    if native is None:
        if req.shift is not None:
            r.hard("shift", "a timestep shift applies to flow models (SD3, Flux) only", None, req.shift,
                   "drop --shift")
        return ts.model_dump(mode="json", exclude_none=True) if ts else default_training_schedule()
    shift = native
    if req.shift is not None and not (math.isfinite(req.shift) and req.shift > 0):
        r.hard("shift", f"shift {req.shift} cannot work: it must be a positive number", native, req.shift,
               f"use {native:.4g}")
    elif req.shift is not None and abs(req.shift - native) > 1e-6 * max(1.0, native):
        rule = f"its dynamic-shift rule at {width}x{height}" if ts.dynamic_shift else "its training"
        r.soft("shift", "shift", f"shift {req.shift:g} is not the {native:.4g} of {rule}; another shift moves the "
               "steps along the noise trajectory (washed-out or noisy images)", native, req.shift,
               f"use {native:.4g}, or leave the shift to the recipe")
        shift = float(req.shift)
    out: dict[str, Any] = {"kind": "flow", "shift": shift, "num_train_timesteps": ts.num_train_timesteps}
    if (ts.model_extra or {}).get("multiplier") is not None:
        out["multiplier"] = ts.model_extra["multiplier"]
    return out


def _cfg_variant(r: _Resolver, recipe: Recipe, req: Request, sampler: str) -> str:
    """The guidance formula: a *_cfg_pp sampler is CFG++ by construction; CFG++ needs such a sampler."""
    asked = req.cfg_variant
    if asked is not None and asked not in CFG_VARIANTS:
        r.hard("cfg_variant", f"unknown CFG variant {asked!r}", recipe.cfg.variant, asked,
               f"use one of {', '.join(CFG_VARIANTS)}")
        return recipe.cfg.variant
    if sampler.endswith("_cfg_pp"):
        if asked not in (None, "cfg_pp"):
            r.hard("cfg_variant", f"{sampler} is CFG++ by construction; it cannot also run {asked!r}", "cfg_pp",
                   asked, f"drop the CFG variant, or use {sampler.removesuffix('_cfg_pp')} with {asked}")
        return "cfg_pp"
    variant = asked or recipe.cfg.variant
    if variant == "cfg_pp":
        r.hard("cfg_variant", f"CFG++ renoises with the unconditional prediction inside the sampler; {sampler} "
               "does not", recipe.cfg.variant, variant, "use a *_cfg_pp sampler (e.g. euler_cfg_pp) or cfg")
    return variant


def _check_sampler(r: _Resolver, sampler: str, options: dict[str, Any]) -> None:
    """What the engine would refuse about the sampler, refused here first: its options and their values."""
    from iga.catalog import option_problems, sampler_options
    from iga.sampling.samplers import SAMPLERS

    spec = SAMPLERS.get(sampler)
    if spec is None:
        return  # _sigmas_and_nfe names a sampler without an implementation
    for name, why in option_problems(sampler, sampler_options(sampler, spec.options), options).items():
        field = "eta" if name == "eta" else f"sampler_options.{name}"
        fix = "drop --eta, or choose an ancestral/SDE sampler (`iga samplers`)" if name == "eta" and \
            name not in spec.options else "use an allowed value (`iga samplers --long`)"
        r.hard(field, why, None, options[name], fix)


def _resolve_vae(r: _Resolver, recipe: Recipe, req: Request, architecture: str = "unknown",
                 own_vae: bool | None = None) -> VaeIdentity | None:
    """The VAE that will really run, as the plan records it. A recipe VAE that is a separate file (``embedded:
    false``) comes from the model store; when it is not there the checkpoint's own runs, and the plan says so."""
    spec = recipe.vae
    native = spec.id if spec else None
    if req.vae is None:
        if spec is None:
            return None
        if spec.embedded or not (spec.id or spec.sha256):
            return VaeIdentity(id=native, source="checkpoint")
        return _recipe_vae(r, spec, architecture, own_vae)
    if spec is not None and req.vae == native and not _is_vae_path(req.vae):
        return VaeIdentity(id=native, source="checkpoint") if spec.embedded else \
            _recipe_vae(r, spec, architecture, own_vae)
    if _is_vae_path(req.vae):
        path = Path(req.vae).expanduser().resolve()
        ident = _vae_file_identity(r, VaeIdentity(id=path.stem, source="file"), path)
    else:
        ident = _store_vae_by_id(r, req.vae, architecture)
    if ident.file_sha256 is None:  # not found: already refused
        return ident
    if spec is not None and _is_recipe_vae(spec, ident):
        return ident.model_copy(update={"id": native or ident.id})
    if native or (spec is not None and spec.sha256):
        r.soft("vae", "vae", f"VAE {ident.id!r} is not the recipe's {native or spec.sha256[:12]!r}; another VAE "
               "shifts colours and detail", native, ident.id, f"use the {native or 'recipe'} VAE")
    return ident


def _is_vae_path(value: str) -> bool:
    """A path (a file name with a weights suffix, or anything that exists) rather than a store id."""
    return Path(value).suffix in (".safetensors", ".ckpt", ".pt", ".bin") or Path(value).expanduser().exists()


def _is_recipe_vae(spec: Any, ident: VaeIdentity) -> bool:
    """Whether a VAE file is the one the recipe names: same hash as the recipe records (or as the store's file with
    the recipe's id), else the same name."""
    if spec.sha256:
        return ident.file_sha256 == spec.sha256
    entry, _ = _store_lookup(spec.id, "vae") if spec.id and not spec.embedded else (None, None)
    return ident.file_sha256 == entry.sha256() if entry is not None else ident.id == spec.id


def _recipe_vae(r: _Resolver, spec: Any, architecture: str, own_vae: bool | None) -> VaeIdentity | None:
    """The recipe's separate VAE file from the store; absent, the checkpoint's own VAE (soft, recorded as what it
    is) or, when the checkpoint has none, nothing that can run (hard)."""
    name = repr(spec.id) if spec.id else f"with SHA-256 {spec.sha256[:12]}..."
    entry, why = _store_lookup(spec.sha256, "vae", brief=True) if spec.sha256 else (None, None)
    if entry is None and spec.id:
        entry, why = _store_lookup(spec.id, "vae", brief=True)
        if entry is not None and spec.sha256 and entry.sha256() != spec.sha256:
            entry, why = None, (f"the store's {entry.path} has that id but not the recipe's SHA-256 "
                                f"{spec.sha256[:12]}...")
    fix = ("put the VAE file in a models folder (IGA_MODELS, or \"models\" in the config file: see `iga models "
           "--help`), or pass --vae PATH")
    if entry is not None:
        if not _vae_fits(r, entry, architecture):
            return None
        return _vae_file_identity(r, VaeIdentity(id=spec.id or entry.id, source="file"), Path(entry.path))
    if own_vae is False:
        r.hard("vae", f"the recipe's VAE {name} is a separate file (embedded: false), {why}, and the checkpoint has "
               "no VAE of its own", spec.id, None, fix)
        return None
    r.soft("vae", "vae", f"the recipe's VAE {name} is a separate file (embedded: false), and {why}; the model would "
           "run with the checkpoint's own VAE, and colours may shift", spec.id, "the checkpoint's own VAE", fix)
    return VaeIdentity(id=None, source="checkpoint")


def _store_vae_by_id(r: _Resolver, vae_id: str, architecture: str) -> VaeIdentity:
    """A requested VAE id (not a path) from the store; unknown or ambiguous is hard (nothing to load)."""
    entry, why = _store_lookup(vae_id, "vae")
    if entry is None:
        r.hard("vae", f"VAE {vae_id!r}: {why}", None, vae_id, "pass --vae PATH, or put the file in a models folder "
               "(`iga models --kind vae` lists the store)")
        return VaeIdentity(id=vae_id, source="file")
    if not _vae_fits(r, entry, architecture):
        return VaeIdentity(id=vae_id, source="file")
    return _vae_file_identity(r, VaeIdentity(id=entry.id, source="file"), Path(entry.path))


def _store_lookup(key: str, kind: str, *, brief: bool = False) -> tuple[Any, str | None]:
    """(the store's entry, None) or (None, why not: the store's message, or with ``brief`` just "not in the model
    store" unless several files share the id). A bad config file is an error, not a finding."""
    from iga import store

    try:
        return store.find(key, kind), None
    except store.StoreConfigError:
        raise
    except store.AmbiguousModel as e:
        return None, str(e)
    except store.ModelNotFound as e:
        return None, "it is not in the model store" if brief else str(e)


def _vae_fits(r: _Resolver, entry: Any, architecture: str) -> bool:
    """A VAE decodes the latents of the families it was made for only (4 latent channels: SD1/2/XL; 16: SD3/Flux)."""
    if "unknown" in (architecture, entry.architecture) or architecture in entry.families():
        return True
    r.hard("vae", f"VAE {entry.id!r} ({entry.path}) is made for {entry.architecture} latents, not {architecture}'s",
           None, entry.id, "use a VAE made for this model family")
    return False


def _vae_file_identity(r: _Resolver, ident: VaeIdentity, path: Path) -> VaeIdentity:
    """A VAE file (or diffusers VAE folder) is recorded by its hash (found again through the model store); its local
    path only with IGA_RECORD_MODEL_PATH=1, so shared images do not reveal local folders."""
    import os

    from iga.checkpoint.hashing import file_sha256, folder_weights_sha256
    from iga.guard.source import RECORD_PATH_ENV
    from iga.store.used import remember

    if path.is_dir() and (path / "config.json").is_file():
        digest = folder_weights_sha256(path)[0]  # a folder has no single file to hash: its weights' hash
    elif path.is_file():
        digest = file_sha256(path)
        remember(digest, str(path), ident.id or path.stem)
    else:
        r.hard("vae", f"VAE not found: {path}", None, str(path), "check the path")
        return ident
    recorded = str(path) if os.environ.get(RECORD_PATH_ENV) == "1" else None
    return ident.model_copy(update={"path": recorded, "file_sha256": digest, "autov2": digest[:10]})


def _sigmas_and_nfe(r: _Resolver, recipe: Recipe, train: dict[str, Any], sampler: str, schedule: str, steps: int,
                    pred: str, architecture: str, explicit: list[float] | None) -> tuple[list[float], int | None]:
    """The exact sigma list the sampler will walk, and its model-call count."""
    import torch

    from iga.sampling import schedules as S
    from iga.sampling.parameterization import schedule_from_config
    from iga.sampling.base import SamplingError
    from iga.sampling.samplers import SAMPLERS, expected_nfe

    spec = SAMPLERS.get(sampler)
    if spec is None:
        r.hard("sampler", f"{sampler} is in the name table but this build has no implementation of it", None,
               sampler, "choose another sampler (`iga samplers`)")
        return [], None
    if pred not in spec.parameterizations:
        r.hard("sampler", f"{sampler} does not support {pred!r} models (it supports "
               f"{', '.join(spec.parameterizations)})", recipe.sampler.name, sampler, f"use {recipe.sampler.name}")
        return [], None
    ts = schedule_from_config(train)
    try:
        if explicit is not None:
            sig = S.validate_sigmas(torch.tensor(explicit, dtype=torch.float32), "requested sigmas")
        else:
            n = steps + 1 if spec.discard_penultimate else steps
            params = dict(recipe.scheduler.params) if schedule == recipe.scheduler.name else {}
            if schedule == "explicit" and not recipe.scheduler.grid:
                r.hard("schedule", "the explicit schedule walks the recipe's own sigma grid, and this recipe has "
                       "none", recipe.scheduler.name, schedule, f"use {recipe.scheduler.name} (the recipe's schedule)")
                return [], None
            if schedule == "explicit":
                sig = S.explicit_grid(recipe.scheduler.grid, n)
            else:
                if schedule == "ays":
                    params.setdefault("model_family", "sdxl" if architecture.startswith("sdxl") else "sd1")
                sig = S.compute_schedule(schedule, n, ts, **params)
            if spec.discard_penultimate:
                sig = S.discard_penultimate(sig)
    except ValueError as e:
        r.hard("sigmas", str(e), None, explicit, "use a strictly decreasing list of sigmas ending in 0")
        return [], None
    try:  # the sampler's own structural checks (e.g. dpm_fast needs two distinct nonzero sigmas)
        nfe = expected_nfe(sampler, sig, kind="flow" if pred == "flow" else "vp")
    except SamplingError as e:
        r.hard("steps", str(e), recipe.steps.default, steps, "use more steps")
        return [], None
    return [float(x) for x in sig.tolist()], nfe
