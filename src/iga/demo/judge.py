"""The judge: reads shape, foreground and background colour from 32x32 images; Frechet distance on its features."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from . import data
from .net import Judge


def load_judge(path: str | os.PathLike[str] | None = None) -> Judge:
    """Load the shipped judge (safetensors, no pickle)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from iga.paths import DEMO_JUDGE

    p = str(path or DEMO_JUDGE)
    with safe_open(p, "pt") as f:
        meta = f.metadata() or {}
    judge = Judge(**json.loads(meta.get("iga.judge.config", "{}")))
    judge.load_state_dict(load_file(p))
    return judge.eval().requires_grad_(False)


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 (or one H x W x 3) -> float [-1, 1] N x 3 x H x W."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.shape[1:3] != (data.SIZE, data.SIZE):
        from PIL import Image

        arr = np.stack([np.asarray(Image.fromarray(a).resize((data.SIZE, data.SIZE), Image.BILINEAR)) for a in arr])
    return torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class Reading:
    """What the judge reads from one image, with its confidence per attribute."""

    shape: str
    fg: str
    bg: str
    confidence: dict[str, float]


@torch.no_grad()
def read(judge: Judge, images: np.ndarray) -> list[Reading]:
    """The judge's reading of uint8 images."""
    out = judge(to_model_range(images))
    names = {"shape": list(data.SHAPES), "fg": list(data.FG_COLORS), "bg": list(data.BG_COLORS)}
    probs = {k: v.softmax(1) for k, v in out.items()}
    res = []
    for i in range(probs["shape"].shape[0]):
        idx = {k: int(p[i].argmax()) for k, p in probs.items()}
        res.append(Reading(names["shape"][idx["shape"]], names["fg"][idx["fg"]], names["bg"][idx["bg"]],
                           {k: float(probs[k][i, idx[k]]) for k in probs}))
    return res


@torch.no_grad()
def features(judge: Judge, images: np.ndarray) -> np.ndarray:
    """Judge features [N, D] (float64) of uint8 images."""
    return judge.features(to_model_range(images)).double().numpy()
