"""Architecture and prediction-type detection from a safetensors header (names and shapes; no tensor data).

Architectures: ``sd1``, ``sd2``, ``sdxl`` (base), ``sdxl_refiner``, ``sd3``, ``flux``, ``demo``
(``__metadata__["iga.architecture"] == "demo"`` or tensors named ``demo.*``), else ``unknown``.

SD3 and Flux are recognised by their transformer keys (rank 1), in the original layout (SD3's
``joint_blocks.N.x_block``, Flux's ``double_blocks.N.img_attn``; bare or under ``model.diffusion_model.``) or
diffusers' (``transformer_blocks.N.attn.add_q_proj`` with ``pos_embed.proj`` for SD3, ``x_embedder`` and
``single_transformer_blocks`` for Flux; bare or under ``transformer.``). ``ArchitectureInfo.variant`` says
``dev`` (a guidance embedding: ``guidance_in`` / ``time_text_embed.guidance_embedder``) or ``schnell`` (none)
for Flux, ``3.5`` for an SD3 transformer with q/k norms (3.5 large/medium) and ``3`` without; both families
get the prediction hint ``flow``.

Evidence, strongest first:

1. The UNet's cross-attention width (shape[1] of ``*.attn2.to_k.weight``), in the original LDM layout
   (``model.diffusion_model.*``) or diffusers keys (``down_blocks.*``, optional ``unet.`` prefix): 768 -> sd1,
   1024 -> sd2, 2048 -> sdxl, 1280 with an added-conditioning embedding (``label_emb``/``add_embedding``, input 2560)
   -> sdxl_refiner. The embedding's input width (2816 base, 2560 refiner) confirms SDXL.
2. Text encoders: ``cond_stage_model.transformer.*`` (CLIP ViT-L, sd1), ``cond_stage_model.model.*`` (OpenCLIP ViT-H,
   sd2), ``conditioner.embedders.0`` + ``.1`` (sdxl), ``conditioner.embedders.0.model.*`` alone (refiner).
3. Metadata: ``modelspec.architecture`` (exact base-model ids only, not ``/lora`` etc.), kohya ``ss_base_model_version``
   and ``ss_v2``.

Lower-ranked evidence that disagrees with the decision is reported in ``conflicts``.

Prediction hints (the weights of eps and v models look alike, so these are hints, each with its source): marker tensors
``v_pred`` and ``ztsnr`` (ComfyUI convention), ``edm_vpred.sigma_min/max`` (v-prediction with an EDM sigma range; the
two scalars are read, 2-8 bytes each), ``edm_mean``/``edm_std`` (EDM latent statistics, Playground v2.5 style);
metadata ``modelspec.prediction_type``, ``modelspec.predict_key`` (ComfyUI's spelling), ``v-zsnr`` values,
``modelspec.architecture`` ending in ``-v``, kohya ``ss_base_model_version`` (``sd_v1``/``sd_v2`` -> eps, ``*_v`` -> v),
``ss_zero_terminal_snr``; and the embedded recipe's ``prediction_type``.
"""

from __future__ import annotations

import json
import os
import struct
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from iga.checkpoint.header import SafetensorsHeader, TensorInfo, read_header

ARCHITECTURES = ("sd1", "sd2", "sdxl", "sdxl_refiner", "sd3", "flux", "demo", "unknown")

CROSS_ATTENTION_WIDTHS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_ADM_IN = {2816: "sdxl", 2560: "sdxl_refiner"}
_MODELSPEC_ARCH = {
    "stable-diffusion-v1": "sd1",
    "stable-diffusion-v2-512": "sd2",
    "stable-diffusion-v2-768-v": "sd2",
    "stable-diffusion-v2": "sd2",
    "stable-diffusion-xl-v1-base": "sdxl",
    "stable-diffusion-xl-v1-refiner": "sdxl_refiner",
    "stable-diffusion-v3-medium": "sd3",
    "stable-diffusion-v3.5-medium": "sd3",
    "stable-diffusion-v3.5-large": "sd3",
    "stable-diffusion-v3.5-large-turbo": "sd3",
    "flux-1-dev": "flux",
    "flux-1-schnell": "flux",
}
_FLOW_FAMILIES = ("sd3", "flux")
_PRED_WORDS = {
    "epsilon": "eps",
    "eps": "eps",
    "v": "v",
    "v_prediction": "v",
    "v-prediction": "v",
    "v-zsnr": "v",
    "v_zsnr": "v",
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """One observation and the architecture it points to (None: informative only)."""

    source: str
    detail: str
    suggests: str | None
    rank: int
    """1 UNet, 2 text encoder, 3 metadata, 0 explicit marker."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {"source": self.source, "detail": self.detail, "suggests": self.suggests, "rank": self.rank}


@dataclass(frozen=True, slots=True)
class PredictionHint:
    """One hint about the model's parameterisation, with where it came from."""

    kind: str
    """``prediction_type`` (eps/v), ``zero_terminal_snr`` (true/false), ``parameterization`` (edm), or
    ``sigma_range`` ("min,max")."""
    value: str
    source: str

    def to_dict(self) -> dict[str, str]:
        """Plain dict for JSON output."""
        return {"kind": self.kind, "value": self.value, "source": self.source}


@dataclass(frozen=True, slots=True)
class ArchitectureInfo:
    """What the header says about the model family and its parameterisation."""

    architecture: str
    layout: str
    """``ldm`` (original single-file keys), ``diffusers`` (diffusers UNet keys), ``demo``, or ``unknown``."""
    evidence: tuple[Evidence, ...]
    prediction_hints: tuple[PredictionHint, ...]
    components: tuple[str, ...] = ()
    """Parts present in the file: unet, text_encoder, text_encoder_2, vae."""
    conflicts: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    variant: str | None = None
    """Flux: ``dev`` (guidance embedding present) or ``schnell`` (absent); SD3: ``3.5`` (q/k norms) or ``3``."""

    @property
    def prediction_type(self) -> str | None:
        """The prediction type all hints agree on, or None when there are none or they disagree."""
        values = {h.value for h in self.prediction_hints if h.kind == "prediction_type"}
        return values.pop() if len(values) == 1 else None

    @property
    def zero_terminal_snr(self) -> bool | None:
        """True/False when the hints agree on zero-terminal-SNR training, else None."""
        values = {h.value for h in self.prediction_hints if h.kind == "zero_terminal_snr"}
        return (values.pop() == "true") if len(values) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {
            "architecture": self.architecture,
            "layout": self.layout,
            "components": list(self.components),
            "prediction_type": self.prediction_type,
            "zero_terminal_snr": self.zero_terminal_snr,
            "evidence": [e.to_dict() for e in self.evidence],
            "prediction_hints": [h.to_dict() for h in self.prediction_hints],
            "conflicts": list(self.conflicts),
            "notes": list(self.notes),
            "variant": self.variant,
        }


def detect_architecture(source: SafetensorsHeader | str | os.PathLike[str]) -> ArchitectureInfo:
    """Classify a checkpoint from its header (a parsed header, a .safetensors path, or a diffusers folder).

    A diffusers folder is read through ``unet/diffusion_pytorch_model(.fp16).safetensors``; without one the answer
    is "unknown" with a note (its JSON configs are the models package's business), except SD3/Flux folders,
    whose ``model_index.json`` pipeline class names the family (prediction type "flow").
    """
    if isinstance(source, SafetensorsHeader):
        header = source
    else:
        p = os.fspath(source)
        if os.path.isdir(p):
            flow = _diffusers_flow_folder(p)
            if flow is not None:
                return flow
            unet = diffusers_unet_file(p)
            if unet is None:
                note = ("folder has no unet/ or transformer/diffusion_pytorch_model(.fp16).safetensors to read the "
                        "model layout from")
                return ArchitectureInfo("unknown", "unknown", (), (), notes=(note,))
            header = read_header(unet)
        else:
            header = read_header(p)
    tensors = {t.name: t for t in header.tensors}
    metadata = header.metadata
    evidence: list[Evidence] = []
    notes: list[str] = []

    if metadata.get("iga.architecture") == "demo":
        evidence.append(Evidence("__metadata__['iga.architecture']", "marker value 'demo'", "demo", 0))
    demo_names = [n for n in tensors if n.startswith("demo.")]
    if demo_names:
        evidence.append(Evidence(demo_names[0], f"{len(demo_names)} tensors named demo.*", "demo", 0))

    flow = _flow_transformer(tensors)
    variant = None
    if flow is not None:
        layout, flow_evidence, variant, components = flow
        evidence.extend(flow_evidence)
    else:
        layout, unet_prefix = unet_layout(tensors)
        components = _components(tensors, layout)
        if unet_prefix is not None:
            evidence.extend(_unet_evidence(tensors, unet_prefix, layout, notes))
        variant = _unet_variant(tensors, unet_prefix, layout)
    evidence.extend(_text_encoder_evidence(tensors))
    evidence.extend(_metadata_evidence(metadata))

    architecture = "unknown"
    for rank in (0, 1, 2, 3):
        votes = {e.suggests for e in evidence if e.rank == rank and e.suggests}
        if len(votes) == 1:
            architecture = votes.pop()
            break
        if len(votes) > 1:
            notes.append(f"rank-{rank} evidence disagrees ({', '.join(sorted(votes))}); not deciding from it")
    if architecture == "demo":
        layout = "demo"
    conflicts = tuple(
        f"{e.source}: {e.detail} suggests {e.suggests}, not {architecture}"
        for e in evidence
        if e.suggests and e.suggests != architecture and architecture != "unknown"
    )
    hints = prediction_hints(header)
    if architecture in _FLOW_FAMILIES:  # both are rectified-flow (velocity) models; no marker says so
        hints.append(PredictionHint("prediction_type", "flow", f"architecture {architecture} (rectified flow)"))
        if variant:
            notes.append(_VARIANT_NOTES.get((architecture, variant), f"{architecture} {variant}"))
    return ArchitectureInfo(
        architecture=architecture,
        layout=layout,
        evidence=tuple(evidence),
        prediction_hints=tuple(hints),
        components=components,
        conflicts=conflicts,
        notes=tuple(notes),
        variant=variant if architecture in _FLOW_FAMILIES or variant == "inpaint" else None,
    )


INPAINT_CHANNELS = 9  # 4 latent + 1 mask + 4 masked-image latent channels: the "inpaint" variant of a family


def unet_conv_in(tensors: Mapping[str, TensorInfo], prefix: str, layout: str) -> TensorInfo | None:
    return tensors.get(prefix + ("input_blocks.0.0.weight" if layout == "ldm" else "conv_in.weight"))


def _unet_variant(tensors: Mapping[str, TensorInfo], prefix: str | None, layout: str) -> str | None:
    """ "inpaint" for a UNet that takes the mask and masked image as extra input channels, else None."""
    conv_in = unet_conv_in(tensors, prefix, layout) if prefix is not None else None
    if conv_in is not None and len(conv_in.shape) == 4 and conv_in.shape[1] == INPAINT_CHANNELS:
        return "inpaint"
    return None


def prediction_hints(header: SafetensorsHeader) -> list[PredictionHint]:
    """Every prediction-type hint in the header's marker tensors and metadata, each with its source."""
    names = {t.name: t for t in header.tensors}
    return hints_from(names.keys(), header.metadata, lambda name: read_scalar(header, names.get(name)))


def hints_from(names: Collection[str], md: Mapping[str, str],
               scalar: Callable[[str], float | None] = lambda _name: None) -> list[PredictionHint]:
    """Prediction hints from tensor names and metadata, strongest first; ``scalar`` reads a marker's value."""
    hints: list[PredictionHint] = []
    if "v_pred" in names:
        hints.append(PredictionHint("prediction_type", "v", "tensor v_pred"))
    if "ztsnr" in names:
        hints.append(PredictionHint("zero_terminal_snr", "true", "tensor ztsnr"))
    if "edm_vpred.sigma_max" in names or "edm_vpred.sigma_min" in names:
        hints.append(PredictionHint("prediction_type", "v", "tensor edm_vpred.sigma_max/min"))
        hints.append(PredictionHint("parameterization", "edm", "tensor edm_vpred.sigma_max/min"))
        lo, hi = scalar("edm_vpred.sigma_min"), scalar("edm_vpred.sigma_max")
        if lo is not None and hi is not None:
            hints.append(PredictionHint("sigma_range", f"{lo:g},{hi:g}", "tensors edm_vpred.sigma_min/max"))
    if "edm_mean" in names and "edm_std" in names:
        hints.append(PredictionHint("parameterization", "edm", "tensors edm_mean/edm_std (EDM latent statistics)"))
    for key in ("modelspec.prediction_type", "modelspec.predict_key"):
        if key in md:
            hints.extend(_word_hints(md[key], f"metadata {key}"))
    arch = md.get("modelspec.architecture", "")
    if arch.split("/")[0].endswith("-v"):
        hints.append(PredictionHint("prediction_type", "v", f"metadata modelspec.architecture={arch!r}"))
    base = md.get("ss_base_model_version")
    if base:
        if base.endswith("_v"):
            hints.append(PredictionHint("prediction_type", "v", f"metadata ss_base_model_version={base!r}"))
        elif base in ("sd_v1", "sd_v2"):
            hints.append(PredictionHint("prediction_type", "eps", f"metadata ss_base_model_version={base!r}"))
    ztsnr = md.get("ss_zero_terminal_snr")
    if ztsnr in ("True", "False"):
        hints.append(PredictionHint("zero_terminal_snr", ztsnr.lower(), "metadata ss_zero_terminal_snr"))
    recipe_text = md.get("iga.recipe")
    if recipe_text and len(recipe_text) <= 1024 * 1024:
        try:
            recipe = json.loads(recipe_text)
        except ValueError:
            recipe = None
        if isinstance(recipe, dict):
            pt = recipe.get("prediction_type")
            if isinstance(pt, str):
                hints.append(PredictionHint("prediction_type", _PRED_WORDS.get(pt, pt), "recipe iga.recipe"))
            sched = recipe.get("training_schedule")
            if isinstance(sched, dict) and isinstance(sched.get("zero_terminal_snr"), bool):
                value = "true" if sched["zero_terminal_snr"] else "false"
                hints.append(PredictionHint("zero_terminal_snr", value, "recipe iga.recipe"))
    return hints


def _word_hints(value: str, source: str) -> list[PredictionHint]:
    word = value.strip().lower()
    out = [PredictionHint("prediction_type", _PRED_WORDS.get(word, word), f"{source}={value!r}")]
    if "zsnr" in word:
        out.append(PredictionHint("zero_terminal_snr", "true", f"{source}={value!r}"))
    return out


def unet_layout(tensors: Mapping[str, TensorInfo]) -> tuple[str, str | None]:
    if any(n.startswith("model.diffusion_model.") for n in tensors):
        return "ldm", "model.diffusion_model."
    for prefix in ("", "unet."):
        if f"{prefix}conv_in.weight" in tensors or any(n.startswith(f"{prefix}down_blocks.") for n in tensors):
            return "diffusers", prefix
    return "unknown", None


def _components(tensors: Mapping[str, TensorInfo], layout: str) -> tuple[str, ...]:
    names = tensors.keys()
    out = []
    if layout in ("ldm", "diffusers"):
        out.append("unet")
    if any(n.startswith(("cond_stage_model.", "conditioner.embedders.0.")) for n in names):
        out.append("text_encoder")
    if any(n.startswith("conditioner.embedders.1.") for n in names):
        out.append("text_encoder_2")
    if any(n.startswith("first_stage_model.") for n in names):
        out.append("vae")
    return tuple(out)


def _unet_evidence(tensors: Mapping[str, TensorInfo], prefix: str, layout: str, notes: list[str]) -> list[Evidence]:
    out: list[Evidence] = []
    dims: Counter[int] = Counter()
    example: dict[int, str] = {}
    for name, t in tensors.items():
        if name.startswith(prefix) and name.endswith("attn2.to_k.weight") and len(t.shape) == 2:
            dims[t.shape[1]] += 1
            example.setdefault(t.shape[1], name)
    adm = tensors.get(prefix + ("label_emb.0.0.weight" if layout == "ldm" else "add_embedding.linear_1.weight"))
    conv_in = unet_conv_in(tensors, prefix, layout)
    adm_in = adm.shape[1] if adm is not None and len(adm.shape) == 2 else None
    for dim, count in dims.items():
        name = example[dim]
        suggests = CROSS_ATTENTION_WIDTHS.get(dim)
        if dim == 1280 and adm_in is not None:
            suggests = "sdxl_refiner"
        detail = f"cross-attention width {dim} ({count} attn2.to_k layers)"
        out.append(Evidence(name, detail, suggests, 1))
    if adm is not None and adm_in is not None:
        out.append(
            Evidence(
                adm.name, f"added-conditioning embedding input width {adm_in}", _ADM_IN.get(adm_in), 1
            )
        )
    if conv_in is not None and len(conv_in.shape) == 4:
        in_ch = conv_in.shape[1]
        out.append(Evidence(conv_in.name, f"UNet input conv {list(conv_in.shape)}", None, 1))
        if in_ch == INPAINT_CHANNELS:
            notes.append("inpainting UNet (9 input channels)")
        elif in_ch == 8:
            notes.append("image-conditioned UNet (8 input channels, e.g. InstructPix2Pix)")
    if not dims:
        notes.append(f"UNet keys ({layout} layout) found, but no cross-attention layer to measure")
    return out


def _text_encoder_evidence(tensors: Mapping[str, TensorInfo]) -> list[Evidence]:
    names = tensors.keys()

    def first(prefix: str) -> str | None:
        return next((n for n in names if n.startswith(prefix)), None)

    out: list[Evidence] = []
    clip_l = first("cond_stage_model.transformer.")
    open_h = first("cond_stage_model.model.")
    emb0_l = first("conditioner.embedders.0.transformer.")
    emb0_g = first("conditioner.embedders.0.model.")
    emb1 = first("conditioner.embedders.1.")
    if clip_l:
        out.append(Evidence(clip_l, "CLIP ViT-L text encoder under cond_stage_model.transformer", "sd1", 2))
    if open_h:
        out.append(Evidence(open_h, "OpenCLIP text encoder under cond_stage_model.model", "sd2", 2))
    if emb0_l and emb1:
        out.append(Evidence(emb1, "two text encoders under conditioner.embedders.0/1", "sdxl", 2))
    elif emb0_g and not emb1:
        out.append(Evidence(emb0_g, "single OpenCLIP bigG encoder under conditioner.embedders.0", "sdxl_refiner", 2))
    return out


def _metadata_evidence(md: Mapping[str, str]) -> list[Evidence]:
    out: list[Evidence] = []
    arch = md.get("modelspec.architecture")
    if arch is not None:
        suggests = _MODELSPEC_ARCH.get(arch)
        detail = f"modelspec.architecture={arch!r}" + ("" if suggests or "/" not in arch else " (an add-on, not a base model)")
        out.append(Evidence("__metadata__['modelspec.architecture']", detail, suggests, 3))
    base = md.get("ss_base_model_version")
    if base is not None:
        suggests = "sd1" if base.startswith("sd_v1") else "sd2" if base.startswith("sd_v2") else (
            "sdxl" if base.startswith("sdxl_base") else None
        )
        out.append(Evidence("__metadata__['ss_base_model_version']", f"kohya base model {base!r}", suggests, 3))
    if md.get("ss_v2") == "True":
        out.append(Evidence("__metadata__['ss_v2']", "kohya ss_v2=True", "sd2", 3))
    return out


_FLOW_PIPELINES = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}


def _diffusers_flow_folder(folder: str) -> ArchitectureInfo | None:
    """SD3/Flux diffusers folders have no UNet: their model_index.json pipeline class names the family."""
    index_path = os.path.join(folder, "model_index.json")
    try:
        if os.path.getsize(index_path) > 1 << 20:
            return None
        with open(index_path, encoding="utf-8") as fh:
            index = json.load(fh)
    except (OSError, ValueError):
        return None
    cls = index.get("_class_name") if isinstance(index, dict) else None
    arch = _FLOW_PIPELINES.get(cls) if isinstance(cls, str) else None
    if arch is None:
        return None
    parts = tuple(k for k in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")
                  if index.get(k) not in (None, [None, None]))
    return ArchitectureInfo(arch, "diffusers",
                            (Evidence("model_index.json", f"pipeline class {cls}", arch, 0),),
                            (PredictionHint("prediction_type", "flow", "model_index.json (rectified flow)"),),
                            components=parts)


def diffusers_unet_file(folder: str) -> str | None:
    """The UNet's (or, for SD3/Flux folders, the transformer's) weights file; the first shard of a sharded one."""
    for sub in ("unet", "transformer"):
        for name in (
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model-00001-of-00002.safetensors",
            "diffusion_pytorch_model-00001-of-00003.safetensors",
        ):
            candidate = os.path.join(folder, sub, name)
            if os.path.isfile(candidate):
                return candidate
    return None


_VARIANT_NOTES = {
    ("flux", "dev"): "Flux dev: guidance-distilled (a guidance embedding is present; guidance is a model input)",
    ("flux", "schnell"): "Flux schnell-like: no guidance embedding (timestep-distilled or base model)",
    ("sd3", "3.5"): "SD3.5: the transformer has q/k norms",
    ("sd3", "3"): "SD3 (3.0): no q/k norms",
}
_FLOW_ORIGINAL_PREFIXES = ("", "model.diffusion_model.")
_FLOW_DIFFUSERS_PREFIXES = ("", "transformer.", "model.diffusion_model.")
_SD3_TEXT = {"text_encoders.clip_l.": "text_encoder", "text_encoders.clip_g.": "text_encoder_2",
             "text_encoders.t5xxl.": "text_encoder_3"}


def _flow_transformer(tensors: Mapping[str, TensorInfo]
                      ) -> tuple[str, list[Evidence], str | None, tuple[str, ...]] | None:
    """(layout, evidence, variant, components) when the file holds an SD3 or Flux transformer, else None."""
    found = _flow_original(tensors) or _flow_diffusers(tensors)
    if found is None:
        return None
    layout, _arch, _prefix, ev, variant = found
    names = tensors.keys()
    components = ["transformer"]
    if any(n.startswith("first_stage_model.") for n in names):
        components.append("vae")
    for p, comp in _SD3_TEXT.items():
        if any(n.startswith(p) for n in names):
            components.append(comp)
    return layout, ev, variant, tuple(components)


def _block_count(tensors: Mapping[str, TensorInfo], prefix: str) -> int:
    return len({n[len(prefix):].split(".", 1)[0] for n in tensors if n.startswith(prefix)})


def _width(tensors: Mapping[str, TensorInfo], name: str) -> str:
    t = tensors.get(name)
    return f"width {t.shape[0]}" if t is not None and t.shape else "width ?"


def _flow_original(tensors: Mapping[str, TensorInfo]) -> tuple[str, str, str, list[Evidence], str | None] | None:
    for p in _FLOW_ORIGINAL_PREFIXES:
        qkv = f"{p}double_blocks.0.img_attn.qkv.weight"
        if qkv in tensors:
            dev = f"{p}guidance_in.in_layer.weight" in tensors
            detail = (f"Flux transformer, original layout: {_block_count(tensors, p + 'double_blocks.')} double + "
                      f"{_block_count(tensors, p + 'single_blocks.')} single blocks, "
                      f"{_width(tensors, p + 'img_in.weight')}"
                      f", {'with' if dev else 'no'} guidance_in")
            return "ldm", "flux", p, [Evidence(qkv, detail, "flux", 1)], "dev" if dev else "schnell"
        qkv = f"{p}joint_blocks.0.x_block.attn.qkv.weight"
        if qkv in tensors:
            qk = f"{p}joint_blocks.0.x_block.attn.ln_q.weight" in tensors
            dual = sum(1 for n in tensors
                       if n.startswith(p + "joint_blocks.") and n.endswith("x_block.attn2.qkv.weight"))
            detail = (f"SD3 MMDiT, original layout: {_block_count(tensors, p + 'joint_blocks.')} joint blocks, "
                      f"{_width(tensors, p + 'x_embedder.proj.weight')}"
                      + (f", dual attention in {dual} blocks" if dual else ""))
            return "ldm", "sd3", p, [Evidence(qkv, detail, "sd3", 1)], "3.5" if qk else "3"
    return None


def _flow_diffusers(tensors: Mapping[str, TensorInfo]) -> tuple[str, str, str, list[Evidence], str | None] | None:
    for p in _FLOW_DIFFUSERS_PREFIXES:
        joint = f"{p}transformer_blocks.0.attn.add_q_proj.weight"
        if joint not in tensors:
            continue
        depth = _block_count(tensors, p + "transformer_blocks.")
        if f"{p}pos_embed.proj.weight" in tensors:
            qk = f"{p}transformer_blocks.0.attn.norm_q.weight" in tensors
            width = _width(tensors, p + "pos_embed.proj.weight")
            detail = f"SD3 transformer, diffusers layout: {depth} blocks, {width}"
            return "diffusers", "sd3", p, [Evidence(joint, detail, "sd3", 1)], "3.5" if qk else "3"
        if f"{p}x_embedder.weight" in tensors:
            dev = f"{p}time_text_embed.guidance_embedder.linear_1.weight" in tensors
            detail = (f"Flux transformer, diffusers layout: {depth} double + "
                      f"{_block_count(tensors, p + 'single_transformer_blocks.')} single blocks, "
                      f"{_width(tensors, p + 'x_embedder.weight')}, {'with' if dev else 'no'} guidance embedder")
            return "diffusers", "flux", p, [Evidence(joint, detail, "flux", 1)], "dev" if dev else "schnell"
    return None


def read_scalar(header: SafetensorsHeader, t: TensorInfo | None) -> float | None:
    """Value of a one-element float tensor (reads at most 8 bytes), or None."""
    if t is None or header.path is None or t.numel != 1 or t.dtype not in ("F16", "BF16", "F32", "F64"):
        return None
    try:
        with open(header.path, "rb") as f:
            f.seek(header.data_start + t.data_offsets[0])
            raw = f.read(t.nbytes)
    except OSError:
        return None
    if len(raw) != t.nbytes:
        return None
    if t.dtype == "F16":
        return float(struct.unpack("<e", raw)[0])
    if t.dtype == "BF16":
        return float(struct.unpack("<f", b"\x00\x00" + raw)[0])
    return float(struct.unpack("<f" if t.dtype == "F32" else "<d", raw)[0])
