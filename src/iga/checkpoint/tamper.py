"""The tamper matrix: flip bytes in every region of a checkpoint and check that each change that can alter an image
or the recipe is caught, and that edits which change nothing are not.

Regions: the 8-byte length prefix, the tensor index (names, dtypes, shapes, offsets), the recipe, the other
metadata, the header's padding, and the tensor data. A flip is *caught* when the file no longer reads (a typed
error: refused at load) or when the integrity check names a hash (``iga verify`` exits 1, the guard refuses in
guarded mode). A flip is *harmless* when the parsed header and the data are unchanged (nothing an image or recipe
depends on moved); a harmless flip that is flagged is a false positive. Used by ``tests/test_checkpoint_tamper.py``
and ``bench/bench_tamper.py``.
"""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RegionResult:
    """Counts for one region: flips tried, caught, harmless, missed (a change that went unnoticed), false alarms."""

    flips: int = 0
    outcomes: Counter = field(default_factory=Counter)


def _regions(path: Path) -> dict[str, list[int]]:
    """Byte positions of each region (index entries and metadata values located in the header text)."""
    from iga.checkpoint.header import read_header

    header = read_header(path)
    raw = path.read_bytes()
    text = raw[8:8 + header.header_len]
    json_end = header.json_len
    recipe_value = header.metadata.get("iga.recipe", "")
    regions: dict[str, list[int]] = {"length prefix": list(range(8)), "padding": list(range(8 + json_end,
                                                                                           8 + header.header_len))}
    meta_start = text.find(b'"__metadata__"')
    meta_end = text.find(b"}", meta_start) + 1
    recipe_at = text.find(b'"iga.recipe"', meta_start)
    recipe_span = range(recipe_at, recipe_at + len(recipe_value.encode()) + 40) if recipe_value else range(0)
    regions["recipe"] = [8 + i for i in recipe_span]
    regions["other metadata"] = [8 + i for i in range(meta_start, meta_end) if i not in recipe_span]
    regions["tensor index"] = [8 + i for i in range(json_end) if not meta_start <= i < meta_end]
    regions["tensor data"] = list(range(8 + header.header_len, len(raw)))
    return regions


def _state(path: Path):
    """What an image or recipe can depend on: the parsed header (index + metadata) and the tensor bytes."""
    from iga.checkpoint.header import read_header

    h = read_header(path)
    index = sorted((t.name, t.dtype, t.shape, t.data_offsets) for t in h.tensors)
    return index, dict(h.metadata), path.read_bytes()[8 + h.header_len:]


def _caught(path: Path) -> bool:
    """True when the file is refused at load (unreadable) or the integrity check names a problem."""
    from iga.checkpoint import find_recipe
    from iga.checkpoint.errors import CheckpointError
    from iga.checkpoint.integrity import check_integrity

    try:
        source = find_recipe(path)
        if source is None:
            return True  # the recipe is gone: nothing vouches for the file any more
        checked = check_integrity(path, source, rehash=True)
        return bool(checked.problems) or checked.unhashed  # stripped hashes: verify exits 2, strict refuses
    except (CheckpointError, ValueError):
        return True


def run_matrix(model: Path, work: Path, *, per_region: int = 200, seed: int = 0) -> dict[str, RegionResult]:
    """Flip one byte at up to ``per_region`` positions of each region (all of them when fewer), one copy each."""
    rng = random.Random(seed)
    before = _state(model)
    results: dict[str, RegionResult] = {}
    for region, positions in _regions(model).items():
        res = results.setdefault(region, RegionResult())
        for pos in rng.sample(positions, min(per_region, len(positions))):
            copy = work / f"tamper-{region.replace(' ', '-')}-{pos}.safetensors"
            shutil.copyfile(model, copy)
            with open(copy, "r+b") as f:
                f.seek(pos)
                byte = f.read(1)[0]
                f.seek(pos)
                f.write(bytes([byte ^ (1 << rng.randrange(8))]))
            caught = _caught(copy)
            try:
                harmless = _state(copy) == before
            except Exception:  # noqa: BLE001 -- unreadable: certainly not harmless
                harmless = False
            res.flips += 1
            res.outcomes["false alarm" if harmless and caught else "harmless" if harmless else
                         "caught" if caught else "MISSED"] += 1
            os.unlink(copy)
    return results
