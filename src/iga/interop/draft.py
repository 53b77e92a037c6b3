"""`iga recipe draft`: a recipe built from what a model and its neighbours already say.

Every source is read into ``Evidence`` (a recipe field, its value, where it came from, how sure): the detected
architecture and prediction type, ModelSpec keys, kohya's ``ss_*`` training metadata, a diffusers folder's
scheduler config, A1111's ``<model>.json`` user-metadata sidecar, a model card's front matter, and free
"recommended settings" text. For each field the most certain evidence wins; two sure sources that disagree are
a conflict (a finding, never silently resolved). Fields nobody speaks about come from the architecture's
permissive defaults, and the draft says so. The result validates as a Recipe, ready for `iga embed` or for
`iga calibrate` to narrow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

MAX_SIDE_FILE = 1 << 20  # sidecars, configs and model cards are small; anything larger is not read
SURE = 0.5  # evidence at least this sure takes part in conflicts

# When two sources are equally sure, the one earlier here wins (the file's own structure over what people write).
SOURCE_ORDER = ("detected", "modelspec", "kohya", "diffusers", "a1111 sidecar", "model card", "notes")

_PREDICTION = {"epsilon": "eps", "eps": "eps", "v": "v", "v_prediction": "v", "v-prediction": "v", "vpred": "v",
               "v-zsnr": "v", "sample": "x0", "x0": "x0", "flow": "flow", "flow_prediction": "flow"}
_MODELSPEC_ARCH = (("stable-diffusion-xl-v1-refiner", "sdxl_refiner"), ("stable-diffusion-xl", "sdxl"),
                   ("stable-diffusion-v2", "sd2"), ("stable-diffusion-v1", "sd1"))
_KOHYA_ARCH = (("sdxl", "sdxl"), ("sd_v2", "sd2"), ("sd_v1", "sd1"))


@dataclass(frozen=True)
class Evidence:
    """One source's statement about one recipe field."""

    field: str  # prediction_type, architecture, zero_terminal_snr, training_schedule, sampler, schedule, steps,
    #             cfg, clip_skip, resolution, vae, negative_prompt
    value: Any
    source: str  # one of SOURCE_ORDER
    key: str  # where in the source: "modelspec.prediction_type", "scheduler/scheduler_config.json: ..."
    confidence: float


@dataclass
class Draft:
    """A drafted recipe, the evidence behind every field, and what the sources disagree on."""

    recipe: Any  # iga.recipe.Recipe
    chosen: dict[str, Evidence]
    evidence: list[Evidence]
    conflicts: list[str] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)  # fields no source spoke about
    notes: list[str] = field(default_factory=list)


# -- reading the sources --------------------------------------------------------------------------------------------


def _bool(text: Any) -> bool | None:
    s = str(text).strip().lower()
    return True if s in ("true", "1", "yes") else False if s in ("false", "0", "no") else None


def _int(text: Any) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def _size(text: str) -> str | None:
    import re

    m = re.fullmatch(r"\(?\s*(\d{2,5})\s*[x*,]\s*(\d{2,5})\s*\)?", text.strip())
    return f"{m.group(1)}x{m.group(2)}" if m else None


def from_detection(source: Any) -> list[Evidence]:
    """What the tensors say: architecture, and the prediction type where markers or shapes show it."""
    ev = []
    arch = source.identity.architecture
    if arch and arch != "unknown":
        ev.append(Evidence("architecture", arch, "detected", "tensor names and shapes", 0.9))
    if source.declared_schedule:
        ev.append(Evidence("training_schedule", dict(source.declared_schedule), "detected",
                           "the training schedule the file declares", 0.9))
    if source.detected_prediction:
        ev.append(Evidence("prediction_type", source.detected_prediction, "detected", "marker tensors / metadata "
                           "hints", 0.7))
    return ev


def from_modelspec(md: dict[str, str], *, addon: bool = False) -> list[Evidence]:
    """ModelSpec keys. ``addon``: the file is an add-on (a LoRA), whose ``stable-diffusion-v1/lora`` architecture
    names the base model it was trained on; a base model's own architecture never has a ``/``."""
    ev = []
    arch = md.get("modelspec.architecture", "")
    base = arch.split("/")[0] if addon else arch
    for prefix, name in _MODELSPEC_ARCH:
        if base.startswith(prefix) and "/" not in base:
            ev.append(Evidence("architecture", name, "modelspec", f"modelspec.architecture={arch}", 0.8))
            if base.endswith("-v"):
                ev.append(Evidence("prediction_type", "v", "modelspec", f"modelspec.architecture={arch}", 0.8))
            break
    for key in ("modelspec.prediction_type", "modelspec.predict_key"):
        value = md.get(key, "").strip().lower()
        if value in _PREDICTION:
            ev.append(Evidence("prediction_type", _PREDICTION[value], "modelspec", f"{key}={value}", 0.9))
            if value == "v-zsnr":
                ev.append(Evidence("zero_terminal_snr", True, "modelspec", f"{key}={value}", 0.9))
    if (size := _size(md.get("modelspec.resolution", ""))) is not None:
        ev.append(Evidence("resolution", [size], "modelspec", "modelspec.resolution", 0.9))
    if (layer := _int(md.get("modelspec.encoder_layer", ""))) is not None and layer >= 1:
        ev.append(Evidence("clip_skip", layer, "modelspec", "modelspec.encoder_layer", 0.9))
    return ev


def from_kohya(md: dict[str, str]) -> list[Evidence]:
    """kohya sd-scripts' training metadata (every value a Python str(): "True", "None", "(512, 512)")."""
    ev = []
    version = md.get("ss_base_model_version", "").strip().lower()
    for prefix, name in _KOHYA_ARCH:
        if version.startswith(prefix):
            ev.append(Evidence("architecture", name, "kohya", f"ss_base_model_version={version}", 0.8))
            break
    if version in ("sd_v1_v", "sd_v2_v"):
        ev.append(Evidence("prediction_type", "v", "kohya", f"ss_base_model_version={version}", 0.9))
    elif version in ("sd_v1", "sd_v2"):
        ev.append(Evidence("prediction_type", "eps", "kohya", f"ss_base_model_version={version}", 0.6))
    if (v := _bool(md.get("ss_v_parameterization"))) is not None:  # older kohya and forks
        ev.append(Evidence("prediction_type", "v" if v else "eps", "kohya", "ss_v_parameterization", 0.9))
    if _bool(md.get("ss_v2")):
        ev.append(Evidence("architecture", "sd2", "kohya", "ss_v2=True", 0.8))
    if (z := _bool(md.get("ss_zero_terminal_snr"))) is not None:
        ev.append(Evidence("zero_terminal_snr", z, "kohya", "ss_zero_terminal_snr", 0.9))
    if (skip := _int(md.get("ss_clip_skip", ""))) is not None and skip >= 1:
        ev.append(Evidence("clip_skip", skip, "kohya", "ss_clip_skip", 0.7))
    if (size := _size(md.get("ss_resolution", ""))) is not None:
        ev.append(Evidence("resolution", [size], "kohya", "ss_resolution", 0.6))
    return ev


def from_diffusers_folder(folder: Path) -> list[Evidence]:
    """A diffusers folder's scheduler config: the training schedule and prediction type for sure; its scheduler
    class is only the pipeline's default, weak evidence of a recommended sampler."""
    config = _read_json(folder / "scheduler" / "scheduler_config.json")
    if not config:
        return []
    where = "scheduler/scheduler_config.json"
    ev = []
    pred = _PREDICTION.get(str(config.get("prediction_type", "")).lower())
    if pred:
        ev.append(Evidence("prediction_type", pred, "diffusers", f"{where}: prediction_type", 0.8))
    kind = config.get("beta_schedule")
    if kind in ("scaled_linear", "linear", "squaredcos_cap_v2"):
        sched = {"kind": kind, "beta_start": float(config.get("beta_start", 0.00085)),
                 "beta_end": float(config.get("beta_end", 0.012)),
                 "num_train_timesteps": int(config.get("num_train_timesteps", 1000))}
        ev.append(Evidence("training_schedule", sched, "diffusers", f"{where}: beta_*", 0.9))
    if (z := config.get("rescale_betas_zero_snr")) is not None:
        ev.append(Evidence("zero_terminal_snr", bool(z), "diffusers", f"{where}: rescale_betas_zero_snr", 0.8))
    cls = config.get("_class_name")
    if isinstance(cls, str):
        from iga.recipe.names import UnknownNameError, from_diffusers

        try:
            sampler, schedule = from_diffusers(cls, config)
        except (UnknownNameError, KeyError, ValueError):
            return ev
        ev.append(Evidence("sampler", sampler, "diffusers", f"{where}: _class_name={cls}", 0.3))
        ev.append(Evidence("schedule", schedule, "diffusers", f"{where}: _class_name={cls} + flags", 0.3))
    return ev


def from_a1111_sidecar(model: Path) -> list[Evidence]:
    """A1111's per-checkpoint user metadata (``<model>.json``, written by its extra-networks editor); Forge forks
    add generation keys. Its free-text notes and description are parsed like recommended-settings text."""
    path = model.with_suffix(".json") if model.is_file() else model.with_name(model.name + ".json")
    data = _read_json(path)
    if not data:
        return []
    ev = []
    keys = {"steps": ("steps", "gen_steps"), "cfg": ("cfg", "cfg_scale"), "sampler": ("sampler", "sampler_name"),
            "schedule": ("scheduler", "schedule"), "vae": ("vae", "sd_vae", "vae_te"), "clip_skip": ("clip_skip",)}
    for fld, names in keys.items():
        for name in names:
            value = data.get(name)
            if value in (None, "", "None", "Automatic") or isinstance(value, (list, dict)):
                continue
            parsed = _sidecar_value(fld, value)
            if parsed is not None:
                ev.append(Evidence(fld, parsed, "a1111 sidecar", f"{path.name}: {name}", 0.7))
            break
    w, h = _int(data.get("width", "")), _int(data.get("height", ""))
    if w and h:
        ev.append(Evidence("resolution", [f"{w}x{h}"], "a1111 sidecar", f"{path.name}: width/height", 0.7))
    text = "\n".join(str(data[k]) for k in ("notes", "description") if isinstance(data.get(k), str))
    ev.extend(from_notes(text, source="a1111 sidecar", scale=0.8, where=f"{path.name}: notes/description"))
    return ev


def _sidecar_value(fld: str, value: Any) -> Any:
    from iga.recipe.names import UnknownNameError, resolve_schedule, split_combined

    try:
        if fld == "steps":
            return {"default": int(value)}
        if fld == "cfg":
            return {"default": float(value)}
        if fld == "clip_skip":
            return int(value)
        if fld == "sampler":
            return split_combined(str(value))[0]
        if fld == "schedule":
            return resolve_schedule(str(value))
    except (ValueError, TypeError, UnknownNameError):
        return None
    return str(value)


def from_model_card(model: Path) -> list[Evidence]:
    """A Hugging Face model card's YAML front matter: ``inference: parameters:`` (guidance_scale,
    num_inference_steps, width, height, negative_prompt)."""
    card = (model / "README.md") if model.is_dir() else model.with_name("README.md")
    text = _read_text(card)
    if not text or not text.startswith("---"):
        return []
    end = text.find("\n---", 3)
    if end < 0:
        return []
    import yaml

    try:
        front = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return []
    inference = front.get("inference") if isinstance(front, dict) else None
    params = inference.get("parameters") if isinstance(inference, dict) else None
    if not isinstance(params, dict):
        return []
    ev, where = [], f"{card.name}: inference.parameters"
    if isinstance(params.get("num_inference_steps"), int):
        ev.append(Evidence("steps", {"default": params["num_inference_steps"]}, "model card", where, 0.6))
    if isinstance(params.get("guidance_scale"), (int, float)):
        ev.append(Evidence("cfg", {"default": float(params["guidance_scale"])}, "model card", where, 0.6))
    if isinstance(params.get("width"), int) and isinstance(params.get("height"), int):
        ev.append(Evidence("resolution", [f"{params['width']}x{params['height']}"], "model card", where, 0.6))
    if isinstance(params.get("negative_prompt"), str):
        ev.append(Evidence("negative_prompt", params["negative_prompt"], "model card", where, 0.6))
    return ev


NOTE_FIELDS = ("sampler", "schedule", "steps", "cfg", "clip_skip", "resolution", "vae", "prediction_type",
               "zero_terminal_snr", "negative_prompt")


def from_notes(text: str, *, source: str = "notes", scale: float = 1.0, where: str = "notes") -> list[Evidence]:
    """Free "recommended settings" text (Civitai style), parsed with the name table."""
    if not text or not text.strip():
        return []
    from iga.interop.notes import parse_recommended_settings

    from iga.catalog.samplers import SAMPLERS
    from iga.catalog.schedules import SCHEDULES

    result = parse_recommended_settings(text)
    known = {"sampler": SAMPLERS, "schedule": SCHEDULES}
    return [Evidence(f.field, f.value, source, f"{where}: {f.phrase!r}", round(f.confidence * scale, 2))
            for f in result.fields.values() if f.field in NOTE_FIELDS
            and (f.field not in known or f.value in known[f.field])]  # a name the table lacks stays a warning


def _read_text(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_SIDE_FILE:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- merging ----------------------------------------------------------------------------------------------------------


def _rank(e: Evidence) -> tuple[float, int]:
    return (e.confidence, -SOURCE_ORDER.index(e.source) if e.source in SOURCE_ORDER else -99)


def choose(evidence: list[Evidence]) -> tuple[dict[str, Evidence], list[str]]:
    """The winning evidence per field, and a sentence per disagreement between sure sources."""
    chosen: dict[str, Evidence] = {}
    conflicts: list[str] = []
    by_field: dict[str, list[Evidence]] = {}
    for e in evidence:
        by_field.setdefault(e.field, []).append(e)
    for fld, items in by_field.items():
        items.sort(key=_rank, reverse=True)
        best = items[0]
        chosen[fld] = best
        for other in items[1:]:
            if other.confidence >= SURE and not _agrees(fld, best.value, other.value):
                conflicts.append(f"{fld}: {best.source} ({best.key}) says {best.value!r} but {other.source} "
                                 f"({other.key}) says {other.value!r}; using {best.value!r}")
    return chosen, conflicts


def _agrees(fld: str, a: Any, b: Any) -> bool:
    if fld in ("steps", "cfg") and isinstance(a, dict) and isinstance(b, dict):
        return a.get("default") == b.get("default") or (
            a.get("min") is not None and a.get("max") is not None and b.get("default") is not None
            and a["min"] <= b["default"] <= a["max"])
    if fld == "resolution":
        return bool(set(a) & set(b))
    return a == b


def draft_recipe(model: str | os.PathLike[str], *, notes: str | None = None) -> Draft:
    """Draft a recipe for a checkpoint (a .safetensors file or a diffusers folder) from every source it has."""
    from iga.checkpoint import read_header
    from iga.guard.source import describe_model

    path = Path(model)
    source = describe_model(path, file_hash=False)
    md: dict[str, str] = {}
    if path.is_file():
        md = {k: v for k, v in read_header(path).metadata.items() if isinstance(v, str)}
    readers: list[Callable[[], list[Evidence]]] = [
        lambda: from_detection(source), lambda: from_modelspec(md), lambda: from_kohya(md),
        lambda: from_diffusers_folder(path) if path.is_dir() else [], lambda: from_a1111_sidecar(path),
        lambda: from_model_card(path), lambda: from_notes(notes or "")]
    evidence = [e for read in readers for e in read()]
    chosen, conflicts = choose(evidence)
    recipe, defaulted = build_recipe(path, chosen, source.identity.name)
    notes_out = [f"{path.name} already carries a recipe ({source.recipe.model_id}); the draft is built from the "
                 f"other sources only"] if source.recipe is not None else []
    return Draft(recipe, chosen, evidence, conflicts, defaulted, notes_out)


def build_recipe(path: Path, chosen: dict[str, Evidence], name: str):
    """A valid Recipe from the chosen evidence, on top of the architecture's permissive defaults."""
    from iga.guard.defaults import architecture_default_recipe
    from iga.recipe import parse_recipe_dict

    def value(fld: str, default: Any = None) -> Any:
        return chosen[fld].value if fld in chosen else default

    arch = value("architecture", "unknown")
    base = architecture_default_recipe(arch, value("prediction_type")).to_dict()
    base.pop("hashes", None)
    defaulted = [f for f in ("architecture", "prediction_type", "training_schedule", "sampler", "schedule", "steps",
                             "cfg", "resolution") if f not in chosen]
    base["model_id"] = name or path.stem
    if "training_schedule" in chosen:
        base["training_schedule"] = dict(chosen["training_schedule"].value)
    if "zero_terminal_snr" in chosen:
        base["training_schedule"] = {**base["training_schedule"], "zero_terminal_snr": bool(value("zero_terminal_snr"))}
    if "sampler" in chosen:
        base["sampler"] = {"name": value("sampler")}
    if "schedule" in chosen:
        base["scheduler"] = {"name": value("schedule")}
    for fld in ("steps", "cfg"):
        if fld in chosen:
            base[fld] = _range(base[fld], value(fld))
    if "clip_skip" in chosen:
        base["clip_skip"] = int(value("clip_skip"))
    if "resolution" in chosen:
        base["resolution"] = {**(base.get("resolution") or {}), "preferred": list(value("resolution"))}
    if "vae" in chosen and value("vae") not in ("baked", "embedded"):
        base["vae"] = {"id": str(value("vae")), "embedded": False}
    elif "vae" in chosen:
        base["vae"] = {"embedded": True}
    if base.get("architecture") is None:
        base.pop("architecture", None)
    recipe, _ = parse_recipe_dict(base)
    return recipe, defaulted


def _range(default: dict[str, Any], stated: dict[str, Any]) -> dict[str, Any]:
    """A stated default and/or range over the permissive one: a stated range bounds the default; a stated
    default alone keeps the wide range around it."""
    out = dict(default)
    if stated.get("min") is not None and stated.get("max") is not None:
        out["min"], out["max"] = stated["min"], stated["max"]
        out["default"] = stated.get("default", out["default"])
        if not out["min"] <= out["default"] <= out["max"]:
            mid = (out["min"] + out["max"]) / 2
            out["default"] = round(mid) if isinstance(out["min"], int) else mid
    elif stated.get("default") is not None:
        out["default"] = stated["default"]
        out["min"] = min(out["min"], out["default"])
        out["max"] = max(out["max"], out["default"])
    return out
