"""Low-level file I/O for checkpoints: positional reads/writes, streaming copies, fsync, atomic replace, locks."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from iga.checkpoint.errors import CheckpointWriteError, FileBusyError

COPY_CHUNK = 64 * 1024 * 1024
"""Bytes per kernel copy call (copy_file_range/sendfile); also the unit a failure can interrupt."""

BUFFER_SIZE = 8 * 1024 * 1024
"""Buffer for user-space copies and hashing: large enough that per-call overhead is negligible."""

TEMP_SUFFIX = ".iga-tmp"
"""Temp files are ``.<target name>.<pid>.<random>.iga-tmp`` next to the target: hidden, recognisable, and owned."""

LEGACY_TEMP_AGE = 24 * 3600
"""Temp files of older iga versions carry no pid; they are removed once untouched for this many seconds."""

# The part of a temp name between ".<target>." and ".iga-tmp": "<pid>.<mkstemp's 8 random chars>" (or no pid: legacy).
_TEMP_MIDDLE = re.compile(r"^(?:(\d+)\.)?[a-z0-9_]{8}$")

# Kernel copy paths that failed once with "not supported here" are not retried in this process.
_kernel_copy_ok = {"copy_file_range": hasattr(os, "copy_file_range"), "sendfile": hasattr(os, "sendfile")}
_UNSUPPORTED = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ENOTSUP}


def pread(fd: int, n: int, offset: int) -> bytes:
    """Read up to n bytes at offset (loops over short reads)."""
    if hasattr(os, "pread"):
        parts = []
        while n > 0:
            b = os.pread(fd, n, offset)
            if not b:
                break
            parts.append(b)
            n -= len(b)
            offset += len(b)
        return b"".join(parts)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, n)  # pragma: no cover


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of data at offset (loops over short writes)."""
    view = memoryview(data)
    if hasattr(os, "pwrite"):
        while view:
            k = os.pwrite(fd, view, offset)
            view = view[k:]
            offset += k
        return
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    while view:  # pragma: no cover
        k = os.write(fd, view)
        view = view[k:]


def fsync_dir(path: str) -> None:
    """fsync a directory so a rename or unlink in it is durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(fd: int, path: str) -> Iterator[None]:
    """Hold an advisory exclusive lock on an open file (POSIX flock) so two iga edits never interleave."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FileBusyError("another process is editing this file", path=path) from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def check_free_space(directory: str, needed: int, path: str) -> None:
    """Refuse before starting when the target folder cannot hold ``needed`` more bytes."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if free < needed:
        raise CheckpointWriteError(
            f"not enough free space in {directory}: the rewrite needs {needed:,} bytes, {free:,} are free",
            path=path,
            hint="Free some space, or write the result to another disk with -o/--out.",
        )


def copy_range(src_fd: int, dst_fd: int, src_off: int, dst_off: int, count: int) -> None:
    """Copy count bytes between two files at explicit offsets, in chunks, with the fastest mechanism available."""
    done = 0
    while done < count:
        n = copy_chunk(src_fd, dst_fd, src_off + done, dst_off + done, min(COPY_CHUNK, count - done))
        if n <= 0:
            raise CheckpointWriteError(
                f"source ended early while copying (copied {done:,} of {count:,} bytes)",
                hint="The file changed or was truncated during the copy; retry.",
            )
        start_writeback(dst_fd, dst_off + done, n)
        done += n


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a just-copied range to disk now, so the final fsync overlaps with copying instead of following it.

    On Linux, POSIX_FADV_DONTNEED starts asynchronous writeback of dirty pages in the range (and later drops them
    from the page cache, so a multi-GB copy does not evict other cached files). Elsewhere this is a no-op.
    """
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def copy_chunk(src_fd: int, dst_fd: int, src_off: int, dst_off: int, count: int) -> int:
    """Copy up to count bytes once; returns bytes copied (0 at end of source)."""
    if _kernel_copy_ok["copy_file_range"]:
        try:
            return os.copy_file_range(src_fd, dst_fd, count, src_off, dst_off)
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
            _kernel_copy_ok["copy_file_range"] = False
    if _kernel_copy_ok["sendfile"]:
        try:
            os.lseek(dst_fd, dst_off, os.SEEK_SET)
            return os.sendfile(dst_fd, src_fd, src_off, count)
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
            _kernel_copy_ok["sendfile"] = False
    return _copy_userspace(src_fd, dst_fd, src_off, dst_off, count)


def _copy_userspace(src_fd: int, dst_fd: int, src_off: int, dst_off: int, count: int) -> int:
    data = pread(src_fd, min(count, BUFFER_SIZE), src_off)
    if data:
        pwrite_all(dst_fd, data, dst_off)
    return len(data)


def datasync(fd: int) -> None:
    """Flush a file's data (and the metadata needed to read it back) to disk: fdatasync where it exists."""
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


@contextlib.contextmanager
def atomic_output(dest: str, *, mode_from: int | None = None, durable: bool = True) -> Iterator[tuple[int, str]]:
    """Yield (fd, temp path) of a temp file next to ``dest``; on success fsync, rename over dest, fsync the folder.

    On any exception (including KeyboardInterrupt) the temp file is removed and ``dest`` is left as it was.
    ``durable=False`` skips both fsyncs (for caches: the rename is still atomic, but after a power loss the file may
    be old or empty).
    """
    directory = os.path.dirname(os.path.abspath(dest))
    remove_stale_temps(dest)
    prefix = f".{os.path.basename(dest)}.{os.getpid()}."
    fd, tmp, closed = -1, "", False
    try:  # cleanup_on_termination may raise anywhere in here; the except below must then know the temp name
        with _signals_blocked():  # so a SIGTERM cannot land between creating the file and recording its name
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=directory)
        _lock_quietly(fd)  # held until close: tells remove_stale_temps of other processes that the file is in use
        yield fd, tmp
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode_from if mode_from is not None else _existing_mode(dest))
        if durable:
            os.fsync(fd)
        os.close(fd)
        closed = True
        os.replace(tmp, dest)
    except BaseException:
        if not closed and fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)


def remove_stale_temps(dest: str) -> list[str]:
    """Remove temp files of ``dest`` left by killed processes (SIGKILL, power loss); return the paths removed.

    A temp file is stale when its owner (the pid in its name) is gone and nobody holds its lock; a temp file of a
    live process, or one locked by any process (also one in another pid namespace), is never touched. Temp files of
    older iga versions (no pid in the name) are removed once unlocked and untouched for LEGACY_TEMP_AGE.
    """
    directory = os.path.dirname(os.path.abspath(dest))
    prefix = f".{os.path.basename(dest)}."
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        m = _TEMP_MIDDLE.match(name[len(prefix) : -len(TEMP_SUFFIX)])
        if m is None:
            continue  # not one of ours (another target whose name merely starts the same)
        path = os.path.join(directory, name)
        if _owner_may_be_alive(m.group(1), path):
            continue
        if _unlink_if_unlocked(path):
            removed.append(path)
    return removed


def _owner_may_be_alive(pid_text: str | None, path: str) -> bool:
    if pid_text is None:  # legacy name: judge by age, since a live writer keeps touching the file
        try:
            return time.time() - os.stat(path).st_mtime < LEGACY_TEMP_AGE
        except OSError:
            return True
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but belongs to someone else (or cannot be asked): keep its file
    return True


def _unlink_if_unlocked(path: str) -> bool:
    """Delete path unless a process holds its lock (a recycled pid may look dead or alive; the lock cannot lie)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: an open file cannot be deleted anyway
            pass
        except OSError:
            return False
        try:
            os.unlink(path)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold back SIGTERM/SIGHUP for a few statements; a signal that came meanwhile is handled right after."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, CLEANUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _lock_quietly(fd: int) -> None:
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


class TerminatedBySignal(BaseException):
    """SIGTERM/SIGHUP arrived during a file edit; raised so cleanup runs, then the process dies by the signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated by signal {signum}")


CLEANUP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def cleanup_on_termination() -> Iterator[None]:
    """For the duration, turn SIGTERM/SIGHUP into TerminatedBySignal so temp files are removed and in-place writes
    rolled back; afterwards restore the handlers and, if a signal came, die by it as the sender intended.

    Only signals whose disposition is the default (terminate) are caught: an ignored SIGHUP (nohup) stays ignored, and
    a program that installed its own handler keeps control of its shutdown. Main thread only (Python's rule).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    closing = [False]

    def handler(signum: int, _frame: object) -> None:
        if received:
            return  # already unwinding: let the cleanup finish
        received.append(signum)
        if not closing[0]:  # once the edit is over, just remember the signal and deliver it below
            raise TerminatedBySignal(signum)

    previous = {}
    for s in CLEANUP_SIGNALS:
        if signal.getsignal(s) == signal.SIG_DFL:
            previous[s] = signal.signal(s, handler)
    try:
        yield
    except TerminatedBySignal:
        pass
    finally:
        closing[0] = True
        for s, old in previous.items():
            signal.signal(s, old)
    if received:
        os.kill(os.getpid(), received[0])  # default disposition again: the process ends here, killed by the signal
        raise CheckpointWriteError(f"interrupted by signal {received[0]}")  # pragma: no cover - not reached


def _existing_mode(dest: str) -> int:
    # mkstemp creates 0600 files; keep the mode of the file we replace, else the usual 0644.
    try:
        return os.stat(dest).st_mode & 0o7777
    except OSError:
        return 0o644


def write_bytes_atomic(dest: str, data: bytes, *, durable: bool = True) -> None:
    """Write a small file atomically (temp file in the same folder, fsync unless not durable, rename)."""
    with atomic_output(dest, durable=durable) as (fd, _tmp):
        pwrite_all(fd, data, 0)


CACHE_ENV = "IGA_CACHE_DIR"


def cache_dir() -> str:
    """Folder of iga's cache (hashes, undo journals): $IGA_CACHE_DIR, else platformdirs.user_cache_dir('iga')."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return env
    import platformdirs

    return platformdirs.user_cache_dir("iga")


def open_readonly(path: str) -> BinaryIO:
    """Open a file for unbuffered binary reading."""
    return open(path, "rb", buffering=0)
