"""The demo model's networks: a word tokenizer, a tiny text encoder, the pixel-space UNet, and the judge.

Pixel space (32x32x3, no VAE) because a VAE would need its own training run and adds decode cost, while
32x32 images are small enough to denoise directly on a CPU. The UNet is a diffusers ``UNet2DConditionModel``
conditioned two ways: cross-attention on the token states at 8x8, and the pooled prompt embedding added to the
time embedding (``class_embed_type="projection"``), which makes colours converge in a few hundred steps.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch
from torch import nn

from . import data

PAD, UNK = "<pad>", "<unk>"
MAX_TOKENS = 8
TEXT_DIM = 64


def default_vocab() -> list[str]:
    """The word vocabulary of the prompt grammar (pad first: the empty prompt is all pads)."""
    colours = sorted(set(data.FG_COLORS) | set(data.BG_COLORS))
    return [PAD, UNK, "a", "on", "background", *data.SHAPES, *colours]


class WordTokenizer:
    """Lower-cased words -> ids, padded/truncated to MAX_TOKENS; unknown words map to <unk> and are reported."""

    def __init__(self, vocab: list[str], max_tokens: int = MAX_TOKENS):
        self.vocab, self.max_tokens = list(vocab), max_tokens
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def words(self, prompt: str) -> list[str]:
        """The words of a prompt as the tokenizer sees them."""
        return re.findall(r"[a-z]+", prompt.lower())

    def unknown_words(self, prompt: str) -> list[str]:
        """Words the model has never seen (they become <unk>)."""
        return [w for w in self.words(prompt) if w not in self.index]

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [B, max_tokens]."""
        out = torch.zeros(len(prompts), self.max_tokens, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids = [self.index.get(w, self.index[UNK]) for w in self.words(p)][: self.max_tokens]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


class TextEncoder(nn.Module):
    """Token embeddings + learned positions + one transformer layer; returns (states [B,L,D], pooled [B,D])."""

    def __init__(self, vocab_size: int, dim: int = TEXT_DIM, max_tokens: int = MAX_TOKENS, layers: int = 1,
                 heads: int = 4):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "dim": dim, "max_tokens": max_tokens, "layers": layers,
                       "heads": heads}
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # no padding mask: an all-pad (empty, unconditional) prompt would make attention rows empty
        h = self.norm(self.layers(self.tok(ids) + self.pos[: ids.shape[1]]))
        return h, self.pool(h.mean(1))


def unet_config() -> dict[str, Any]:
    """The demo UNet's diffusers config (about 1 M parameters; attention only at 8x8)."""
    return {
        "sample_size": data.SIZE, "in_channels": 3, "out_channels": 3, "block_out_channels": [16, 32, 64],
        "layers_per_block": 1, "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"], "cross_attention_dim": TEXT_DIM,
        "attention_head_dim": 8, "norm_num_groups": 8, "class_embed_type": "projection",
        "projection_class_embeddings_input_dim": TEXT_DIM,
    }


def build_unet(config: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate the UNet from its config."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**(config or unet_config()))


class Judge(nn.Module):
    """A small CNN reading shape, foreground and background colour; ``features`` feed a Frechet distance."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.config = {"width": w}
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({
            "shape": nn.Linear(4 * w, len(data.SHAPES)),
            "fg": nn.Linear(4 * w, len(data.FG_COLORS)),
            "bg": nn.Linear(4 * w, len(data.BG_COLORS)),
        })

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, 4*width] of images in [-1, 1]."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        return {k: head(f) for k, head in self.heads.items()}


def config_json(unet_cfg: dict[str, Any], text_cfg: dict[str, Any], vocab: list[str],
                training_schedule: dict[str, Any], prediction_type: str = "v") -> str:
    """The `iga.demo.config` metadata value: everything needed to rebuild the networks."""
    return json.dumps({"unet": unet_cfg, "text_encoder": text_cfg, "vocab": vocab,
                       "training_schedule": training_schedule, "prediction_type": prediction_type},
                      sort_keys=True)
