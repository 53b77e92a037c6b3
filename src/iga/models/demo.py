"""The backend of iga's bundled demo model: pixel space (no VAE), v-prediction, word-level text encoder."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .base import ModelLoadError


def is_demo_file(path: str | os.PathLike[str]) -> bool:
    """True when a .safetensors header marks the file as an iga demo model."""
    from iga.checkpoint import CheckpointError, read_header

    try:
        return read_header(path).metadata.get("iga.architecture") == "demo"
    except CheckpointError:
        return False  # not readable as safetensors: the single-file loader reports why


class DemoBackend:
    """The Backend protocol for the demo model; conditioning is token states plus the pooled prompt."""

    architecture = "demo"
    latent_channels = 3
    vae_scale_factor = 1

    def __init__(self, path: str | os.PathLike[str], device: torch.device, dtype: torch.dtype):
        from iga.demo.model import DemoModelError, load_demo_model

        try:
            self.unet, self.text_encoder, self.tokenizer, cfg = load_demo_model(path)
        except DemoModelError as e:
            raise ModelLoadError(str(e)) from None
        if device.type != "cpu" or dtype != torch.float32:  # a no-op cast still makes diffusers warn
            for module in (self.unet, self.text_encoder):
                module.to(device=device, dtype=dtype)
        self.prediction_type = cfg["prediction_type"]
        self.training_schedule = cfg["training_schedule"]
        self.device, self.dtype = device, dtype
        self.identity: dict[str, Any] = {"name": Path(path).stem, "path": str(path), "format": "safetensors",
                                         "architecture": "demo", "vae": {"source": "none"}}

    def encode_prompt(self, prompts: list[str], negatives: list[str], *, clip_skip: int = 1, width: int = 32,
                      height: int = 32) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(cond, uncond): token states and pooled embeddings of the prompts and negative prompts."""
        unknown = sorted({w for p in prompts + negatives for w in self.tokenizer.unknown_words(p)})
        if unknown:
            warnings.warn(f"the demo model does not know the word(s) {', '.join(unknown)}; it understands prompts "
                          "like 'a red circle on a blue background'", stacklevel=2)

        def enc(texts: list[str]) -> dict[str, torch.Tensor]:
            states, pooled = self.text_encoder(self.tokenizer(texts).to(self.device))
            return {"encoder_hidden_states": states, "class_labels": pooled}

        return enc(prompts), enc(negatives)

    def raw_model(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """The UNet's v prediction for VP-scaled input x at timesteps t."""
        return self.unet(x, t, encoder_hidden_states=cond["encoder_hidden_states"],
                         class_labels=cond["class_labels"]).sample

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixel space: [-1, 1] -> [0, 1]."""
        return ((latents.float() + 1.0) / 2.0).clamp(0, 1).cpu()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel space: [0, 1] -> [-1, 1] (the model's own space; img2img starts here)."""
        return (images.to(self.device, self.dtype) * 2.0 - 1.0)

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """(3, height, width): the model works on pixels; sizes must be multiples of 4 (two downsamplings)."""
        if width % 4 or height % 4:
            raise ModelLoadError(f"the demo model needs sizes that are multiples of 4, got {width}x{height}")
        return (3, height, width)
