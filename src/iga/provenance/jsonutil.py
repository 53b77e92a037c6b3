"""JSON from untrusted metadata, with bounds on what parsing it may cost."""

from __future__ import annotations

import json
from typing import Any

from iga.provenance.errors import ProvenanceError

# Real generation metadata is far smaller (a plan with 1000 sigmas is ~25 KB, a large ComfyUI graph ~1 MB).
# Parsing is what costs memory: each '{}' or '[]' becomes a ~60-byte object, so both the text and the number
# of containers are capped; with these caps json.loads stays under ~50 MB whatever the content.
MAX_JSON_CHARS = 4 * 1024 * 1024
MAX_JSON_CONTAINERS = 200_000


def loads_bounded(text: str, where: str) -> Any:
    """json.loads with size, container-count and nesting limits; errors name ``where`` (the chunk or field)."""
    if len(text) > MAX_JSON_CHARS:
        raise ProvenanceError(f"{where}: {len(text)} characters of JSON (limit {MAX_JSON_CHARS}); refusing")
    containers = text.count("{") + text.count("[")
    if containers > MAX_JSON_CONTAINERS:
        raise ProvenanceError(f"{where}: JSON with {containers} objects/arrays (limit {MAX_JSON_CONTAINERS}); "
                              "refusing")
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ProvenanceError(f"{where}: JSON is nested too deeply") from exc
    except ValueError as exc:
        raise ProvenanceError(f"{where}: invalid JSON ({exc})") from exc
