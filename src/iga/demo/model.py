"""Loading the shipped demo model file: ``load_demo_model(path) -> (unet, text_encoder, tokenizer, config)``.

The networks themselves live in :mod:`iga.demo.net` (pixel space, no VAE: a VAE would need its own training
run and adds decode cost, while 32x32x3 is small enough to denoise directly). This module reads one
``.safetensors`` file with safetensors only (no pickle), checks its header, and rebuilds the parts.
Heavy imports happen inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FAMILY: dict[str, str] = {"pixel": "iga-demo-v1", "latent": "iga-demo-latent-v1", "flow": "iga-demo-flow-v1"}
TRAINING_KEY = "iga.demo.training"  # header metadata every demo trainer writes
MAX_DEMO_FILE_BYTES = 64 * 1024 * 1024  # the demo model is a few MB; anything far larger is not one
REQUIRED_CONFIG_KEYS = ("unet", "text_encoder", "vocab", "training_schedule", "prediction_type")


class DemoModelError(ValueError):
    """The file is not a loadable iga demo model."""


def shipped_model_path() -> Path:
    """Where the bundled demo model lives inside the package."""
    from iga.paths import DEMO_MODEL

    return Path(DEMO_MODEL)


def draws_shapes(source: Any) -> bool:
    """Whether a model (an ``iga.guard.source.ModelSource``) makes the demo's shapes images, so demo prompts and
    the judge apply: the pixel architecture, a file trained by ``iga demo train``, or a demo family recipe."""
    if source.identity.architecture == "demo":
        return True
    if source.recipe is not None and source.recipe.model_id in FAMILY.values():
        return True
    from iga.checkpoint import CheckpointError, read_header

    try:
        return Path(source.path).is_file() and TRAINING_KEY in (read_header(source.path).metadata or {})
    except (CheckpointError, OSError):
        return False


def read_demo_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``__metadata__['iga.demo.config']`` of a demo model file without loading tensors."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"demo model file not found: {p}")
    size = p.stat().st_size
    if size > MAX_DEMO_FILE_BYTES:
        raise DemoModelError(f"{p} is {size} bytes; a demo model is far smaller (limit {MAX_DEMO_FILE_BYTES})")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise DemoModelError(f"{p} is not a readable .safetensors file: {e}") from None
    if meta.get("iga.architecture") != "demo":
        raise DemoModelError(f"{p} is not an iga demo model: __metadata__['iga.architecture'] is "
                             f"{meta.get('iga.architecture')!r}, expected 'demo'")
    try:
        config = json.loads(meta["iga.demo.config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise DemoModelError(f"{p}: missing or invalid __metadata__['iga.demo.config'] ({e})") from None
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise DemoModelError(f"{p}: iga.demo.config lacks {missing}; re-export the model with `iga demo train`")
    return config


def load_demo_model(path: str | os.PathLike[str] | None = None) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Load a demo model file (default: the bundled one) -> (unet, text_encoder, tokenizer, config), in eval mode."""
    from safetensors.torch import load_file

    from iga.demo.net import TextEncoder, WordTokenizer, build_unet

    p = Path(path) if path is not None else shipped_model_path()
    config = read_demo_config(p)
    tensors = load_file(str(p))
    unet = build_unet(config["unet"])
    text_encoder = TextEncoder(**config["text_encoder"])
    for prefix, module in (("demo.unet.", unet), ("demo.text_encoder.", text_encoder)):
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise DemoModelError(f"{p}: weights under {prefix!r} do not match the config "
                                 f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    for module in (unet, text_encoder):
        module.eval().requires_grad_(False)
    tokenizer = WordTokenizer(config["vocab"], config["text_encoder"].get("max_tokens", 8))
    return unet, text_encoder, tokenizer, config


def encode(text_encoder: Any, tokenizer: Any, prompts: list[str]) -> dict[str, Any]:
    """UNet conditioning for prompts: ``encoder_hidden_states`` [B, L, D] and ``class_labels`` (pooled) [B, D]."""
    import torch

    with torch.no_grad():
        states, pooled = text_encoder(tokenizer(prompts))
    return {"encoder_hidden_states": states, "class_labels": pooled}


def count_params(module: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in module.parameters())
