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
import secrets
from typing import Any

from iga import __version__
from iga.recipe import names
from iga.catalog import CFG_VARIANTS
from iga.recipe.schema import PREDICTION_ALIASES, Preset, Recipe, parse_size

from .defaults import architecture_default_recipe, default_training_schedule, has_component
from .adapters import controls_step, loras_step
from .img2img import check_inpaint_model, hires_pass, init_size, partial_pass, read_inputs
from .resolution import MAX_BATCH, MAX_PLAN_PIXELS, MAX_PLAN_STEPS, MAX_SEED, GuardRefused, Resolver, Settings, now
from .sigmas import conventions_schedule, initial_noise_scaling, sigmas_and_nfe
from .vae import vae_step
from .refiner import refiner_stage
from .plan import OVERRIDABLE, Finding, Mode, ModelIdentity, Plan, Request

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
    r = Resolver(recipe, req, mode, no_recipe, now())
    arch = model.architecture
    _check_trust(r, arch, signature, integrity)
    loras = loras_step(r, model)  # first: the recipe the later steps check is the one the LoRAs' recipes narrowed
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
    train = conventions_schedule(req.conventions, _plan_training_schedule(r, recipe, req, width, height))
    clip_skip = _clip_skip(r, arch)
    vae = vae_step(r, arch, own_vae)
    seeds = _seeds(r)
    eta, options = _sampler_options(r, s.sampler)
    sigmas, nfe = _sigmas_unless_refused(r, train, s, options, arch)
    check_inpaint_model(r, model, inputs)
    sigmas, nfe, img2img = partial_pass(r, train, s, options, model, inputs, sigmas, nfe)
    hires = hires_pass(r, train, s, options, arch, width, height)
    controls = controls_step(r, model, model_path)
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
        noise_scaling=initial_noise_scaling(req.conventions, train, sigmas, img2img is not None),
        width=width, height=height, clip_skip=clip_skip, vae=vae, img2img=img2img, hires=hires,
        loras=loras, controls=controls, refiner=refiner, findings=r.findings, overrides=r.overrides,
    )
    return plan, r.findings




















def _check_mode_and_overrides(req: Request, mode: Mode) -> None:
    """Malformed calls are errors, not findings: they name no field of the recipe to judge."""
    if mode not in ("strict", "guarded", "permissive"):
        raise ValueError(f"unknown mode {mode!r}; choose strict, guarded or permissive")
    bad = [o for o in req.overrides if o not in OVERRIDABLE]
    if bad:
        raise ValueError(f"cannot override {', '.join(bad)}; overridable fields: {', '.join(OVERRIDABLE)}")


def _check_trust(r: Resolver, architecture: str, signature: str | None,
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


def _preset(r: Resolver) -> Preset | None:
    """The preset in force; a default preset the request did not name is said out loud."""
    preset = _pick_preset(r.recipe, r.req)
    if preset and not r.req.preset:
        r.info("preset", f"the recipe's default preset {preset.name!r} applies")
    return preset


def _settings(r: Resolver, preset: Preset | None) -> Settings:
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
    s = Settings(sampler, schedule, steps, cfg, {"sampler": s_src, "schedule": h_src, "steps": st_src, "cfg": c_src})
    for field, value in (("sampler", sampler), ("schedule", schedule), ("steps", steps), ("cfg", cfg)):
        if not s.requested(field):
            r.info(field, f"{value} (from the {s.source[field]})", recipe_value=value)
    return s


def _check_prediction_and_architecture(r: Resolver, architecture: str, detected_prediction: str | None) -> None:
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


def _check_names(r: Resolver, s: Settings) -> None:
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


def _check_steps(r: Resolver, s: Settings) -> None:
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


def _check_steps_against_recipe(r: Resolver, steps: int) -> None:
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


def _check_cfg(r: Resolver, cfg: Any) -> None:
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


def _cfg_rescale(r: Resolver) -> float:
    """Guidance rescale: the request's, else the recipe's; it is a blend factor, so only [0, 1] means anything."""
    rescale = r.req.cfg_rescale if r.req.cfg_rescale is not None else r.recipe.cfg.rescale
    if not 0.0 <= rescale <= 1.0:
        r.hard("cfg_rescale", "guidance rescale is a blend factor in [0, 1]", r.recipe.cfg.rescale, rescale,
               "use 0.0-1.0 (0.7 is typical)")
    return rescale


def _size(r: Resolver, init_size: str | None = None) -> tuple[int, int]:
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


def _clip_skip(r: Resolver, architecture: str) -> int:
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




def _seeds(r: Resolver) -> list[int]:
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


def _sampler_options(r: Resolver, sampler: str) -> tuple[float | None, dict[str, Any]]:
    """(eta, sampler options). The recipe's sampler options (eta included) belong to its sampler; another sampler
    starts from none. A requested eta applies to whichever sampler runs."""
    params = r.recipe.sampler.params
    native = sampler == r.recipe.sampler.name
    eta = r.req.eta if r.req.eta is not None else (params.get("eta") if native else None)
    options = {k: v for k, v in params.items() if k not in ("order", "eta")} if native else {}
    if eta is not None:
        options["eta"] = eta
    return eta, options


def _sigmas_unless_refused(r: Resolver, train: dict[str, Any], s: Settings, options: dict[str, Any],
                           architecture: str) -> tuple[list[float], int | None]:
    """The sampler's checks and its sigma list, each only while nothing is refused: they build on settings that
    must already be valid (a refused step count has no sigma list)."""
    if not r.refused():
        _check_sampler(r, s.sampler, options)
    if r.refused():
        return [], None
    return sigmas_and_nfe(r, r.recipe, train, s.sampler, s.schedule, s.steps, r.recipe.prediction_type,
                           architecture, r.req.sigmas)












def _note_unused_overrides(r: Resolver) -> None:
    """An override that nothing needed is harmless but worth saying: it may mean a typo in another field."""
    for o in r.req.overrides:
        if o not in r.soft_fields:
            r.info(o, f"an override of {o} was asked for but nothing needed overriding")


def _guidance(r: Resolver, recipe: Recipe, req: Request, preset: Preset | None) -> float | None:
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


def _plan_training_schedule(r: Resolver, recipe: Recipe, req: Request, width: int, height: int) -> dict[str, Any]:
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


def _cfg_variant(r: Resolver, recipe: Recipe, req: Request, sampler: str) -> str:
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


def _check_sampler(r: Resolver, sampler: str, options: dict[str, Any]) -> None:
    """What the engine would refuse about the sampler, refused here first: its options and their values."""
    from iga.catalog import option_problems, sampler_options
    from iga.sampling.samplers import SAMPLERS

    spec = SAMPLERS.get(sampler)
    if spec is None:
        return  # sigmas_and_nfe names a sampler without an implementation
    for name, why in option_problems(sampler, sampler_options(sampler, spec.options), options).items():
        field = "eta" if name == "eta" else f"sampler_options.{name}"
        fix = "drop --eta, or choose an ancestral/SDE sampler (`iga samplers`)" if name == "eta" and \
            name not in spec.options else "use an allowed value (`iga samplers --long`)"
        r.hard(field, why, None, options[name], fix)


















