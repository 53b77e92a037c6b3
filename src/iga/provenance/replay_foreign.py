"""Regenerating another tool's image on a model the user names: the guard request its settings make, and what
iga cannot reproduce exactly (one sentence each).

The settings come from ``read_provenance`` (already normalised and type-checked); the extras that only matter
here (A1111's RNG and hires keys, Fooocus styles and patches, SwarmUI refiner/LoRA params, ComfyUI LoRA nodes)
are read again from the raw metadata texts, with the same bounded JSON reader. No CLI code: `iga replay` prints.
"""

from __future__ import annotations

import re
from typing import Any

from iga.provenance.foreign_json import civitai_resources, parse_json_object
from iga.provenance.infotext import parse_infotext

REPLAYABLE = ("a1111", "fooocus", "swarmui", "comfyui", "invokeai")
# whose conventions a source's sampler/schedule names follow (Fooocus and SwarmUI run ComfyUI's samplers)
_TOOL = {"a1111": "A1111", "fooocus": "ComfyUI", "swarmui": "ComfyUI", "comfyui": "ComfyUI", "invokeai": "diffusers"}
_TOOLS = ("A1111", "ComfyUI", "diffusers")
_LORA_TAG = re.compile(r"<lora:([^:>]{1,200})")
MAX_READ_CAVEATS = 8

# A1111 keys the request uses or that get a caveat of their own; any other key is listed as not applied
_A1111_HANDLED = {
    "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size-1", "Size-2", "Model hash", "Model", "Clip skip",
    "RNG", "Version", "ENSD", "Eta noise seed delta", "Denoising strength", "VAE", "VAE hash", "Lora hashes",
    "TI hashes", "Eta", "Variation seed", "Variation seed strength", "Refiner", "Refiner switch at",
    "Civitai resources", "Civitai metadata", "Created Date", "Emphasis",
}
# Fooocus' A1111-scheme keys, as the Fooocus JSON keys they stand for
_FOOOCUS_A1111 = {"Styles": "styles", "Performance": "performance", "Sharpness": "sharpness",
                  "ADM Guidance": "adm_guidance", "Adaptive CFG": "adaptive_cfg", "Refiner": "refiner_model",
                  "Refiner Switch": "refiner_switch", "FreeU": "freeu", "Scheduler": "scheduler",
                  "Raw prompt": "prompt", "Raw negative prompt": "negative_prompt", "Lora weights": "lora_weights",
                  "Refiner Swap Method": "refiner_swap_method", "Overwrite Switch": "overwrite_switch",
                  "User": "created_by"}
_SWARM_HANDLED = {"prompt", "negativeprompt", "model", "seed", "steps", "cfgscale", "width", "height", "sampler",
                  "scheduler", "clipstopatlayer", "swarm_version", "aspectratio", "date", "generation_time",
                  "images", "batchsize", "automaticvae", "vae", "loras", "loraweights", "lorasectionconfinement",
                  "refinermodel", "refinercontrolpercentage", "refinerupscale", "refinermethod", "initimage",
                  "initimagecreativity", "variationseed", "variationseedstrength", "donotsave", "internalbackendtype"}


# ---------------------------------------------------------------- the request
def foreign_request(prov: Any, overrides: list[str] | None = None, reason: str | None = None) -> tuple[Any, list[str]]:
    """A guard Request from a foreign image's settings, and caveats for what it does not record or iga cannot
    read. Fields the image lacks are left to the model's recipe (the seed: a random one)."""
    from iga.guard import Request

    caveats: list[str] = []
    sampler = _known("sampler", prov.sampler, caveats)
    schedule = _known("schedule", prov.schedule, caveats)
    size = f"{prov.width}x{prov.height}" if prov.width is not None and prov.height is not None else None
    prompt, negative = _prompts(prov, caveats)
    missing = [name for name, value in (("steps", prov.steps), ("cfg", prov.cfg), ("sampler", prov.sampler),
                                        ("schedule", prov.schedule), ("size", size)) if value is None]
    if missing:
        caveats.append(f"the image does not record its {', '.join(missing)}: the model's recipe values were used")
    if prov.seed is None:
        caveats.append("the image does not record its seed: a random seed was used")
    if prov.clip_skip is not None and prov.clip_skip < 1:
        caveats.append(f"clip skip {prov.clip_skip} is not a layer count: the recipe's clip skip was used")
    clip_skip = prov.clip_skip if prov.clip_skip is not None and prov.clip_skip >= 1 else None
    request = Request(prompt=prompt, negative_prompt=negative, seed=prov.seed, steps=prov.steps, cfg=prov.cfg,
                      sampler=sampler, schedule=schedule, size=size, clip_skip=clip_skip, guidance=prov.guidance,
                      shift=prov.shift,
                      overrides=list(overrides or []), reason=reason)
    return request, caveats


def _known(kind: str, name: str | None, caveats: list[str]) -> str | None:
    """``name`` when iga knows it; else None (the recipe's) and a caveat."""
    from iga.recipe import names

    if name is None:
        return None
    try:
        return names.resolve_sampler(name) if kind == "sampler" else names.resolve_schedule(name)
    except names.UnknownNameError:
        caveats.append(f"{kind} {name!r} is not one iga knows: the model's recipe {kind} was used")
        return None


def _prompts(prov: Any, caveats: list[str]) -> tuple[str, str]:
    """The prompts to encode; for Fooocus JSON the expanded prompts it recorded (styles and expansion applied)."""
    prompt, negative = prov.prompt or "", prov.negative_prompt or ""
    if prov.source != "fooocus":
        return prompt, negative
    data = _json_record(prov)
    full, full_negative = (data or {}).get("full_prompt"), (data or {}).get("full_negative_prompt")
    if _str_list(full):
        prompt = ", ".join(full)
        if len(full) > 1:
            caveats.append(f"Fooocus encoded its {len(full)} expanded prompt parts separately; iga encodes them "
                           "joined into one text")
    if _str_list(full_negative):
        negative = ", ".join(full_negative)
    return prompt, negative


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _json_record(prov: Any) -> dict[str, Any] | None:
    """The Fooocus/SwarmUI JSON object the image carries (``parameters`` chunk or EXIF UserComment), or None."""
    text = prov.raw.get("parameters", prov.raw.get("EXIF UserComment"))
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    data, _ = parse_json_object(text, "parameters")
    return data


def _infotext(prov: Any) -> str | None:
    text = prov.raw.get("parameters", prov.raw.get("EXIF UserComment"))
    return text if isinstance(text, str) and not text.lstrip().startswith("{") else None


# ---------------------------------------------------------------- caveats
def foreign_caveats(prov: Any, identity: Any, plan: Any) -> list[str]:
    """What the regenerated image cannot reproduce exactly, and why: one sentence each."""
    caveats: list[str] = []
    infotext = _infotext(prov)
    if infotext is not None and prov.source in ("a1111", "fooocus"):
        caveats += a1111_caveats(infotext, fooocus=prov.source == "fooocus")
    elif prov.source == "fooocus":
        data = _json_record(prov) or {}
        caveats += fooocus_caveats(data, expanded=_str_list(data.get("full_prompt")))
    elif prov.source == "swarmui":
        params = (_json_record(prov) or {}).get("sui_image_params")
        caveats += swarm_caveats(params if isinstance(params, dict) else {})
    elif prov.source == "comfyui":
        caveats += comfyui_caveats(prov)
    # infotext and SwarmUI caveats name img2img themselves (hires fix, init image)
    if prov.denoise is not None and prov.denoise < 1 and prov.source in ("comfyui", "invokeai"):
        caveats.append(f"denoise {prov.denoise:g}: the image was refined from another image (img2img); iga "
                       "generates from noise")
    caveats += model_caveats(prov, identity)
    caveats += sampler_variant_caveats(prov.source, plan.sampler, plan.schedule)
    caveats += [f"could not read: {w}" for w in prov.warnings[:MAX_READ_CAVEATS]]
    if len(prov.warnings) > MAX_READ_CAVEATS:
        caveats.append(f"could not read: {len(prov.warnings) - MAX_READ_CAVEATS} more problems (see iga show)")
    return caveats


def a1111_caveats(text: str, fooocus: bool = False) -> list[str]:
    """Caveats from A1111-style infotext (also Fooocus' A1111 scheme and Civitai's)."""
    parsed = parse_infotext(text)
    params: dict[str, str] = parsed["params"]
    out = _rng_caveats(params) if not fooocus else []
    hires = sorted(k for k in params if k.startswith("Hires "))
    if hires:
        out.append(f"hires fix ({', '.join(f'{k} {params[k]}' for k in hires[:3])}): A1111 ran a second, upscaled "
                   "img2img pass; iga regenerates the first pass only")
    elif "Denoising strength" in params:
        out.append(f"denoising strength {params['Denoising strength']} without hires fix: an img2img image; iga "
                   "generates from noise")
    out += _addon_caveats(params, parsed["prompt"], text)
    if params.get("VAE"):
        out.append(f"the image used the VAE {params['VAE']!r}; iga used the VAE of the model's recipe")
    for key, what in (("Eta", "the noise scale of ancestral samplers"), ("Variation seed", "a variation seed"),
                      ("Refiner", "a refiner model")):
        if key in params:
            out.append(f"{key} {params[key]}: {what}, which iga does not apply")
    if fooocus:
        # the A1111 scheme's prompt is Fooocus' expanded prompt ('Raw prompt' is the one typed)
        out += fooocus_caveats({v: params[k] for k, v in _FOOOCUS_A1111.items() if k in params}, expanded=True)
    other = sorted(k for k in params if k not in _A1111_HANDLED and not k.startswith("Hires ")
                   and not (fooocus and k in _FOOOCUS_A1111))
    if other:
        out.append(f"settings iga does not apply: {', '.join(other[:12])}" + (" ..." if len(other) > 12 else ""))
    return out


def _rng_caveats(params: dict[str, str]) -> list[str]:
    out = []
    rng = params.get("RNG", "GPU")
    if rng == "GPU":
        out.append("RNG: GPU (A1111's default when the image does not say): A1111 drew the initial noise on the GPU; "
                   "iga draws it on the CPU: same seed, different noise")
    elif rng == "NV":
        out.append("RNG: NV: A1111 emulated NVIDIA's GPU generator on the CPU; iga draws torch CPU noise: same seed, "
                   "different noise")
    delta = params.get("ENSD", params.get("Eta noise seed delta"))
    if delta and delta.strip() not in ("0", ""):
        out.append(f"ENSD {delta}: A1111 offset the seed of the sampler's noise by {delta}; iga has no such offset")
    return out


def _addon_caveats(params: dict[str, str], prompt: str, text: str) -> list[str]:
    """LoRAs and embeddings named by prompt tags, hash lists or Civitai resources."""
    resources, _ = civitai_resources(text.strip().rsplit("\n", 1)[-1]) if "Civitai resources" in params else ([], [])
    loras = _LORA_TAG.findall(prompt) + [str(r.get("modelName")) for r in resources
                                         if str(r.get("type", "")).lower() in ("lora", "locon", "lycoris")]
    if loras or "Lora hashes" in params:
        names = ", ".join(dict.fromkeys(loras)) or params.get("Lora hashes", "")
        out = [f"LoRAs ({names[:200]}): iga does not load LoRAs; <lora:...> tags stay in the prompt as plain text"]
    else:
        out = []
    embeds = [str(r.get("modelName")) for r in resources
              if str(r.get("type", "")).lower() in ("embed", "textualinversion")]
    if embeds or "TI hashes" in params:
        names = ", ".join(embeds) or params.get("TI hashes", "")
        out.append(f"embeddings ({names[:200]}): iga does not load textual-inversion embeddings; their trigger "
                   "words are plain text")
    return out


def fooocus_caveats(data: dict[str, Any], expanded: bool) -> list[str]:
    """Caveats from a Fooocus record (JSON keys; the A1111 scheme's keys mapped to them). ``expanded``: the
    replayed prompt is the one Fooocus recorded after applying styles and expansion."""
    out = []
    styles = data.get("styles")
    if styles and str(styles).strip() not in ("[]", "None"):
        how = ("replayed with the expanded prompt the image records" if expanded
               else "replayed with the prompt as written, without them")
        out.append(f"Fooocus styles {str(styles)[:200]} (with 'Fooocus V2', its GPT-2 prompt expansion) rewrote the "
                   f"prompt: {how}")
    if str(data.get("performance", "")) in ("Extreme Speed", "Lightning", "Hyper-SD"):
        out.append(f"Fooocus performance {data['performance']!r} patches the model with a speed-up LoRA; iga does not")
    patches = [f"{label} {data[key]}" for key, label in (("sharpness", "sharpness"), ("adm_guidance", "ADM guidance"),
                                                         ("adaptive_cfg", "adaptive CFG"), ("freeu", "FreeU"))
               if data.get(key) not in (None, "", False, 0, "0", "False")]
    if patches:
        out.append(f"Fooocus sampling patches ({', '.join(patches)}) are Fooocus-only; iga does not apply them")
    refiner = data.get("refiner_model")
    if refiner not in (None, "", "None"):
        out.append(f"Fooocus switched to the refiner {str(refiner)[:100]!r} at {data.get('refiner_switch', '?')}; "
                   "iga runs the named model for every step")
    loras = [str(v).split(" : ")[0] for k, v in data.items() if k.startswith("lora_combined_")]
    if not loras and isinstance(data.get("loras"), list):
        loras = [str(x[0]) for x in data["loras"] if isinstance(x, list) and x]
    if loras:
        out.append(f"LoRAs ({', '.join(loras)[:200]}): iga does not load LoRAs")
    return out


def swarm_caveats(params: dict[str, Any]) -> list[str]:
    """Caveats from SwarmUI's ``sui_image_params``."""
    out = []
    if params.get("loras"):
        out.append(f"LoRAs ({str(params['loras'])[:200]}): iga does not load LoRAs")
    if params.get("refinermodel") or params.get("refinerupscale") or params.get("refinercontrolpercentage"):
        out.append("SwarmUI ran a refiner/upscale pass; iga regenerates the base pass only")
    if params.get("initimage") or "initimagecreativity" in params:
        out.append("an init image (img2img) was used; iga generates from noise")
    if params.get("variationseed") is not None:
        out.append(f"variation seed {params['variationseed']}: SwarmUI mixed in a second noise; iga does not")
    if params.get("vae") not in (None, "", "None", "Automatic"):
        out.append(f"the image used the VAE {str(params['vae'])[:100]!r}; iga used the VAE of the model's recipe")
    other = sorted(k for k in params if k not in _SWARM_HANDLED)
    if other:
        out.append(f"settings iga does not apply: {', '.join(other[:12])}" + (" ..." if len(other) > 12 else ""))
    return out


def comfyui_caveats(prov: Any) -> list[str]:
    """Caveats from a ComfyUI API graph: LoRA loaders and extra sampler passes."""
    text = prov.raw.get("prompt")
    graph, _ = parse_json_object(text, "prompt") if isinstance(text, str) else (None, None)
    if graph is None:
        return []
    kinds = [str(n.get("class_type", "")) for n in graph.values() if isinstance(n, dict)]
    out = []
    loras = sorted({k for k in kinds if "lora" in k.lower()})
    if loras:
        out.append(f"the graph applies LoRAs ({', '.join(loras)}): iga does not load LoRAs")
    samplers = sum(k.startswith("KSampler") or k == "SamplerCustom" or k == "SamplerCustomAdvanced" for k in kinds)
    if samplers > 1:
        out.append(f"the graph has {samplers} sampler nodes (hires fix, refiner or detailer passes): iga "
                   "regenerates the first pass only")
    return out


def model_caveats(prov: Any, identity: Any) -> list[str]:
    """Whether the named model is the one the image records (by A1111's AutoV2 hash when both are known)."""
    recorded = (prov.model_hash or "").strip().lower()
    named = f" ({prov.model_name})" if prov.model_name else ""
    file_sha = (getattr(identity, "file_sha256", None) or "").lower()
    if not recorded:
        return [f"the image records no model hash{named}: iga cannot check that the model you named is the same"]
    if not file_sha or not re.fullmatch(r"[0-9a-f]{10}|[0-9a-f]{64}", recorded):
        return [f"the image's model hash {recorded[:72]}{named} is not a file hash iga can compare with the model "
                "you named"]
    if file_sha[: len(recorded)] != recorded:
        return [f"the image was made with model hash {recorded}{named}; the model you named has "
                f"{file_sha[:len(recorded)]}: a different model file, so the same settings give another image"]
    return []


def _variant_applies(variant: str, tool: str) -> bool:
    """Whether a catalog ``variant`` note says ``tool`` differs from iga (iga's canonical form is ComfyUI's)."""
    if not any(t in variant for t in _TOOLS):
        return True  # a note about the device or the noise source, whoever ran it
    for clause in variant.split("; "):
        head = clause.split("(")[0]
        if "canonical =" in head and tool in head or clause.startswith(f"{tool}'s =") or "the same" in clause:
            continue
        starts_other = any(clause.startswith(t) for t in _TOOLS if t != tool)
        if starts_other and f"and {tool}" not in clause:
            continue
        if tool in clause:
            return True
    return False


def sampler_variant_caveats(source: str, sampler: str, schedule: str) -> list[str]:
    """The catalog's notes on how the tool that made the image computes this sampler or schedule differently."""
    from iga.recipe import names

    tool = _TOOL.get(source)
    out = []
    for kind, lookup, name in (("sampler", names.sampler_info, sampler), ("schedule", names.schedule_info, schedule)):
        try:
            variant = lookup(name).variant
        except names.UnknownNameError:  # an explicit sigma list has no catalog entry
            continue
        if tool and variant and _variant_applies(variant, tool):
            out.append(f"{kind} {name} is computed differently by other tools: {variant}")
    return out
