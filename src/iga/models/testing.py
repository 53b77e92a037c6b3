"""Tiny random-weight SD1 / SD2 (v-prediction) / SDXL models for tests, fully offline.

Every component has the structure of its real family (block types, linear vs conv projections,
OpenCLIP vs CLIP text towers, SDXL's two encoders and size conditioning) at toy width, and uses the real
(vendored) CLIP tokenizer, so the single-file path exercised by tests is the one real files take.
Weights are deterministic in ``seed``; every parameter (biases and norms too) is perturbed from the
library's initialisation so that a key-conversion mistake cannot hide behind a zero or a one.

Typical use::

    tiny = build_tiny("sdxl", seed=0)
    folder = save_folder(tiny, tmp / "tiny-sdxl")
    single = save_single_file(tiny, tmp / "tiny-sdxl.safetensors")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from iga.models.configs import MODEL_CONFIG_KEY, family

TINY_TEXT = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 3,
             "projection_dim": 32}
TINY_TEXT_2 = {"hidden_size": 48, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
               "projection_dim": 40}
TINY_VAE = {"block_out_channels": (32, 32, 64, 64), "layers_per_block": 1, "latent_channels": 4,
            "norm_num_groups": 32, "sample_size": 64}

_UNETS: dict[str, dict[str, Any]] = {
    "sd1": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8, cross_attention_dim=32,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    "sd2": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4), cross_attention_dim=32,
                use_linear_projection=True, upcast_attention=True,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    "sdxl": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
                 cross_attention_dim=32 + 48, use_linear_projection=True, transformer_layers_per_block=(1, 2),
                 addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 40,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
}
_FAMILY = {"sd1": "sd1", "sd2": "sd2-v", "sdxl": "sdxl"}


@dataclass
class TinyModel:
    """The components of one tiny model."""

    architecture: str  # "sd1" | "sd2" | "sdxl"
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


def _perturb(model: Any, gen: Any, scale: float = 0.05) -> None:
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


def build_tiny(architecture: str = "sd1", seed: int = 0) -> TinyModel:
    """Build a tiny random model of ``architecture`` ("sd1", "sd2" = SD2 v-prediction, "sdxl")."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from iga.models.tokenizer import clip_tokenizer

    if architecture not in _UNETS:
        raise ValueError(f"unknown tiny architecture {architecture!r}; use sd1, sd2 or sdxl")
    fam = family(_FAMILY[architecture])
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, **_UNETS[architecture])
    _perturb(unet, gen)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        scaling_factor=fam["vae"]["scaling_factor"], **TINY_VAE)
    _perturb(vae, gen)
    encoders, tokenizers, model_config = [], [], {}
    for i, spec in enumerate(fam["text"]):
        dims = TINY_TEXT if i == 0 else TINY_TEXT_2
        tok = clip_tokenizer(spec["pad"])
        base = spec["config"]
        cfg = CLIPTextConfig(vocab_size=len(tok), max_position_embeddings=77, hidden_act=base["hidden_act"],
                             layer_norm_eps=base["layer_norm_eps"], bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **dims)
        model = (CLIPTextModelWithProjection if spec["pooled"] else CLIPTextModel)(cfg)
        _perturb(model, gen)
        encoders.append(model.eval())
        tokenizers.append(tok)
        name = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
        model_config[name] = {"num_attention_heads": dims["num_attention_heads"]}
    if architecture != "sd1":  # SD1's rule (8 heads per block) matches; the head-size-64 rule cannot
        model_config["unet"] = {"attention_head_dim": list(_UNETS[architecture]["attention_head_dim"])}
    return TinyModel(architecture, unet.eval(), vae.eval(), encoders, tokenizers, dict(fam["scheduler"]),
                     model_config)


def save_folder(tiny: TinyModel, path: str | Path) -> Path:
    """Save as a diffusers folder (safetensors weights, tokenizer files, scheduler config, model_index.json)."""
    import diffusers

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    xl = tiny.architecture == "sdxl"
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", tiny.scheduler_config["_class_name"]],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if xl:
        index["force_zeros_for_empty_prompt"] = False
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    tiny.unet.save_pretrained(root / "unet", safe_serialization=True)
    tiny.vae.save_pretrained(root / "vae", safe_serialization=True)
    for i, (model, tok) in enumerate(zip(tiny.text_encoders, tiny.tokenizers)):
        suffix = "" if i == 0 else f"_{i + 1}"
        model.save_pretrained(root / f"text_encoder{suffix}", safe_serialization=True)
        tok.save_pretrained(root / f"tokenizer{suffix}")
        index[f"text_encoder{suffix}"] = ["transformers", type(model).__name__]
        index[f"tokenizer{suffix}"] = ["transformers", "CLIPTokenizer"]
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(tiny.scheduler_config, indent=2))
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def save_single_file(tiny: TinyModel, path: str | Path, *, metadata: dict[str, str] | None = None,
                     with_model_config: bool = True) -> Path:
    """Save as one LDM-layout ``.safetensors`` checkpoint (plus ``iga.model_config`` for toy head counts)."""
    from iga.models.export import ldm_state_dict, save_safetensors

    meta = dict(metadata or {})
    if with_model_config and tiny.model_config:
        meta[MODEL_CONFIG_KEY] = json.dumps(tiny.model_config, sort_keys=True)
    sd = ldm_state_dict(tiny.architecture, tiny.unet, tiny.vae, tiny.text_encoders)
    return save_safetensors(path, sd, meta or None)


def save_family(root: str | Path, architectures: Iterable[str], seed: int) -> dict[str, tuple[TinyModel, Path, Path]]:
    """{arch: (tiny, folder, single file)} under ``root``; architecture i gets weights seeded ``seed + i``."""
    root = Path(root)
    out = {}
    for i, arch in enumerate(architectures):
        tiny = build_tiny(arch, seed=seed + i)
        out[arch] = (tiny, save_folder(tiny, root / arch), save_single_file(tiny, root / f"{arch}.safetensors"))
    return out


def save_vae(vae: Any, path: str | Path, *, layout: str = "ldm") -> Path:
    """Save a VAE alone as ``.safetensors`` with LDM keys (``layout="ldm"``) or diffusers keys."""
    from iga.models.export import save_safetensors
    from iga.models.ldm import vae_to_ldm

    sd = {k: v.detach() for k, v in vae.state_dict().items()}
    if layout == "ldm":
        sd = vae_to_ldm(sd)
    elif layout != "diffusers":
        raise ValueError("layout must be 'ldm' or 'diffusers'")
    return save_safetensors(path, sd)


def tiny_vae(seed: int = 1, scaling_factor: float = 0.18215) -> Any:
    """A tiny random VAE with the same structure as the tiny models' (for VAE-override tests)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        scaling_factor=scaling_factor, **TINY_VAE)
    _perturb(vae, torch.Generator().manual_seed(seed))
    return vae.eval()
