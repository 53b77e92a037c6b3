"""Does a checkpoint still match the hashes its recipe records? One check for `iga verify` and for every load.

An embedded recipe records (since 1.0) ``weights_sha256`` (the tensor data) and ``metadata_sha256`` (the recipe
itself), and since 1.2 ``header_sha256`` (tensor names, dtypes, shapes, offsets and the other metadata). Each is
compared with the file as it is now; a hash an embedded recipe of its version must carry but does not (a deleted
or misspelt key) is a problem too, because an attacker who can edit a recipe can also delete its hashes. A sidecar
recipe may carry none (it was written by hand), nor may a 1.0/1.1 recipe embedded without hashes (nothing is vouched
for; reported as uncovered); what a recipe carries is checked. Older recipes say what they do not
cover. The weights hash comes from the hash cache (see ``hashing``): ``rehash=True`` recomputes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from iga.checkpoint.sidecar import RecipeSource

WHY = {
    "weights_sha256": "the tensor data differs from what the recipe was made for (corrupt file, or the recipe "
                      "belongs to another checkpoint)",
    "metadata_sha256": "the recipe was edited after it was hashed",
    "header_sha256": "the tensor index or the other metadata changed (swapped or retyped tensors, an edited "
                     "network config)",
}


PROVES = {"weights_sha256": "the tensor data is the one the recipe was made for",
          "metadata_sha256": "the recipe is unedited", "header_sha256": "the tensor index and metadata are unchanged"}


@dataclass
class HashCheck:
    """One recorded hash against the file."""

    name: str
    expected: str | None
    actual: str | None
    ok: bool


@dataclass
class Integrity:
    """Every check, the hashes that should be there and are not, and what the recipe's version does not cover."""

    checks: list[HashCheck] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    unhashed: bool = False  # an embedded recipe with no hashes at all (never vouched for, or stripped)

    @property
    def problems(self) -> list[tuple[str, str]]:
        """(hash name, why it matters) for each mismatch and each missing hash."""
        bad = [(c.name, f"{c.name} does not match: {WHY[c.name]}") for c in self.checks if not c.ok]
        return bad + [(name, f"hashes.{name} is missing from the embedded recipe (deleted or renamed): nothing "
                             f"proves {PROVES[name]}; re-embed with `iga embed`") for name in self.missing]


def _version(recipe: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(p) for p in str(recipe.get("iga_version", "")).split(".")[:2] if p.isdigit())


def _required(origin: str, version: str, hashes: dict) -> list[str]:
    # a recipe without any hashes was never vouched for (reported as uncovered); one whose hash block lacks a key
    # that `iga embed` always writes had it deleted or renamed
    if origin != "embedded" or not hashes:
        return []
    needed = ["weights_sha256", "metadata_sha256"]
    if _version({"iga_version": version}) >= (1, 2):
        needed.append("header_sha256")
    return needed


def check_integrity(path: str | os.PathLike[str], source: RecipeSource, *, rehash: bool = False,
                    weights: str | None = None, header: Any = None) -> Integrity:
    """Compare every hash the recipe records (and every one it must record) with the file as it is now.

    ``weights``/``header``: the file's weights hash and parsed header when the caller already has them."""
    from iga.checkpoint.hashing import header_sha256, weights_sha256
    from iga.recipe.canonical import recipe_metadata_sha256

    recipe: dict[str, Any] = source.recipe
    hashes = recipe.get("hashes") if isinstance(recipe.get("hashes"), dict) else {}
    out = Integrity()
    recorded = {k: v for k, v in hashes.items() if k in WHY and isinstance(v, str)}
    out.missing = [k for k in _required(source.origin, recipe.get("iga_version", ""), hashes) if k not in recorded]
    if not hashes:
        out.uncovered.append("everything: the recipe records no hashes (run `iga embed` to add them)")
        out.unhashed = source.origin == "embedded"
        if out.unhashed and _version(recipe) >= (1, 2):  # since 1.2 an embedded recipe always has them: stripped
            out.missing = ["weights_sha256", "metadata_sha256", "header_sha256"]
    is_file = os.path.isfile(path)
    if "header_sha256" not in recorded:
        out.uncovered.append("the tensor index and the other metadata (header_sha256 is not recorded)")
    for name, expected in recorded.items():
        if name == "metadata_sha256":
            actual = recipe_metadata_sha256({k: v for k, v in recipe.items() if k != "hashes"})
        elif not is_file:
            out.uncovered.append(f"{name} (recorded, but only single .safetensors files can be checked)")
            continue
        elif name == "weights_sha256":
            actual = weights or weights_sha256(path, use_cache=not rehash)
        else:
            actual = header_sha256(header if header is not None else path)
        out.checks.append(HashCheck(name, expected, actual, actual == expected))
    return out
