"""Write diffusers/transformers models as one LDM-layout ``.safetensors`` checkpoint (A1111/ComfyUI style).

The inverse of the single-file loader: ``ldm_state_dict`` renames UNet, VAE and text-encoder weights
to the original latent-diffusion names for the family, ``save_safetensors`` writes them atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iga.models.configs import MODEL_CONFIG_KEY, family
from iga.models.ldm import UNET_PREFIX, VAE_PREFIX, add_prefix, canonical_text_keys, clip_to_ldm, \
    openclip_to_ldm, unet_to_ldm, vae_to_ldm

if TYPE_CHECKING:  # pragma: no cover
    import torch


def ldm_state_dict(architecture: str, unet: Any, vae: Any, text_encoders: list[Any]) -> "dict[str, torch.Tensor]":
    """All weights of a pipeline's models under their LDM single-file names.

    ``architecture``: "sd1", "sd2" or "sdxl"; ``text_encoders`` in pipeline order (SDXL: CLIP-L, then
    the OpenCLIP bigG model with projection). SD2's never-used 24th OpenCLIP block is written as zeros.
    """
    fam = family("sd2" if architecture == "sd2" else architecture)
    specs = fam["text"]
    if len(text_encoders) != len(specs):
        raise ValueError(f"{architecture} needs {len(specs)} text encoder(s), got {len(text_encoders)}")
    out: dict = {}
    out.update(add_prefix(unet_to_ldm(_tensors(unet)), UNET_PREFIX))
    out.update(add_prefix(vae_to_ldm(_tensors(vae)), VAE_PREFIX))
    for spec, model in zip(specs, text_encoders):
        canonical = canonical_text_keys(_tensors(model))
        if spec["kind"] == "clip":
            ldm = clip_to_ldm(canonical)
        else:
            ldm = openclip_to_ldm(canonical, spec.get("ldm_unused_final_blocks", 0))
        out.update(add_prefix(ldm, spec["ldm_prefix"]))
    return {k: v.detach().contiguous() for k, v in out.items()}


def _tensors(model: Any) -> "dict[str, torch.Tensor]":
    sd = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    return {k: v for k, v in sd.items() if not k.endswith("position_ids")}


def save_safetensors(path: str | os.PathLike, tensors: "dict[str, torch.Tensor]",
                     metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    from safetensors.torch import save_file

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


_FAMILY = {"sd1": "sd1", "sd2": "sd2-v", "sdxl": "sdxl", "sdxl_refiner": "sdxl_refiner"}


@dataclass
class PipelineParts:
    """The components of one SD1/SD2/SDXL pipeline, as the writers below take them (the test models and the
    latent demo model)."""

    architecture: str  # "sd1" | "sd2" | "sdxl" | "sdxl_refiner"
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    model_config: dict[str, dict[str, Any]] = field(default_factory=dict)  # what shapes cannot tell

    @property
    def prediction_type(self) -> str:
        """ "eps" or "v", from the scheduler config."""
        return "v" if self.scheduler_config["prediction_type"] == "v_prediction" else "eps"

    @property
    def text_encoder_names(self) -> list[str]:
        """The folders of the text encoders in diffusers' layout (the refiner's only one is text_encoder_2)."""
        return _encoder_names(family(_FAMILY[self.architecture])["text"])


def _encoder_names(specs: list[dict[str, Any]]) -> list[str]:
    return [spec.get("folder") or ("text_encoder" if i == 0 else f"text_encoder_{i + 1}")
            for i, spec in enumerate(specs)]


def _write_scheduler_and_index(tiny: Any, root: Path, index: dict[str, Any]) -> Path:
    """The scheduler config and model_index.json that close a diffusers folder; returns the folder."""
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(tiny.scheduler_config, indent=2))
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def _save_text_encoders(tiny: Any, root: Path, index: dict[str, Any]) -> None:
    """text_encoder[_N] and tokenizer[_N] sub-folders in diffusers' order, listed in ``index`` (CLIP tokenizers
    as vocab.json + merges.txt, as released SD folders ship them)."""
    from iga.models.tokenizer import save_clip_tokenizer

    names = getattr(tiny, "text_encoder_names", None) or [
        "text_encoder" if i == 0 else f"text_encoder_{i + 1}" for i in range(len(tiny.text_encoders))]
    for name, model, tok in zip(names, tiny.text_encoders, tiny.tokenizers):
        suffix = name.removeprefix("text_encoder")
        model.save_pretrained(root / f"text_encoder{suffix}", safe_serialization=True)
        t5 = "T5" in type(tok).__name__
        if t5:
            tok.save_pretrained(root / f"tokenizer{suffix}")
        else:
            save_clip_tokenizer(tok, root / f"tokenizer{suffix}")
        index[f"text_encoder{suffix}"] = ["transformers", type(model).__name__]
        index[f"tokenizer{suffix}"] = ["transformers", "T5TokenizerFast" if t5 else "CLIPTokenizer"]


def save_sd_folder(tiny: PipelineParts, path: str | Path) -> Path:
    """Save an SD1/SD2/SDXL pipeline as a diffusers folder (safetensors weights, tokenizer files, scheduler config,
    model_index.json) that diffusers' own pipelines load unchanged."""
    import diffusers

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    xl = tiny.architecture in ("sdxl", "sdxl_refiner")
    refiner = tiny.architecture == "sdxl_refiner"
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionXLImg2ImgPipeline" if refiner else "StableDiffusionXLPipeline" if xl
        else "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", tiny.scheduler_config["_class_name"]],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if xl:
        index["force_zeros_for_empty_prompt"] = False
    if refiner:  # as the released refiner's model_index.json: no CLIP-L, aesthetic-score time ids
        index.update(text_encoder=[None, None], tokenizer=[None, None], requires_aesthetics_score=True)
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    tiny.unet.save_pretrained(root / "unet", safe_serialization=True)
    tiny.vae.save_pretrained(root / "vae", safe_serialization=True)
    _save_text_encoders(tiny, root, index)
    return _write_scheduler_and_index(tiny, root, index)


def save_single_file(tiny: PipelineParts, path: str | Path, *, metadata: dict[str, str] | None = None,
                     with_model_config: bool = True) -> Path:
    """Save as one LDM-layout ``.safetensors`` checkpoint (plus ``iga.model_config`` for toy head counts)."""
    meta = dict(metadata or {})
    if with_model_config and tiny.model_config:
        meta[MODEL_CONFIG_KEY] = json.dumps(tiny.model_config, sort_keys=True)
    sd = ldm_state_dict(tiny.architecture, tiny.unet, tiny.vae, tiny.text_encoders)
    return save_safetensors(path, sd, meta or None)
