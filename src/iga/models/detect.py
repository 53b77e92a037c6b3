"""Which family a single-file checkpoint belongs to, and which prediction type it declares.

Works on the tensor names and shapes of the safetensors header (no tensor data is read). The rules:
- ``conditioner.embedders.1.model.*`` (OpenCLIP bigG) + ``label_emb`` in the UNet -> SDXL base;
- ``conditioner.embedders.0.model.*`` (OpenCLIP bigG alone) + ``label_emb`` -> the SDXL refiner;
- ``cond_stage_model.model.*`` (OpenCLIP ViT-H) -> SD2; ``cond_stage_model.transformer.*`` (CLIP-L) -> SD1;
- anything else (UNet-only files, LoRAs, SD3/Flux, diffusers-keyed single files) is refused
  with a message that says what the file looks like.

Prediction type: the strongest of the hints ``iga.checkpoint`` reads (the caller's explicit ``prediction_type=``
beats all of them): a ``v_pred`` tensor key (ComfyUI convention), ``modelspec.prediction_type`` /
``modelspec.predict_key`` (``v``, ``epsilon``, ``v-zsnr``), ``modelspec.architecture`` ending in ``-v``, kohya's
``ss_base_model_version``, an embedded recipe; else the family default: eps for SD1/SDXL, and **v for SD2**
(the 768-v releases, 2.0-v and 2.1, are the common SD2 checkpoints; 512-base ones need
``prediction_type="eps"`` or a marker). Zero-terminal-SNR: a ``ztsnr`` key, ``v-zsnr``, or
``ss_zero_terminal_snr == "True"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from iga.checkpoint.architecture import INPAINT_CHANNELS
from iga.models.ldm import SD1_TEXT_PREFIX, SD2_TEXT_PREFIX, SDXL_TEXT_PREFIXES, UNET_PREFIX


class UnsupportedCheckpoint(ValueError):
    """The file is not a checkpoint iga can load as SD1/SD2/SDXL; the message says what it looks like."""


@dataclass(frozen=True)
class Detection:
    """What the header says about a single-file checkpoint."""

    architecture: str  # "sd1" | "sd2" | "sdxl" | "sdxl_refiner"
    family: str  # config folder: "sd1" | "sd2" | "sd2-v" | "sdxl" | "sdxl_refiner"
    prediction_type: str  # "eps" | "v"
    prediction_source: str  # human-readable: which marker decided
    zero_terminal_snr: bool


def _any(keys: Iterable[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def ldm_architecture(keys: list[str], shape: Callable[[str], tuple[int, ...]]) -> str:
    """Return "sd1" | "sd2" | "sdxl" | "sdxl_refiner" for an LDM-layout checkpoint, or raise ``UnsupportedCheckpoint``."""
    if _any(keys, "lora_unet_") or _any(keys, "lora_te") or any(".lora_" in k or "lora_A" in k for k in keys[:2000]):
        raise UnsupportedCheckpoint("this file is a LoRA/adapter, not a full checkpoint; load a base model instead")
    if not _any(keys, UNET_PREFIX):
        if _any(keys, "double_blocks.") or _any(keys, "model.diffusion_model.double_blocks."):
            raise UnsupportedCheckpoint("this looks like a Flux checkpoint; only SD1/SD2/SDXL are supported")
        if _any(keys, "down_blocks.") or _any(keys, "unet.down_blocks."):
            raise UnsupportedCheckpoint(
                "this file uses diffusers key names; iga reads single files in the original LDM layout "
                "(model.diffusion_model.*), or a diffusers *folder* with model_index.json")
        if _any(keys, "encoder.down.") or _any(keys, "encoder.down_blocks."):
            raise UnsupportedCheckpoint("this file is a VAE only; pass it as vae=... next to a full checkpoint")
        raise UnsupportedCheckpoint("no UNet weights (model.diffusion_model.*) found: not a Stable Diffusion checkpoint")
    if _any(keys, UNET_PREFIX + "joint_blocks.") or _any(keys, UNET_PREFIX + "double_blocks."):
        raise UnsupportedCheckpoint("this looks like an SD3/Flux (DiT) checkpoint; only SD1/SD2/SDXL are supported")
    conv_in = UNET_PREFIX + "input_blocks.0.0.weight"
    if conv_in in keys and shape(conv_in)[1] not in (4, INPAINT_CHANNELS):
        raise UnsupportedCheckpoint(
            f"the UNet takes {shape(conv_in)[1]} input channels (instruct-pix2pix?); iga runs 4-channel models "
            "and 9-channel inpainting models")
    if _any(keys, SDXL_TEXT_PREFIXES[1]) and _any(keys, UNET_PREFIX + "label_emb."):
        if not _any(keys, SDXL_TEXT_PREFIXES[0]):
            raise UnsupportedCheckpoint("SDXL checkpoint without its CLIP-L text encoder (embedders.0)")
        return "sdxl"
    if _any(keys, "conditioner.embedders.0.model."):
        if _any(keys, UNET_PREFIX + "label_emb."):
            return "sdxl_refiner"
        raise UnsupportedCheckpoint("this looks like the SDXL refiner (OpenCLIP bigG only) but its UNet lacks the "
                                    "size/aesthetic-score embedding (label_emb): the file is incomplete")
    if _any(keys, SD2_TEXT_PREFIX):
        return "sd2"
    if _any(keys, SD1_TEXT_PREFIX):
        return "sd1"
    raise UnsupportedCheckpoint(
        "UNet weights found but no text encoder (cond_stage_model.* or conditioner.embedders.*): "
        "a UNet-only file cannot be loaded on its own")


def detect_prediction(architecture: str, keys: list[str], metadata: dict[str, str]) -> tuple[str, str, bool]:
    """(prediction_type, source, zero_terminal_snr): the strongest header hint, else the family default."""
    from iga.checkpoint.architecture import hints_from

    hints = hints_from(set(keys), metadata)
    ztsnr = next((h.value == "true" for h in hints if h.kind == "zero_terminal_snr"), False)
    preds = [h for h in hints if h.kind == "prediction_type" and h.value in ("eps", "v")]
    if preds:
        others = sorted({h.value for h in preds} - {preds[0].value})
        note = f" (weaker hints say {', '.join(others)})" if others else ""
        return preds[0].value, preds[0].source + note, ztsnr
    if architecture == "sd2":
        return "v", "family default (SD2 without a marker is assumed to be a 768-v model)", ztsnr
    return "eps", f"family default ({architecture})", ztsnr


def detect(keys: list[str], shape: Callable[[str], tuple[int, ...]], metadata: dict[str, str]) -> Detection:
    """Architecture, config family and prediction type of an LDM-layout checkpoint."""
    arch = ldm_architecture(keys, shape)
    pred, source, ztsnr = detect_prediction(arch, keys, metadata)
    fam = "sd2-v" if arch == "sd2" and pred == "v" else arch
    return Detection(arch, fam, pred, source, ztsnr)
