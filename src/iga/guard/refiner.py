"""The SDXL refiner as the guard sees it: which model finishes the image, and where on the plan's sigma list the base
model hands over.

Where the refiner comes from: the request (``--refiner PATH|ID``), else the recipe's ``refiner`` (looked up in the
model store by its SHA-256, then by its id). ``--refiner none`` asks for no refiner.

Why a recipe's refiner that is missing is *soft* (refused in guarded and strict mode unless ``--override refiner``,
warned in permissive mode) and not hard: the base model alone still produces an image, only not the one the
publisher validated (the refiner adds the last, fine detail). Running without it silently would hide that, and
refusing it outright would make the base model unusable on a machine without the refiner. A refiner other than the
recipe's, a switch other than the recipe's, and ``--refiner none`` against a recipe that names one are the same
kind of deviation (soft, override ``refiner``). What cannot work is hard in every mode: a refiner on a model that is
not SDXL base, a "refiner" that is not an SDXL refiner, a refiner that predicts another type, a switch that leaves
either model no step, and combinations iga does not run (hires fix, inpainting masks, control adapters).

Where the base hands over (diffusers' ``denoising_end``/``denoising_start``): with N training timesteps, the base
runs every step whose timestep ``t(sigma_i) >= round(N - switch * N)``; the refiner runs the rest. Both stages walk
one sigma list (the plan's), so ``switch_index`` is the index in ``plan.sigmas`` where the refiner starts. A1111's
"Refiner switch at" swaps at a fraction of the *steps* instead (``step >= switch * steps``); on Karras-type
schedules the two rules can pick a different step for the same number, and iga follows diffusers' rule.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .plan import ModelIdentity, Refiner

if TYPE_CHECKING:  # pragma: no cover
    from .img2img import Inputs
    from .resolution import Resolver
    from .source import ModelSource

DEFAULT_SWITCH = 0.8  # A1111's and the recipe schema's default "Refiner switch at"
NO_REFINER = "none"  # --refiner none: explicitly without the recipe's refiner


def refiner_stage(r: "Resolver", model: ModelIdentity, train: dict[str, Any], sampler: str, sigmas: list[float],
                  nfe: int | None, inputs: "Inputs", others: tuple[Any, Any]) -> tuple[Refiner | None, int | None]:
    """The plan's refiner and the model calls of both stages (``nfe`` unchanged without a refiner). ``others``:
    the plan's hires fix and control adapters, which iga does not run together with a refiner."""
    req, spec = r.req, r.recipe.refiner
    if req.refiner is None and spec is None:
        if req.refiner_switch is not None:
            r.hard("refiner", "a refiner switch without a refiner changes nothing", None, req.refiner_switch,
                   "add --refiner MODEL, or drop --refiner-switch")
        return None, nfe
    switch = _switch(req.refiner_switch, spec)
    if req.refiner == NO_REFINER:
        if spec is not None:
            r.soft("refiner", "refiner", f"the recipe hands over to the refiner {spec.model_id!r} at {spec.switch:g}; "
                   "without it the base model finishes alone (less fine detail than the publisher validated)",
                   spec.model_id, NO_REFINER, "drop --refiner none")
        return None, nfe
    if model.architecture != "sdxl":
        r.hard("refiner", f"the SDXL refiner continues an SDXL base model's latents; this model is "
               f"{model.architecture}", "sdxl", model.architecture, "drop --refiner, or use an SDXL base model")
        return None, nfe
    source = _refiner_source(r, spec)
    if source is None or not _refiner_fits(r, source, others, inputs) or not sigmas:
        return None, nfe
    index = _switch_index(r, train, switch, sigmas)
    if index is None:
        return None, nfe
    total = _nfe(r, sampler, sigmas, index)
    if total is None and r.refused():
        return None, nfe
    steps = len(sigmas) - 1
    r.info("refiner", f"SDXL refiner {source.identity.name!r}: the base model runs {index} of {steps} steps, the "
           f"refiner the last {steps - index} (switch {switch:g})", spec.model_id if spec else None, req.refiner)
    if r.req.loras:
        r.info("refiner", "LoRAs apply to the base model only (they are made for its layers)")
    return Refiner(model=source.identity, switch=switch, switch_index=index), total


def _switch(requested: float | None, spec: Any) -> float:
    """The switch: the request's, else the recipe's, else 0.8. Outside (0, 1) is bad input, not a setting."""
    switch = requested if requested is not None else (spec.switch if spec is not None else DEFAULT_SWITCH)
    if isinstance(switch, bool) or not isinstance(switch, (int, float)) or not (math.isfinite(switch)
                                                                                and 0 < switch < 1):
        raise ValueError(f"refiner switch {switch}: must be between 0 and 1 (the fraction of the steps the base "
                         f"model runs), e.g. {DEFAULT_SWITCH}")
    return float(switch)


def _refiner_source(r: "Resolver", spec: Any) -> "ModelSource | None":
    """The requested refiner (a path, else a store id), else the recipe's from the store; None when there is none
    to run (refused, or the recipe's is missing: soft)."""
    from iga.store import lookup as store_lookup
    from .source import describe_model

    req = r.req
    if req.refiner is not None:
        path = Path(req.refiner).expanduser()
        if not path.exists():
            entry, why = store_lookup(req.refiner, "checkpoint")
            if entry is None:
                r.hard("refiner", f"refiner {req.refiner!r}: {why}", spec.model_id if spec else None, req.refiner,
                       "pass --refiner PATH (a .safetensors file or a diffusers folder), or put it in a models "
                       "folder (`iga models` lists the store)")
                return None
            path = Path(entry.path)
        source = describe_model(path.resolve())
        if spec is not None and not _is_recipe_refiner(spec, source):
            r.soft("refiner", "refiner", f"refiner {source.identity.name!r} is not the recipe's {spec.model_id!r}; "
                   "another refiner finishes the image differently", spec.model_id, source.identity.name,
                   f"use the {spec.model_id} refiner")
        elif spec is not None and r.req.refiner_switch is not None and r.req.refiner_switch != spec.switch:
            _soft_switch(r, spec)
        return _remembered(source)
    entry, why = store_lookup(spec.sha256, "checkpoint", brief=True) if spec.sha256 else (None, None)
    if entry is None:
        entry, why = store_lookup(spec.model_id, "checkpoint", brief=True)
    source = describe_model(entry.path) if entry is not None else None
    if source is not None and not _is_recipe_refiner(spec, source):
        source, why = None, f"the store's {entry.path} has that id but not the recipe's SHA-256 {spec.sha256[:12]}..."
    if source is None:
        r.soft("refiner", "refiner", f"the recipe's refiner {spec.model_id!r}: {why}; the base model would finish "
               "alone (less fine detail than the publisher validated)", spec.model_id, None,
               "put the refiner in a models folder (IGA_MODELS; `iga models --help`), or pass --refiner PATH")
        return None
    if r.req.refiner_switch is not None and r.req.refiner_switch != spec.switch:
        _soft_switch(r, spec)
    return _remembered(source)


def _soft_switch(r: "Resolver", spec: Any) -> None:
    r.soft("refiner", "refiner", f"refiner switch {r.req.refiner_switch:g} is not the recipe's {spec.switch:g}; the "
           "base and the refiner share the steps differently", spec.switch, r.req.refiner_switch,
           f"use --refiner-switch {spec.switch:g}, or leave it to the recipe")


def _is_recipe_refiner(spec: Any, source: "ModelSource") -> bool:
    """Same weights as the recipe records (its SHA-256: of a file's tensor data or bytes, of a folder's weights),
    else the same id (the store's id is the file stem or folder name)."""
    ident = source.identity
    if spec.sha256:
        return spec.sha256 in (ident.weights_sha256, ident.file_sha256)
    return ident.name == spec.model_id


def _remembered(source: "ModelSource") -> "ModelSource":
    """Replay finds the refiner again by its weights hash (``iga.store.used.refiner_model``)."""
    from iga.store.used import remember

    remember(source.identity.weights_sha256, source.path, source.identity.name)
    return source


def _refiner_fits(r: "Resolver", source: "ModelSource", others: tuple[Any, Any], inputs: "Inputs") -> bool:
    """What the refiner is and predicts are facts of its weights; what iga runs with it is a fact of iga."""
    ident, ok = source.identity, True
    if ident.architecture != "sdxl_refiner":
        r.hard("refiner", f"{ident.name!r} is a {ident.architecture} model, not an SDXL refiner (one OpenCLIP bigG "
               "text encoder, aesthetic-score conditioning)", "sdxl_refiner", ident.architecture,
               "pass the SDXL refiner (e.g. sd_xl_refiner_1.0)")
        ok = False
    pred = r.recipe.prediction_type
    if source.detected_prediction and source.detected_prediction != pred:
        r.hard("refiner", f"the refiner predicts {source.detected_prediction!r} but the base model {pred!r}: it "
               "would read the base model's latents wrongly", pred, source.detected_prediction,
               "use a refiner trained like the base model")
        ok = False
    hires, controls = others
    for present, what, flag in ((hires is not None, "hires fix", "--hires"), (bool(controls), "control adapters",
                                "--control"), (inputs.mask is not None, "inpainting", "--mask")):
        if present:
            r.hard("refiner", f"iga does not run the SDXL refiner together with {what}", None, what,
                   f"drop {flag} or --refiner")
            ok = False
    return ok


def _switch_index(r: "Resolver", train: dict[str, Any], switch: float, sigmas: list[float]) -> int | None:
    """How many steps the base runs: those whose timestep is >= round(N - switch * N) (diffusers' rule). A switch
    that leaves either model no step is hard."""
    import torch

    from iga.sampling.parameterization import schedule_from_config

    n_train = int(train.get("num_train_timesteps", 1000))
    cutoff = int(round(n_train - switch * n_train))
    timesteps = schedule_from_config(train).sigma_to_t(torch.tensor(sigmas[:-1], dtype=torch.float32))
    index = int((timesteps >= cutoff).sum())
    steps = len(sigmas) - 1
    if 0 < index < steps:
        return index
    idle = "base model" if index == 0 else "refiner"
    r.hard("refiner", f"refiner switch {switch:g} leaves the {idle} no step of {steps} (the base runs the steps at "
           f"timesteps >= {cutoff}, here {index})", None, switch,
           "move the switch towards 0.5, or use more steps")
    return None


def _nfe(r: "Resolver", sampler: str, sigmas: list[float], index: int) -> int | None:
    """Model calls of both stages: each is its own sampler run (a multistep sampler restarts at the switch)."""
    import torch

    from iga.sampling.base import SamplingError
    from iga.sampling.samplers import expected_nfe

    kind = "flow" if r.recipe.prediction_type == "flow" else "vp"
    try:
        calls = [expected_nfe(sampler, torch.tensor(part), kind=kind) for part in (sigmas[:index + 1], sigmas[index:])]
    except SamplingError as e:
        r.hard("refiner", f"{sampler} cannot run a stage of the split: {e}", None, None, "move the switch or use "
               "more steps")
        return None
    return None if None in calls else sum(calls)
