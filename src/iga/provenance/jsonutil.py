"""JSON from untrusted metadata, with bounds on what parsing it may cost."""

from __future__ import annotations

import json
import math
from typing import Any, Iterator

from iga.provenance.errors import ProvenanceError

# Real generation metadata is far smaller (a plan with 1000 sigmas is ~25 KB, a large ComfyUI graph ~1 MB).
# Parsing is what costs memory: each '{}' or '[]' becomes a ~60-byte object, so both the text and the number
# of containers are capped; with these caps json.loads stays under ~50 MB whatever the content.
MAX_JSON_CHARS = 4 * 1024 * 1024
MAX_JSON_CONTAINERS = 200_000
# A plan nests 4 levels, a ComfyUI graph under 10; deeper text is hostile, and code that walks parsed JSON
# recursively (printing, validation) must never meet a depth Python's stack cannot take.
MAX_JSON_DEPTH = 64


def bracket_depths(text: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, int]]:
    """(index, nesting depth after it) for every bracket of JSON text between ``start`` and ``stop``; brackets
    inside strings do not count. Linear time: hostile text is scanned, never recursed into."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text) if stop is None else min(stop, len(text))):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            yield i, depth
        elif ch in "]}":
            depth -= 1
            yield i, depth


def json_depth(text: str) -> int:
    """The deepest nesting of objects/arrays in JSON text (brackets inside strings do not count); linear time."""
    return max((d for _, d in bracket_depths(text)), default=0)


def strict_json(obj: Any) -> Any:
    """``obj`` with NaN and infinities as null, so ``json.dumps(..., allow_nan=False)`` writes strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """JSON every parser accepts: non-finite numbers become null (``--json`` outputs and files iga writes)."""
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def loads_bounded(text: str, where: str) -> Any:
    """json.loads with size, container-count and nesting limits; errors name ``where`` (the chunk or field)."""
    if len(text) > MAX_JSON_CHARS:
        raise ProvenanceError(f"{where}: {len(text)} characters of JSON (limit {MAX_JSON_CHARS}); refusing")
    containers = text.count("{") + text.count("[")
    if containers > MAX_JSON_CONTAINERS:
        raise ProvenanceError(f"{where}: JSON with {containers} objects/arrays (limit {MAX_JSON_CONTAINERS}); "
                              "refusing")
    if containers and json_depth(text) > MAX_JSON_DEPTH:
        raise ProvenanceError(f"{where}: JSON nested more than {MAX_JSON_DEPTH} levels deep; refusing")
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ProvenanceError(f"{where}: JSON is nested too deeply") from exc
    except ValueError as exc:
        raise ProvenanceError(f"{where}: invalid JSON ({exc})") from exc
