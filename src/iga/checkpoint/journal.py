"""Undo journal for in-place header edits: the old header is made durable before the new one is written.

Where: ``<cache>/journal/<sha256 of the file's real path>.iga-undo`` (cache = ``$IGA_CACHE_DIR`` or
``platformdirs.user_cache_dir("iga")``), so nothing is left next to the user's models. If that folder cannot be
written, ``.<name>.iga-undo`` next to the file is used instead (and removed after the edit).

Why a kept, reused file: creating and deleting a file costs metadata commits (file system journal) that each take a
disk flush; overwriting a same-size existing file costs one data flush. A disarmed journal (magic ``IGADONE2``) is
rearmed by one write of the same size and disarmed by an 8-byte write that needs no flush (if that write is lost in a
crash, recovery finds the new header whole and just disarms it again).

Format: magic (``IGAUNDO2`` armed / ``IGADONE2`` done), u64 offset (always 8), u64 length N, u64 file size, u64 path
length, SHA-256 of the old header, SHA-256 of the new header, the file's real path (UTF-8), the old N header bytes.
A journal whose old-header hash does not match its bytes was itself cut short, so the header write (which only starts
after the journal is flushed) never began.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Literal

from iga.checkpoint import _io
from iga.checkpoint.errors import CheckpointWriteError, InterruptedEditError

ARMED = b"IGAUNDO2"
DONE = b"IGADONE2"
SUFFIX = ".iga-undo"
_FIXED = len(ARMED) + 32 + 64
_MAX_JOURNAL = _FIXED + 4096 * 4 + 100_000_000

Outcome = Literal["none", "discarded", "completed", "unchanged", "restored"]


def journal_locations(path: str | os.PathLike[str]) -> list[str]:
    """Where the journal of ``path`` may live, in the order they are tried."""
    p = os.fspath(path)
    real = os.path.realpath(p)
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:40]
    central = os.path.join(_io.cache_dir(), "journal", key + SUFFIX)
    beside = os.path.join(os.path.dirname(real), f".{os.path.basename(real)}{SUFFIX}")
    return [central, beside]


def armed_journal(path: str | os.PathLike[str]) -> str | None:
    """The journal of an unfinished in-place edit of ``path``, if there is one."""
    real = os.path.realpath(os.fspath(path))
    for jp in journal_locations(path):
        try:
            with open(jp, "rb") as f:
                head = f.read(_FIXED)
                if not head.startswith(ARMED) or len(head) < _FIXED:
                    continue
                _, _, _, plen = struct.unpack("<QQQQ", head[8:40])
                if plen > 4096 * 4:
                    return jp  # damaged: let recover() decide
                if f.read(plen).decode("utf-8", "surrogateescape") == real:
                    return jp
        except OSError:
            continue
    return None


@dataclass
class ArmedJournal:
    """An armed journal, open for disarming."""

    path: str
    fd: int
    beside: bool

    def disarm(self) -> None:
        """Mark the edit finished (no flush needed) and release the journal."""
        try:
            _io.pwrite_all(self.fd, DONE, 0)
        finally:
            os.close(self.fd)
        if self.beside:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def arm(path: str, old: bytes, new: bytes, file_size: int) -> ArmedJournal:
    """Write and flush the undo record of an edit of ``path`` (old N header bytes -> new); call before writing."""
    real = os.path.realpath(path).encode("utf-8", "surrogateescape")
    blob = b"".join(
        (
            ARMED,
            struct.pack("<QQQQ", 8, len(old), file_size, len(real)),
            hashlib.sha256(old).digest(),
            hashlib.sha256(new).digest(),
            real,
            old,
        )
    )
    errors = []
    for i, jp in enumerate(journal_locations(path)):
        try:
            if i == 0:
                os.makedirs(os.path.dirname(jp), exist_ok=True)
            fd = os.open(jp, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as e:
            errors.append(f"{jp}: {e.strerror}")
            continue
        try:
            created = os.fstat(fd).st_size == 0
            _io.pwrite_all(fd, blob, 0)
            _io.datasync(fd)  # a new or longer file: fdatasync also flushes its size
            if created:
                _io.fsync_dir(os.path.dirname(jp))
        except BaseException:
            os.close(fd)
            raise
        return ArmedJournal(jp, fd, beside=i == 1)
    raise CheckpointWriteError(
        "cannot write the undo journal (" + "; ".join(errors) + "); the file was not changed",
        path=path,
        hint="Make the iga cache folder ($IGA_CACHE_DIR) or the model's folder writable, or write a copy with -o.",
    )


def recover(path: str) -> Outcome:
    """Finish or undo an interrupted in-place edit of ``path`` from its journal (see embed.recover_interrupted_edit)."""
    jp = armed_journal(path)
    if jp is None:
        return "none"
    with open(jp, "r+b", buffering=0) as jf:
        blob = jf.read(_MAX_JOURNAL)
        parsed = _parse(blob)
        if parsed is None:
            _io.pwrite_all(jf.fileno(), DONE, 0)
            outcome: Outcome = "discarded"
        else:
            outcome = _apply(path, jp, *parsed)
            _io.pwrite_all(jf.fileno(), DONE, 0)
            _io.datasync(jf.fileno())
    if os.path.basename(jp).startswith("."):
        with contextlib.suppress(OSError):
            os.unlink(jp)
    return outcome


def _apply(path: str, jp: str, length: int, size: int, old_sha: bytes, new_sha: bytes, old: bytes) -> Outcome:
    with open(path, "r+b", buffering=0) as f, _io.exclusive_lock(f.fileno(), path):
        fd = f.fileno()
        now = os.fstat(fd).st_size
        if now != size:
            raise InterruptedEditError(
                f"the undo journal {jp} was written for a {size}-byte file, but the file now has {now} bytes; it "
                "was replaced after the interrupted edit",
                path=path,
                hint="Check the file with `iga inspect`, then delete the journal by hand.",
            )
        current = hashlib.sha256(_io.pread(fd, length, 8)).digest()
        if current == new_sha:
            return "completed"
        if current == old_sha:
            return "unchanged"
        _io.pwrite_all(fd, old, 8)
        os.fsync(fd)
        return "restored"


def _parse(blob: bytes) -> tuple[int, int, bytes, bytes, bytes] | None:
    if len(blob) < _FIXED or not blob.startswith(ARMED):
        return None
    offset, length, size, plen = struct.unpack("<QQQQ", blob[8:40])
    old_sha, new_sha = blob[40:72], blob[72:104]
    start = 104 + plen
    old = blob[start : start + length]
    if offset != 8 or len(old) != length or hashlib.sha256(old).digest() != old_sha:
        return None
    return length, size, old_sha, new_sha, old
