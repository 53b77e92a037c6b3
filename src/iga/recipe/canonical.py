"""Canonical JSON: the one byte form used for hashing recipes and plans."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Serialise to canonical JSON bytes: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def recipe_metadata_sha256(recipe: dict[str, Any]) -> str:
    """SHA-256 (hex) of a recipe's canonical JSON without its ``hashes`` field."""
    body = {k: v for k, v in recipe.items() if k != "hashes"}
    return hashlib.sha256(canonical_json(body)).hexdigest()
