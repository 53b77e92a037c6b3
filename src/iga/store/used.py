"""Where models are found again: the bundled models, the model store's folders, and every model the user has run,
indexed by hash.

An image names the model it was made with by name and hashes, and (for now) by the path it had on the maker's
machine. That path comes from a file anyone can write, so replay and the doctor never open it on their own: they
look the hash up here — the bundled models, then the models this user has run with `--model` (recorded by
the CLI), then (for files such as VAEs) the model store — and otherwise ask for `--model` (or an explicit
`--trust-path`).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

ENV = "IGA_MODEL_INDEX"
MAX_ENTRIES = 1000
MAX_INDEX_BYTES = 1 << 20


class ModelNotFound(ValueError):
    """The model an image or plan names is not known here; the message says how to point iga at it."""


def index_path() -> Path:
    """The index file: $IGA_MODEL_INDEX, else models.json in iga's user data folder."""
    from iga.paths import user_file

    return user_file(ENV, "data", "models.json")


def _read() -> dict[str, dict[str, str]]:
    path = index_path()
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a missing or damaged index only means models must be named again
    return {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("path"), str)} \
        if isinstance(data, dict) else {}


def remember(weights_sha256: str | None, path: str, name: str) -> None:
    """Record that the user ran these weights from ``path`` (best effort: an unwritable index is skipped)."""
    if not weights_sha256:
        return
    entries = _read()
    entry = {"path": str(Path(path).resolve()), "name": name}
    if entries.get(weights_sha256) == entry:
        return  # already known: no write on every load
    entries.pop(weights_sha256, None)
    entries[weights_sha256] = entry
    entries = dict(list(entries.items())[-MAX_ENTRIES:])
    try:
        from iga.checkpoint import write_bytes_atomic

        index_path().parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(str(index_path()), json.dumps(entries, indent=1).encode())
    except OSError:
        pass


def find_file(file_sha256: str | None, kind: str | None = None) -> str | None:
    """A file (e.g. a VAE) by the SHA-256 of its bytes, re-checked: one the user has used, else one in the model
    store whose hash is known, else (only with ``kind``: hashing every file would be far too slow) a store entry of
    that kind hashed now. None when unknown."""
    from iga.checkpoint.hashing import file_sha256 as hash_of

    if not file_sha256:
        return None
    known = _read().get(file_sha256)
    try:
        if known and Path(known["path"]).is_file() and hash_of(known["path"]) == file_sha256:
            return known["path"]
    except (OSError, ValueError):
        pass
    return _in_store(file_sha256, kind)


def _in_store(file_sha256: str, kind: str | None) -> str | None:
    from iga import store

    try:
        if kind is not None:
            return store.find(file_sha256, kind).path
        return next((e.path for e in store.entries() if e.cached_sha256() == file_sha256), None)
    except (OSError, ValueError):  # not there, a bad config file, or an unreadable entry: not found here
        return None


def file_again(recorded: str | None, sha256: str | None, kind: str, what: str, name: str | None, flag: str) -> str:
    """A file a plan used, found again: its recorded path while it still holds the recorded bytes, else a file with
    that hash this user has used or the model store holds. ValueError says how to point iga at it."""
    from iga.checkpoint.hashing import file_sha256 as hash_of

    if recorded and os.path.isfile(recorded):
        try:
            if sha256 is None or hash_of(recorded) == sha256:
                return recorded
        except (OSError, ValueError):
            pass
    found = find_file(sha256, kind=kind)
    if found is None:
        raise ValueError(f"{what} not found: {recorded or name} (file {str(sha256)[:12]}...); put it in a models "
                         f"folder (IGA_MODELS; `iga models` lists them) or use it once with {flag} PATH")
    return found


def vae_file(plan) -> str | None:
    """The VAE file a plan renders with (see ``file_again``); None for the checkpoint's own VAE."""
    vae = plan.vae
    if vae is None or vae.source != "file":
        return None
    return file_again(vae.path, vae.file_sha256, "vae", "VAE", vae.id, "--vae")


def lora_files(plan) -> tuple[tuple[str, str, float], ...]:
    """The LoRA files a plan renders with, as (file SHA-256, path, weight) (see ``file_again``)."""
    return tuple((u.file_sha256, file_again(u.path, u.file_sha256, "lora", "LoRA", u.name, "--lora"),
                  float(u.weight)) for u in getattr(plan, "loras", None) or ())


def control_files(plan) -> tuple[tuple[str, str], ...]:
    """The ControlNet weights files a plan renders with, as (file SHA-256, path) (see ``file_again``)."""
    return tuple((u.file_sha256, file_again(u.path, u.file_sha256, "controlnet", "ControlNet", u.name,
                                            "--controlnet")) for u in getattr(plan, "controls", None) or ())


def refiner_model(plan) -> str | None:
    """The refiner a plan's second stage runs on (None without one): a file or diffusers folder with the recorded
    weights hash, from the recorded path, the models this user has run, or the model store. Raises ValueError when
    it is not here."""
    ref = getattr(plan, "refiner", None)
    if ref is None:
        return None
    ident = ref.model
    known = _read().get(ident.weights_sha256 or "")

    def candidates():  # the store last: looking a hash up there may hash its checkpoints
        yield ident.path
        yield known and known["path"]
        digest = ident.file_sha256 or ident.weights_sha256  # the store knows a file by its bytes' hash
        yield _in_store(digest, "checkpoint") if digest else None

    for candidate in candidates():
        if candidate and _is_model_path(Path(candidate)) and _same_model(candidate, ident.weights_sha256):
            return candidate
    raise ValueError(f"refiner not found: {ident.name} (weights {str(ident.weights_sha256)[:12]}...); use it once "
                     "with --refiner PATH, or put it in a models folder (IGA_MODELS; `iga models` lists them)")


def _same_model(path: str, weights_sha256: str | None) -> bool:
    """A file's tensor-data hash or a diffusers folder's weights hash equals ``weights_sha256``."""
    from iga.checkpoint.hashing import folder_weights_sha256

    if Path(path).is_dir():
        try:
            return bool(weights_sha256) and folder_weights_sha256(path)[0] == weights_sha256
        except (OSError, ValueError):
            return False
    return bool(weights_sha256) and _same_weights(path, weights_sha256)


def _is_model_path(path: Path) -> bool:
    """A regular file or a folder (never a FIFO, device or socket, which could block or leak)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _same_weights(path: str, weights_sha256: str) -> bool:
    from iga.checkpoint.hashing import weights_sha256 as hash_of

    try:
        return Path(path).is_file() and hash_of(path) == weights_sha256
    except (OSError, ValueError):
        return False


def locate_model(name: str, weights_sha256: str | None, recorded_path: str | None, *, given: str | None = None,
                 trust_path: bool = False) -> str:
    """The model to re-run a plan on: ``given``, a bundled or previously run model with the same weights, or (only
    with ``trust_path``) the path the plan records."""
    if given is not None:
        if not _is_model_path(Path(given)):
            raise ModelNotFound(f"model {given} not found (or not a file or folder); pass --model PATH")
        return str(given)
    if weights_sha256:
        from iga.paths import bundled_models

        for bundled in bundled_models():
            if _same_weights(str(bundled), weights_sha256):
                return str(bundled)
        known = _read().get(weights_sha256)
        if known and _is_model_path(Path(known["path"])) and _same_weights(known["path"], weights_sha256):
            return known["path"]
    if trust_path and recorded_path:
        if _is_model_path(Path(recorded_path)):
            return recorded_path
        raise ModelNotFound(f"the recorded model path {recorded_path!r} is not a model file or folder here")
    short = (weights_sha256 or "unknown")[:12]
    raise ModelNotFound(f"the model {name!r} (weights {short}...) is not one iga has run here; pass --model PATH"
                        + (" (or --trust-path to open the path the image records)" if recorded_path else ""))
