"""Checkpoint hashes (weights SHA-256, file SHA-256, AutoV2, AutoV3), streamed and cached.

- ``weights_sha256``: SHA-256 of the tensor data, i.e. every byte after ``8 + N``. Editing metadata never changes
  it. It equals kohya's ``sshs_model_hash``, ModelSpec ``hash_sha256`` (without ``0x``) and the hash behind Civitai's
  AutoV3. Bytes are hashed in file order (the stored data buffer), which is the only order every tool agrees on.
- ``file_sha256``: SHA-256 of the whole file (Civitai "SHA256"); ``autov2`` is its first 10 hex digits (A1111
  "Model hash"). Any header edit changes these.
- ``autov3``: first 12 hex digits of ``weights_sha256``.

Results are cached in ``hashes.json`` under ``platformdirs.user_cache_dir("iga")`` or ``$IGA_CACHE_DIR``, keyed by
(real path, kind) and valid only while (size, mtime_ns, inode) are unchanged. The cache is written atomically; a
corrupt or unreadable cache is ignored, and a read-only cache folder only costs the cache. iga's own header edits
carry a cached weights hash over to the edited file (its tensor bytes are unchanged) and drop the file hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from iga.checkpoint import _io
from iga.checkpoint.errors import CheckpointFileError
from iga.checkpoint.header import read_header

CACHE_ENV = _io.CACHE_ENV
CACHE_FILE = "hashes.json"
CACHE_VERSION = 2  # 2: entries carry a sampled-block fingerprint (size, mtime and inode alone miss `touch -r`)
FINGERPRINT_BLOCKS = 16
FINGERPRINT_BLOCK = 4096
# What header_sha256 leaves out: the recipe (metadata_sha256 covers it) and a signature over both.
NOT_IN_HEADER_HASH = ("iga.recipe", "iga.signature")
MAX_CACHE_ENTRIES = 4096
_MAX_CACHE_BYTES = 16 * 1024 * 1024

HASH_BUFFER_SIZE = 1024 * 1024
"""Read size for hashing. Measured (SHA-NI Xeon, page cache warm): 128 KiB-1 MiB hash about 3% faster than 8 MiB,
because the buffer stays in L2 between the copy from the page cache and the hash; syscall cost is negligible."""


@dataclass(frozen=True, slots=True)
class HashResult:
    """Hashes of one checkpoint file (None for kinds not computed)."""

    weights_sha256: str | None
    file_sha256: str | None

    @property
    def autov2(self) -> str | None:
        """A1111 "Model hash": first 10 hex of the full-file SHA-256."""
        return self.file_sha256[:10] if self.file_sha256 else None

    @property
    def autov3(self) -> str | None:
        """Civitai AutoV3: first 12 hex of the tensor-data SHA-256."""
        return self.weights_sha256[:12] if self.weights_sha256 else None

    def to_dict(self) -> dict[str, str | None]:
        """Plain dict for JSON output."""
        return {
            "weights_sha256": self.weights_sha256,
            "file_sha256": self.file_sha256,
            "autov2": self.autov2,
            "autov3": self.autov3,
        }


def weights_sha256(path: str | os.PathLike[str], *, use_cache: bool = True) -> str:
    """SHA-256 (hex) of the tensor data, the bytes after the header (= sshs_model_hash, ModelSpec hash_sha256)."""
    h = compute_hashes(path, weights=True, file=False, use_cache=use_cache).weights_sha256
    assert h is not None
    return h


def file_sha256(path: str | os.PathLike[str], *, use_cache: bool = True) -> str:
    """SHA-256 (hex) of the whole file (any file type; nothing is parsed)."""
    h = compute_hashes(path, weights=False, file=True, use_cache=use_cache).file_sha256
    assert h is not None
    return h


def cached_hashes(paths: list[str], kind: str = "file") -> dict[str, str | None]:
    """The cached ``kind`` hash ("file" or "weights") of each path while still valid, else None: never reads more
    than a fingerprint of a file, so listings can show hashes without hashing."""
    cache = _Cache.load()
    out: dict[str, str | None] = {}
    for p in paths:
        real = os.path.realpath(p)
        try:
            out[p] = cache.get(real, kind, os.stat(real))
        except OSError:
            out[p] = None
    return out


def autov2(path: str | os.PathLike[str], *, use_cache: bool = True) -> str:
    """A1111 "Model hash" (AutoV2): first 10 hex digits of the full-file SHA-256."""
    return file_sha256(path, use_cache=use_cache)[:10]


def autov3(path: str | os.PathLike[str], *, use_cache: bool = True) -> str:
    """Civitai AutoV3: first 12 hex digits of the tensor-data SHA-256."""
    return weights_sha256(path, use_cache=use_cache)[:12]


def compute_hashes(
    path: str | os.PathLike[str], *, weights: bool = True, file: bool = True, use_cache: bool = True
) -> HashResult:
    """Compute the requested hashes in one streaming pass (cached ones are not recomputed)."""
    p = os.fspath(path)
    real = os.path.realpath(p)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise CheckpointFileError("no such file", path=p, hint="Check the path.") from None
    cache = _Cache.load() if use_cache else None
    results: dict[str, str | None] = {"weights": None, "file": None}
    wanted = [k for k, on in (("weights", weights), ("file", file)) if on]
    missing = []
    for kind in wanted:
        hit = cache.get(real, kind, st) if cache else None
        if hit:
            results[kind] = hit
        else:
            missing.append(kind)
    if missing:
        data_start = read_header(p).data_start if "weights" in missing else 0
        computed = _stream_hashes(real, data_start if "weights" in missing else None, "file" in missing, st)
        # the weights fingerprint samples the tensor data only, so a header edit keeps the cached weights hash
        starts = {"weights": data_start, "file": 0}
        results.update(computed)
        if cache is not None:
            for kind in missing:
                cache.put(real, kind, st, computed[kind], starts[kind])
            cache.save()
    return HashResult(weights_sha256=results["weights"], file_sha256=results["file"])


def _stream_hashes(path: str, data_start: int | None, whole: bool, st: os.stat_result) -> dict[str, str]:
    """One sequential read of the file feeding the requested hashers from a reused buffer."""
    hw = hashlib.sha256() if data_start is not None else None
    hf = hashlib.sha256() if whole else None
    buf = bytearray(HASH_BUFFER_SIZE)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        if hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        pos = 0
        if hf is None and data_start is not None:
            f.seek(data_start)
            pos = data_start
        while True:
            n = f.readinto(buf)
            if not n:
                break
            chunk = view[:n]
            if hf is not None:
                hf.update(chunk)
            if hw is not None:
                end = pos + n
                if end > data_start:  # type: ignore[operator]
                    hw.update(chunk[max(0, data_start - pos) :] if pos < data_start else chunk)  # type: ignore[operator]
            pos += n
        after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or pos != st.st_size:
        raise CheckpointFileError("the file changed while it was being hashed", path=path, hint="Retry.")
    out: dict[str, str] = {}
    if hw is not None:
        out["weights"] = hw.hexdigest()
    if hf is not None:
        out["file"] = hf.hexdigest()
    return out


def note_header_edit(path: str | os.PathLike[str], before: os.stat_result, after: os.stat_result) -> None:
    """After iga rewrote only the header: keep a cached weights hash for the new stat, drop the file hash."""
    real = os.path.realpath(os.fspath(path))
    cache = _Cache.load()
    if not cache.entries:
        return
    start = read_header(real).data_start  # a rewrite may have moved the data: fingerprint where it is now
    weights = cache.get(real, "weights", before, start)
    cache.drop(real)
    if weights:
        cache.put(real, "weights", after, weights, start)
    cache.save()


def folder_weights_sha256(folder: str | os.PathLike[str], *, use_cache: bool = True) -> tuple[str, list[str]]:
    """A diffusers folder's weights hash: SHA-256 over "relative/path weights_sha256" lines of every .safetensors
    file in it (sorted), and the files it covers — so an image made from a folder is tied to its weights too."""
    root = os.fspath(folder)
    files = [os.path.relpath(f, root) for f in folder_weights_files(root)]
    lines = "".join(f"{rel} {weights_sha256(os.path.join(root, rel), use_cache=use_cache)}\n" for rel in files)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest(), files


def folder_weights_files(folder: str | os.PathLike[str]) -> list[str]:
    """The .safetensors files a diffusers folder's weights hash covers, sorted by their path inside it."""
    root = os.fspath(folder)
    return [os.path.join(root, rel) for rel in sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names
        if f.endswith(".safetensors"))]


def fingerprint(path: str, size: int, start: int = 0) -> str:
    """SHA-256 of FINGERPRINT_BLOCKS blocks spread evenly over bytes [start, size) (first and last included): a
    cached hash is only reused when these bytes are unchanged too, so an edit that keeps size and mtime (`touch -r`)
    is caught whenever it touches a sampled block. 64 KiB read per check; `--rehash` recomputes everything."""
    h = hashlib.sha256()
    span = max(0, size - start)
    step = max(FINGERPRINT_BLOCK, (span - FINGERPRINT_BLOCK) // max(1, FINGERPRINT_BLOCKS - 1))
    try:
        with open(path, "rb") as f:
            for k in range(FINGERPRINT_BLOCKS):
                offset = start + min(k * step, max(0, span - FINGERPRINT_BLOCK))
                f.seek(offset)
                h.update(f.read(FINGERPRINT_BLOCK))
    except OSError:
        return ""
    return h.hexdigest()


def header_sha256(source: Any) -> str:
    """SHA-256 of everything in the header that can change an image but is not the recipe: each tensor's name,
    dtype, shape and byte range, and the metadata other than NOT_IN_HEADER_HASH (a network config, ...).

    ``source``: a parsed header or a path. Swapping two same-shaped tensors' offsets changes it; padding does not.
    """
    from iga.checkpoint.header import SafetensorsHeader

    header = source if isinstance(source, SafetensorsHeader) else read_header(source)
    return index_sha256(header.tensors, header.metadata)


def index_sha256(tensors: Any, metadata: Any) -> str:
    """header_sha256 of a tensor index and metadata (what a header will hold once written)."""
    metadata = {k: v for k, v in metadata.items() if k not in NOT_IN_HEADER_HASH}
    index = sorted([t.name, t.dtype, list(t.shape), list(t.data_offsets)] for t in tensors)
    text = json.dumps({"tensors": index, "metadata": metadata}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_dir() -> str:
    """Folder of iga's cache: $IGA_CACHE_DIR, else platformdirs.user_cache_dir('iga')."""
    return _io.cache_dir()


class _Cache:
    """A small JSON map: "kind\\0realpath" -> {size, mtime_ns, inode, sha256, used}."""

    def __init__(self, path: str, entries: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self.entries = entries
        self.dirty = False

    @classmethod
    def load(cls) -> _Cache:
        path = os.path.join(cache_dir(), CACHE_FILE)
        entries: dict[str, dict[str, Any]] = {}
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_CACHE_BYTES + 1)
            if len(raw) <= _MAX_CACHE_BYTES:
                obj = json.loads(raw)
                if isinstance(obj, dict) and obj.get("version") == CACHE_VERSION and isinstance(obj.get("entries"), dict):
                    entries = {k: v for k, v in obj["entries"].items() if isinstance(v, dict)}
        except (OSError, ValueError):
            entries = {}  # a missing or corrupt cache is just empty
        return cls(path, entries)

    @staticmethod
    def _key(real: str, kind: str) -> str:
        return f"{kind}\0{real}"

    def get(self, real: str, kind: str, st: os.stat_result, start: int | None = None) -> str | None:
        """The cached hash when stat and fingerprint still match (``start``: where the fingerprinted bytes begin
        now, when an edit moved them; default the start recorded with the entry)."""
        e = self.entries.get(self._key(real, kind))
        if (
            e
            and e.get("size") == st.st_size
            and e.get("mtime_ns") == st.st_mtime_ns
            and e.get("inode") == st.st_ino
            and isinstance(e.get("start"), int)
            and e.get("fingerprint") == fingerprint(real, st.st_size, e["start"] if start is None else start)
            and isinstance(e.get("sha256"), str)
            and len(e["sha256"]) == 64
        ):
            return str(e["sha256"])
        return None

    def put(self, real: str, kind: str, st: os.stat_result, sha: str, start: int = 0) -> None:
        self.entries[self._key(real, kind)] = {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino,
            "start": start,  # where the fingerprinted bytes begin (the tensor data for weights)
            "fingerprint": fingerprint(real, st.st_size, start),
            "sha256": sha,
            "used": time.time(),
        }
        self.dirty = True

    def drop(self, real: str) -> None:
        for kind in ("weights", "file"):
            if self.entries.pop(self._key(real, kind), None) is not None:
                self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        if len(self.entries) > MAX_CACHE_ENTRIES:
            keep = sorted(self.entries.items(), key=lambda kv: kv[1].get("used", 0), reverse=True)
            self.entries = dict(keep[:MAX_CACHE_ENTRIES])
        data = json.dumps({"version": CACHE_VERSION, "entries": self.entries}, sort_keys=True).encode("utf-8")
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            _io.write_bytes_atomic(self.path, data, durable=False)  # a cache: atomic, not worth an fsync
