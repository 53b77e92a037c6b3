"""Seeded noise: initial latents, per-step noise for ancestral samplers, and a Brownian tree for SDE samplers.

Everything is drawn on the CPU, per image, from that image's own seed, so image k of a batch is
bit-identical to seed k generated alone, on any device:

* **Initial noise**: ``torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`` per image,
  concatenated. This equals diffusers with a list of CPU generators, A1111 with "RNG: CPU" and (for batch
  size 1) ComfyUI, which always draws the initial latent on the CPU.
* **Per-step noise** (:class:`SeededNoiseSampler`): a second CPU generator per image seeded with
  ``seed + 1`` (mod 2**64) -- ComfyUI's CPU rule -- drawing one float32 ``randn`` of the image shape per call,
  then moved to x's device/dtype. Bit-identical to ComfyUI's ancestral noise for batch size 1 (ComfyUI
  draws a batch from one generator, so its images 2.. differ).
* **Brownian tree** (:class:`BrownianTreeNoiseSampler`): a virtual Brownian path per image over
  ``[sigma_lo, sigma_hi]``, built by seeded midpoint bisection in float64 (our own; not bit-identical to
  torchsde/k-diffusion). ``W`` is a fixed function of the time, so an increment never depends on which
  other intervals were queried, and a sampler run with extra steps in the middle sees the same Brownian path.
  Kind ``"brownian_device"`` (ComfyUI's ``*_gpu`` samplers) builds the same tree with generators on the model's
  device instead: on the CPU it is the same noise bit for bit; on a GPU it is a different (device-RNG) path.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch

_U64 = (1 << 64) - 1


class NoiseError(ValueError):
    """Invalid seeds, shapes or query times for a noise source."""


def check_seed(seed: int) -> int:
    """Return ``seed`` if it is an integer in [0, 2**64); raise NoiseError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise NoiseError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed <= _U64:
        raise NoiseError(f"seed must be in [0, 2**64 - 1], got {seed}")
    return seed


def _cpu_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed & _U64)


def _work_dtype(device: torch.device) -> torch.dtype:
    """float64 for the Brownian-bridge arithmetic, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _image_shape(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if not dims or any(d <= 0 for d in dims):
        raise NoiseError(f"per-image shape must be non-empty with positive sizes, got {tuple(shape)}")
    return dims


def initial_noise(
    shape: Sequence[int],
    seeds: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Initial noise [len(seeds), *shape]: image k is ``randn(1, *shape)`` from a CPU generator seeded ``seeds[k]``.

    ``shape`` is the per-image shape (e.g. ``(4, 64, 64)``). Drawn in float32 on the CPU, then moved.
    """
    dims = _image_shape(shape)
    if len(seeds) == 0:
        raise NoiseError("need at least one seed")
    parts = [torch.randn((1, *dims), generator=_cpu_generator(check_seed(s)), dtype=torch.float32) for s in seeds]
    return torch.cat(parts, 0).to(device=device, dtype=dtype)


class SeededNoiseSampler:
    """Per-step standard-normal noise from one CPU generator per image, seeded ``seed + offset`` (default 1).

    Each call draws the next float32 sample of every image's generator (the sigma arguments are ignored),
    so the noise at step i depends only on the seed and i.
    """

    def __init__(self, x_like: torch.Tensor, seeds: Sequence[int], *, offset: int = 1):
        if len(seeds) != x_like.shape[0]:
            raise NoiseError(f"got {len(seeds)} seeds for a batch of {x_like.shape[0]} images")
        self.shape = _image_shape(x_like.shape[1:])
        self.device, self.dtype = x_like.device, x_like.dtype
        self.seeds = [check_seed(s) for s in seeds]
        self.offset = int(offset)
        self.generators = [_cpu_generator(s + self.offset) for s in self.seeds]
        self.calls = 0

    def __call__(self, sigma: torch.Tensor | float | None = None,
                 sigma_next: torch.Tensor | float | None = None) -> torch.Tensor:
        """The next noise sample for the whole batch, on x's device and dtype."""
        self.calls += 1
        parts = [torch.randn((1, *self.shape), generator=g, dtype=torch.float32) for g in self.generators]
        return torch.cat(parts, 0).to(device=self.device, dtype=self.dtype)


def _splitmix64(x: int) -> int:
    """One round of SplitMix64 (Steele et al. 2014): a bijective 64-bit mixer."""
    x = (x + 0x9E3779B97F4A7C15) & _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return x ^ (x >> 31)


def _node_seed(seed: int, level: int, index: int) -> int:
    h = _splitmix64(seed)
    h = _splitmix64(h ^ level)
    return _splitmix64(h ^ index)


class BrownianPath:
    """One image's virtual Brownian motion W on [t0, t1] with W(t0) = 0 (float64; on the CPU unless ``device``).

    ``W(t1) = sqrt(t1 - t0) z_root``; the midpoint m of a dyadic interval [a, b] gets the Brownian-bridge
    value ``(W(a) + W(b)) / 2 + sqrt((b - a) / 4) z``, where each z is a standard normal tensor from a
    CPU generator seeded by a SplitMix64 hash of (seed, level, index). A query descends ``depth`` levels and
    interpolates linearly inside the final interval of width ``(t1 - t0) / 2**depth`` (the only
    approximation; its effect on an increment of length L is ~ 2**-depth (t1 - t0) / L). Recently used
    nodes are kept in an LRU cache; results do not depend on the cache.
    """

    def __init__(self, seed: int, t0: float, t1: float, shape: Sequence[int], *, depth: int = 32,
                 cache_size: int = 256, device: torch.device | str = "cpu"):
        if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
            raise NoiseError(f"Brownian path needs finite t0 < t1, got [{t0}, {t1}]")
        if not 1 <= depth <= 60:
            raise NoiseError(f"depth must be in 1..60, got {depth}")
        self.seed, self.t0, self.t1 = check_seed(seed), float(t0), float(t1)
        self.shape = _image_shape(shape)
        self.depth = int(depth)
        # the generators and the bridge arithmetic live here; "cpu" (the default) is the portable path
        self.device = torch.device(device)
        self.dtype = _work_dtype(self.device)
        self._cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._cache_size = int(cache_size)
        self._results: OrderedDict[float, torch.Tensor] = OrderedDict()  # step i's end is step i+1's start
        self._w1 = math.sqrt(self.t1 - self.t0) * self._normal(0, 0)

    def _normal(self, level: int, index: int) -> torch.Tensor:
        seed = _node_seed(self.seed, level, index)
        # float32 draws are ~6x faster on CPU than float64 ones; the bridge arithmetic stays float64
        if self.device.type == "cpu":
            return torch.randn(self.shape, generator=_cpu_generator(seed), dtype=torch.float32).to(torch.float64)
        g = torch.Generator(self.device).manual_seed(seed & _U64)
        return torch.randn(self.shape, generator=g, dtype=torch.float32, device=self.device).to(self.dtype)

    def _midpoint(self, level: int, index: int, a: float, b: float, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        key = (level, index)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        wm = 0.5 * (wa + wb) + math.sqrt(0.25 * (b - a)) * self._normal(level + 1, index)
        self._cache[key] = wm
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return wm

    def __call__(self, t: float) -> torch.Tensor:
        """W(t) for t in [t0, t1] (float64 tensor of the image shape on the path's device; do not modify it)."""
        t = float(t)
        span = self.t1 - self.t0
        if t < self.t0 - 1e-9 * span or t > self.t1 + 1e-9 * span or not math.isfinite(t):
            raise NoiseError(f"Brownian path queried at t={t:.9g}, outside its domain [{self.t0:.9g}, {self.t1:.9g}]")
        t = min(max(t, self.t0), self.t1)
        hit = self._results.get(t)
        if hit is None:
            hit = self._evaluate(t)
            self._results[t] = hit
            if len(self._results) > 8:
                self._results.popitem(last=False)
        return hit

    def _evaluate(self, t: float) -> torch.Tensor:
        a, b = self.t0, self.t1
        wa, wb = torch.zeros(self.shape, dtype=self.dtype, device=self.device), self._w1
        if t == a:
            return wa
        if t == b:
            return wb
        index = 0
        for level in range(self.depth):
            m = 0.5 * (a + b)
            wm = self._midpoint(level, index, a, b, wa, wb)
            if t == m:
                return wm
            if t < m:
                b, wb, index = m, wm, 2 * index
            else:
                a, wa, index = m, wm, 2 * index + 1
        w = (t - a) / (b - a)
        return (1.0 - w) * wa + w * wb


class BrownianTreeNoiseSampler:
    """Per-image Brownian-tree noise: ``(W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|)`` ~ N(0, 1).

    The path domain is ``[sigma_lo, sigma_hi]`` (default lo = 0, so a step to sigma = 0 can be queried too);
    pick ``sigma_hi`` from the model/schedule (e.g. the first sigma), not the step count, so that runs with
    more steps see the same path. Flow models use [0, 1]. Each image k uses ``seeds[k] + offset`` (default 0,
    like ComfyUI's Brownian sampler, which takes the seed as is). ``device`` is where the tree is generated
    (default the CPU; ComfyUI's ``*_gpu`` samplers generate it on the model's device).
    """

    def __init__(self, x_like: torch.Tensor, seeds: Sequence[int], *, sigma_hi: float, sigma_lo: float = 0.0,
                 offset: int = 0, depth: int = 32, cache_size: int = 256, device: torch.device | str = "cpu"):
        if len(seeds) != x_like.shape[0]:
            raise NoiseError(f"got {len(seeds)} seeds for a batch of {x_like.shape[0]} images")
        self.device, self.dtype = x_like.device, x_like.dtype
        self.sigma_lo, self.sigma_hi = float(sigma_lo), float(sigma_hi)
        shape = x_like.shape[1:]
        self.paths = [BrownianPath((check_seed(s) + offset) & _U64, self.sigma_lo, self.sigma_hi, shape,
                                   depth=depth, cache_size=cache_size, device=device) for s in seeds]

    def increment(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        """Unscaled ``W(sigma_next) - W(sigma)`` per image (float64, on the tree's device)."""
        s0, s1 = self._per_image(sigma), self._per_image(sigma_next)
        return torch.stack([p(b) - p(a) for p, a, b in zip(self.paths, s0, s1)])

    def __call__(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        """Standard-normal noise for the interval, on x's device and dtype."""
        s0, s1 = self._per_image(sigma), self._per_image(sigma_next)
        out = []
        for p, a, b in zip(self.paths, s0, s1):
            if a == b:
                raise NoiseError(f"Brownian noise requested for an empty interval (sigma = sigma_next = {a})")
            out.append((p(b) - p(a)) / math.sqrt(abs(b - a)))
        return torch.stack(out).to(device=self.device, dtype=self.dtype)

    def _per_image(self, sigma: torch.Tensor | float) -> list[float]:
        if isinstance(sigma, torch.Tensor) and sigma.numel() > 1:
            if sigma.numel() != len(self.paths):
                raise NoiseError(f"sigma has {sigma.numel()} values for {len(self.paths)} images")
            return [float(v) for v in sigma.detach().cpu().flatten().tolist()]
        return [float(sigma)] * len(self.paths)


NoiseKind = Literal["none", "seeded", "brownian", "brownian_device"]
BROWNIAN_HEADROOM = 1.5


def make_noise_sampler(kind: NoiseKind, x_like: torch.Tensor, seeds: Sequence[int], sigmas: torch.Tensor
                       ) -> SeededNoiseSampler | BrownianTreeNoiseSampler | None:
    """The noise source a sampler declares (``SamplerSpec.noise``), seeded per image.

    ``"brownian"`` spans [0, 1.5 * max(sigmas)]: the headroom covers samplers that raise sigma above the
    list (Karras churn reaches at most sqrt(2) * sigma); the path depends only on that bound, so lists that
    share their first sigma (any step count of the same schedule) see the same Brownian motion.
    ``"brownian_device"`` is the same tree generated on ``x_like``'s device (equal to ``"brownian"`` on the CPU).
    """
    if kind == "none":
        return None
    if kind == "seeded":
        return SeededNoiseSampler(x_like, seeds)
    if kind == "brownian":
        return BrownianTreeNoiseSampler(x_like, seeds, sigma_hi=BROWNIAN_HEADROOM * float(sigmas.max()))
    if kind == "brownian_device":
        return BrownianTreeNoiseSampler(x_like, seeds, sigma_hi=BROWNIAN_HEADROOM * float(sigmas.max()),
                                        device=x_like.device)
    raise NoiseError(f"unknown noise kind {kind!r}; expected 'none', 'seeded', 'brownian' or 'brownian_device'")
