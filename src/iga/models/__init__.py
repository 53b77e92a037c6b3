"""iga.models: model backends (Stable Diffusion 1.x, 2.x, XL) loaded offline from folders or single files.

Public API::

    from iga.models import load_backend
    backend = load_backend("model.safetensors", vae=None, device="cpu", dtype="float32")
    cond, uncond = backend.encode_prompt(["a cat"], [""], clip_skip=1, width=512, height=512)
    eps = backend.raw_model(x_scaled, t, cond)
    images = backend.decode(latents)

Importing this package does not import torch; loading a model does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Backend", "FluxBackend", "ModelLoadError", "SD3Backend", "StableDiffusionBackend", "clear_cache",
           "load_backend"]


def __getattr__(name: str) -> Any:
    if name in ("Backend", "ModelLoadError"):
        from iga.models import base

        return getattr(base, name)
    if name in ("load_backend", "clear_cache"):
        from iga.models import loader

        return getattr(loader, name)
    if name == "StableDiffusionBackend":
        from iga.models.stable_diffusion import StableDiffusionBackend

        return StableDiffusionBackend
    if name in ("SD3Backend", "FluxBackend"):
        from iga.models import flow_backends

        return getattr(flow_backends, name)
    raise AttributeError(f"module 'iga.models' has no attribute {name!r}")
