"""Embed, read and remove a recipe in a safetensors header, in place when it fits, else by an atomic streamed rewrite.

Where the recipe goes: the compact canonical JSON of the recipe is the string value of the single ``__metadata__`` key
``"iga.recipe"``. Values that ModelSpec also defines are mirrored into ``modelspec.*`` keys so other tools see them:
``modelspec.prediction_type`` (``eps`` -> ``epsilon``, ``v`` -> ``v``), ``modelspec.resolution`` (first preferred
resolution), ``modelspec.encoder_layer`` (clip skip) and ``modelspec.hash_sha256`` (``0x`` + weights SHA-256, only when
the recipe carries it). Every other metadata key, every tensor entry, every tensor byte and their order are kept.
Removing a recipe removes ``iga.recipe`` only; mirrored ``modelspec.*`` values stay (they are true statements about
the file, and iga cannot tell whether it or another tool wrote them).

Header form: it starts with ``{"`` (A1111 asserts it), ``__metadata__`` first, and its length N is a multiple of 8,
padded with trailing spaces only, so the data buffer stays 8-byte aligned.

In place (cost independent of file size): used when the new JSON fits in the old N (and N is a multiple of 8). The
data buffer does not move because ``data_offsets`` are relative to it. The scheme:

1. Build the new N-byte header and prove it before touching the file: it is parsed back with the same validator
   ``read_header`` uses (which accepts a strict subset of what the official ``safetensors`` library accepts; a
   differential property test checks that) and must describe exactly the same tensors.
2. Write the undo journal (old header bytes plus SHA-256 of old and new; see ``iga.checkpoint.journal``: kept in
   iga's cache folder and reused, so this is one data flush) and flush it.
3. Overwrite bytes [8, 8+N) with one positional write, fdatasync the file.
4. Disarm the journal (an 8-byte write, no flush needed).

Residual risk, stated honestly: a write of N bytes is not atomic. A power loss or kernel crash during it, or a
kill -9 that lands between two pages of a multi-page header (Linux checks for fatal signals between pages), can leave a
torn header that no reader accepts. The journal makes that recoverable: ``recover_interrupted_edit`` (``iga recover``,
and every later iga edit, automatically) restores the old header byte for byte, or closes the journal when the new
header landed whole. Until someone runs it, the official library cannot open a torn file. The window is the time of
one write of a few KiB. The journal is found through the cache folder, so recovery must see the same
``$IGA_CACHE_DIR`` as the interrupted edit. An exception during the write rolls the old header back at once. Readers
running concurrently may see the header change under them (as with any in-place edit). An advisory lock (flock)
keeps two iga edits of the same file from interleaving.

Termination: SIGTERM and SIGHUP (when their disposition is the default) are turned into an exception for the
duration of an edit, so the temp file is removed or the in-place write rolled back, and then the process dies by the
signal as asked. SIGKILL cannot be caught: a killed rewrite leaves its temp file ``.NAME.<pid>.<random>.iga-tmp``,
which the next edit of the same target removes once that pid is gone and no process holds the file's lock.

Rewrite (when the header grows past N, N is not a multiple of 8, or ``out=`` is given): the new header, with slack
reserved (max(16 KiB, 25% of the JSON), rounded to 8) so the next edit fits in place, and then the data buffer,
streamed with ``copy_file_range``/``sendfile`` (user-space 8 MiB buffers as a fallback; tensors are never loaded), into
a temp file in the destination folder, with writeback of each copied chunk started at once so the final fsync overlaps
the copy; fsync, atomic rename over the destination, fsync of the folder. Any failure
removes the temp file and leaves the original untouched. A rename gives the path a new inode: other hard links keep
the old content.

Every edit updates the file's mtime (never restored: A1111 caches hashes and headers by mtime).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from iga.checkpoint import _io, journal
from iga.checkpoint.errors import (
    CheckpointFileError,
    CheckpointWriteError,
    RecipeDecodeError,
    RecipeTooLargeError,
)
from iga.checkpoint.header import (
    MAX_HEADER_SIZE,
    SafetensorsHeader,
    _refuse_pickle_suffix,
    build_header_json,
    pad_header,
    parse_header_bytes,
    read_header,
    read_header_from_file,
    round_up8,
)

RECIPE_KEY = "iga.recipe"
"""The ``__metadata__`` key that holds the recipe JSON."""

MAX_RECIPE_BYTES = 1024 * 1024
"""Largest recipe (UTF-8 JSON bytes) iga writes or reads."""

MIN_SLACK = 16 * 1024
"""Smallest free space reserved after the header JSON on a rewrite."""

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """What a header edit did."""

    mode: Literal["in_place", "rewrite", "unchanged"]
    path: str
    """The file that now holds the new header."""
    bytes_written: int
    old_header_len: int
    new_header_len: int
    header_json_len: int

    @property
    def slack(self) -> int:
        """Free bytes left in the new header for future in-place edits."""
        return self.new_header_len - self.header_json_len


# --- public API ----------------------------------------------------------------------------------------------------


def embed_recipe(
    path: str | os.PathLike[str], recipe: Mapping[str, Any], out: str | os.PathLike[str] | None = None
) -> EmbedResult:
    """Store ``recipe`` under ``__metadata__["iga.recipe"]`` (plus ModelSpec mirrors); in place when it fits."""
    if not isinstance(recipe, Mapping):
        raise RecipeDecodeError(f"a recipe must be a JSON object, got {type(recipe).__name__}", path=path)
    from iga.recipe.canonical import canonical_json

    try:
        text = canonical_json(dict(recipe))
    except (TypeError, ValueError) as e:
        raise RecipeDecodeError(f"recipe cannot be written as JSON: {e}", path=path) from None
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeTooLargeError(
            f"recipe is {len(text):,} bytes of JSON, above the {MAX_RECIPE_BYTES:,}-byte limit", path=path
        )
    values = {RECIPE_KEY: text.decode("utf-8"), **modelspec_mirror(recipe)}
    return update_metadata(path, values, out=out)


def embed_recipe_with_hashes(
    path: str | os.PathLike[str], recipe: Mapping[str, Any], out: str | os.PathLike[str] | None = None
) -> tuple[EmbedResult, dict[str, str], list[str]]:
    """Embed ``recipe`` with fresh hashes: weights_sha256 of this file's tensor data and metadata_sha256 of the
    recipe without ``hashes``; returns (result, hashes, warnings). The one way iga embeds a recipe it vouches for."""
    from iga.checkpoint.hashing import weights_sha256
    from iga.recipe.canonical import recipe_metadata_sha256

    warnings: list[str] = []
    weights = weights_sha256(path)
    hashes = dict(recipe.get("hashes") or {})
    old = hashes.get("weights_sha256")
    if old and old != weights:
        warnings.append(f"the recipe's hashes.weights_sha256 ({old[:12]}...) is not this file's ({weights[:12]}...); "
                        "replaced it")
    body = {k: v for k, v in recipe.items() if k != "hashes"}
    hashes["weights_sha256"] = weights
    hashes["metadata_sha256"] = recipe_metadata_sha256(body)
    # the header as it will be once written: this file's tensors and metadata plus the recipe's modelspec mirror
    from iga.checkpoint.hashing import index_sha256

    header = read_header(path)
    hashes.pop("header_sha256", None)
    final_meta = {**header.metadata, **modelspec_mirror({**body, "hashes": hashes})}
    hashes["header_sha256"] = index_sha256(header.tensors, final_meta)
    return embed_recipe(path, {**body, "hashes": hashes}, out=out), hashes, warnings


def remove_recipe(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> EmbedResult:
    """Remove ``__metadata__["iga.recipe"]`` (mirrored ``modelspec.*`` keys stay); in place."""
    return update_metadata(path, remove=(RECIPE_KEY,), out=out)


def read_recipe_dict(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The recipe embedded in a safetensors file as a plain dict, or None when there is none."""
    header = read_header(path)
    return recipe_from_metadata(header.metadata, path=os.fspath(path))


def recipe_from_metadata(metadata: Mapping[str, str], *, path: str | None = None) -> dict[str, Any] | None:
    """Decode ``metadata["iga.recipe"]`` (None when absent); refuses recipes over 1 MiB or that are not objects."""
    text = metadata.get(RECIPE_KEY)
    if text is None:
        return None
    return parse_recipe_json(text, path=path, where="__metadata__['iga.recipe']")


def parse_recipe_json(text: str | bytes, *, path: str | None = None, where: str = "recipe") -> dict[str, Any]:
    """Parse recipe JSON defensively: size limit, no duplicate keys, no NaN, must be an object."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeTooLargeError(
            f"{where} is {len(raw):,} bytes, above the {MAX_RECIPE_BYTES:,}-byte limit for a recipe", path=path
        )
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_pairs_strict, parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise RecipeDecodeError(f"{where} is not valid UTF-8 (byte {e.start})", path=path) from None
    except json.JSONDecodeError as e:
        raise RecipeDecodeError(
            f"{where} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}",
            path=path,
            hint="Re-embed the recipe with `iga embed`.",
        ) from None
    except (ValueError, RecursionError) as e:
        raise RecipeDecodeError(f"{where} is not valid JSON: {e}", path=path) from None
    if not isinstance(obj, dict):
        raise RecipeDecodeError(f"{where} must be a JSON object, found {type(obj).__name__}", path=path)
    return obj


def modelspec_mirror(recipe: Mapping[str, Any]) -> dict[str, str]:
    """The ``modelspec.*`` values a recipe implies, only for keys ModelSpec defines."""
    out: dict[str, str] = {}
    pt = recipe.get("prediction_type")
    if pt == "eps":
        out["modelspec.prediction_type"] = "epsilon"
    elif pt == "v":
        out["modelspec.prediction_type"] = "v"
    res = recipe.get("resolution")
    if isinstance(res, Mapping):
        preferred = res.get("preferred")
        if isinstance(preferred, list | tuple) and preferred:
            first = preferred[0]
            if isinstance(first, str) and first:
                out["modelspec.resolution"] = first
            elif isinstance(first, list | tuple) and len(first) == 2 and all(type(v) is int for v in first):
                out["modelspec.resolution"] = f"{first[0]}x{first[1]}"
    clip_skip = recipe.get("clip_skip")
    if type(clip_skip) is int:
        out["modelspec.encoder_layer"] = str(clip_skip)
    hashes = recipe.get("hashes")
    if isinstance(hashes, Mapping):
        w = hashes.get("weights_sha256")
        if isinstance(w, str) and _HEX64.match(w):
            out["modelspec.hash_sha256"] = "0x" + w.lower()
    return out


def update_metadata(
    path: str | os.PathLike[str],
    set: Mapping[str, str] | None = None,  # noqa: A002 - mirrors dict.update vocabulary
    remove: Iterable[str] = (),
    out: str | os.PathLike[str] | None = None,
) -> EmbedResult:
    """Set and remove ``__metadata__`` keys; tensors untouched. In place when it fits, else streamed and atomic."""
    src = os.fspath(path)
    _refuse_pickle_suffix(src)
    dest = os.fspath(out) if out is not None else None
    if dest is not None and os.path.exists(dest) and os.path.exists(src) and os.path.samefile(src, dest):
        dest = None
    if journal.armed_journal(src) is not None:
        recover_interrupted_edit(src)
    _io.remove_stale_temps(dest or src)  # left by an embed killed with SIGKILL (its pid is gone, its lock released)
    with _io.cleanup_on_termination():  # SIGTERM/SIGHUP: remove the temp file / roll back, then die by the signal
        return _update_locked(src, dest, set, remove)


def _update_locked(
    src: str, dest: str | None, set: Mapping[str, str] | None, remove: Iterable[str]  # noqa: A002
) -> EmbedResult:
    try:
        f = open(src, "rb" if dest is not None else "r+b", buffering=0)
    except FileNotFoundError:
        raise CheckpointFileError("no such file", path=src, hint="Check the path.") from None
    except IsADirectoryError:
        raise CheckpointFileError("is a directory, not a .safetensors file", path=src) from None
    except PermissionError:
        raise CheckpointFileError(
            "permission denied (iga needs write access to edit the header)",
            path=src,
            hint="Check the file's permissions, or write a copy with -o/--out.",
        ) from None
    with f, _io.exclusive_lock(f.fileno(), src):
        header = read_header_from_file(f, src)
        metadata = dict(header.metadata)
        for k in remove:
            metadata.pop(k, None)
        for k, v in (set or {}).items():
            metadata[k] = v
        tensors = list(header.tensor_map().values())  # header order
        new_json = build_header_json(metadata, tensors)
        if dest is None and metadata == dict(header.metadata) and header.has_metadata_key == bool(metadata):
            return EmbedResult("unchanged", src, 0, header.header_len, header.header_len, header.json_len)
        if dest is None and len(new_json) <= header.header_len and header.header_len % 8 == 0:
            return _edit_in_place(f.fileno(), src, header, new_json, metadata)
        return _rewrite(f.fileno(), src, dest or src, header, new_json, metadata)


def recover_interrupted_edit(path: str | os.PathLike[str]) -> str:
    """Finish or undo an interrupted in-place edit from its journal; returns what happened.

    ``"none"`` (no journal), ``"discarded"`` (journal incomplete: the header was never touched), ``"completed"`` (the
    new header had landed whole), ``"unchanged"`` (the old header was still there), ``"restored"`` (a torn header was
    replaced by the old one).
    """
    src = os.fspath(path)
    if not os.path.isfile(src):
        raise CheckpointFileError("no such file", path=src, hint="Check the path.")
    return journal.recover(src)


# --- implementation ------------------------------------------------------------------------------------------------


def _prove(new_header: bytes, file_size: int, old: SafetensorsHeader, metadata: dict[str, str], path: str) -> None:
    """Parse the new header with the reader's own validator; it must describe the same tensors and the new metadata."""
    check = parse_header_bytes(new_header, file_size, path=path)
    if check.tensors != old.tensors or dict(check.metadata) != metadata or not new_header.startswith(b'{"'):
        raise CheckpointWriteError(  # pragma: no cover - would be a bug in build_header_json
            "internal error: the rebuilt header does not describe the same tensors; nothing was written", path=path
        )


def _edit_in_place(
    fd: int, path: str, header: SafetensorsHeader, new_json: bytes, metadata: dict[str, str]
) -> EmbedResult:
    from iga.checkpoint import hashing

    n = header.header_len
    new_header = pad_header(new_json, n)
    _prove(new_header, header.file_size, header, metadata, path)
    old_header = _io.pread(fd, n, 8)
    before = os.fstat(fd)
    armed = journal.arm(path, old_header, new_header, header.file_size)
    try:
        _io.pwrite_all(fd, new_header, 8)
        _io.datasync(fd)  # same size, data only: the mtime change need not be durable
    except BaseException:
        # Roll back at once; if even that fails the journal stays armed for recover_interrupted_edit.
        try:
            _io.pwrite_all(fd, old_header, 8)
            _io.datasync(fd)
        except BaseException:
            os.close(armed.fd)
            raise
        armed.disarm()
        raise
    armed.disarm()
    hashing.note_header_edit(path, before, os.fstat(fd))
    return EmbedResult("in_place", path, n, n, n, len(new_json))


def _rewrite(
    fd: int, src: str, dest: str, header: SafetensorsHeader, new_json: bytes, metadata: dict[str, str]
) -> EmbedResult:
    from iga.checkpoint import hashing

    json_len = len(new_json)
    new_n = round_up8(json_len + max(MIN_SLACK, json_len // 4))
    if new_n > MAX_HEADER_SIZE:
        raise CheckpointWriteError(
            f"the new header would be {new_n:,} bytes, above the {MAX_HEADER_SIZE:,}-byte limit of the format",
            path=src,
            hint="Remove large metadata values (thumbnails, tag frequencies).",
        )
    total = 8 + new_n + header.data_len
    new_header = pad_header(new_json, new_n)
    _prove(new_header, total, header, metadata, src)
    dest_dir = os.path.dirname(os.path.abspath(dest))
    _io.check_free_space(dest_dir, total, dest)
    before = os.fstat(fd)
    with _io.atomic_output(dest, mode_from=stat.S_IMODE(before.st_mode)) as (dfd, _tmp):
        _io.pwrite_all(dfd, struct.pack("<Q", new_n) + new_header, 0)
        _io.copy_range(fd, dfd, header.data_start, 8 + new_n, header.data_len)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise CheckpointFileError(
                "the source file changed while it was being copied; nothing was written", path=src, hint="Retry."
            )
        written = os.fstat(dfd).st_size
        if written != total:
            raise CheckpointWriteError(f"the copy is {written:,} bytes, expected {total:,}; nothing was replaced")
    with contextlib.suppress(OSError):
        hashing.note_header_edit(dest, before, os.stat(dest))
    return EmbedResult("rewrite", dest, total, header.header_len, new_n, json_len)


def _pairs_strict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
    return d


def _no_constant(s: str) -> Any:
    raise ValueError(f"{s} is not valid JSON")
