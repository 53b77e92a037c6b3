"""Recipe v1: schema, validation, versions and the sampler/schedule name table."""

from __future__ import annotations

from .canonical import canonical_json, recipe_metadata_sha256
from .schema import RECIPE_VERSION, Preset, Recipe, parse_size
from .validate import (
    MAX_RECIPE_BYTES,
    RecipeError,
    RecipeIssue,
    load_recipe_file,
    parse_recipe_dict,
    parse_recipe_text,
)
from .versions import RecipeVersionError

__all__ = [
    "MAX_RECIPE_BYTES", "RECIPE_VERSION", "Preset", "Recipe", "RecipeError", "RecipeIssue", "RecipeVersionError",
    "canonical_json", "load_recipe_file", "parse_recipe_dict", "parse_recipe_text", "parse_size",
    "recipe_metadata_sha256",
]
