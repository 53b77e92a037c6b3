"""Published JSON Schemas (recipe, plan): generated from the pydantic models, committed under schema/."""

from __future__ import annotations

import json
from typing import Any

SCHEMA_FILES = {"recipe": "recipe-v1.schema.json", "plan": "plan-v1.schema.json"}


def schema_dict(kind: str) -> dict[str, Any]:
    """The JSON Schema for 'recipe' or 'plan' as a dict."""
    if kind == "recipe":
        from iga.recipe.schema import Recipe

        s = Recipe.model_json_schema()
        s["$id"] = "https://iga.dev/schema/recipe-v1.schema.json"
    elif kind == "plan":
        from iga.guard.plan import Plan

        s = Plan.model_json_schema()
        s["$id"] = "https://iga.dev/schema/plan-v1.schema.json"
    else:
        raise KeyError(f"unknown schema {kind!r}; choose one of: {', '.join(SCHEMA_FILES)}")
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return s


def schema_json(kind: str) -> str:
    """The JSON Schema for 'recipe' or 'plan', as stable pretty JSON text."""
    return json.dumps(schema_dict(kind), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
