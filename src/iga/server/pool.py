"""The models a server offers: found once in a folder, described without loading, loaded on first use and kept
(least recently used evicted beyond a count). Models are named by id (a file or folder name in the models folder),
never by path: a name that is not in the folder is an error, so no request can open a file of its choosing."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iga.guard.source import ModelSource, describe_model

MAX_MODELS = 500  # a folder with more entries is scanned up to here (each is described at start-up)


class UnknownModel(LookupError):
    """A model name that is not among the server's models; the message lists what is."""


@dataclass
class ModelEntry:
    """One model of the folder, described (recipe, identity, hashes) but not loaded."""

    id: str  # the file or folder name inside the models folder
    path: Path
    source: ModelSource
    lock: threading.Lock = field(default_factory=threading.Lock)  # one generation at a time per model
    seconds_per_call: float | None = None  # measured: sampling seconds per model call (for expected times)
    knobs: dict | None = None  # the guard's verdict on every sampler and schedule (iga.server.recipes)
    preset_plans: dict | None = None  # each preset as the guard resolves it (iga.server.recipes)

    @property
    def short_hash(self) -> str:
        return (self.source.identity.weights_sha256 or "")[:10]

    @property
    def title(self) -> str:
        """A1111's model title: "name.safetensors [hash10]"."""
        return f"{self.id} [{self.short_hash}]" if self.short_hash else self.id

    def observe(self, seconds: float, calls: int) -> None:
        """Fold one job's sampling time into the running estimate (recent jobs weigh more)."""
        if calls > 0 and seconds > 0:
            per = seconds / calls
            self.seconds_per_call = per if self.seconds_per_call is None else 0.7 * self.seconds_per_call + 0.3 * per


def _candidates(folder: Path) -> list[Path]:
    """Single-file checkpoints and diffusers folders directly inside ``folder`` (sorted, bounded)."""
    found = [p for p in sorted(folder.iterdir())
             if (p.is_file() and p.suffix == ".safetensors") or (p.is_dir() and (p / "model_index.json").is_file())]
    return found[:MAX_MODELS]


class ModelPool:
    """The server's models: ``entry(name)`` finds one, ``model(entry)`` loads (or reuses) it."""

    def __init__(self, folder: Path | None, *, default: str | None = None, max_loaded: int = 2):
        from iga.paths import DEMO_MODEL

        self.folder = Path(folder) if folder is not None else DEMO_MODEL.parent
        self.max_loaded = max_loaded
        self.entries: dict[str, ModelEntry] = {}
        self.skipped: list[tuple[str, str]] = []  # (name, why): files that are not generative checkpoints
        for path in _candidates(self.folder):
            try:
                source = describe_model(path)
            except Exception as e:  # a damaged file must not keep the others from being served
                self.skipped.append((path.name, str(e)))
                continue
            if source.identity.architecture == "unknown":
                self.skipped.append((path.name, "not a diffusion checkpoint iga recognises"))
                continue
            self.entries[path.name] = ModelEntry(path.name, path, source)
        if not self.entries:
            raise ValueError(f"no diffusion checkpoints in {self.folder} (looked for .safetensors files and diffusers "
                             f"folders{'; skipped: ' + ', '.join(n for n, _ in self.skipped) if self.skipped else ''})")
        self.current = self._pick_default(default, DEMO_MODEL.name)
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._load_lock = threading.Lock()

    def _pick_default(self, default: str | None, demo: str) -> str:
        if default is not None:
            return self.entry(default).id
        return demo if demo in self.entries else next(iter(self.entries))

    def entry(self, name: str | None) -> ModelEntry:
        """The model named by id, A1111 title ("id [hash]"), name without extension, or weights hash prefix
        (None: the current model)."""
        if name is None or name == "":
            return self.entries[self.current]
        if not isinstance(name, str) or len(name) > 512:
            raise UnknownModel("a model name must be a string of at most 512 characters")
        key = name.strip()
        if key.endswith("]") and " [" in key:
            key = key[:key.rindex(" [")]
        if key in self.entries:
            return self.entries[key]
        for e in self.entries.values():
            sha = e.source.identity.weights_sha256 or ""
            if key in (e.path.stem, e.source.identity.name) or (len(key) >= 8 and sha.startswith(key.lower())):
                return e
        kind = "a path" if any(c in name for c in "/\\") or ".." in name else "not a model here"
        raise UnknownModel(f"model {name!r} is {kind}: name one of {', '.join(sorted(self.entries))} (GET "
                           f"/sdapi/v1/sd-models lists them; models are named, never opened by path)")

    def model(self, entry: ModelEntry):
        """The loaded ``iga.generate.Model`` of an entry; loads it (weights lazily) and evicts the least recently
        used model beyond ``max_loaded``."""
        from iga.generate import Model

        with self._load_lock:
            m = self._loaded.pop(entry.id, None)
            if m is None:
                m = Model(entry.path, source=entry.source)  # described once at start-up, not read again
            self._loaded[entry.id] = m
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
            return m

    def is_loaded(self, entry: ModelEntry) -> bool:
        return entry.id in self._loaded
