"""The override audit log: one JSON object per line, append-only, safe under concurrent writers.

Every append is written under an exclusive ``flock`` on a descriptor opened with O_APPEND (never O_TRUNC), then
fsync'd: concurrent processes cannot interleave or lose lines. Each append lands whole or not at all: when a write
or its fsync fails (a full disk: ENOSPC), the file is cut back to its size before the append and
:class:`AuditLogError` is raised. A torn tail left by a crash or an older iga (a last line without its newline that is
not JSON) is cut away, under the lock, before the next append, with an :class:`AuditLogRepairWarning`. iga never
truncates anything else. Default path: ``<user data dir>/iga/audit.jsonl``; override with the ``IGA_AUDIT_LOG``
environment variable or the ``path`` argument. A path that is a directory, a FIFO or another non-regular file, or
that cannot be written, raises :class:`AuditLogError` (never blocks, never a bare OSError).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Iterator

from .plan import Plan

MAX_LINE = 1 << 20  # a record larger than this is a bug, not an override
_TAIL_SCAN = MAX_LINE + 2  # a torn tail is at most one record long
ENV = "IGA_AUDIT_LOG"
_FIX = f"set {ENV} to a writable file path (e.g. {ENV}=~/iga-audit.jsonl), or fix the file's permissions"
_HINT = _FIX[0].upper() + _FIX[1:]


class AuditLogError(Exception):
    """The audit log cannot be written (or read): says what, where and how to fix it. Nothing was recorded."""

    def __init__(self, message: str, *, path: str | os.PathLike[str], hint: str = _HINT) -> None:
        self.path = os.fspath(path)
        self.message = message
        self.hint = hint
        super().__init__(f"audit log {self.path}: {message}. {hint}." if hint else f"audit log {self.path}: {message}.")


class AuditLogRepairWarning(UserWarning):
    """A torn last record (left by a crash or a full disk) was removed from the audit log; show it to the user."""


def default_audit_path() -> Path:
    """Where the audit log lives unless told otherwise."""
    from iga.paths import user_file

    return user_file(ENV, "data", "audit.jsonl")


def append_records(records: list[dict[str, Any]], path: str | Path | None = None) -> Path:
    """Append records to the audit log, all or none (one locked append, cut back on failure); return the path."""
    p = Path(path) if path is not None else default_audit_path()
    if not records:
        return p
    data = b"".join(json.dumps(r, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() + b"\n"
                    for r in records)
    if len(data) > MAX_LINE * len(records):
        raise ValueError("audit record too large")
    fd = _open_for_append(p)
    try:
        with _locked(fd):
            _repair_torn_tail(fd, p)
            _append_whole(fd, p, data)
    except OSError as e:  # the lock or the repair failed (ENOLCK on some network mounts, a full disk)
        raise AuditLogError(f"cannot be written ({e.strerror or e}); nothing was recorded", path=p) from None
    finally:
        os.close(fd)
    return p


def record_plan_overrides(plan: Plan, path: str | Path | None = None, *, action: str = "plan") -> Path | None:
    """Append one audit record per override in the plan; return the log path (None when there were none)."""
    if not plan.overrides:
        return None
    base = {"action": action, "model": plan.model.name, "weights_sha256": plan.model.weights_sha256,
            "seed": plan.seed, "iga_version": plan.iga_version}
    return append_records([{**base, **o.model_dump(mode="json")} for o in plan.overrides], path)


def read_records(path: str | Path | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of an audit log; a damaged line raises ValueError naming its line number.

    An unterminated last line that is not JSON is a torn (or still being written) record: it is skipped with an
    :class:`AuditLogRepairWarning`, never silently. Readers take no lock, so they never delay a writer.
    """
    p = Path(path) if path is not None else default_audit_path()
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return
    except OSError as e:
        raise AuditLogError(f"cannot be read ({e.strerror})", path=p) from None
    _require_regular(st.st_mode, p)
    with p.open("rb") as f:
        for i, line in enumerate(f, 1):
            if len(line) > MAX_LINE:
                raise ValueError(f"{p}:{i}: line longer than {MAX_LINE} bytes")
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                if not line.endswith(b"\n"):
                    warnings.warn(f"{p}:{i}: skipped a torn last record ({len(line)} bytes without a newline)",
                                  AuditLogRepairWarning, stacklevel=2)
                    return
                raise ValueError(f"{p}:{i}: not a JSON record ({e.msg})") from None


def tail_records(n: int, path: str | Path | None = None) -> list[dict[str, Any]]:
    """The last ``n`` records of an audit log, oldest first, read from the end of the file (a long log is not read
    whole for its tail). A torn last record is left out; a damaged line among them raises ValueError."""
    p = Path(path) if path is not None else default_audit_path()
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise AuditLogError(f"cannot be read ({e.strerror})", path=p) from None
    _require_regular(st.st_mode, p)
    block, data = 64 * 1024, b""
    with p.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0 and data.count(b"\n") <= n and end - pos < (n + 1) * MAX_LINE:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece may be the end of an earlier record
    complete = lines[:-1]  # after the last newline: nothing, or a torn record
    out = []
    for line in complete[-n:] if n > 0 else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: a record near the end is not JSON ({e.msg})") from None
    return out


# --- implementation ------------------------------------------------------------------------------------------------


def _require_regular(mode: int, p: Path) -> None:
    """Refuse anything but a regular file: a directory fails confusingly, a FIFO would block or swallow records."""
    if stat.S_ISREG(mode):
        return
    kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
    raise AuditLogError(f"is {kind}; the audit log must be a regular file", path=p)


def _open_for_append(p: Path) -> int:
    """Open (creating) the log read-write in append mode; every failure becomes one AuditLogError."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise AuditLogError(f"cannot be opened ({e.strerror})", path=p) from None
    if st is not None:
        _require_regular(st.st_mode, p)  # checked before open: opening a FIFO could block or need a reader
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AuditLogError(f"its folder {p.parent} cannot be created ({e.strerror or e})", path=p) from None
    # O_NONBLOCK: should a FIFO appear between stat and open, open fails (ENXIO) or returns at once, never blocks.
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags, 0o644)
    except OSError as e:
        if e.errno == errno.EISDIR:
            _require_regular(stat.S_IFDIR, p)
        raise AuditLogError(f"cannot be opened for writing ({e.strerror})", path=p) from None
    try:
        _require_regular(os.fstat(fd).st_mode, p)  # what we actually opened, not what stat saw
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    """Exclusive advisory lock: appends (and tail repairs) of concurrent iga processes take turns."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: O_APPEND alone
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _append_whole(fd: int, p: Path, data: bytes) -> None:
    """Write data at the end and flush it; on any failure cut the file back, so no torn record is ever left."""
    start = os.fstat(fd).st_size  # stable: every writer holds the lock
    try:
        view = memoryview(data)
        while view:  # a short write on a regular file means the next one fails (ENOSPC) and we roll back
            n = os.write(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "write made no progress")
            view = view[n:]
        os.fsync(fd)
    except OSError as e:
        _cut_back(fd, start)
        what = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else e.strerror or str(e)
        raise AuditLogError(f"the record could not be written ({what}); nothing was recorded", path=p,
                            hint=f"Free some space, or {_FIX}") from None


def _cut_back(fd: int, size: int) -> None:
    # Best effort: if even truncation fails, the torn tail is repaired by the next append (see _repair_torn_tail).
    with contextlib.suppress(OSError):
        os.ftruncate(fd, size)
        os.fsync(fd)


def _repair_torn_tail(fd: int, p: Path) -> None:
    """Cut away an unterminated, non-JSON last line (a torn record), so the next record starts on its own line."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    start = max(0, size - _TAIL_SCAN)
    tail = os.pread(fd, size - start, start)
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    line_start = start + cut + 1 if cut >= 0 else start
    line = tail[cut + 1:]
    if _is_json(line):
        os.write(fd, b"\n")  # a whole record that only lacks its newline (a hand edit): keep it
        return
    os.ftruncate(fd, line_start)
    os.fsync(fd)
    warnings.warn(f"audit log {p}: removed a torn last record ({len(line)} bytes at offset {line_start}) left by an "
                  "interrupted write", AuditLogRepairWarning, stacklevel=3)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
