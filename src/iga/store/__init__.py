"""The local model store: checkpoints, VAEs, LoRAs and ControlNets indexed by id and SHA-256 (what a recipe's ids
resolve to), and the index of the models this user has run (``iga.store.used``).

Where it looks (``iga.store.roots``): the folders in ``$IGA_MODELS`` (separated like PATH), the ``"models"`` list
of the config file (``$IGA_CONFIG``, else ``config.json`` in iga's user config folder), and the bundled model.
Nothing is hashed until a hash is asked for (``find`` by hash, ``iga models --hash``); hashes are cached.

    from iga import store
    vae = store.find("sdxl-vae-fp16-fix", kind="vae")   # an Entry, or ModelNotFound listing close ids
    [e.id for e in store.entries("lora")]
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from .index import KINDS, Entry, Scan, scan
from .roots import CONFIG_ENV, MODELS_ENV, StoreConfigError, config_path, roots
from .used import ModelNotFound, find_file, locate_model, remember, vae_file

__all__ = ["CONFIG_ENV", "KINDS", "MODELS_ENV", "AmbiguousModel", "Entry", "ModelNotFound", "Scan",
           "StoreConfigError", "config_path", "entries", "find", "find_file", "locate_model", "lookup", "model_path", "remember", "roots",
           "scan_store", "vae_file"]

_HEX = re.compile(r"^[0-9a-f]{10,64}$")


class AmbiguousModel(ModelNotFound):
    """Several different files answer to one id; the message lists them and how to pick one."""


def scan_store() -> Scan:
    """Walk every root now (classifications cached; no hashing). StoreConfigError for a bad config file."""
    r = roots()
    return scan(r.folders, r.bundled)


def entries(kind: str | None = None) -> list[Entry]:
    """Every model in the store (of one ``kind``: checkpoint, vae, lora or controlnet)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    return [e for e in scan_store().entries if kind is None or e.kind == kind]


def find(name_or_hash: str, kind: str | None = None) -> Entry:
    """The entry with this id (or file name, or SHA-256 / a prefix of 10+ hex digits of it; entries whose hash is
    not cached yet are hashed then, so give ``kind`` to hash only those).

    Raises ModelNotFound naming close ids and where models are looked for, or AmbiguousModel when different files
    share the id."""
    pool = entries(kind)
    key = name_or_hash.strip()
    matches = _by_hash(pool, key.lower()) if _HEX.match(key.lower()) else []
    if not matches:
        matches = ([e for e in pool if e.id == key] or [e for e in pool if e.id.lower() == key.lower()]
                   or [e for e in pool if _file_name(e) in (key, key.lower())])
    if not matches:
        raise ModelNotFound(_not_found(key, kind, pool))
    if len(matches) > 1 and len({e.size for e in matches}) == 1 and len({_hash(e) for e in matches}) == 1:
        return matches[0]  # copies of one file in several folders
    if len(matches) > 1:
        files = "; ".join(e.path for e in matches)
        raise AmbiguousModel(f"{len(matches)} different files answer to {key!r}: {files}; name one by its path or "
                             "SHA-256 (`iga models --hash` shows them), or give them distinct ids")
    return matches[0]


def model_path(value: str | Path) -> Path:
    """What ``--model`` names: an existing file or folder as given, else a checkpoint of the store by id or file
    name (``iga-demo-latent-v1``). ModelNotFound says where models are looked for."""
    p = Path(value).expanduser()
    if p.exists() or len(p.parts) > 1:
        return p
    try:
        return Path(find(str(value), kind="checkpoint").path)
    except ModelNotFound as e:
        raise ModelNotFound(f"{value} is not a file or folder here, nor a model id: {e}") from None


def lookup(key: str, kind: str, *, brief: bool = False) -> tuple[Entry | None, str | None]:
    """(the entry, None) or (None, why not: ``find``'s message, or with ``brief`` just "it is not in the model
    store" unless several files share the id). A bad config file is still an error (StoreConfigError)."""
    try:
        return find(key, kind), None
    except AmbiguousModel as e:
        return None, str(e)
    except ModelNotFound as e:
        return None, "it is not in the model store" if brief else str(e)


def _file_name(e: Entry) -> str:
    p = Path(e.path)
    return p.stem if e.format == "safetensors" else p.name


def _by_hash(pool: list[Entry], digest: str) -> list[Entry]:
    """Entries whose hash is or starts with ``digest``: cached hashes first; only then are the others hashed."""
    hit = [e for e in pool if (e.cached_sha256() or "").startswith(digest)]
    return hit or [e for e in pool if _hash(e).startswith(digest)]


def _hash(e: Entry) -> str:
    """The entry's hash, or "" when it cannot be read (a file that vanished or broke since the scan)."""
    try:
        return e.sha256()
    except (OSError, ValueError):
        return ""


def _not_found(key: str, kind: str | None, pool: list[Entry]) -> str:
    what = {"vae": "VAE", "lora": "LoRA", "controlnet": "ControlNet"}.get(kind or "", kind or "model")
    close = difflib.get_close_matches(key, sorted({e.id for e in pool}), n=5, cutoff=0.5)
    known = close or sorted({e.id for e in pool})[:8]
    listing = (f"; {'close' if close else 'known'} {what} ids: {', '.join(known)}" if known
               else f"; the store has no {what}s")
    return (f"no {what} {key!r} in the model store{listing}. Put the file in a models folder ({MODELS_ENV}, or "
            f"\"models\" in {config_path()}); `iga models` lists the store")
