"""The Plan as stored in an image: compact JSON with its schema version first."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from iga.provenance.errors import ProvenanceError
from iga.provenance.jsonutil import loads_bounded

PLAN_SCHEMA = "iga.plan/1"
PLAN_SCHEMA_PREFIX = "iga.plan/"


def plan_to_dict(plan: Any) -> dict[str, Any]:
    """A plain dict from a plan given as a mapping or a pydantic model (``model_dump(mode="json")``)."""
    if isinstance(plan, Mapping):
        return dict(plan)
    dump = getattr(plan, "model_dump", None)
    if callable(dump):
        data = dump(mode="json")
        if isinstance(data, Mapping):
            return dict(data)
    raise ProvenanceError(f"a plan must be a dict or a pydantic model, not {type(plan).__name__}")


def _first_non_finite(obj: Any, path: str = "plan") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return path
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            hit = _first_non_finite(v, f"{path}.{k}")
            if hit:
                return hit
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            hit = _first_non_finite(v, f"{path}[{i}]")
            if hit:
                return hit
    return None


def dump_plan(plan: Any, *, ensure_ascii: bool = False) -> str:
    """Compact JSON of a plan, ``schema`` first (added as ``iga.plan/1`` when missing); other fields kept as is."""
    data = plan_to_dict(plan)
    body = {"schema": data.get("schema") or PLAN_SCHEMA}
    body.update((k, v) for k, v in data.items() if k != "schema")
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=False)
    except ValueError as exc:
        where = _first_non_finite(body) or "plan"
        raise ProvenanceError(f"{where} is not a finite number, which JSON cannot store; "
                              f"fix the plan (e.g. clamp an infinite sigma) before saving") from exc
    except TypeError as exc:
        raise ProvenanceError(f"the plan holds a value JSON cannot store: {exc}") from exc


def load_plan(text: str, where: str) -> tuple[dict[str, Any], list[str]]:
    """Parse stored plan JSON; returns (plan, warnings). ``where`` names the chunk/field for error messages."""
    try:
        data = loads_bounded(text, where)
    except ProvenanceError as exc:
        raise ProvenanceError(f"{exc}; the iga metadata is corrupt") from exc
    if not isinstance(data, dict):
        raise ProvenanceError(f"{where}: expected a JSON object, found {type(data).__name__}")
    warnings: list[str] = []
    schema = data.get("schema")
    if not isinstance(schema, str) or not schema.startswith(PLAN_SCHEMA_PREFIX):
        warnings.append(f"{where}: no 'schema': 'iga.plan/N' field (found {schema!r}); read as an iga plan anyway")
    elif schema.removeprefix(PLAN_SCHEMA_PREFIX).split(".")[0] != PLAN_SCHEMA.removeprefix(PLAN_SCHEMA_PREFIX):
        warnings.append(f"{where}: plan schema {schema!r} is newer than this iga reads ({PLAN_SCHEMA}); "
                        "fields may be missing or mean something else")
    return data, warnings
