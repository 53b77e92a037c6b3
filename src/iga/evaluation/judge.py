"""Demo-model measures from its judge: prompt adherence per image and the Frechet distance on judge features.

The judge (``iga.demo.judge``) reads shape, foreground and background colour from an image; adherence is
whether it reads back what the prompt asked for. Prompts outside the demo grammar have no adherence (NaN).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ADHERENCE = ("shape", "fg", "bg")


def adherence(judge: Any, pixels: np.ndarray, prompt: str) -> dict[str, float]:
    """judge_confidence (the lowest attribute probability) and adherence_{shape,fg,bg,all} as 1.0/0.0."""
    from iga.demo import data
    from iga.demo.judge import read

    [reading] = read(judge, pixels)
    out = {"judge_confidence": min(reading.confidence.values())}
    try:
        want = data.parse_prompt(prompt)
    except ValueError:
        return {**out, **{f"adherence_{k}": math.nan for k in (*ADHERENCE, "all")}}
    ok = {k: getattr(reading, k) == getattr(want, k) for k in ADHERENCE}
    return {**out, **{f"adherence_{k}": float(v) for k, v in ok.items()}, "adherence_all": float(all(ok.values()))}


def judge_frechet(judge: Any, images: np.ndarray, prompts: list[str], seed: int = 0) -> float | None:
    """Frechet distance between judge features of generated images and of real renders of the same prompts.

    None when fewer than two images, or when a prompt is outside the demo grammar (no real images exist).
    """
    from iga.demo import data
    from iga.demo.judge import features

    from .frechet import feature_stats, frechet_distance

    if len(images) < 2:
        return None
    try:
        wanted = [data.parse_prompt(p) for p in prompts]
    except ValueError:
        return None
    real = data.to_uint8(data.render(wanted, np.random.default_rng(seed)))
    return frechet_distance(*feature_stats(features(judge, images)), *feature_stats(features(judge, real)))
