"""Read generation provenance from a PNG, JPEG or WebP file, whichever tool wrote it.

Precedence: iga's own plan (``iga_metadata`` chunk, or EXIF ImageDescription), then the ``parameters`` chunk
(or EXIF UserComment): SwarmUI or Fooocus JSON when it is one, else A1111 infotext (also Fooocus' "a1111" scheme
and Civitai's), then ComfyUI (``prompt`` API graph, ``workflow`` as a fallback), then InvokeAI
(``invokeai_metadata``). A file with none of these is ``source == "none"``, not an error.

Errors (``ProvenanceError``): not a PNG/JPEG/WebP, truncated or corrupt containers, size limits, and corrupt
metadata that is unambiguously a tool's (invalid JSON in ``iga_metadata`` or ``invokeai_metadata``). A
``prompt``/``workflow`` chunk that is not a ComfyUI graph is only a warning: other tools use those names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from iga.provenance.errors import ProvenanceError
from iga.provenance.exif import (
    PACKED_PLAN_PREFIX,
    ExifText,
    parse_exif,
    read_jpeg_exif,
    read_webp_exif,
    unpack_plan,
)
from iga.provenance.foreign import (
    FIELDS,
    as_float,
    as_int,
    as_str,
    empty_fields,
    from_comfyui_prompt,
    from_comfyui_workflow,
    from_invokeai,
)
from iga.provenance.foreign_json import (
    civitai_checkpoint_name,
    civitai_resources,
    fooocus_infotext_schedule,
    from_json_parameters,
)
from iga.provenance.infotext import format_infotext, image_seed, parse_infotext, short_hash
from iga.provenance.planjson import PLAN_SCHEMA_PREFIX, load_plan
from iga.provenance.png import PNG_SIGNATURE, Source, open_source, read_png_text

PNG_KEYS = ("iga_metadata", "parameters", "prompt", "workflow", "invokeai_metadata", "fooocus_scheme")
SOURCES = ("iga", "a1111", "fooocus", "swarmui", "comfyui", "invokeai", "none")
_COMPARED = ("prompt", "negative_prompt", "seed", "steps", "cfg", "sampler", "schedule", "width", "height")


@dataclass
class Provenance:
    """Normalised generation metadata of one image.

    ``sampler``/``schedule`` are canonical (ComfyUI-style) names when known, else the label as written.
    ``model_hash`` is the hash as the source recorded it (iga/A1111: AutoV2, 10 hex; InvokeAI: 'blake3:...').
    ``plan`` is the full iga Plan (source "iga" only); ``raw`` holds the metadata texts as found.
    """

    source: str = "none"
    format: str = ""
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    schedule: str | None = None
    width: int | None = None
    height: int | None = None
    model_name: str | None = None
    model_hash: str | None = None
    clip_skip: int | None = None
    denoise: float | None = None
    guidance: float | None = None  # distilled guidance (Flux dev; Forge's Distilled CFG Scale)
    shift: float | None = None  # flow timestep shift (SD3/Flux)
    loras: list[dict[str, Any]] | None = None  # [{name, hash (12 hex, A1111's), weight (iga plans only)}]
    hires_scale: float | None = None  # hires fix (A1111's Hires upscale / steps / upscaler)
    hires_steps: int | None = None
    hires_upscaler: str | None = None
    controls: list[dict[str, Any]] | None = None  # ControlNets: [{module, model ("name [8 hex]"), weight, start, end}]
    refiner: str | None = None  # SDXL refiner (A1111's "Refiner: name [hash]", "Refiner switch at")
    refiner_hash: str | None = None
    refiner_switch: float | None = None
    image_width: int | None = None
    image_height: int | None = None
    plan: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in a fixed key order."""
        return asdict(self)


def fields_from_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised fields of an iga plan read from a file (every value type-checked: the file is untrusted)."""
    out = empty_fields()
    w: list[str] = out["warnings"]
    out["prompt"] = as_str(plan.get("prompt"), "plan prompt", w)
    out["negative_prompt"] = as_str(plan.get("negative_prompt"), "plan negative_prompt", w)
    seed = image_seed(plan)
    out["seed"] = as_int(plan.get("seed") if seed is None else seed, "plan seed", w)
    out["steps"] = as_int(plan.get("steps"), "plan steps", w)
    out["cfg"] = as_float(plan.get("cfg"), "plan cfg", w)
    out["sampler"] = as_str(plan.get("sampler"), "plan sampler", w)
    out["schedule"] = as_str(plan.get("schedule"), "plan schedule", w)
    out["width"] = as_int(plan.get("width"), "plan width", w)
    out["height"] = as_int(plan.get("height"), "plan height", w)
    out["clip_skip"] = as_int(plan.get("clip_skip"), "plan clip_skip", w)
    img, hires = plan.get("img2img"), plan.get("hires")
    stage = hires if isinstance(hires, Mapping) else img if isinstance(img, Mapping) else {}
    out["denoise"] = as_float(stage.get("denoise"), "plan denoise", w)
    if isinstance(hires, Mapping):
        out["hires_scale"] = as_float(hires.get("scale"), "plan hires.scale", w)
        out["hires_steps"] = as_int(hires.get("steps"), "plan hires.steps", w)
        out["hires_upscaler"] = as_str(hires.get("upscaler"), "plan hires.upscaler", w)
    refiner = plan.get("refiner")
    if isinstance(refiner, Mapping):
        model = refiner.get("model") if isinstance(refiner.get("model"), Mapping) else {}
        out["refiner"] = as_str(model.get("name"), "plan refiner.model.name", w)
        out["refiner_hash"] = as_str(short_hash(model), "plan refiner hash", w)
        out["refiner_switch"] = as_float(refiner.get("switch"), "plan refiner.switch", w)
    out["guidance"] = as_float(plan.get("guidance"), "plan guidance", w)
    ts = plan.get("training_schedule")
    if isinstance(ts, Mapping) and ts.get("kind") == "flow":
        out["shift"] = as_float(ts.get("shift"), "plan training_schedule.shift", w)
    loras = plan.get("loras")
    if isinstance(loras, list) and loras:
        out["loras"] = [{"name": as_str(u.get("name"), "plan lora name", w),
                         "hash": as_str(str(u.get("addnet_sha256") or "")[:12], "plan lora hash", w),
                         "weight": as_float(u.get("weight"), "plan lora weight", w)}
                        for u in loras if isinstance(u, Mapping)]
    controls = plan.get("controls")
    if isinstance(controls, list) and controls:
        out["controls"] = [{"module": "none", "model": f"{as_str(u.get('name'), 'plan control name', w)} "
                            f"[{str(u.get('file_sha256') or '')[:8]}]",
                            "weight": as_float(u.get("strength"), "plan control strength", w),
                            "start": as_float(u.get("start"), "plan control start", w),
                            "end": as_float(u.get("end"), "plan control end", w)}
                           for u in controls if isinstance(u, Mapping)]
    model = plan.get("model")
    if isinstance(model, Mapping):
        out["model_name"] = as_str(model.get("name"), "plan model.name", w)
        out["model_hash"] = as_str(short_hash(model) or model.get("weights_sha256"), "plan model hash", w)
    elif model is not None:
        w.append("plan 'model' is not an object")
    return out


def fields_from_infotext(text: str, fooocus: bool = False) -> dict[str, Any]:
    """Normalised fields of A1111 infotext (``fooocus``: Fooocus' A1111 scheme, which names the schedule
    ``Scheduler``). Civitai's checkpoint resource names the model when ``Model:`` is absent."""
    parsed = parse_infotext(text)
    out = empty_fields()
    for key in FIELDS:
        if key in parsed:
            out[key] = parsed[key]
    out["model_name"], out["model_hash"] = parsed["model"], parsed["model_hash"]
    out["warnings"] = list(parsed["warnings"])
    if fooocus:
        fooocus_infotext_schedule(parsed["params"], out)
    if "Civitai resources" in parsed["params"]:
        resources, warnings = civitai_resources(text.strip().rsplit("\n", 1)[-1])
        out["warnings"] += warnings
        if out["model_name"] is None:
            out["model_name"] = civitai_checkpoint_name(resources)
    return out


def _fields_from_parameters(text: str, where: str, scheme: str | None,
                            software: str | None) -> tuple[str, dict[str, Any]]:
    """(source, fields) of a ``parameters`` text: SwarmUI/Fooocus JSON when it parses as one, else infotext."""
    if text.lstrip().startswith("{"):
        found = from_json_parameters(text, where, scheme)
        if found is not None:
            return found
    fooocus = scheme == "a1111" or (software or "").startswith("Fooocus")
    fields = fields_from_infotext(text, fooocus=fooocus)
    if scheme == "fooocus":
        fields["warnings"].append(f"'fooocus_scheme' says Fooocus JSON but the {where} is not a Fooocus JSON "
                                  "object; read as A1111 infotext")
    return ("fooocus" if fooocus else "a1111"), fields


def _cross_check(plan: Mapping[str, Any], infotext: str, where: str) -> list[str]:
    """Where the stored infotext disagrees with the plan (someone edited one of them)."""
    try:
        expected = parse_infotext(format_infotext(plan))
    except Exception:  # a malformed plan is reported by fields_from_plan; nothing to compare against
        return []
    found = parse_infotext(infotext)
    return [f"{where} disagrees with the iga plan on {k}: {found[k]!r:.60} vs {expected[k]!r:.60}; "
            "the plan is used" for k in _COMPARED if found.get(k) != expected.get(k)]


def _plan_from_description(desc: str | None) -> tuple[dict[str, Any], list[str]] | None:
    """The iga plan stored in EXIF ImageDescription, or None when the description is someone else's text."""
    if not desc:
        return None
    where = "EXIF ImageDescription"
    if desc.startswith(PACKED_PLAN_PREFIX):
        return load_plan(unpack_plan(desc, where), where)
    stripped = desc.lstrip()
    if stripped.startswith("{") and f'"schema":"{PLAN_SCHEMA_PREFIX}' in stripped.replace(" ", "")[:200]:
        return load_plan(stripped, where)
    return None


def detect_format(head: bytes) -> str:
    """"png", "jpeg" or "webp" from a file's first 12 bytes; ProvenanceError for anything else."""
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    raise ProvenanceError("not a PNG, JPEG or WebP file (unrecognised signature)")


def read_provenance(path: Source) -> Provenance:
    """Read and normalise the generation metadata of an image file (see the module doc for precedence)."""
    prov = Provenance()
    texts: dict[str, str] = {}
    exif: ExifText | None = None
    with open_source(path) as f:
        start = f.tell()
        prov.format = detect_format(f.read(12))
        f.seek(start)
        if prov.format == "png":
            png = read_png_text(f, keys=PNG_KEYS)
            texts = png.texts
            prov.image_width, prov.image_height = png.width, png.height
            prov.warnings += png.warnings
            if png.exif:
                exif = parse_exif(png.exif)
        else:
            found = read_jpeg_exif(f) if prov.format == "jpeg" else read_webp_exif(f)
            prov.image_width, prov.image_height = found.width, found.height
            if found.exif:
                exif = parse_exif(found.exif)
    prov.raw = dict(texts)
    if exif is not None:
        prov.warnings += exif.warnings
        for name, value in (("UserComment", exif.user_comment), ("ImageDescription", exif.image_description),
                            ("Software", exif.software), ("XPComment", exif.xp_comment)):
            if value is not None:
                prov.raw[f"EXIF {name}"] = value

    fields: dict[str, Any] | None = None
    plan_found: tuple[dict[str, Any], list[str]] | None = None
    infotext, infotext_where = texts.get("parameters"), "'parameters' chunk"
    if infotext is None and exif is not None and exif.user_comment:
        infotext, infotext_where = exif.user_comment, "EXIF UserComment"
    if "iga_metadata" in texts:
        plan_found = load_plan(texts["iga_metadata"], "'iga_metadata' chunk")
    elif exif is not None:
        plan_found = _plan_from_description(exif.image_description)

    if plan_found is not None:
        plan, warnings = plan_found
        prov.source, prov.plan = "iga", plan
        fields = fields_from_plan(plan)
        fields["warnings"] = warnings + fields["warnings"]
        if infotext is not None:
            fields["warnings"] += _cross_check(plan, infotext, infotext_where)
        else:
            fields["warnings"].append("no A1111 'parameters' text next to the iga plan: other tools will not "
                                      "show the settings")
    elif infotext is not None and infotext.strip():
        prov.source, fields = _fields_from_parameters(infotext, infotext_where, texts.get("fooocus_scheme"),
                                                      exif.software if exif is not None else None)
    else:
        comfy_graph = False
        for key, reader in (("prompt", from_comfyui_prompt), ("workflow", from_comfyui_workflow)):
            if key in texts and fields is None:
                try:
                    fields = reader(texts[key])
                except ProvenanceError as exc:
                    prov.warnings.append(f"{exc}; ignored (not a ComfyUI graph)")
                    continue
                comfy_graph = True
        if fields is not None:
            prov.source = "comfyui"
        elif comfy_graph:
            prov.source, fields = "comfyui", empty_fields()
            fields["warnings"].append("ComfyUI graph without a KSampler or KSamplerAdvanced node (custom sampler "
                                      "nodes are not read): no settings to show")
        if fields is None and "invokeai_metadata" in texts:
            prov.source, fields = "invokeai", from_invokeai(texts["invokeai_metadata"])
    if fields is not None:
        prov.warnings += fields.pop("warnings")
        for key, value in fields.items():
            setattr(prov, key, value)
    return prov


def describe_source(source: str) -> str:
    """One line saying what wrote the metadata."""
    return {
        "iga": "iga (full plan)", "a1111": "A1111-style infotext (A1111, Forge, SD.Next, Civitai ...)",
        "fooocus": "Fooocus metadata", "swarmui": "SwarmUI metadata",
        "comfyui": "ComfyUI graph", "invokeai": "InvokeAI metadata", "none": "no generation metadata found",
    }.get(source, source)


__all__ = ["Provenance", "read_provenance", "describe_source", "fields_from_plan", "fields_from_infotext",
           "SOURCES", "PNG_KEYS"]
