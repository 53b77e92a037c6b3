"""Find a checkpoint's recipe: embedded in the safetensors header, or in a sidecar JSON file next to it.

Sidecar locations:

- single file ``model.safetensors`` (or ``model.ckpt``, ``model.pt``, ...): ``model.iga.json`` in the same folder
  (the last suffix is replaced, so ``model.fp16.safetensors`` -> ``model.fp16.iga.json``);
- diffusers folder ``sd-model/``: ``sd-model/iga.json`` inside it (travels with the folder), and also
  ``sd-model.iga.json`` next to it (for read-only folders such as a shared Hugging Face cache); the inside one wins.

Precedence: the embedded recipe wins over a sidecar by default (it cannot be separated from the weights it describes).
When both exist and differ, ``find_recipe`` keeps the winner, emits a ``RecipeConflictWarning`` and lists the
difference in ``RecipeSource.warnings``. ``prefer="sidecar"`` reverses the order (e.g. to try an edited recipe before
embedding it). Pickle checkpoints (``.ckpt``/``.pt``/...) are never opened: only their sidecar is read.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from iga.checkpoint import _io
from iga.checkpoint.embed import MAX_RECIPE_BYTES, parse_recipe_json, recipe_from_metadata
from iga.checkpoint.errors import CheckpointFileError, RecipeTooLargeError
from iga.checkpoint.header import PICKLE_SUFFIXES, read_header

SIDECAR_SUFFIX = ".iga.json"
FOLDER_SIDECAR = "iga.json"


class RecipeConflictWarning(UserWarning):
    """An embedded recipe and a sidecar recipe both exist and differ."""


@dataclass(frozen=True, slots=True)
class RecipeSource:
    """A recipe and where it came from."""

    recipe: dict[str, Any]
    origin: Literal["embedded", "sidecar"]
    path: str
    """The checkpoint file (embedded) or the sidecar file."""
    warnings: tuple[str, ...] = field(default=())


def sidecar_paths(path: str | os.PathLike[str]) -> list[str]:
    """Candidate sidecar files for a checkpoint file or diffusers folder, in precedence order."""
    p = Path(os.fspath(path))
    if p.is_dir():
        return [str(p / FOLDER_SIDECAR), str(p.parent / (p.name + SIDECAR_SUFFIX))]
    return [str(p.with_name(p.stem + SIDECAR_SUFFIX) if p.suffix else p.with_name(p.name + SIDECAR_SUFFIX))]


def read_sidecar(sidecar: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one sidecar recipe file (JSON object, at most 1 MiB)."""
    s = os.fspath(sidecar)
    try:
        with open(s, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise CheckpointFileError(f"cannot read sidecar recipe ({e.strerror})", path=s) from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeTooLargeError(f"sidecar recipe is over the {MAX_RECIPE_BYTES:,}-byte limit", path=s)
    return parse_recipe_json(raw, path=s, where="sidecar recipe")


def write_sidecar(path: str | os.PathLike[str], recipe: dict[str, Any]) -> str:
    """Write ``recipe`` as the (first) sidecar of a checkpoint file or folder, atomically; returns its path."""
    import json

    target = sidecar_paths(path)[0]
    data = json.dumps(recipe, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeTooLargeError(f"recipe is over the {MAX_RECIPE_BYTES:,}-byte limit", path=target)
    _io.write_bytes_atomic(target, data)
    return target


def find_recipe(
    path: str | os.PathLike[str], *, prefer: Literal["embedded", "sidecar"] = "embedded"
) -> RecipeSource | None:
    """The recipe of a checkpoint file or diffusers folder (embedded or sidecar, see module doc), or None."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise CheckpointFileError("no such file or folder", path=p, hint="Check the path.")
    embedded: RecipeSource | None = None
    if os.path.isfile(p) and Path(p).suffix.lower() not in PICKLE_SUFFIXES:
        recipe = recipe_from_metadata(read_header(p).metadata, path=p)
        if recipe is not None:
            embedded = RecipeSource(recipe, "embedded", p)
    sidecars = [RecipeSource(read_sidecar(s), "sidecar", s) for s in sidecar_paths(p) if os.path.isfile(s)]
    notes: list[str] = []
    if len(sidecars) > 1 and sidecars[0].recipe != sidecars[1].recipe:
        notes.append(f"sidecars {sidecars[0].path} and {sidecars[1].path} differ; using {sidecars[0].path}")
    sidecar = sidecars[0] if sidecars else None
    first, second = (embedded, sidecar) if prefer == "embedded" else (sidecar, embedded)
    chosen = first or second
    if chosen is None:
        return None
    if first is not None and second is not None and first.recipe != second.recipe:
        keys = sorted(k for k in first.recipe.keys() | second.recipe.keys() if first.recipe.get(k) != second.recipe.get(k))
        notes.append(
            f"the {first.origin} recipe ({first.path}) and the {second.origin} recipe ({second.path}) differ in "
            f"{', '.join(keys)}; using the {first.origin} one"
        )
    for note in notes:
        warnings.warn(note, RecipeConflictWarning, stacklevel=2)
    return RecipeSource(chosen.recipe, chosen.origin, chosen.path, tuple(notes))
