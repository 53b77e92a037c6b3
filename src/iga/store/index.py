"""Walking the store's folders and classifying what is found, from headers and config files only.

A ``.safetensors`` file is classified by its tensor names (read through ``iga.checkpoint.read_header``, with a
smaller header limit than the format's: an index need not read a 100 MB header): LoRA (``lora_up``/``lora_A``...),
ControlNet (``control_model.``, ``input_hint_block``, ``controlnet_cond_embedding``), checkpoint (a UNet or
transformer ``detect_architecture`` recognises), VAE (``decoder.conv_in``, bare or under ``first_stage_model.``/
``vae.``). A folder with ``model_index.json`` is a diffusers pipeline (a checkpoint); one whose ``config.json``
names ``AutoencoderKL`` or ``ControlNetModel`` is that component. Anything else is skipped.

Classifications are cached in ``store.json`` in iga's cache folder, keyed by real path and valid while the file's
size and mtime_ns are unchanged; the cache is written atomically and only when it changed.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from iga.checkpoint.architecture import CROSS_ATTENTION_WIDTHS
from iga.checkpoint.hashing import folder_weights_files

KINDS = ("checkpoint", "vae", "lora", "controlnet")
MAX_DEPTH = 8  # folders below a root
MAX_SCANNED = 50_000  # directory entries looked at per scan
MAX_INDEX_HEADER = 32 << 20  # header bytes read to classify a file
MAX_ID_CHARS = 200
CACHE_FILE = "store.json"
CACHE_VERSION = 1
MAX_CACHE_ENTRIES = 20_000
_MAX_CACHE_BYTES = 32 << 20

_LORA_MARKS = ("lora_up.", "lora_down.", ".lora_A.", ".lora_B.", "hada_w1", "lokr_w1")
_CONTROL_MARKS = ("control_model.", "input_hint_block.", "controlnet_cond_embedding.", "controlnet_down_blocks.")
_VAE_PREFIXES = ("", "first_stage_model.", "vae.")
_LATENT_FAMILIES = {4: "sd1/sd2/sdxl", 16: "sd3/flux"}  # VAE latent channels -> the families it decodes for


@dataclass(frozen=True)
class Entry:
    """One model in the store. ``architecture`` may name several families ("sd1/sd2/sdxl" for a 4-channel VAE)."""

    id: str
    kind: str
    architecture: str
    path: str
    format: str  # "safetensors" or "diffusers" (a folder)
    recipe: bool = False
    size: int = 0
    bundled: bool = False

    def families(self) -> tuple[str, ...]:
        return tuple(self.architecture.split("/"))

    def cached_sha256(self) -> str | None:
        """The hash when iga has computed it before (and the file is unchanged); never hashes."""
        from iga.checkpoint.hashing import cached_hashes

        if self.format == "safetensors":
            return cached_hashes([self.path])[self.path]
        files = folder_weights_files(self.path)
        if all(cached_hashes(files, "weights").values()):
            return self.sha256()
        return None

    def sha256(self) -> str:
        """SHA-256 of the file (of a folder: its weights hash, ``folder_weights_sha256``), computed once and cached."""
        from iga.checkpoint.hashing import file_sha256, folder_weights_sha256

        if self.format == "safetensors":
            return file_sha256(self.path)
        return folder_weights_sha256(self.path)[0]


@dataclass
class Scan:
    """What one walk of the roots found, and what it skipped (one line each)."""

    entries: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def scan(folders: tuple[Path, ...], bundled: tuple[Path, ...]) -> Scan:
    """Walk ``folders`` (then add ``bundled``) and classify every model found; the cache saves re-reading headers."""
    out = Scan()
    cache = _Cache.load()
    seen: set[str] = set()
    budget = [MAX_SCANNED]
    for folder in folders:
        if not folder.is_dir():
            out.notes.append(f"models folder {folder} does not exist (or is not a folder)")
            continue
        for path, is_dir in _walk(folder, out.notes, budget):
            _add(out, cache, path, is_dir, seen, bundled=False)
    for path in bundled:
        if path.is_file():
            _add(out, cache, path, False, seen, bundled=True)
    cache.save()
    return out


def _add(out: Scan, cache: "_Cache", path: Path, is_dir: bool, seen: set[str], *, bundled: bool) -> None:
    real = os.path.realpath(path)
    if real in seen:  # the same file reached twice (a symlink, overlapping roots)
        return
    seen.add(real)
    try:
        entry = _classify_folder(path) if is_dir else cache.classify(path, real)
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError: a damaged file is skipped, not fatal
        out.notes.append(f"skipped {path}: {e}")
        return
    if entry is not None:
        out.entries.append(Entry(**{**asdict(entry), "bundled": bundled}))


def _walk(root: Path, notes: list[str], budget: list[int]) -> Iterator[tuple[Path, bool]]:
    """(path, is_folder_model) for every .safetensors file and diffusers model folder under ``root``; follows
    symlinks but visits each folder once (no loops), stops at MAX_DEPTH and after MAX_SCANNED entries."""
    visited: set[tuple[int, int]] = set()
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in visited:
                continue
            visited.add((st.st_dev, st.st_ino))
            children = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            notes.append(f"cannot read folder {folder}: {e.strerror or e}")
            continue
        names = {c.name for c in children}
        if "model_index.json" in names or "config.json" in names:
            yield folder, True  # a diffusers model: its subfolders are its parts, not models of their own
            continue
        subfolders = []
        for child in children:
            budget[0] -= 1
            if budget[0] < 0:
                notes.append(f"stopped after {MAX_SCANNED} entries; name smaller folders in IGA_MODELS or the config")
                return
            try:
                if child.name.startswith("."):
                    continue
                if child.is_dir():
                    subfolders.append(Path(child.path))
                elif child.name.lower().endswith(".safetensors") and child.is_file():
                    yield Path(child.path), False
            except OSError:
                continue
        if depth < MAX_DEPTH:
            stack.extend((s, depth + 1) for s in reversed(subfolders))
        elif subfolders:
            notes.append(f"not looking below {folder} (more than {MAX_DEPTH} folders deep)")


def _header_length(path: Path) -> int:
    with open(path, "rb") as f:
        prefix = f.read(8)
    return struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0


def classify_file(path: Path) -> Entry | None:
    """The store entry of one .safetensors file (None when it is no model the store indexes)."""
    from iga.checkpoint import read_header

    n = _header_length(path)
    if n > MAX_INDEX_HEADER:
        raise ValueError(f"header of {n:,} bytes is larger than the store reads ({MAX_INDEX_HEADER >> 20} MiB)")
    header = read_header(path)
    names = [t.name for t in header.tensors]
    md = dict(header.metadata)
    kind, arch = _kind_of(header, names, md)
    if kind is None:
        return None
    recipe_id, has_recipe = _recipe_id(path) if kind == "checkpoint" else (None, False)
    return Entry(id=_pick_id(recipe_id, md, path.stem), kind=kind, architecture=arch, path=str(path),
                 format="safetensors", recipe=has_recipe, size=path.stat().st_size)


def _kind_of(header: Any, names: list[str], md: dict[str, str]) -> tuple[str | None, str]:
    from iga.checkpoint import detect_architecture

    if any(m in n for n in names for m in _LORA_MARKS):
        return "lora", _lora_architecture(names, md)
    if any(m in n for n in names for m in _CONTROL_MARKS):
        return "controlnet", _cross_attention_family(header) or detect_architecture(header).architecture
    info = detect_architecture(header)
    if info.architecture == "demo" or {"unet", "transformer"} & set(info.components):
        return "checkpoint", info.architecture
    tensors = {t.name: t for t in header.tensors}
    for prefix in _VAE_PREFIXES:
        conv = tensors.get(f"{prefix}decoder.conv_in.weight")
        if conv is not None and len(conv.shape) == 4:
            return "vae", _LATENT_FAMILIES.get(conv.shape[1], "unknown")
    return None, "unknown"


def _lora_architecture(names: list[str], md: dict[str, str]) -> str:
    """From kohya's ``ss_base_model_version`` or ModelSpec's architecture, else SDXL's second text encoder."""
    said = f"{md.get('ss_base_model_version', '')} {md.get('modelspec.architecture', '')}".lower()
    for mark, family in (("flux", "flux"), ("sd3", "sd3"), ("xl", "sdxl"), ("v2", "sd2"), ("v1", "sd1")):
        if mark in said:
            return family
    return "sdxl" if any(n.startswith("lora_te2_") for n in names) else "unknown"


def _cross_attention_family(header: Any) -> str | None:
    for t in header.tensors:
        if t.name.endswith("attn2.to_k.weight") and len(t.shape) == 2:
            return CROSS_ATTENTION_WIDTHS.get(t.shape[1])
    return None


def _recipe_id(path: Path) -> tuple[str | None, bool]:
    """(the recipe's model_id, whether a recipe exists) for a checkpoint file or folder."""
    from iga.checkpoint import find_recipe

    try:
        found = find_recipe(path)
    except (OSError, ValueError):  # a damaged recipe is the guard's business; the store only lists the file
        return None, True
    if found is None:
        return None, False
    model_id = found.recipe.get("model_id")
    return (model_id if isinstance(model_id, str) else None), True


def _pick_id(recipe_id: str | None, md: dict[str, str], stem: str) -> str:
    """The recipe's model_id, else the file's own ``iga.id`` or ModelSpec title, else the file name."""
    for value in (recipe_id, md.get("iga.id"), md.get("modelspec.title")):
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_ID_CHARS]
    return stem


def _classify_folder(folder: Path) -> Entry | None:
    """A diffusers folder: a pipeline (checkpoint), or an AutoencoderKL / ControlNetModel component."""
    from iga.guard.source import read_config, folder_markers

    if not folder_weights_files(folder):
        return None  # only safetensors weights are ever loaded
    if (folder / "model_index.json").is_file():
        arch, _pred = folder_markers(folder)
        recipe_id, has_recipe = _recipe_id(folder)
        return Entry(id=recipe_id or folder.name, kind="checkpoint", architecture=arch, path=str(folder),
                     format="diffusers", recipe=has_recipe)
    config = read_config(folder / "config.json")
    cls = config.get("_class_name")
    if cls == "AutoencoderKL":
        arch = _LATENT_FAMILIES.get(config.get("latent_channels", 4), "unknown")
        return Entry(id=folder.name, kind="vae", architecture=arch, path=str(folder), format="diffusers")
    if cls == "ControlNetModel":
        arch = CROSS_ATTENTION_WIDTHS.get(config.get("cross_attention_dim"), "unknown")  # type: ignore[arg-type]
        return Entry(id=folder.name, kind="controlnet", architecture=arch, path=str(folder), format="diffusers")
    return None


class _Cache:
    """Classifications by real path: {size, mtime_ns, entry or null}."""

    def __init__(self, path: str, files: dict[str, Any]):
        self.path, self.files, self.dirty = path, files, False

    @classmethod
    def load(cls) -> "_Cache":
        from iga.checkpoint.hashing import cache_dir

        path = os.path.join(cache_dir(), CACHE_FILE)
        files: dict[str, Any] = {}
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_CACHE_BYTES + 1)
            data = json.loads(raw) if len(raw) <= _MAX_CACHE_BYTES else {}
            if isinstance(data, dict) and data.get("version") == CACHE_VERSION and isinstance(data.get("files"), dict):
                files = {k: v for k, v in data["files"].items() if isinstance(v, dict)}
        except (OSError, ValueError):
            files = {}  # a missing or damaged cache only costs re-reading headers
        return cls(path, files)

    def classify(self, path: Path, real: str) -> Entry | None:
        st = os.stat(real)
        hit = self.files.get(real)
        if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            known = hit.get("entry")
            try:
                return Entry(**{**known, "path": str(path)}) if isinstance(known, dict) else None
            except TypeError:
                pass  # an entry of another shape: classify again
        entry = classify_file(path)
        self.files[real] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "entry": asdict(entry) if entry else None}
        self.dirty = True
        return entry

    def save(self) -> None:
        if not self.dirty:
            return
        from iga.checkpoint import write_bytes_atomic

        files = dict(list(self.files.items())[-MAX_CACHE_ENTRIES:])
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            write_bytes_atomic(self.path, json.dumps({"version": CACHE_VERSION, "files": files}).encode())
        except OSError:
            pass  # a read-only cache folder only costs the cache
