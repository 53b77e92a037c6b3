"""``iga-demo-latent-v1``: a miniature Stable Diffusion 1.x model, trained here on the shapes data.

It has SD1's three parts at toy width -- an ``AutoencoderKL`` (4x downsampling: 32x32 images, 8x8x4 latents),
a ``CLIPTextModel`` over the vendored CLIP BPE vocabulary, and a ``UNet2DConditionModel`` predicting eps on
SD's ``scaled_linear`` schedule -- so it loads through iga's ordinary SD1 loader (single LDM file and diffusers
folder) and through diffusers' ``StableDiffusionPipeline.from_pretrained``; nothing here is needed to run it.

Training runs in two stages, each a :class:`iga.demo.trainer.Task`: the VAE first (:class:`VaeTask`), then the
UNet and text encoder together on the frozen VAE's latents (:class:`LatentDiffusionTask`).
:class:`ShiftedDecoderTask` fine-tunes a copy of the decoder on colour-shifted targets: the second, *wrong*
VAE whose colour drift the README measures.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import data
from .model import FAMILY
from .trainer import dropped_prompts, step_generator, vp_noised

NAME = FAMILY["latent"]
VAE_NAME = "iga-demo-latent-vae-v1"
SHIFTED_VAE_NAME = "iga-demo-latent-vae-warm-v1"
VAE_FACTOR = 4
VAE_CONFIG: dict[str, Any] = {
    "block_out_channels": [16, 32, 32], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8,
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "sample_size": data.SIZE,
}
TEXT_CONFIG: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                               "num_hidden_layers": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}
UNET_CONFIG: dict[str, Any] = {
    "sample_size": data.SIZE // VAE_FACTOR, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64],
    "layers_per_block": 1, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
    "attention_head_dim": 8, "norm_num_groups": 16,
}
KL_WEIGHT = 1e-5
# The wrong VAE's colours: hue turned by HUE_TURN_DEGREES in YIQ, chroma scaled by CHROMA_SCALE (a warm, duller
# cast of the kind a mismatched VAE gives).
HUE_TURN_DEGREES = 35.0
CHROMA_SCALE = 0.8


def build_vae(scaling_factor: float = 1.0) -> nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG, scaling_factor=scaling_factor)


def load_vae(folder: Path) -> nn.Module:
    """A VAE stage's exported diffusers folder, frozen."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(folder), local_files_only=True).eval().requires_grad_(False)


def build_text_encoder() -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    from iga.models.tokenizer import clip_tokenizer

    tok = clip_tokenizer("eos")
    return CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **TEXT_CONFIG))


def build_unet() -> nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


@functools.cache
def _warm_matrix() -> torch.Tensor:
    """RGB -> RGB: to YIQ, turn the chroma plane by HUE_TURN_DEGREES and scale it by CHROMA_SCALE, back to RGB."""
    rgb_to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    a = np.radians(HUE_TURN_DEGREES)
    turn = torch.tensor([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]],
                        dtype=torch.float32) * torch.tensor([1.0, CHROMA_SCALE, CHROMA_SCALE]).view(3, 1)
    return torch.linalg.inv(rgb_to_yiq) @ turn @ rgb_to_yiq


def warm_colours(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] with their hue turned and chroma scaled in YIQ space (the wrong VAE's target)."""
    out = torch.einsum("ij,bjhw->bihw", _warm_matrix(), (images + 1) / 2).clamp(0, 1)
    return out * 2 - 1


def _reconstruction_loss(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (rec - target).abs().mean() + (rec - target).pow(2).mean()


class VaeTask:
    """Stage 1: the autoencoder (L1 + L2 reconstruction, a light KL term), on training-split images."""

    name = "latent-vae"

    def build(self) -> nn.Module:
        return build_vae()

    def loss(self, model: nn.Module, cfg: Any, step: int) -> torch.Tensor:
        x = torch.from_numpy(data.batch_for_step(cfg.seed, step, cfg.batch).images)
        g = step_generator(cfg, step)
        post = model.encode(x).latent_dist
        rec = model.decode(post.sample(generator=g)).sample
        return _reconstruction_loss(rec, x) + KL_WEIGHT * post.kl().mean() / x[0].numel()

    def export(self, ema: nn.Module, path: Path, training: dict[str, Any]) -> Path:
        """A diffusers VAE folder whose ``scaling_factor`` gives unit-variance latents (SD's convention)."""
        ema.register_to_config(scaling_factor=latent_scaling_factor(ema))
        ema.save_pretrained(str(path), safe_serialization=True)
        (Path(path) / "training.json").write_text(json.dumps({**training, **reconstruction_psnr(ema)}, indent=1))
        return Path(path)


@torch.no_grad()
def latent_scaling_factor(vae: nn.Module, n: int = 1024, seed: int = 777) -> float:
    """1 / std of the posterior means of ``n`` fresh images, rounded to 5 digits."""
    x = torch.from_numpy(data.sample_batch(n, np.random.default_rng(seed), split="all").images)
    z = vae.encode(x).latent_dist.mean
    return round(float(1.0 / z.std()), 5)


@torch.no_grad()
def reconstruction_psnr(vae: nn.Module, n: int = 512, seed: int = 4242, target: Any = None) -> dict[str, float]:
    """PSNR (dB, images in [0, 1]) of decode(encode mean) on fresh training and held-out images."""
    out = {}
    for split in ("train", "held_out"):
        x = torch.from_numpy(data.sample_batch(n, np.random.default_rng(seed), split=split).images)
        want = target(x) if target else x
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        mse = float(((rec - want) / 2).pow(2).mean())
        out[f"psnr_{split}"] = round(10 * np.log10(1.0 / max(mse, 1e-12)), 2)
    return out


class ShiftedDecoderTask:
    """The wrong VAE: the stage-1 VAE with its decoder fine-tuned to paint :func:`warm_colours`."""

    name = "latent-vae-warm"

    def __init__(self, vae_folder: Path):
        self.vae_folder = Path(vae_folder)

    def build(self) -> nn.Module:
        vae = load_vae(self.vae_folder)
        for part in (vae.decoder, vae.post_quant_conv):
            part.requires_grad_(True)
        return vae.train()

    def loss(self, model: nn.Module, cfg: Any, step: int) -> torch.Tensor:
        x = torch.from_numpy(data.batch_for_step(cfg.seed, step, cfg.batch).images)
        with torch.no_grad():
            z = model.encode(x).latent_dist.mean
        return _reconstruction_loss(model.decode(z).sample, warm_colours(x))

    def export(self, ema: nn.Module, path: Path, training: dict[str, Any]) -> Path:
        meta = {"psnr_to_warm": reconstruction_psnr(ema, target=warm_colours)}
        return export_vae_file(ema, path, {**training, **meta}, title="iga demo latent VAE, warm decoder")


class LatentDiffusion(nn.Module):
    """UNet + CLIP text encoder trained together on a frozen VAE's latents (the VAE is not a parameter)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        from iga.models.tokenizer import clip_tokenizer

        self.unet = build_unet()
        self.text_encoder = build_text_encoder()
        self.tokenizer = clip_tokenizer("eos")
        self.frozen = {"vae": vae}  # a plain dict keeps it out of state_dict, parameters and the EMA
        self._ids: dict[str, torch.Tensor] = {}

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """Padded to 77 with the end token, as SD1 pipelines do (cached per prompt)."""
        for p in set(prompts) - set(self._ids):
            self._ids[p] = self.tokenizer(p, padding="max_length", max_length=self.tokenizer.model_max_length,
                                          truncation=True, return_tensors="pt").input_ids[0]
        return torch.stack([self._ids[p] for p in prompts])

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        vae = self.frozen["vae"]
        return vae.encode(images).latent_dist.mean * vae.config.scaling_factor


class LatentDiffusionTask:
    """Stage 2: eps-prediction on SD's scaled_linear schedule, CFG dropout, on training-split prompts."""

    name = "latent"

    def __init__(self, vae_folder: Path):
        from iga.guard.defaults import default_training_schedule
        from iga.sampling.parameterization import schedule_from_config

        self.vae_folder = Path(vae_folder)
        self.vae = load_vae(self.vae_folder)
        self.ab = schedule_from_config(default_training_schedule()).alphas_cumprod

    def build(self) -> nn.Module:
        return LatentDiffusion(self.vae)

    def loss(self, model: nn.Module, cfg: Any, step: int) -> torch.Tensor:
        b = data.batch_for_step(cfg.seed, step, cfg.batch)
        g = step_generator(cfg, step)
        prompts = dropped_prompts(b.prompts, g)
        t = torch.randint(0, self.ab.shape[0], (cfg.batch,), generator=g)
        z0 = model.latents(torch.from_numpy(b.images))
        eps = torch.randn(z0.shape, generator=g)
        states = model.text_encoder(model.token_ids(prompts))[0]
        pred = model.unet(vp_noised(self.ab, t, z0, eps), t, encoder_hidden_states=states).sample
        return torch.nn.functional.mse_loss(pred, eps)

    def export(self, ema: nn.Module, path: Path, training: dict[str, Any]) -> Path:
        """``path`` is the single file; the diffusers folder and the VAE file go beside it."""
        from iga.demo.latent_export import save_latent_model

        vae_training = json.loads((self.vae_folder / "training.json").read_text())
        return save_latent_model(ema.unet, self.vae, ema.text_encoder, Path(path), training, vae_training)


def export_vae_file(vae: nn.Module, path: Path, training: dict[str, Any], *, title: str) -> Path:
    """A standalone VAE file (LDM keys, as SD VAEs ship); its id is the file name (``iga.id``) and its
    ``iga.model_config`` carries the toy config."""
    from iga.models.configs import MODEL_CONFIG_KEY
    from iga.models.export import save_safetensors
    from iga.models.ldm import vae_to_ldm

    sd = vae_to_ldm({k: v.detach().contiguous() for k, v in vae.state_dict().items()})
    meta = {MODEL_CONFIG_KEY: json.dumps({"vae": vae_overrides(vae)}, sort_keys=True), "iga.id": Path(path).stem,
            "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v1/vae",
            "modelspec.title": title, "iga.demo.training": json.dumps(training)}
    return save_safetensors(path, sd, meta)


def vae_overrides(vae: nn.Module) -> dict[str, Any]:
    """What a single file must state about the VAE beyond its tensor shapes."""
    return {"norm_num_groups": int(vae.config.norm_num_groups), "scaling_factor": float(vae.config.scaling_factor),
            "sample_size": int(vae.config.sample_size)}


# The shipped run's settings per stage (``iga demo train --model latent`` uses these unless told otherwise).
STAGE_SETTINGS: dict[str, dict[str, Any]] = {
    "vae": {"batch": 32, "max_steps": 3000, "lr": 2e-3, "warmup": 100, "ema_decay": 0.995},
    "vae-warm": {"batch": 32, "max_steps": 600, "lr": 1e-3, "warmup": 50, "ema_decay": 0.99},
    "diffusion": {"batch": 64, "max_steps": 5000, "lr": 1e-3, "warmup": 200, "ema_decay": 0.999},
}
