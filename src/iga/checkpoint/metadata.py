"""Group safetensors ``__metadata__`` for display: ModelSpec, kohya, iga, other."""

from __future__ import annotations

from collections.abc import Mapping

GROUPS = ("modelspec", "kohya", "iga", "other")


def metadata_group(key: str) -> str:
    """The display group of one metadata key."""
    if key.startswith("modelspec.") or key == "sai_model_spec":
        return "modelspec"
    if key.startswith(("ss_", "sshs_")):
        return "kohya"
    if key.startswith("iga."):
        return "iga"
    return "other"


def group_metadata(metadata: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Metadata split into the groups modelspec / kohya / iga / other, each sorted by key."""
    out: dict[str, dict[str, str]] = {g: {} for g in GROUPS}
    for key in sorted(metadata):
        out[metadata_group(key)][key] = metadata[key]
    return out
