"""Failure detectors: each a named test with a documented threshold, counted per type in every report.

Two failures are not read from pixels but from how sampling ended: ``non_finite`` (the engine's NaN watch
stopped the run) and ``exception`` (anything else raised while sampling). The rest look at the finished image,
some against the reference image of the same prompt and seed. An image may trip several; its ``failure`` is the
first in FAILURES order (the most fundamental), ``failures`` lists all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .metrics import lightness


@dataclass(frozen=True)
class Detector:
    """One failure type: its name, the rule in words (with its threshold) and the test."""

    name: str
    rule: str
    test: Callable[[np.ndarray, dict[str, float], dict[str, float] | None], bool]


BLACK_L99 = 5.0  # CIELAB L*: the 99th percentile of lightness below this is a black frame
CONSTANT_STD = 2.0  # 0..255: every channel's standard deviation below this is a flat, constant image
BURNT_CLIPPED = 0.5  # more than half the pixels with a channel at 0 or 255 ...
BURNT_MARGIN = 0.25  # ... and (with a reference) 0.25 more of them than the reference has
NOISE_RATIO = 3.0  # high-frequency energy share above 3x the reference's ...
NOISE_FLOOR = 0.02  # ... (whose share is floored at 0.02, so clean flat references do not flag every image)
NOISE_ALONE = 0.3  # without a reference: a share above 0.3 (white noise is ~0.8, clean renders < 0.1)
JUDGE_CONFIDENCE = 0.5  # demo: the judge's lowest attribute probability below this


def _black(px, m, ref) -> bool:
    return float(np.percentile(lightness(px), 99)) < BLACK_L99


def _constant(px, m, ref) -> bool:
    return bool((px.reshape(-1, 3).astype(np.float64).std(axis=0) < CONSTANT_STD).all())


def _burnt(px, m, ref) -> bool:
    if m["clipped"] <= BURNT_CLIPPED:
        return False
    return ref is None or m["clipped"] > ref["clipped"] + BURNT_MARGIN


def _residual_noise(px, m, ref) -> bool:
    if ref is None:
        return m["hf_energy"] > NOISE_ALONE
    return m["hf_energy"] > NOISE_RATIO * max(ref["hf_energy"], NOISE_FLOOR)


def _judge_unreadable(px, m, ref) -> bool:
    conf = m.get("judge_confidence")
    return conf is not None and conf == conf and conf < JUDGE_CONFIDENCE


DETECTORS: tuple[Detector, ...] = (
    Detector("black", f"99th percentile of CIELAB L* below {BLACK_L99}", _black),
    Detector("constant", f"standard deviation of every RGB channel below {CONSTANT_STD}/255", _constant),
    Detector("burnt", f"more than {BURNT_CLIPPED:.0%} of pixels clipped (a channel at 0 or 255) and, with a "
             f"reference, {BURNT_MARGIN:.0%} more than the reference", _burnt),
    Detector("residual_noise", f"high-frequency energy share above {NOISE_RATIO}x the reference's (floored at "
             f"{NOISE_FLOOR}); without a reference above {NOISE_ALONE}", _residual_noise),
    Detector("judge_unreadable", f"demo model: the judge's lowest attribute confidence below {JUDGE_CONFIDENCE}",
             _judge_unreadable),
)
# Failures that come from how sampling ended, not from pixels; they come first.
RUN_FAILURES = {"non_finite": "the engine's NaN/Inf watch stopped sampling",
                "exception": "sampling raised an error (the row's `error` column has it)"}
FAILURES: tuple[str, ...] = (*RUN_FAILURES, *(d.name for d in DETECTORS))


def detect(px: np.ndarray, metrics: dict[str, float], reference: dict[str, float] | None = None) -> list[str]:
    """Names of every pixel-level failure an image shows (in FAILURES order).

    ``metrics`` are the image's per-image metrics (``metrics.image_metrics`` plus ``judge_confidence`` on the
    demo model); ``reference`` are the same metrics of its reference image, or None.
    """
    return [d.name for d in DETECTORS if d.test(px, metrics, reference)]


def describe() -> dict[str, str]:
    """Every failure type and its rule, for reports."""
    return {**RUN_FAILURES, **{d.name: d.rule for d in DETECTORS}}
