"""iga: bind a diffusion checkpoint to its native recipe (sampler, schedule, steps, CFG, VAE).

    import iga
    model = iga.load()                                   # the bundled demo model, or a path
    plan, findings = iga.resolve(model.recipe, iga.Request(sampler="ddim"), mode="guarded")
    images = model.generate("a red circle on a blue background", seed=1)

Attributes load lazily so that `import iga` stays cheap (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "iga.generate", "Model": "iga.generate", "GeneratedImage": "iga.generate",
    "resolve": "iga.guard", "Request": "iga.guard", "Plan": "iga.guard", "GuardRefused": "iga.guard",
    "Recipe": "iga.recipe", "load_recipe_file": "iga.recipe", "parse_recipe_dict": "iga.recipe",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iga' has no attribute {name!r}")
