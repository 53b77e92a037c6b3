"""A1111 "infotext": the plain-text generation parameters that A1111, Forge, Civitai and ComfyUI's importer read.

Layout (metadata.md section 5)::

    <prompt, may span lines>
    Negative prompt: <negative, may span lines>
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1, Size: 512x512, ...

We always write the ``Negative prompt:`` line (ComfyUI's importer needs it) and start the last line with
``Steps: `` (Civitai needs it). The parser follows A1111's ``parse_generation_parameters``: the last line holds
the parameters if it has at least three ``key: value`` pairs; lines before it are the prompt until one starts
with ``Negative prompt:``; each line is stripped. Limits of the format itself (the iga_metadata chunk keeps the
exact values): leading/trailing whitespace of lines is lost, and a prompt line that starts with
``Negative prompt:`` ends the prompt.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from iga.provenance.labels import a1111_labels, automatic_schedule, resolve_sampler_label, resolve_schedule_label

# A1111's pattern, with bounded key and leading-space repeats: the unbounded original is quadratic on long
# runs of word characters or blanks (searching restarts at every position). Real keys are short.
_RE_PARAM = re.compile(r'\s{0,64}(\w[\w \-/]{1,120}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")
MAX_PARAM_LINE = 64 * 1024  # characters; longer last lines are treated as prompt text (with a warning)
_NEGATIVE = "Negative prompt:"

# A1111 fills these when the key is missing (infotext_utils.parse_generation_parameters)
_DEFAULTS = {"Clip skip": "1", "Schedule type": "Automatic", "RNG": "GPU"}


def quote(value: str) -> str:
    """A1111 quoting: the value raw unless it holds ',', newline or ':', else a JSON string.

    We also quote values that the parser would otherwise change (leading/trailing blanks, a leading '"'),
    which A1111's parser reads back correctly.
    """
    if "," in value or "\n" in value or ":" in value or value != value.strip() or value.startswith('"'):
        return json.dumps(value, ensure_ascii=False)
    return value


def unquote(value: str) -> str:
    """Inverse of ``quote``: JSON-decode a value written as a quoted string, else return it unchanged."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, str):
            return decoded
    return value


def format_number(value: float | int) -> str:
    """Numbers as A1111 shows them: 7 rather than 7.0, 6.5, shortest repr otherwise."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    f = float(value)
    if math.isfinite(f) and f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return repr(f)


def image_seed(plan: Mapping[str, Any]) -> int | None:
    """The seed of this image: ``seeds[batch_index]`` when both are present, else ``seed``."""
    seeds, idx = plan.get("seeds"), plan.get("batch_index")
    if isinstance(seeds, list) and isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx < len(seeds):
        return seeds[idx]
    seed = plan.get("seed")
    return seed if isinstance(seed, int) else None


def short_hash(ident: Mapping[str, Any] | None) -> str | None:
    """A1111 'AutoV2' hash (10 hex of the full-file SHA-256) of a model/VAE identity, when known."""
    if not isinstance(ident, Mapping):
        return None
    if ident.get("autov2"):
        return str(ident["autov2"])
    if ident.get("file_sha256"):
        return str(ident["file_sha256"])[:10]
    return None


def vae_name(vae: Mapping[str, Any] | None) -> str | None:
    """Display name of a separate VAE (None for the checkpoint's own VAE, as A1111 leaves it out then)."""
    if not isinstance(vae, Mapping) or vae.get("source") in ("checkpoint", "none"):
        return None
    for key in ("name", "id"):
        if vae.get(key):
            return str(vae[key])
    path = vae.get("path")
    if path:
        base = str(path).replace("\\", "/").rsplit("/", 1)[-1]
        return base.rsplit(".", 1)[0] if "." in base else base
    return None


def _schedule_rho(plan: Mapping[str, Any]) -> Any:
    params = plan.get("schedule_params")
    if isinstance(params, Mapping) and params.get("rho") is not None:
        return params["rho"]
    return plan.get("schedule_rho")


def _flow_shift(plan: Mapping[str, Any]) -> Any:
    ts = plan.get("training_schedule")
    return ts.get("shift") if isinstance(ts, Mapping) and ts.get("kind") == "flow" else None


def lora_hashes(plan: Mapping[str, Any]) -> str | None:
    """A1111's ``Lora hashes`` value: "name: 12 hex of the tensor-data SHA-256, ..." (names lose ':' and ',', as
    A1111 writes them). The weights are not in this field: A1111 keeps them in ``<lora:name:weight>`` prompt tags,
    which iga does not add, because the plan keeps the prompt exactly as typed and applies LoRAs from
    ``plan.loras`` (the tags would be text to the CLIP tokenizer and change the image); the plan has the weights."""
    loras = plan.get("loras")
    if not isinstance(loras, list) or not loras:
        return None
    parts = [f"{str(u.get('name', '')).replace(':', '').replace(',', '')}: {str(u.get('addnet_sha256') or '')[:12]}"
             for u in loras if isinstance(u, Mapping)]
    return ", ".join(parts) or None


def parse_lora_hashes(value: str | None) -> list[dict[str, str]]:
    """``Lora hashes`` back into [{name, hash}] (entries without a hash are dropped)."""
    out = []
    for part in (value or "").split(","):
        name, sep, digest = part.strip().rpartition(":")
        if sep and name.strip() and digest.strip():
            out.append({"name": name.strip(), "hash": digest.strip()})
    return out


_CONTROL_KEY = re.compile(r"^ControlNet (\d+)$")
_CONTROL_FIELDS = {"Module": "module", "Model": "model", "Weight": "weight", "Guidance Start": "start",
                   "Guidance End": "end"}


def control_units(plan: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The plan's ControlNets as sd-webui-controlnet writes its units: ``ControlNet 0: "Module: none, Model: name
    [8 hex of the file's SHA-256], Weight: 1.0, Resize Mode: Just Resize, Guidance Start: 0.0, Guidance End: 1.0,
    Control Mode: Balanced"``. Module "none": iga takes the conditioning image already preprocessed; "Just
    Resize": it is resized to the image size without cropping; "Balanced": the adapter acts on both CFG halves.
    The extension's other unit fields (processor resolution, thresholds, pixel perfect) have no iga meaning and
    are left out."""
    out = []
    for k, u in enumerate(c for c in plan.get("controls") or () if isinstance(c, Mapping)):
        name = str(u.get("name", "")).replace(",", "").replace(":", "")
        out.append((f"ControlNet {k}", f"Module: none, Model: {name} [{str(u.get('file_sha256') or '')[:8]}], "
                    f"Weight: {_py_float(u.get('strength'))}, Resize Mode: Just Resize, Guidance Start: "
                    f"{_py_float(u.get('start'))}, Guidance End: {_py_float(u.get('end'))}, Control Mode: Balanced"))
    return out


def _py_float(value: Any) -> str:
    """A number as the extension prints it (Python's float repr: 1.0, 0.75)."""
    return str(float(value)) if isinstance(value, (int, float)) else str(value)


def parse_control_units(params: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """sd-webui-controlnet's ``ControlNet N`` units as [{module, model, weight, start, end}] (None: there are none)."""
    units = sorted((int(m.group(1)), v) for k, v in params.items() if (m := _CONTROL_KEY.match(k)))
    out = []
    for _k, value in units:
        unit: dict[str, Any] = dict.fromkeys(_CONTROL_FIELDS.values())
        for part in value.split(", "):
            key, sep, val = part.partition(": ")
            if sep and key.strip() in _CONTROL_FIELDS:
                field = _CONTROL_FIELDS[key.strip()]
                try:
                    unit[field] = float(val) if field in ("weight", "start", "end") else val.strip()
                except ValueError:
                    unit[field] = val.strip()
        out.append(unit)
    return out or None


_INPAINT_AREAS = {"whole": "Whole picture", "only_masked": "Only masked"}  # A1111's labels
_REFINER = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")  # "name [hash]", A1111's checkpoint title


def _refiner_params(plan: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A1111's ``Refiner: name [AutoV2 hash]`` (the name alone when the refiner is a folder, which has no file hash)
    and ``Refiner switch at``."""
    ref = plan.get("refiner") if isinstance(plan.get("refiner"), Mapping) else {}
    model = ref.get("model") if isinstance(ref.get("model"), Mapping) else {}
    name, digest = model.get("name"), short_hash(model)
    return [("Refiner", f"{name} [{digest}]" if name and digest else name),
            ("Refiner switch at", ref.get("switch"))]


def _parse_refiner(params: dict[str, str], warnings: list[str]) -> dict[str, Any]:
    """``Refiner`` back into a name and a hash (None when absent), and the switch."""
    text = params.get("Refiner")
    found = _REFINER.match(text.strip()) if text else None
    return {"refiner": found.group("name") if found else text, "refiner_hash": found.group("hash") if found else None,
            "refiner_switch": _to_float(params, "Refiner switch at", warnings)}


def _stage_params(plan: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """img2img, inpaint and hires-fix settings as A1111 writes them ("Denoising strength" is the hires pass's when
    there is one, the img2img strength otherwise)."""
    from iga.catalog.upscalers import UPSCALERS

    img = plan.get("img2img") if isinstance(plan.get("img2img"), Mapping) else {}
    hires = plan.get("hires") if isinstance(plan.get("hires"), Mapping) else {}
    masked = isinstance(img.get("mask"), Mapping)
    upscaler = UPSCALERS.get(str(hires.get("upscaler")))
    return [
        ("Denoising strength", hires.get("denoise") if hires else img.get("denoise")),
        ("Mask blur", img.get("mask_blur") if masked else None),
        ("Inpaint area", _INPAINT_AREAS.get(str(img.get("inpaint_area"))) if masked else None),
        ("Masked area padding", img.get("inpaint_padding") if masked else None),
        ("Hires upscale", hires.get("scale")),
        ("Hires steps", hires.get("steps")),
        ("Hires upscaler", upscaler[2] if upscaler else None),
    ]


def _parse_stage_params(params: dict[str, str], warnings: list[str]) -> dict[str, Any]:
    """The img2img, inpaint and hires-fix fields of an A1111 infotext (canonical iga names where known)."""
    from iga.catalog.upscalers import resolve_upscaler

    upscaler = params.get("Hires upscaler")
    try:
        upscaler = resolve_upscaler(upscaler) if upscaler else None
    except ValueError:
        pass  # an upscaler iga lacks (ESRGAN, ...): kept as written
    area = {v: k for k, v in _INPAINT_AREAS.items()}.get(params.get("Inpaint area", ""), params.get("Inpaint area"))
    return {"denoise": _to_float(params, "Denoising strength", warnings),
            "mask_blur": _to_int(params, "Mask blur", warnings), "inpaint_area": area,
            "inpaint_padding": _to_int(params, "Masked area padding", warnings),
            "hires_scale": _to_float(params, "Hires upscale", warnings),
            "hires_steps": _to_int(params, "Hires steps", warnings), "hires_upscaler": upscaler}


def infotext_params(plan: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The settings of a plan as ordered (A1111 key, value) pairs; None values are left out when formatting."""
    from iga import __version__

    sampler, schedule = a1111_labels(plan.get("sampler"), plan.get("schedule"))
    model = plan.get("model") if isinstance(plan.get("model"), Mapping) else {}
    vae = plan.get("vae") if isinstance(plan.get("vae"), Mapping) else None
    vae_label = vae_name(vae)
    w, h = plan.get("width"), plan.get("height")
    clip_skip = plan.get("clip_skip")
    cfg_rescale = plan.get("cfg_rescale")
    cfg_variant = plan.get("cfg_variant")
    return [
        ("Steps", plan.get("steps")),
        ("Sampler", sampler),
        ("Schedule type", schedule),
        ("CFG scale", plan.get("cfg")),
        ("Seed", image_seed(plan)),
        ("Size", f"{w}x{h}" if w is not None and h is not None else None),
        ("Model hash", short_hash(model)),
        ("Model", model.get("name")),
        ("VAE hash", short_hash(vae) if vae_label else None),
        ("VAE", vae_label),
        *_stage_params(plan),
        *_refiner_params(plan),
        ("Clip skip", clip_skip if isinstance(clip_skip, int) and clip_skip > 1 else None),
        ("Distilled CFG Scale", plan.get("guidance")),  # Forge's name for Flux's distilled guidance
        ("Shift", _flow_shift(plan)),
        ("RNG", plan.get("rng") or "CPU"),
        ("Lora hashes", lora_hashes(plan)),
        *control_units(plan),
        # iga extras, only when they say something
        ("Schedule rho", _schedule_rho(plan)),
        ("Eta", plan.get("eta")),
        ("CFG rescale", cfg_rescale if cfg_rescale else None),
        ("CFG variant", cfg_variant if cfg_variant and cfg_variant != "cfg" else None),
        ("Version", f"iga {plan.get('iga_version') or __version__}"),
    ]


def _format_value(key: str, value: Any) -> str | None:
    if value is None:
        return None
    text = format_number(value) if isinstance(value, (int, float)) else str(value)
    if text == "":
        return None
    if text == key:
        # A1111 would write the bare key and its parser would drop it; a quoted value survives
        return json.dumps(text, ensure_ascii=False)
    return quote(text)


def format_infotext(plan: Mapping[str, Any]) -> str:
    """A1111 infotext for a plan: prompt, a 'Negative prompt:' line (always), then the 'Steps: ...' line."""
    prompt = str(plan.get("prompt") or "")
    negative = str(plan.get("negative_prompt") or "")
    parts = []
    for key, value in infotext_params(plan):
        text = _format_value(key, value)
        if text is not None:
            parts.append(f"{key}: {text}")
    return f"{prompt}\n{_NEGATIVE} {negative}\n{', '.join(parts)}".strip()


def _to_int(params: dict[str, str], key: str, warnings: list[str]) -> int | None:
    if key not in params:
        return None
    try:
        return int(params[key].strip())
    except ValueError:
        warnings.append(f"infotext {key!r} is not an integer: {params[key]!r}")
        return None


def _to_float(params: dict[str, str], key: str, warnings: list[str]) -> float | None:
    if key not in params:
        return None
    try:
        value = float(params[key].strip())
    except ValueError:
        warnings.append(f"infotext {key!r} is not a number: {params[key]!r}")
        return None
    if not math.isfinite(value):
        warnings.append(f"infotext {key!r} is not finite: {params[key]!r}")
        return None
    return value


def parse_params_line(line: str) -> dict[str, str]:
    """The ``key: value`` pairs of an A1111 parameter line (values unquoted, 'WxH' split into '<k>-1'/'<k>-2')."""
    out: dict[str, str] = {}
    for key, value in _RE_PARAM.findall(line):
        if value[:1] == '"' and value[-1:] == '"':
            value = unquote(value)
        m = _RE_SIZE.match(value)
        if m is not None:
            out[f"{key}-1"], out[f"{key}-2"] = m.group(1), m.group(2)
        else:
            out[key] = value
    return out


def parse_infotext(text: str) -> dict[str, Any]:
    """Parse A1111 infotext into prompt, negative prompt, the raw parameters and normalised fields.

    Returns a dict with: prompt, negative_prompt, params (raw A1111 keys, defaults filled in as A1111 does),
    steps, cfg, seed, width, height, sampler / schedule (canonical names when known, else as written),
    sampler_label / schedule_label (as written), model, model_hash, vae, vae_hash, clip_skip, denoise, guidance
    (Forge's Distilled CFG Scale), shift, mask_blur, inpaint_area, inpaint_padding, hires_scale, hires_steps,
    hires_upscaler, loras ([{name, hash}] from 'Lora hashes'), controls (sd-webui-controlnet units), rng,
    version, warnings.
    """
    warnings: list[str] = []
    *lines, last = text.strip().split("\n")
    if len(last) > MAX_PARAM_LINE:
        warnings.append(f"last line is {len(last)} characters (limit {MAX_PARAM_LINE}): not parsed as parameters")
        lines.append(last)
        last = ""
    elif len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""

    prompt, negative, in_negative = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE):
            in_negative = True
            line = line[len(_NEGATIVE):].strip()
        if in_negative:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    params = parse_params_line(last) if last else {}
    has_params = bool(params)
    if has_params:
        for key, value in _DEFAULTS.items():
            params.setdefault(key, value)

    sampler = schedule = None
    sampler_label = params.get("Sampler")
    schedule_label = params.get("Schedule type")
    if sampler_label:
        sampler, embedded, warn = resolve_sampler_label(sampler_label)
        if warn:
            warnings.append(warn)
        if schedule_label and schedule_label.lower() != "automatic":
            schedule, warn = resolve_schedule_label(schedule_label)
            if warn:
                warnings.append(warn)
            if embedded and embedded != schedule:
                warnings.append(f"sampler label {sampler_label!r} names schedule {embedded!r} but "
                                f"'Schedule type' says {schedule_label!r}; using {schedule!r}")
        elif embedded:
            schedule = embedded
        elif warn is None:
            schedule = automatic_schedule(sampler)
    elif schedule_label and schedule_label.lower() != "automatic":
        schedule, warn = resolve_schedule_label(schedule_label)
        if warn:
            warnings.append(warn)

    width = _to_int(params, "Size-1", warnings)
    height = _to_int(params, "Size-2", warnings)
    if "Size" in params:  # present but not WxH
        warnings.append(f"infotext 'Size' is not WIDTHxHEIGHT: {params['Size']!r}")
    return {
        "prompt": prompt,
        "negative_prompt": negative,
        "params": params,
        "steps": _to_int(params, "Steps", warnings),
        "cfg": _to_float(params, "CFG scale", warnings),
        "seed": _to_int(params, "Seed", warnings),
        "width": width,
        "height": height,
        "sampler": sampler,
        "schedule": schedule,
        "sampler_label": sampler_label,
        "schedule_label": schedule_label,
        "model": params.get("Model"),
        "model_hash": params.get("Model hash"),
        "vae": params.get("VAE"),
        "vae_hash": params.get("VAE hash"),
        "clip_skip": _to_int(params, "Clip skip", warnings),
        **_parse_stage_params(params, warnings),
        **_parse_refiner(params, warnings),
        "guidance": _to_float(params, "Distilled CFG Scale", warnings),  # Forge (Flux)
        "shift": _to_float(params, "Shift", warnings),
        "loras": parse_lora_hashes(params.get("Lora hashes")) or None,
        "controls": parse_control_units(params),
        "rng": params.get("RNG"),
        "version": params.get("Version"),
        "warnings": warnings,
    }
