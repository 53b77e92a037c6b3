"""The A1111 web UI's HTTP API (`/sdapi/v1`), as much of it as clients such as `webuiapi` use, on iga's guard.

**The default-payload policy.** A1111 clients send every field whether or not their user chose it (`webuiapi`
sends Euler a, scheduler automatic, 20 steps, CFG 7, 512x512, eta 1). A value that equals what such clients send
by default (``CLIENT_DEFAULTS``) therefore means "not set": the recipe (or the preset) decides it, and the
response says which fields it replaced. Any other value is a deliberate choice and goes to the guard as asked:
a soft deviation is refused in guarded mode (422, the guard's reason in the body) unless it is named as an override:

    override_settings: {"iga_overrides": ["steps"], "iga_reason": "testing 60 steps"}
    or headers  X-IGA-Override: steps   X-IGA-Reason: testing 60 steps

A field named as an override is always taken literally (also when it equals a client default), and
``iga_literal: true`` (or ``X-IGA-Literal: 1``) takes every field literally. ``iga_mode`` / ``X-IGA-Mode``
choose strict, guarded or permissive for one request. Every accepted deviation is in the audit log.
Unknown keys and nulls are ignored, as A1111 does; fields that would change the image in ways iga does not do
(hires fix, face restoration, tiling, variation seeds, scripts) are refused rather than silently dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from typing import Any

from iga.server.service import ApiError

CLIENT_DEFAULTS: dict[str, tuple[Any, ...]] = {  # webuiapi 0.9.17 and A1111's own API model
    "sampler": ("Euler a", "Euler"),
    "scheduler": ("automatic", "Automatic"),
    "steps": (20, 50),
    "cfg_scale": (7, 7.0),
    "width": (512,),
    "height": (512,),
    "eta": (1.0,),
    "clip_skip": (1,),
    "sd_vae": ("Automatic", "None"),
    "distilled_cfg_scale": (3.5,),  # Forge's default for Flux
}
UNSUPPORTED: dict[str, Any] = {  # field -> the value that means "off"
    "enable_hr": False, "restore_faces": False, "tiling": False, "subseed_strength": 0,
    "script_name": None, "init_images": None, "mask": None,
}
OVERRIDE_KEYS = ("iga_overrides", "iga_reason", "iga_mode", "iga_literal")


@dataclass
class Translation:
    """An A1111 payload in guard terms, and what the policy did with it."""

    fields: dict[str, Any]  # guard Request fields
    model: str | None  # override_settings.sd_model_checkpoint
    mode: str | None
    save: bool
    replaced: dict[str, Any] = field(default_factory=dict)  # client defaults the recipe replaced
    ignored: list[str] = field(default_factory=list)


def _is_default(key: str, value: Any, literal: set[str]) -> bool:
    return value is None or value == "" or (key not in literal and value in CLIENT_DEFAULTS.get(key, ()))


def _override_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ApiError(422, "iga_overrides must be a list of field names or a comma-separated string, e.g. "
                        "[\"steps\", \"cfg\"]")


def _number(payload: dict[str, Any], key: str, kind: type) -> Any:
    value = payload.get(key)
    if value is None:
        return None
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ApiError(422, f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return value


def translate(payload: dict[str, Any], headers: Any) -> Translation:
    """Map a txt2img payload (and the X-IGA-* headers) onto guard Request fields under the default-payload policy."""
    settings = payload.get("override_settings") or {}
    if not isinstance(settings, dict):
        raise ApiError(422, "override_settings must be an object")
    overrides = _override_list(settings.get("iga_overrides")) + _override_list(headers.get("x-iga-override"))
    literal_all = bool(settings.get("iga_literal")) or headers.get("x-iga-literal", "") in ("1", "true", "yes")
    literal = set(CLIENT_DEFAULTS) if literal_all else _literal_fields(overrides)
    _refuse_unsupported(payload)
    t = Translation(fields={}, model=settings.get("sd_model_checkpoint"),
                    mode=settings.get("iga_mode") or headers.get("x-iga-mode"),
                    save=bool(payload.get("save_images", False)))
    t.fields.update(prompt=payload.get("prompt") or "", negative_prompt=payload.get("negative_prompt") or "",
                    overrides=overrides, reason=settings.get("iga_reason") or headers.get("x-iga-reason"))
    _knobs(payload, settings, literal, t)
    seed = _number(payload, "seed", int)
    t.fields["seed"] = None if seed is None or seed < 0 else seed
    counts = [_number(payload, key, int) for key in ("batch_size", "n_iter")]
    for key, n in zip(("batch_size", "n_iter"), counts):
        if n is not None and n < 1:
            raise ApiError(422, f"{key} {n}: must be 1 or more")
    t.fields["batch"] = (counts[0] or 1) * (counts[1] or 1)
    return t


def _literal_fields(overrides: list[str]) -> set[str]:
    """The payload keys an override of these guard fields makes literal."""
    keys = {"sampler": ("sampler",), "schedule": ("scheduler",), "steps": ("steps",), "cfg": ("cfg_scale",),
            "size": ("width", "height"), "clip_skip": ("clip_skip",), "vae": ("sd_vae",), "eta": ("eta",),
            "guidance": ("distilled_cfg_scale",)}
    return {k for o in overrides for k in keys.get(o, ())}


def _refuse_unsupported(payload: dict[str, Any]) -> None:
    asked = [k for k, off in UNSUPPORTED.items() if payload.get(k) not in (None, off, [], "")]
    scripts = payload.get("alwayson_scripts") or {}
    if isinstance(scripts, dict) and any((v or {}).get("args") for v in scripts.values() if isinstance(v, dict)):
        asked.append("alwayson_scripts")
    if asked:
        raise ApiError(422, f"{', '.join(asked)}: not supported by iga's A1111 API (hires fix, img2img, face "
                            f"restoration, tiling, variation seeds and scripts are not available yet); send them "
                            f"off (false, 0 or null)", kind="unsupported")


def _knobs(payload: dict[str, Any], settings: dict[str, Any], literal: set[str], t: Translation) -> None:
    sampler = payload.get("sampler_name") or payload.get("sampler_index")
    values = {"sampler": sampler, "scheduler": payload.get("scheduler"),
              "steps": _number(payload, "steps", int), "cfg_scale": _number(payload, "cfg_scale", float),
              "width": _number(payload, "width", int), "height": _number(payload, "height", int),
              "eta": _number(payload, "eta", float),
              "clip_skip": _number(settings, "CLIP_stop_at_last_layers", int), "sd_vae": settings.get("sd_vae"),
              "distilled_cfg_scale": _number(payload, "distilled_cfg_scale", float)}
    target = {"sampler": "sampler", "scheduler": "schedule", "steps": "steps", "cfg_scale": "cfg", "eta": "eta",
              "clip_skip": "clip_skip", "sd_vae": "vae", "distilled_cfg_scale": "guidance"}
    for key, value in values.items():
        if key in ("width", "height"):
            continue
        if _is_default(key, value, literal):
            if value not in (None, ""):
                t.replaced[key] = value
            continue
        t.fields[target[key]] = value
    if str(t.fields.get("schedule", "")).lower() == "automatic":  # taken literally: A1111's meaning
        t.fields["schedule"] = _automatic_schedule(t.fields.get("sampler"))
    w, h = values["width"], values["height"]
    if not (_is_default("width", w, literal) and _is_default("height", h, literal)):
        t.fields["size"] = f"{512 if w is None else w}x{512 if h is None else h}"
    else:
        t.replaced.update({k: v for k, v in (("width", w), ("height", h)) if v is not None})


def _automatic_schedule(sampler: str | None) -> str | None:
    """What A1111's "automatic" schedule means for a sampler label: the sampler's own default (None: unknown, the
    guard then names the problem with the sampler)."""
    from iga.provenance.labels import automatic_schedule, resolve_sampler_label

    if not sampler:
        return None
    name, embedded, _ = resolve_sampler_label(sampler)
    return embedded or automatic_schedule(name)


def decode_image(data: Any) -> bytes:
    """The bytes of a base64 image as A1111 clients send it (a `data:image/...;base64,` prefix allowed)."""
    if not isinstance(data, str) or not data:
        raise ApiError(422, "image must be a base64 string (optionally a data:image/...;base64, URL)")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "image is not valid base64") from None


def info_json(job: Any, entry: Any, t: Translation, plan: Any) -> str:
    """A1111's `info` string for a finished job: its keys, plus iga's findings, overrides and policy notes."""
    from iga.provenance.infotext import image_seed, short_hash
    from iga.provenance.labels import sampler_label, schedule_label

    plans = [r.plan for r in job.results]
    seeds = [image_seed(p) for p in plans] or list(plan.seeds)
    vae = plan.vae.model_dump() if plan.vae else None
    extra = {"Schedule type": schedule_label(plan.schedule), "iga recipe": entry.source.recipe is not None}
    if t.replaced:
        extra["iga client defaults replaced by the recipe"] = ", ".join(sorted(t.replaced))
    n = len(seeds)
    info = {
        "prompt": plan.prompt, "all_prompts": [plan.prompt] * n, "negative_prompt": plan.negative_prompt,
        "all_negative_prompts": [plan.negative_prompt] * n, "seed": seeds[0] if seeds else plan.seed,
        "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * n, "subseed_strength": 0,
        "width": plan.width, "height": plan.height, "sampler_name": sampler_label(plan.sampler),
        "scheduler": schedule_label(plan.schedule), "cfg_scale": plan.cfg, "steps": plan.steps, "batch_size": n,
        "restore_faces": False, "face_restoration_model": None, "sd_model_name": plan.model.name,
        "sd_model_hash": short_hash(plan.model.model_dump()), "sd_vae_name": (vae or {}).get("name"),
        "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": None,
        "extra_generation_params": extra, "index_of_first_image": 0, "infotexts": [r.infotext for r in job.results],
        "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
        "clip_skip": plan.clip_skip, "is_using_inpainting_conditioning": False, "version": _version(),
        "iga": {"plans": plans, "findings": [f.model_dump(mode="json") for f in plan.findings],
                "overrides": [o.model_dump(mode="json") for o in plan.overrides],
                "client_defaults_replaced": t.replaced, "interrupted": job.status == "cancelled"},
    }
    return json.dumps(info, ensure_ascii=False, allow_nan=False)


def _version() -> str:
    from iga import __version__

    return f"iga {__version__}"


def png_info(data: bytes) -> dict[str, Any]:
    """`/png-info`: the image's A1111 infotext, its other text chunks, and the infotext parsed into A1111's keys."""
    from iga.provenance import ProvenanceError, read_provenance
    from iga.provenance.infotext import parse_infotext

    try:
        prov = read_provenance(data)
    except ProvenanceError as e:
        raise ApiError(422, f"image: {e}") from None
    raw = dict(prov.raw or {})
    text = raw.pop("parameters", None)
    if text is None and prov.plan:
        from iga.provenance.infotext import format_infotext

        text = format_infotext(prov.plan)
    params: dict[str, Any] = {}
    if text:
        parsed = parse_infotext(text)  # A1111's parse_generation_parameters shape: Prompt, Negative prompt, keys
        params = {"Prompt": parsed["prompt"], "Negative prompt": parsed["negative_prompt"], **parsed["params"]}
    return {"info": text or "", "items": {k: v for k, v in raw.items() if isinstance(v, str)}, "parameters": params}
