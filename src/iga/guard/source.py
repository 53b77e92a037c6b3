"""What a model path offers the guard: its recipe (embedded or sidecar), identity, hashes, markers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from iga.recipe import Recipe, RecipeIssue, parse_recipe_dict
from iga.recipe.canonical import recipe_metadata_sha256

from .plan import ModelIdentity


@dataclass
class ModelSource:
    """A checkpoint as the guard sees it, before any weights are loaded."""

    path: str
    identity: ModelIdentity
    recipe: Recipe | None
    recipe_issues: list[RecipeIssue] = field(default_factory=list)
    detected_prediction: str | None = None
    notes: list[str] = field(default_factory=list)


def describe_model(path: str | os.PathLike[str], *, file_hash: bool = True) -> ModelSource:
    """Read a checkpoint's recipe, architecture and hashes (header and cached hashes only; no weights)."""
    from iga.checkpoint import detect_architecture, find_recipe
    from iga.checkpoint.hashing import file_sha256, weights_sha256

    p = os.fspath(path)
    arch = detect_architecture(p)
    src = find_recipe(p)
    recipe, issues, origin, rsha = None, [], "none", None
    notes = list(src.warnings) if src else []
    if src is not None:
        recipe, issues = parse_recipe_dict(src.recipe, source=f"{src.origin} recipe of {p}")
        origin, rsha = src.origin, recipe_metadata_sha256(recipe.to_dict())
    is_file = os.path.isfile(p)
    ident = ModelIdentity(
        name=Path(p).stem if is_file else Path(p).name,
        path=str(Path(p).resolve()),
        architecture=arch.architecture,
        weights_sha256=weights_sha256(p) if is_file else None,
        file_sha256=file_sha256(p) if is_file and file_hash else None,
        recipe_source=origin,
        recipe_sha256=rsha,
    )
    if ident.file_sha256:
        ident.autov2 = ident.file_sha256[:10]
    return ModelSource(p, ident, recipe, issues, arch.prediction_type, notes + list(arch.notes))
