"""Readers for other tools' generation metadata: ComfyUI graphs and InvokeAI's ``invokeai_metadata``.

Each reader returns the normalised fields (prompt, negative_prompt, seed, steps, cfg, sampler, schedule, width,
height, model_name, model_hash, clip_skip, denoise) plus ``warnings``. Input is untrusted JSON: every value is
type-checked, graph walks are depth-limited and never revisit a node.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from iga.provenance.errors import ProvenanceError
from iga.provenance.jsonutil import loads_bounded
from iga.provenance.labels import resolve_invokeai_scheduler, resolve_sampler_label, resolve_schedule_label

MAX_DEPTH = 32
FIELDS = ("prompt", "negative_prompt", "seed", "steps", "cfg", "sampler", "schedule", "width", "height",
          "model_name", "model_hash", "clip_skip", "denoise", "guidance", "shift", "loras", "hires_scale", "hires_steps",
          "hires_upscaler", "controls", "refiner", "refiner_hash", "refiner_switch")
_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")
_CONTROL_AFTER_GENERATE = {"fixed", "increment", "decrement", "randomize"}


def empty_fields() -> dict[str, Any]:
    """All normalised fields set to None, and no warnings."""
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out["warnings"] = []
    return out


def load_json(text: str, where: str) -> Any:
    """Bounded json.loads (see ``iga.provenance.jsonutil``) with errors that name the chunk."""
    return loads_bounded(text, where)


def as_int(value: Any, name: str, warnings: list[str]) -> int | None:
    """An int from an int, an integral float or a decimal string; else None and a warning."""
    if value is None:
        return None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    elif isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    warnings.append(f"{name} is not an integer: {value!r:.80}")
    return None


def as_float(value: Any, name: str, warnings: list[str]) -> float | None:
    """A finite float from a number or numeric string; else None and a warning."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            f = math.nan
    else:
        f = math.nan
    if math.isfinite(f):
        return f
    warnings.append(f"{name} is not a finite number: {value!r:.80}")
    return None


def as_str(value: Any, name: str, warnings: list[str]) -> str | None:
    """A string, or None and a warning for anything else (None stays None silently)."""
    if value is None or isinstance(value, str):
        return value
    warnings.append(f"{name} is not a string: {type(value).__name__}")
    return None


def _model_stem(name: str) -> str:
    """'sd15/foo.safetensors' or 'sd15\\foo.ckpt' -> 'foo' (A1111's 'Model' is the bare file stem)."""
    base = PureWindowsPath(PurePosixPath(name).name).name
    for ext in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def _sampler_and_schedule(out: dict[str, Any], sampler: Any, schedule: Any, where: str) -> None:
    warnings = out["warnings"]
    s = as_str(sampler, f"{where} sampler_name", warnings)
    h = as_str(schedule, f"{where} scheduler", warnings)
    if s:
        out["sampler"], embedded, warn = resolve_sampler_label(s)
        if warn:
            warnings.append(warn)
        if embedded and not h:
            out["schedule"] = embedded
    if h:
        out["schedule"], warn = resolve_schedule_label(h)
        if warn:
            warnings.append(warn)


# ---------------------------------------------------------------- ComfyUI API graph ("prompt")
def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int))


class _Graph:
    def __init__(self, graph: dict[str, Any]):
        self.graph = graph

    def node(self, link: Any) -> dict[str, Any] | None:
        if not _is_link(link):
            return None
        node = self.graph.get(str(link[0]))
        return node if isinstance(node, dict) else None

    @staticmethod
    def inputs(node: dict[str, Any]) -> dict[str, Any]:
        inputs = node.get("inputs")
        return inputs if isinstance(inputs, dict) else {}

    def literal(self, value: Any, keys: tuple[str, ...]) -> Any:
        """A literal input value, following links to value nodes (primitives, seed nodes) a few levels."""
        seen: set[str] = set()
        for _ in range(MAX_DEPTH):
            if not _is_link(value):
                return value
            if str(value[0]) in seen:
                return None
            seen.add(str(value[0]))
            node = self.node(value)
            if node is None:
                return None
            inputs = self.inputs(node)
            for key in keys:
                if key in inputs:
                    value = inputs[key]
                    break
            else:
                return None
        return None

    def follow(self, link: Any, through: tuple[str, ...], want: tuple[str, ...]) -> dict[str, Any] | None:
        """Walk from ``link`` through inputs named ``through`` until a node having one of ``want`` inputs."""
        seen: set[str] = set()
        for _ in range(MAX_DEPTH):
            node = self.node(link)
            if node is None or str(link[0]) in seen:
                return None
            seen.add(str(link[0]))
            inputs = self.inputs(node)
            if any(k in inputs for k in want):
                return node
            link = next((inputs[k] for k in through if _is_link(inputs.get(k))), None)
        return None


def _id_key(node_id: Any) -> tuple[int, int, str]:
    """Numeric node ids in numeric order, others after them."""
    text = str(node_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _pick_sampler(g: _Graph, warnings: list[str]) -> tuple[str, dict[str, Any]] | None:
    samplers = [(nid, n) for nid, n in g.graph.items()
                if isinstance(n, dict) and n.get("class_type") in _SAMPLER_NODES]
    if not samplers:
        return None

    def order(item: tuple[str, dict[str, Any]]) -> tuple[int, int, int, str]:
        nid, node = item
        # stop at another sampler: a latent that comes from one is a later pass (hires fix, refiner)
        latent = g.follow(g.inputs(node).get("latent_image"), ("samples", "latent"),
                          ("width", "height", "pixels", "image", "latent_image"))
        from_empty = latent is not None and "width" in g.inputs(latent) and "latent_image" not in g.inputs(latent)
        return (0 if from_empty else 1, *_id_key(nid))

    samplers.sort(key=order)
    if len(samplers) > 1:
        warnings.append(f"ComfyUI graph has {len(samplers)} sampler nodes; reporting node {samplers[0][0]} "
                        "(the first pass, which starts from an empty latent)")
    return samplers[0]


def _text(g: _Graph, link: Any, where: str, warnings: list[str]) -> tuple[str | None, dict[str, Any] | None]:
    # through conditioning edits (area, combine, ControlNet apply, which has positive/negative in and out)
    node = g.follow(link, ("conditioning", "conditioning_1", "conditioning_to", where),
                    ("text", "text_g", "text_l", "prompt"))
    if node is None:
        warnings.append(f"ComfyUI {where} prompt: no text-encoder node found on its input link")
        return None, None
    inputs = g.inputs(node)
    for key in ("text", "text_g", "prompt", "text_l"):
        if key in inputs:
            value = g.literal(inputs[key], ("text", "string", "value", "prompt", "String"))
            if isinstance(value, str):
                return value, node
    warnings.append(f"ComfyUI {where} prompt is computed by other nodes, not a literal string")
    return None, node


def from_comfyui_prompt(text: str) -> dict[str, Any] | None:
    """Fields from a ComfyUI ``prompt`` (API graph) chunk; None if it has no KSampler node."""
    graph = load_json(text, "ComfyUI 'prompt' chunk")
    if not isinstance(graph, dict) or not any(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        raise ProvenanceError("ComfyUI 'prompt' chunk: not an API graph (a JSON object of nodes with 'class_type')")
    g = _Graph(graph)
    out = empty_fields()
    warnings: list[str] = out["warnings"]
    picked = _pick_sampler(g, warnings)
    if picked is None:
        return None
    nid, node = picked
    inputs = g.inputs(node)
    where = f"ComfyUI node {nid} ({node.get('class_type')})"
    seed_key = "noise_seed" if node.get("class_type") == "KSamplerAdvanced" else "seed"
    keys = ("seed", "noise_seed", "value", "int", "number")
    out["seed"] = as_int(g.literal(inputs.get(seed_key), keys), f"{where} {seed_key}", warnings)
    out["steps"] = as_int(g.literal(inputs.get("steps"), ("steps", "value", "int")), f"{where} steps", warnings)
    out["cfg"] = as_float(g.literal(inputs.get("cfg"), ("cfg", "value", "float")), f"{where} cfg", warnings)
    if "denoise" in inputs:
        out["denoise"] = as_float(g.literal(inputs["denoise"], ("value", "float")), f"{where} denoise", warnings)
    _sampler_and_schedule(out, g.literal(inputs.get("sampler_name"), ("sampler_name", "value")),
                          g.literal(inputs.get("scheduler"), ("scheduler", "value")), where)
    out["prompt"], encoder = _text(g, inputs.get("positive"), "positive", warnings)
    out["negative_prompt"], _ = _text(g, inputs.get("negative"), "negative", warnings)
    if encoder is not None:
        clip = g.follow(g.inputs(encoder).get("clip"), ("clip",), ("stop_at_clip_layer", "ckpt_name"))
        if clip is not None and "stop_at_clip_layer" in g.inputs(clip):
            layer = as_int(g.inputs(clip)["stop_at_clip_layer"], "ComfyUI CLIPSetLastLayer", warnings)
            out["clip_skip"] = -layer if layer is not None and layer < 0 else None
    loader = g.follow(inputs.get("model"), ("model",), ("ckpt_name", "unet_name"))
    if loader is not None:
        li = g.inputs(loader)
        name = as_str(g.literal(li.get("ckpt_name", li.get("unet_name")), ("value", "string")),
                      "ComfyUI checkpoint name", warnings)
        out["model_name"] = _model_stem(name) if name else None
    latent = g.follow(inputs.get("latent_image"), ("samples", "latent", "latent_image"), ("width", "height"))
    if latent is not None:
        li = g.inputs(latent)
        out["width"] = as_int(g.literal(li.get("width"), ("value", "int")), "ComfyUI latent width", warnings)
        out["height"] = as_int(g.literal(li.get("height"), ("value", "int")), "ComfyUI latent height", warnings)
    _flow_nodes(g, inputs, out, warnings)
    return out


def _flow_nodes(g: "_Graph", inputs: dict[str, Any], out: dict[str, Any], warnings: list[str]) -> None:
    """Flux's distilled guidance (a FluxGuidance node on the positive conditioning) and the flow shift (a
    ModelSamplingSD3/AuraFlow ``shift``, or ModelSamplingFlux's resolution rule) on the model input."""
    guide = g.follow(inputs.get("positive"), ("conditioning", "conditioning_1", "conditioning_to"), ("guidance",))
    if guide is not None:
        out["guidance"] = as_float(g.literal(g.inputs(guide)["guidance"], ("value", "float")),
                                   "ComfyUI FluxGuidance guidance", warnings)
    node = g.follow(inputs.get("model"), ("model",), ("shift", "max_shift"))
    if node is None:
        return
    ni = g.inputs(node)
    if "shift" in ni:
        out["shift"] = as_float(g.literal(ni["shift"], ("value", "float")), "ComfyUI ModelSampling shift", warnings)
        return
    vals = [as_float(g.literal(ni.get(k), ("value", "float", "int")), f"ComfyUI ModelSamplingFlux {k}", warnings)
            for k in ("max_shift", "base_shift", "width", "height")]
    if None not in vals:  # ComfyUI's node is Flux's rule with its standard token range (16 px per token side)
        from iga.guard.resolve import flow_shift
        from iga.recipe.schema import DynamicShift, TrainingSchedule

        mx, base, w, h = vals
        rule = TrainingSchedule(kind="flow", dynamic_shift=DynamicShift(base_shift=base, max_shift=mx))
        out["shift"] = flow_shift(rule, w, h)


# ---------------------------------------------------------------- ComfyUI UI graph ("workflow")
def from_comfyui_workflow(text: str) -> dict[str, Any] | None:
    """Fields from a ComfyUI ``workflow`` (UI graph) chunk, via widget values; None without a KSampler."""
    wf = load_json(text, "ComfyUI 'workflow' chunk")
    if not isinstance(wf, dict) or not isinstance(wf.get("nodes"), list):
        raise ProvenanceError("ComfyUI 'workflow' chunk: expected an object with a 'nodes' list")
    nodes = {n.get("id"): n for n in wf["nodes"] if isinstance(n, dict) and isinstance(n.get("id"), (int, str))}
    links: dict[Any, Any] = {}
    for link in wf.get("links") or []:
        if isinstance(link, list) and len(link) >= 3:
            links[link[0]] = link[1]
        elif isinstance(link, dict) and "id" in link:
            links[link["id"]] = link.get("origin_id")
    out = empty_fields()
    warnings: list[str] = out["warnings"]

    def widgets(node: dict[str, Any] | None) -> list[Any]:
        values = node.get("widgets_values") if node else None
        return values if isinstance(values, list) else []

    def source(node: dict[str, Any], name: str) -> dict[str, Any] | None:
        for inp in node.get("inputs") or []:
            if isinstance(inp, dict) and inp.get("name") == name:
                origin = links.get(inp.get("link"))
                return nodes.get(origin) if origin is not None else None
        return None

    samplers = sorted((n for n in nodes.values() if n.get("type") in _SAMPLER_NODES), key=lambda n: _id_key(n["id"]))
    if not samplers:
        return None
    if len(samplers) > 1:
        warnings.append(f"ComfyUI workflow has {len(samplers)} sampler nodes; reporting node {samplers[0].get('id')}")
    node = samplers[0]
    values = list(widgets(node))
    if node.get("type") == "KSamplerAdvanced" and values:
        values = values[1:]  # add_noise comes first
    if len(values) >= 2 and values[1] in _CONTROL_AFTER_GENERATE:
        del values[1]  # the "control after generate" widget follows the seed
    where = f"ComfyUI workflow node {node.get('id')} ({node.get('type')})"
    names = ["seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"]
    got = dict(zip(names, values, strict=False))
    out["seed"] = as_int(got.get("seed"), f"{where} seed", warnings)
    out["steps"] = as_int(got.get("steps"), f"{where} steps", warnings)
    out["cfg"] = as_float(got.get("cfg"), f"{where} cfg", warnings)
    if node.get("type") == "KSampler":
        out["denoise"] = as_float(got.get("denoise"), f"{where} denoise", warnings)
    _sampler_and_schedule(out, got.get("sampler_name"), got.get("scheduler"), where)
    for field, name in (("prompt", "positive"), ("negative_prompt", "negative")):
        enc = source(node, name)
        text = widgets(enc)[0] if enc and enc.get("type") == "CLIPTextEncode" and widgets(enc) else None
        out[field] = as_str(text, f"ComfyUI workflow {name} prompt", warnings)
    ckpt = source(node, "model")
    for _ in range(MAX_DEPTH):  # through LoRA loaders and model patches to the checkpoint loader
        if ckpt is None or str(ckpt.get("type", "")).startswith("CheckpointLoader"):
            break
        ckpt = source(ckpt, "model")
    if ckpt is not None and widgets(ckpt):
        name = as_str(widgets(ckpt)[0], "ComfyUI workflow checkpoint name", warnings)
        out["model_name"] = _model_stem(name) if name else None
    latent = source(node, "latent_image")
    if latent is not None and str(latent.get("type", "")).startswith("Empty") and len(widgets(latent)) >= 2:
        out["width"] = as_int(widgets(latent)[0], "ComfyUI workflow width", warnings)
        out["height"] = as_int(widgets(latent)[1], "ComfyUI workflow height", warnings)
    warnings.append("read from the ComfyUI UI workflow (no API graph): widget values may differ from what ran")
    return out


# ---------------------------------------------------------------- InvokeAI
def from_invokeai(text: str) -> dict[str, Any]:
    """Fields from an ``invokeai_metadata`` chunk (InvokeAI 3+ CoreMetadata)."""
    data = load_json(text, "InvokeAI 'invokeai_metadata' chunk")
    if not isinstance(data, dict):
        raise ProvenanceError("InvokeAI 'invokeai_metadata' chunk: expected a JSON object")
    out = empty_fields()
    w: list[str] = out["warnings"]
    out["prompt"] = as_str(data.get("positive_prompt"), "InvokeAI positive_prompt", w)
    out["negative_prompt"] = as_str(data.get("negative_prompt"), "InvokeAI negative_prompt", w)
    out["seed"] = as_int(data.get("seed"), "InvokeAI seed", w)
    out["steps"] = as_int(data.get("steps"), "InvokeAI steps", w)
    out["cfg"] = as_float(data.get("cfg_scale"), "InvokeAI cfg_scale", w)
    out["width"] = as_int(data.get("width"), "InvokeAI width", w)
    out["height"] = as_int(data.get("height"), "InvokeAI height", w)
    out["clip_skip"] = as_int(data.get("clip_skip"), "InvokeAI clip_skip", w)
    if "strength" in data:
        out["denoise"] = as_float(data.get("strength"), "InvokeAI strength", w)
    scheduler = as_str(data.get("scheduler"), "InvokeAI scheduler", w)
    if scheduler:
        out["sampler"], out["schedule"], warn = resolve_invokeai_scheduler(scheduler)
        if warn:
            w.append(warn)
        elif out["schedule"] is None:
            w.append(f"InvokeAI scheduler {scheduler!r} uses the model's own diffusers timestep spacing, "
                     "which the metadata does not record")
    model = data.get("model")
    if isinstance(model, dict):
        out["model_name"] = as_str(model.get("name"), "InvokeAI model.name", w)
        out["model_hash"] = as_str(model.get("hash"), "InvokeAI model.hash", w)
    elif model is not None:
        w.append("InvokeAI model is not an object")
    return out
