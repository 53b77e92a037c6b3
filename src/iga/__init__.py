"""iga: bind a diffusion checkpoint to its native recipe (sampler, schedule, steps, CFG, VAE)."""

from __future__ import annotations

__version__ = "0.1.0"
