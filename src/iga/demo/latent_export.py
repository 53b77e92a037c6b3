"""Writing ``iga-demo-latent-v1`` the two ways SD1 checkpoints ship: a diffusers folder and one LDM-layout file.

Both hold the same weights. The single file states in ``iga.model_config`` what its tensor shapes cannot tell
(head counts, the VAE's group norm and scaling factor); the folder's configs say it themselves. Beside them go
the VAE alone (the id a recipe names) and, from its own stage, the warm VAE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .latent import NAME, TEXT_CONFIG, UNET_CONFIG, VAE_NAME, export_vae_file, vae_overrides

RESOLUTION = "32x32"


def model_config(vae: Any) -> dict[str, dict[str, Any]]:
    """The ``iga.model_config`` of the single file."""
    return {"text_encoder": {"num_attention_heads": TEXT_CONFIG["num_attention_heads"],
                             "hidden_act": TEXT_CONFIG["hidden_act"]},
            "unet": {"norm_num_groups": UNET_CONFIG["norm_num_groups"], "sample_size": UNET_CONFIG["sample_size"]},
            "vae": vae_overrides(vae)}


def save_latent_model(unet: Any, vae: Any, text_encoder: Any, single: Path, training: dict[str, Any],
                      vae_training: dict[str, Any]) -> Path:
    """Write the single LDM file ``single``, and beside it the diffusers folder ``NAME/`` and the VAE alone
    (``VAE_NAME.safetensors``); returns ``single``."""
    from iga.models.configs import MODEL_CONFIG_KEY, family
    from iga.models.export import PipelineParts, save_sd_folder, save_single_file
    from iga.models.tokenizer import clip_tokenizer

    scheduler = dict(family("sd1")["scheduler"])
    parts = PipelineParts("sd1", unet.eval(), vae.eval(), [text_encoder.eval()], [clip_tokenizer("eos")], scheduler,
                          model_config(vae))
    out = single.parent
    out.mkdir(parents=True, exist_ok=True)
    save_sd_folder(parts, out / NAME)
    meta = {
        MODEL_CONFIG_KEY: json.dumps(parts.model_config, sort_keys=True), "iga.id": NAME,
        "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": "iga demo latent v1 (miniature SD1, shapes)", "modelspec.prediction_type": "epsilon",
        "modelspec.resolution": RESOLUTION, "iga.demo.training": json.dumps(training),
    }
    save_single_file(parts, single, metadata=meta)
    export_vae_file(vae, out / f"{VAE_NAME}.safetensors", vae_training, title="iga demo latent VAE")
    return single
