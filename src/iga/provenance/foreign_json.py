"""Readers for tools that put JSON (or JSON inside infotext) where A1111 puts its infotext: Fooocus, SwarmUI, and
the ``Civitai resources`` list of Civitai-style infotext.

Fooocus writes a PNG ``parameters`` chunk plus a ``fooocus_scheme`` chunk: with scheme "fooocus" the chunk is a
JSON object (keys from Fooocus' metadata parser: prompt, styles, resolution "(W, H)", guidance_scale, sharpness,
base_model, sampler/scheduler in ComfyUI names, seed as a string ...); with scheme "a1111" it is ordinary A1111
infotext with a few extra keys (``Scheduler``, ``Sharpness``, ``Raw prompt`` ...). SwarmUI writes a JSON object
``{"sui_image_params": {...}, "sui_extra_data": {...}, "sui_models": [...]}`` in the same chunk (EXIF UserComment
for JPEG/WebP). Everything here is untrusted: values are type-checked and odd ones become warnings, never errors.
"""

from __future__ import annotations

import re
from typing import Any

from iga.provenance.errors import ProvenanceError
from iga.provenance.foreign import (
    _model_stem,
    _sampler_and_schedule,
    as_float,
    as_int,
    as_str,
    empty_fields,
)
from iga.provenance.jsonutil import loads_bounded
from iga.provenance.labels import resolve_schedule_label

_RESOLUTION = re.compile(r"^\(\s*(\d{1,6})\s*,\s*(\d{1,6})\s*\)$")
_CIVITAI_RESOURCES = "Civitai resources:"
# a resources list is a few hundred bytes per entry; a longer one is not worth scanning
MAX_CIVITAI_JSON = 256 * 1024


def parse_json_object(text: str, where: str) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) when ``text`` is a JSON object within the bounds of ``loads_bounded``, else (None, why)."""
    try:
        data = loads_bounded(text, where)
    except ProvenanceError as exc:
        return None, str(exc)
    if not isinstance(data, dict):
        return None, f"{where}: JSON but not an object"
    return data, None


def is_fooocus(data: dict[str, Any], scheme: str | None) -> bool:
    """A Fooocus JSON record: marked by the ``fooocus_scheme`` chunk, its own ``metadata_scheme`` or its version."""
    version = data.get("version")
    return (scheme == "fooocus" or data.get("metadata_scheme") == "fooocus"
            or (isinstance(version, str) and version.startswith("Fooocus")))


def is_swarmui(data: dict[str, Any]) -> bool:
    """A SwarmUI record: its settings live under ``sui_image_params``."""
    return "sui_image_params" in data


# ---------------------------------------------------------------- Fooocus
def _resolution(value: Any, warnings: list[str]) -> tuple[int | None, int | None]:
    """Fooocus' resolution: the string "(width, height)" (str of a tuple; never evaluated), or a 2-list."""
    if isinstance(value, list) and len(value) == 2:
        return as_int(value[0], "Fooocus resolution width", warnings), as_int(value[1], "Fooocus resolution height",
                                                                                warnings)
    if isinstance(value, str):
        m = _RESOLUTION.match(value.strip())
        if m:
            return int(m.group(1)), int(m.group(2))
    if value is not None:
        warnings.append(f"Fooocus resolution is not '(width, height)': {value!r:.80}")
    return None, None


def from_fooocus(data: dict[str, Any]) -> dict[str, Any]:
    """Fields from a Fooocus JSON record (``metadata_scheme`` "fooocus")."""
    out = empty_fields()
    w: list[str] = out["warnings"]
    if not any(k in data for k in ("prompt", "steps", "seed", "sampler", "resolution", "base_model")):
        w.append("Fooocus record without any of its settings (prompt, steps, seed, sampler, resolution, base_model)")
    out["prompt"] = as_str(data.get("prompt"), "Fooocus prompt", w)
    out["negative_prompt"] = as_str(data.get("negative_prompt"), "Fooocus negative_prompt", w)
    out["seed"] = as_int(data.get("seed"), "Fooocus seed", w)
    out["steps"] = as_int(data.get("steps"), "Fooocus steps", w)
    out["cfg"] = as_float(data.get("guidance_scale"), "Fooocus guidance_scale", w)
    out["width"], out["height"] = _resolution(data.get("resolution"), w)
    out["clip_skip"] = as_int(data.get("clip_skip"), "Fooocus clip_skip", w)
    _sampler_and_schedule(out, data.get("sampler"), data.get("scheduler"), "Fooocus")
    name = as_str(data.get("base_model"), "Fooocus base_model", w)
    out["model_name"] = _model_stem(name) if name else None
    out["model_hash"] = as_str(data.get("base_model_hash"), "Fooocus base_model_hash", w)
    return out


def fooocus_infotext_schedule(params: dict[str, str], fields: dict[str, Any]) -> None:
    """Fooocus' A1111 scheme writes the schedule as ``Scheduler: karras`` (a ComfyUI name), not ``Schedule type``."""
    label = params.get("Scheduler")
    if label:
        fields["schedule"], warn = resolve_schedule_label(label.strip())
        if warn:
            fields["warnings"].append(warn)


# ---------------------------------------------------------------- SwarmUI
def _swarm_model_hash(data: dict[str, Any], w: list[str]) -> str | None:
    models = data.get("sui_models")
    if not isinstance(models, list):
        return None
    for entry in models[:64]:
        if isinstance(entry, dict) and entry.get("param") == "model":
            return as_str(entry.get("hash"), "SwarmUI sui_models hash", w)
    return None


def from_swarmui(data: dict[str, Any]) -> dict[str, Any]:
    """Fields from a SwarmUI record (``sui_image_params``)."""
    out = empty_fields()
    w: list[str] = out["warnings"]
    params = data.get("sui_image_params")
    if not isinstance(params, dict):
        w.append("SwarmUI sui_image_params is not an object: no settings to show")
        return out
    out["prompt"] = as_str(params.get("prompt"), "SwarmUI prompt", w)
    out["negative_prompt"] = as_str(params.get("negativeprompt"), "SwarmUI negativeprompt", w)
    out["seed"] = as_int(params.get("seed"), "SwarmUI seed", w)
    out["steps"] = as_int(params.get("steps"), "SwarmUI steps", w)
    out["cfg"] = as_float(params.get("cfgscale"), "SwarmUI cfgscale", w)
    out["width"] = as_int(params.get("width"), "SwarmUI width", w)
    out["height"] = as_int(params.get("height"), "SwarmUI height", w)
    _sampler_and_schedule(out, params.get("sampler"), params.get("scheduler"), "SwarmUI")
    layer = as_int(params.get("clipstopatlayer"), "SwarmUI clipstopatlayer", w)
    if layer is not None:
        # ComfyUI's CLIPSetLastLayer convention: -1 is the last layer (no skip), -2 is A1111's clip skip 2
        if layer < 0:
            out["clip_skip"] = -layer
        else:
            w.append(f"SwarmUI clipstopatlayer {layer} is not negative (-1 = last layer); ignored")
    if "initimagecreativity" in params:
        out["denoise"] = as_float(params.get("initimagecreativity"), "SwarmUI initimagecreativity", w)
    name = as_str(params.get("model"), "SwarmUI model", w)
    out["model_name"] = _model_stem(name) if name else None
    out["model_hash"] = _swarm_model_hash(data, w)
    return out


def from_json_parameters(text: str, where: str, scheme: str | None) -> tuple[str, dict[str, Any]] | None:
    """(source, fields) for a JSON ``parameters`` text written by Fooocus or SwarmUI; None when it is not one.

    A text that is not such a JSON object is left to the A1111 reader (an A1111 prompt may start with '{').
    """
    data, _ = parse_json_object(text, where)
    if data is None:
        return None
    if is_swarmui(data):
        return "swarmui", from_swarmui(data)
    if is_fooocus(data, scheme):
        return "fooocus", from_fooocus(data)
    return None


# ---------------------------------------------------------------- Civitai
def _json_extent(text: str, start: int) -> int | None:
    """End index (exclusive) of the JSON array/object starting at ``text[start]``; None when it never closes."""
    from iga.provenance.jsonutil import bracket_depths

    return next((i + 1 for i, depth in bracket_depths(text, start, start + MAX_CIVITAI_JSON) if depth == 0), None)


def civitai_resources(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The ``Civitai resources: [...]`` list of Civitai-style infotext (unquoted JSON, so the A1111 parameter
    grammar splits it at its commas) and warnings; ([], []) when there is none."""
    at = text.rfind(_CIVITAI_RESOURCES)
    if at < 0:
        return [], []
    start = at + len(_CIVITAI_RESOURCES)
    while start < len(text) and text[start] == " ":
        start += 1
    end = _json_extent(text, start) if text[start:start + 1] == "[" else None
    if end is None:
        return [], ["infotext 'Civitai resources' is not a JSON list; ignored"]
    data, why = parse_json_object('{"r":' + text[start:end] + "}", "infotext 'Civitai resources'")
    if data is None:
        return [], [f"{why}; ignored"]
    return [r for r in data["r"] if isinstance(r, dict)], []


def civitai_checkpoint_name(resources: list[dict[str, Any]]) -> str | None:
    """The checkpoint's ``modelName`` from Civitai resources, or None."""
    for r in resources:
        if r.get("type") == "checkpoint" and isinstance(r.get("modelName"), str):
            return r["modelName"]
    return None
