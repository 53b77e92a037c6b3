"""A tiny random-weight SD-style UNet, its conditioning, and the raw-model wrapper iga samples through.

Shared by the diffusers agreement tests (``test_sampling_diffusers.py``) and the sampling benchmark. Every
parameter is perturbed from diffusers' initialisation so that no layer is an exact identity or zero (a
random UNet whose output barely depends on x or t would make every sampler look alike).
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
)

#: The real SD1.5 UNet configuration (~860M parameters); only the weights are random.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)

#: SD's training schedule as diffusers configures it.
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def build_unet(config: dict | None = None, *, seed: int = 0, perturb: float = 0.05,
               dtype: torch.dtype = torch.float32):
    """A ``UNet2DConditionModel`` with deterministic random weights (every tensor perturbed), in eval mode."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**(config or TINY_UNET))
    if perturb:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in unet.parameters():
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * perturb)
    return unet.to(dtype).eval()


def text_states(batch: int = 1, *, dim: int = 32, tokens: int = 77, seed: int = 1,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed random ``encoder_hidden_states`` [batch, tokens, dim] (a stand-in for CLIP output)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, tokens, dim), generator=gen, dtype=torch.float32).to(dtype)


class UNetRaw:
    """iga's ``RawModel`` over a diffusers UNet: ``(x_in, t, cond) -> raw prediction``, counting calls."""

    def __init__(self, unet):
        self.unet = unet
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """One UNet evaluation at (possibly fractional) timesteps ``t``."""
        self.calls += 1
        with torch.no_grad():
            return self.unet(x, t, encoder_hidden_states=cond["encoder_hidden_states"], return_dict=False)[0]
