"""Write diffusers/transformers models as one LDM-layout ``.safetensors`` checkpoint (A1111/ComfyUI style).

The inverse of the single-file loader: ``ldm_state_dict`` renames UNet, VAE and text-encoder weights
to the original latent-diffusion names for the family, ``save_safetensors`` writes them atomically.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iga.models.configs import family
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
