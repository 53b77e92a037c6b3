"""SD3 and Flux from single files, as people share them: an SD3 all-in-one checkpoint, or a Flux transformer in
the original layout with its text encoders and VAE beside it (``iga.models.flow_files`` converts the keys with
iga's own converters; this module turns the modules into a backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any



def _training(family: str) -> dict[str, Any]:
    """What a file that states no schedule was trained with: the released family's (``guard.defaults``), in
    recipe terms; plans carry the shift that runs."""
    from iga.guard.defaults import FLOW_SCHEDULES

    return dict(FLOW_SCHEDULES[family])


def load_flow_single_file(path: Path, architecture: str, *, device: Any, dtype: Any, vae: Path | None = None) -> Any:
    """An SD3Backend (all-in-one file) or FluxBackend (transformer file + companions; ``vae`` overrides the
    companion VAE), on ``device`` in ``dtype``; ModelLoadError with the reason when the files do not fit."""
    from iga.models.base import ModelLoadError
    from iga.models.flow_files import FlowFilesError, load_flux_files, load_sd3_single_file

    try:
        if architecture == "sd3":
            if vae is not None:
                raise ModelLoadError("a separate VAE for an SD3 single file is not supported yet: its own VAE runs")
            return _sd3_backend(path, load_sd3_single_file(path, device=device, dtype=dtype), device, dtype)
        mods = load_flux_files(path, vae=vae, device=device, dtype=dtype)
    except FlowFilesError as exc:
        raise ModelLoadError(str(exc)) from exc
    return _flux_backend(path, mods, device, dtype)


def _identity(path: Path, architecture: str, **extra: Any) -> dict[str, Any]:
    return {"name": path.stem, "path": str(path), "format": "single_file", "architecture": architecture,
            "family": architecture, "prediction_type": "flow", "prediction_type_source": "architecture (rectified "
            "flow)", "config_source": "inferred from tensor shapes", "tokenizer": "vendored (CLIP BPE, T5)", **extra}


def _sd3_backend(path: Path, mods: dict[str, Any], device: Any, dtype: Any) -> Any:
    from iga.models.flow_backends import SD3Backend
    from iga.models.t5_tokenizer import load_t5_tokenizer
    from iga.models.tokenizer import clip_tokenizer

    t5 = mods.get("text_encoder_3")
    backend = SD3Backend(transformer=mods["transformer"], clip_l=mods["text_encoder"], clip_g=mods["text_encoder_2"],
                         t5=t5, tokenizer_l=clip_tokenizer("eos"), tokenizer_g=clip_tokenizer("!"),
                         tokenizer_t5=load_t5_tokenizer() if t5 is not None else None, vae=mods["vae"],
                         device=device, dtype=dtype, vae_dtype=dtype, training_schedule=_training("sd3"))
    backend.identity = _identity(path, "sd3", components=sorted(mods))
    return backend


def _flux_backend(path: Path, mods: dict[str, Any], device: Any, dtype: Any) -> Any:
    from iga.models.flow_backends import FluxBackend
    from iga.models.t5_tokenizer import load_t5_tokenizer
    from iga.models.tokenizer import clip_tokenizer

    dev_like = bool(mods["transformer"].config.guidance_embeds)
    training = _training("flux-dev" if dev_like else "flux-schnell")
    backend = FluxBackend(transformer=mods["transformer"], clip=mods["text_encoder"], t5=mods["text_encoder_2"],
                          tokenizer_clip=clip_tokenizer("eos"), tokenizer_t5=load_t5_tokenizer(), vae=mods["vae"],
                          device=device, dtype=dtype, vae_dtype=dtype, training_schedule=training)
    backend.identity = _identity(path, "flux", components=sorted(mods), guidance_embeds=dev_like)
    return backend
