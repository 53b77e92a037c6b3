"""Hires-fix upscalers: how the first pass is enlarged before the second (A1111's names, lower-cased).

``latent*`` resize the latent itself (torch interpolation modes, as A1111's "Latent" upscalers do); the others
decode, resize the pixels with PIL and encode again. A1111's "Latent" is bilinear without antialiasing.
"""

from __future__ import annotations

# name -> (space, method, A1111 label): space "latent" uses torch.nn.functional.interpolate(mode=method); "pixel"
# resizes decoded pixels with PIL
UPSCALERS: dict[str, tuple[str, str, str]] = {
    "latent": ("latent", "bilinear", "Latent"),
    "latent-antialiased": ("latent", "bilinear-antialias", "Latent (antialiased)"),
    "latent-bicubic": ("latent", "bicubic", "Latent (bicubic)"),
    "latent-nearest": ("latent", "nearest", "Latent (nearest)"),
    "latent-nearest-exact": ("latent", "nearest-exact", "Latent (nearest-exact)"),
    "lanczos": ("pixel", "lanczos", "Lanczos"),
    "nearest": ("pixel", "nearest", "Nearest"),
    "bicubic": ("pixel", "bicubic", "Bicubic"),
}
DEFAULT_UPSCALER = "latent"


def resolve_upscaler(name: str) -> str:
    """The canonical upscaler name for any spelling ("Latent (bicubic)" -> "latent-bicubic"); ValueError lists the
    known ones."""
    key = name.strip().lower().replace("(", " ").replace(")", " ").replace("_", " ")
    key = "-".join(key.split())
    if key in UPSCALERS:
        return key
    raise ValueError(f"unknown hires upscaler {name!r}; use one of: {', '.join(UPSCALERS)}")
