"""Procedural shapes dataset for the bundled demo model: 32x32 RGB, deterministic from a seed.

Every image is one anti-aliased shape in a foreground colour on a flat background colour, described by the
prompt ``"a {fg} {shape} on a {bg} background"``. A fixed, deterministic tenth of the (shape, fg, bg) triples
is held out from training so evaluation can test generalisation to unseen combinations.

Only numpy is needed here; the module is cheap to import.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")
FG_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
    "magenta": (215, 40, 215),
}
BG_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
    "blue": (30, 50, 140),
    "white": (240, 240, 240),
}
# A foreground never shares its name with the background (a "white square on a white background" is invisible).
SIZE = 32
SUPERSAMPLE = 4
PROMPT_TEMPLATE = "a {fg} {shape} on a {bg} background"
HELD_OUT_FRACTION = 0.1
_HELD_OUT_SEED = 20240601  # fixed forever: changing it changes which prompts the shipped model never saw


@dataclass(frozen=True)
class Attributes:
    """The three labels of one image."""

    shape: str
    fg: str
    bg: str

    @property
    def prompt(self) -> str:
        """The grammar prompt describing these attributes."""
        return PROMPT_TEMPLATE.format(fg=self.fg, shape=self.shape, bg=self.bg)


def all_triples() -> list[Attributes]:
    """Every valid (shape, fg, bg) combination, in a fixed order."""
    return [
        Attributes(s, f, b)
        for s, f, b in itertools.product(SHAPES, FG_COLORS, BG_COLORS)
        if f != b
    ]


def _held_out_indices() -> list[int]:
    """Pick ~10% of the triples so every shape, fg and bg value appears at least once among them."""
    triples = all_triples()
    target = max(1, round(HELD_OUT_FRACTION * len(triples)))
    rng = np.random.default_rng(_HELD_OUT_SEED)
    for _ in range(10_000):
        pick = sorted(rng.choice(len(triples), size=target, replace=False).tolist())
        chosen = [triples[i] for i in pick]
        covers = (
            {t.shape for t in chosen} == set(SHAPES)
            and {t.fg for t in chosen} == set(FG_COLORS)
            and {t.bg for t in chosen} == set(BG_COLORS)
        )
        # Every held-out triple's parts must still be seen in training in other combinations.
        if covers:
            return pick
    raise RuntimeError("could not choose a covering held-out set; raise HELD_OUT_FRACTION")


_HELD_OUT = frozenset(_held_out_indices())


def held_out_triples() -> list[Attributes]:
    """The triples never shown in training (about 10%, covering every shape and colour)."""
    triples = all_triples()
    return [triples[i] for i in sorted(_HELD_OUT)]


def train_triples() -> list[Attributes]:
    """The triples used in training."""
    return [t for i, t in enumerate(all_triples()) if i not in _HELD_OUT]


def _regular_polygon_inside(dx: np.ndarray, dy: np.ndarray, r: np.ndarray, n: int, rot: float) -> np.ndarray:
    """Inside test of a regular n-gon of circumradius r whose vertex points at angle ``rot``."""
    apothem = r * math.cos(math.pi / n)
    inside = np.ones(np.broadcast_shapes(dx.shape, dy.shape), dtype=bool)
    for k in range(n):
        theta = rot + math.pi / n + 2 * math.pi * k / n  # edge normals sit between vertices
        inside &= dx * math.cos(theta) + dy * math.sin(theta) <= apothem
    return inside


def _star_inside(dx: np.ndarray, dy: np.ndarray, r: np.ndarray, inner: float = 0.45) -> np.ndarray:
    """Inside test of an upright five-pointed star of outer radius r (inner radius ``inner * r``)."""
    alpha = math.pi / 5  # angle between an outer and the next inner vertex
    phi = np.arctan2(dy, dx) + math.pi / 2  # 0 at the top vertex (image y points down)
    t = np.mod(phi, 2 * alpha)
    t = np.where(t > alpha, 2 * alpha - t, t)
    rho = np.hypot(dx, dy)
    px, py = rho * np.cos(t), rho * np.sin(t)
    # Edge from the outer vertex (r, 0) to the inner vertex (ri cos a, ri sin a); inside is the origin's side.
    ax, ay = r, np.zeros_like(r)
    bx, by = inner * r * math.cos(alpha), inner * r * math.sin(alpha)
    cross_p = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    cross_o = (bx - ax) * (0 - ay) - (by - ay) * (0 - ax)
    return np.sign(cross_p) == np.sign(cross_o)


def _coverage(shape_idx: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage [N, SIZE, SIZE] in [0, 1]: supersample the inside tests, then box-filter."""
    n = shape_idx.shape[0]
    s = SIZE * SUPERSAMPLE
    coords = (np.arange(s, dtype=np.float32) + 0.5) / SUPERSAMPLE  # pixel units, sub-pixel centres
    cov = np.zeros((n, s, s), dtype=bool)
    for k, name in enumerate(SHAPES):
        sel = np.nonzero(shape_idx == k)[0]
        if sel.size == 0:
            continue
        dx = coords[None, None, :] - cx[sel, None, None]
        dy = coords[None, :, None] - cy[sel, None, None]
        rr = r[sel, None, None]
        if name == "circle":
            m = dx * dx + dy * dy <= rr * rr
        elif name == "ring":
            d2 = dx * dx + dy * dy
            m = (d2 <= rr * rr) & (d2 >= (0.55 * rr) ** 2)
        elif name == "square":
            m = np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * rr
        elif name == "triangle":
            m = _regular_polygon_inside(dx, dy + 0.2 * rr, 1.15 * rr, 3, -math.pi / 2)
        else:  # star
            m = _star_inside(dx, dy + 0.08 * rr, 1.1 * rr)
        cov[sel] = m
    return cov.reshape(n, SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(2, 4), dtype=np.float32)


@dataclass(frozen=True)
class Batch:
    """A batch of images and their labels."""

    images: np.ndarray  # float32 [N, 3, SIZE, SIZE] in [-1, 1]
    shape: np.ndarray  # int64 [N] index into SHAPES
    fg: np.ndarray  # int64 [N] index into FG_COLORS
    bg: np.ndarray  # int64 [N] index into BG_COLORS

    @property
    def prompts(self) -> list[str]:
        """The prompt of every image."""
        fgs, bgs = list(FG_COLORS), list(BG_COLORS)
        return [
            PROMPT_TEMPLATE.format(fg=fgs[f], shape=SHAPES[s], bg=bgs[b])
            for s, f, b in zip(self.shape.tolist(), self.fg.tolist(), self.bg.tolist())
        ]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def render(
    triples: list[Attributes], rng: np.random.Generator, vary: bool = True
) -> np.ndarray:
    """Draw one image per triple (float32 [N, 3, 32, 32] in [-1, 1]); position and size vary if ``vary``."""
    n = len(triples)
    shape_idx = np.array([SHAPES.index(t.shape) for t in triples], dtype=np.int64)
    fg = np.array([FG_COLORS[t.fg] for t in triples], dtype=np.float32) / 127.5 - 1.0
    bg = np.array([BG_COLORS[t.bg] for t in triples], dtype=np.float32) / 127.5 - 1.0
    if vary:
        r = rng.uniform(7.0, 11.0, size=n).astype(np.float32)
        margin = r + 1.5
        cx = (SIZE / 2 + rng.uniform(-1, 1, size=n) * np.maximum(SIZE / 2 - margin, 0)).astype(np.float32)
        cy = (SIZE / 2 + rng.uniform(-1, 1, size=n) * np.maximum(SIZE / 2 - margin, 0)).astype(np.float32)
    else:
        r = np.full(n, 9.5, dtype=np.float32)
        cx = cy = np.full(n, SIZE / 2, dtype=np.float32)
    a = _coverage(shape_idx, cx, cy, r)[:, None]  # [N, 1, H, W]
    return bg[:, :, None, None] * (1.0 - a) + fg[:, :, None, None] * a


def sample_batch(
    n: int, rng: np.random.Generator, split: str = "train", vary: bool = True
) -> Batch:
    """Draw ``n`` random images from the ``train``, ``held_out`` or ``all`` prompt split."""
    pool = {"train": train_triples, "held_out": held_out_triples, "all": all_triples}.get(split)
    if pool is None:
        raise ValueError(f"unknown split {split!r}; use 'train', 'held_out' or 'all'")
    triples_pool = pool()
    picks = [triples_pool[i] for i in rng.integers(0, len(triples_pool), size=n)]
    images = render(picks, rng, vary=vary)
    fgs, bgs = list(FG_COLORS), list(BG_COLORS)
    return Batch(
        images=images,
        shape=np.array([SHAPES.index(t.shape) for t in picks], dtype=np.int64),
        fg=np.array([fgs.index(t.fg) for t in picks], dtype=np.int64),
        bg=np.array([bgs.index(t.bg) for t in picks], dtype=np.int64),
    )


def batch_for_step(seed: int, step: int, n: int, split: str = "train") -> Batch:
    """The batch used at training step ``step``: a pure function of (seed, step), so resume is exact."""
    return sample_batch(n, np.random.default_rng([seed, step]), split=split)


def iterate(seed: int, batch_size: int, split: str = "train", start_step: int = 0) -> Iterator[Batch]:
    """Infinite seeded stream of batches (the same stream for the same seed; ``start_step`` skips ahead)."""
    step = start_step
    while True:
        yield batch_for_step(seed, step, batch_size, split)
        step += 1


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Convert [-1, 1] float NCHW images to uint8 NHWC."""
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def parse_prompt(prompt: str) -> Attributes:
    """Read (shape, fg, bg) back from a grammar prompt; anything else is a ValueError."""
    w = prompt.lower().split()
    if len(w) != 7 or w[0] != "a" or w[3:5] != ["on", "a"] or w[6] != "background":
        raise ValueError(f"{prompt!r} does not follow the demo grammar {PROMPT_TEMPLATE!r}")
    t = Attributes(shape=w[2], fg=w[1], bg=w[5])
    if t.shape not in SHAPES or t.fg not in FG_COLORS or t.bg not in BG_COLORS:
        raise ValueError(f"{prompt!r} names an unknown shape or colour (shapes {SHAPES}, "
                         f"foregrounds {tuple(FG_COLORS)}, backgrounds {tuple(BG_COLORS)})")
    return t
