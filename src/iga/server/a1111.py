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
(face restoration, tiling, variation seeds, scripts, a hires pass with its own size, model, sampler or prompt,
img2img's crop/fill resize modes and latent-noise fills) are refused rather than silently dropped.

**img2img and hires fix.** Their own fields have no recipe value to stand for, so they are taken as A1111 means
them, its API defaults included (``IMG2IMG_DEFAULTS``: denoising 0.75, mask blur 4, "only masked" with padding
0, as A1111's API -- not its UI -- defaults them). Steps and denoising choose the sigmas by A1111's rule
(``iga.guard.img2img``: 20 steps at 0.75 run 16), or ComfyUI's when ``override_settings.img2img_fix_steps`` is
true, as in A1111. The init image and mask are stored by ``iga.server.uploads``; the init image's size is the
output size unless width and height are deliberate. Hires fix (txt2img, ``enable_hr``) maps hr_scale,
hr_upscaler, hr_second_pass_steps (0: the first pass's) and denoising_strength onto the guard's hires fields.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from iga.guard.img2img import DEFAULT_DENOISE, DEFAULT_MASK_BLUR
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
    "inpainting_fill": (0,),  # "fill": A1111's API default; iga starts from the original pixels ("original")
}
UNSUPPORTED: dict[str, Any] = {  # field -> the value that means "off"
    "restore_faces": False, "tiling": False, "subseed_strength": 0, "script_name": None,
}
IMG2IMG_DEFAULTS: dict[str, Any] = {  # A1111's API model (StableDiffusionProcessingImg2Img), as webuiapi sends it
    "denoising_strength": DEFAULT_DENOISE, "mask_blur": DEFAULT_MASK_BLUR, "inpaint_full_res": True,
    "inpaint_full_res_padding": 0,  # the UI's 32 (the guard's default) is not the API's
    "inpainting_fill": 0, "resize_mode": 0, "inpainting_mask_invert": 0, "initial_noise_multiplier": 1,
}
INPAINTING_FILL = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
RESIZE_MODES = {0: "just resize", 1: "crop and resize", 2: "resize and fill", 3: "just resize (latent upscale)"}
HIRES_SAME: dict[str, tuple[Any, ...]] = {  # hires fields iga does not do -> the values that mean "as the first pass"
    "hr_resize_x": (0,), "hr_resize_y": (0,), "firstphase_width": (0,), "firstphase_height": (0,),
    "hr_checkpoint_name": ("Use same checkpoint",), "hr_sampler_name": ("Use same sampler",),
    "hr_scheduler": ("Use same scheduler",), "hr_prompt": (), "hr_negative_prompt": (),
}
STAGE_PARAMS = ("Denoising strength", "Mask blur", "Inpaint area", "Masked area padding", "Hires upscale",
                "Hires steps", "Hires upscaler")  # infotext keys A1111 also lists in extra_generation_params
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


def translate(payload: dict[str, Any], headers: Any, uploads: Any = None) -> Translation:
    """Map a txt2img payload -- or, given ``uploads`` (``iga.server.uploads.Uploads``), an img2img payload -- and the
    X-IGA-* headers onto guard Request fields under the default-payload policy."""
    settings = payload.get("override_settings") or {}
    if not isinstance(settings, dict):
        raise ApiError(422, "override_settings must be an object")
    overrides = _override_list(settings.get("iga_overrides")) + _override_list(headers.get("x-iga-override"))
    literal_all = bool(settings.get("iga_literal")) or headers.get("x-iga-literal", "") in ("1", "true", "yes")
    literal = set(CLIENT_DEFAULTS) if literal_all else _literal_fields(overrides)
    _refuse_unsupported(payload, img2img=uploads is not None)
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
    if uploads is None:
        _hires(payload, t)
    else:
        _img2img(payload, settings, literal, uploads, t)
    return t


def _literal_fields(overrides: list[str]) -> set[str]:
    """The payload keys an override of these guard fields makes literal."""
    keys = {"sampler": ("sampler",), "schedule": ("scheduler",), "steps": ("steps",), "cfg": ("cfg_scale",),
            "size": ("width", "height"), "clip_skip": ("clip_skip",), "vae": ("sd_vae",), "eta": ("eta",),
            "guidance": ("distilled_cfg_scale",)}
    return {k for o in overrides for k in keys.get(o, ())}


def _refuse_unsupported(payload: dict[str, Any], *, img2img: bool) -> None:
    if not img2img and any(payload.get(k) not in (None, [], "") for k in ("init_images", "mask")):
        raise ApiError(422, "init_images and mask belong to /sdapi/v1/img2img; txt2img starts from noise",
                       kind="unsupported")
    asked = [k for k, off in UNSUPPORTED.items() if payload.get(k) not in (None, off, [], "")]
    scripts = payload.get("alwayson_scripts") or {}
    if isinstance(scripts, dict) and any((v or {}).get("args") for v in scripts.values() if isinstance(v, dict)):
        asked.append("alwayson_scripts")
    if asked:
        raise ApiError(422, f"{', '.join(asked)}: not supported by iga's A1111 API (face restoration, tiling, "
                            f"variation seeds and scripts are not available); send them off (false, 0 or null)",
                       kind="unsupported")


def _flag(payload: dict[str, Any], key: str) -> bool:
    value = payload.get(key)
    if value is None:
        return False
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise ApiError(422, f"{key} must be true or false, got {value!r}")


def _hires(payload: dict[str, Any], t: Translation) -> None:
    """txt2img's hires fix (only when enable_hr is true: otherwise its fields are the client's defaults, unused)."""
    if not _flag(payload, "enable_hr"):
        return
    first = {"hr_prompt": "prompt", "hr_negative_prompt": "negative_prompt", "hr_sampler_name": "sampler_name",
             "hr_scheduler": "scheduler"}  # a second-pass value equal to the first pass's asks for nothing new
    different = [k for k, same in HIRES_SAME.items() if payload.get(k) not in (None, "", *same)
                 and not (k in first and payload[k] == payload.get(first[k]))]
    if different:
        raise ApiError(422, f"{', '.join(different)}: iga's hires fix scales the first pass (hr_scale) and runs it "
                            f"again with the same model, sampler, schedule and prompt; a target size, another "
                            f"checkpoint, sampler, scheduler or prompt for the second pass is not available (send "
                            f"0, null or \"\")", kind="unsupported")
    scale = _number(payload, "hr_scale", float)
    t.fields["hires"] = 2.0 if scale is None else scale  # A1111's default scale
    upscaler = payload.get("hr_upscaler")
    if upscaler not in (None, ""):
        if not isinstance(upscaler, str):
            raise ApiError(422, f"hr_upscaler must be a name such as \"Latent\", got {upscaler!r}")
        t.fields["hires_upscaler"] = upscaler
    steps = _number(payload, "hr_second_pass_steps", int)
    if steps:  # 0: as many as the first pass
        t.fields["hires_steps"] = steps
    t.fields["hires_denoise"] = _number(payload, "denoising_strength", float)


def _img2img(payload: dict[str, Any], settings: dict[str, Any], literal: set[str], uploads: Any,
             t: Translation) -> None:
    """img2img's own fields: the init image (exactly one), denoising, and when a mask comes, inpainting."""
    given = {k: payload.get(k) if payload.get(k) is not None else v for k, v in IMG2IMG_DEFAULTS.items()}
    images = payload.get("init_images")
    if not isinstance(images, list) or not images:
        raise ApiError(422, "init_images: send one base64 image to start from (for text to image, use "
                            "/sdapi/v1/txt2img)")
    if len(images) > 1:
        raise ApiError(422, f"init_images has {len(images)} images; iga starts from one per request (send one "
                            f"request per image)")
    if _number(given, "resize_mode", int) != 0:
        raise ApiError(422, _refused_mode("resize_mode", given["resize_mode"], RESIZE_MODES), kind="unsupported")
    if _number(given, "initial_noise_multiplier", float) != 1:
        raise ApiError(422, "initial_noise_multiplier: iga noises the init image by the sigma schedule alone; "
                            "send 1", kind="unsupported")
    t.fields.update(init_image=uploads.save(images[0], "init_images[0]"),
                    denoise=_number(given, "denoising_strength", float),
                    denoise_steps="comfyui" if settings.get("img2img_fix_steps") is True else "a1111")
    if payload.get("mask") in (None, ""):
        return
    fill = _number(given, "inpainting_fill", int)
    if fill not in (0, 1) or (fill == 0 and "inpainting_fill" in literal):
        raise ApiError(422, _refused_mode("inpainting_fill", fill, INPAINTING_FILL), kind="unsupported")
    if fill == 0:
        t.replaced["inpainting_fill"] = 0
    mask = uploads.save(payload["mask"], "mask", invert_mask=_flag(given, "inpainting_mask_invert"))
    t.fields.update(mask=mask, mask_blur=_mask_blur(payload, given),
                    inpaint_area="only_masked" if _flag(given, "inpaint_full_res") else "whole",
                    inpaint_padding=_number(given, "inpaint_full_res_padding", int))


def _refused_mode(key: str, value: Any, names: dict[int, str]) -> str:
    what = f"{value} ({names[value]})" if value in names else repr(value)
    if key == "resize_mode":
        return (f"resize_mode {what}: iga resizes the init image to the output size (0, just resize); cropping and "
                f"filling are not available, send 0 (or crop the image first)")
    return (f"inpainting_fill {what}: iga starts the masked area from the init image's own pixels (1, original); "
            f"send 1")


def _mask_blur(payload: dict[str, Any], given: dict[str, Any]) -> int:
    """A1111's mask_blur, or mask_blur_x/y when only they are sent (iga blurs both ways alike)."""
    if payload.get("mask_blur") is None:
        x, y = _number(payload, "mask_blur_x", int), _number(payload, "mask_blur_y", int)
        if x is not None and y is not None and x != y:
            raise ApiError(422, f"mask_blur_x {x} and mask_blur_y {y}: iga blurs the mask alike in both directions; "
                                f"send mask_blur", kind="unsupported")
        if x is not None or y is not None:
            return x if x is not None else y
    return _number(given, "mask_blur", int)


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


def info_json(job: Any, entry: Any, t: Translation, plan: Any) -> str:
    """A1111's `info` string for a finished job: its keys, plus iga's findings, overrides and policy notes."""
    from iga.provenance.infotext import image_seed, infotext_params, short_hash
    from iga.provenance.labels import sampler_label, schedule_label

    plans = [r.plan for r in job.results]
    seeds = [image_seed(p) for p in plans] or list(plan.seeds)
    vae = plan.vae.model_dump() if plan.vae else None
    stages = {k: v for k, v in infotext_params(plan.to_dict()) if k in STAGE_PARAMS and v is not None}
    extra = {"Schedule type": schedule_label(plan.schedule), **stages, "iga recipe": entry.source.recipe is not None}
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
        "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": stages.get("Denoising strength"),
        "extra_generation_params": extra, "index_of_first_image": 0, "infotexts": [r.infotext for r in job.results],
        "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
        "clip_skip": plan.clip_skip, "version": _version(),
        "is_using_inpainting_conditioning": bool(plan.img2img and plan.img2img.inpaint_method == "model"),
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
