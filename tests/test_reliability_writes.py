"""Writes that must survive a full disk, odd paths and kills: the audit log and `embed` temp files."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import iga.checkpoint as ck
from iga.checkpoint import _io
from iga.guard import append_records, read_records
from iga.guard.audit import AuditLogError, AuditLogRepairWarning

# --- audit log -----------------------------------------------------------------------------------------------------


def _full_disk_after_half(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write writes half of what it is given, then the next call fails with ENOSPC, like a filling disk."""
    real = os.write
    state = {"calls": 0}

    def write(fd: int, data) -> int:
        state["calls"] += 1
        if state["calls"] == 1:
            return real(fd, bytes(data[: max(1, len(data) // 2)]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write)


def test_full_disk_leaves_no_torn_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "audit.jsonl"
    append_records([{"n": 1}], log)
    before = log.read_bytes()
    with monkeypatch.context() as m:
        _full_disk_after_half(m)
        with pytest.raises(AuditLogError, match="disk is full") as e:
            append_records([{"n": 2, "pad": "x" * 5000}], log)
    assert str(log) in str(e.value) and "IGA_AUDIT_LOG" in str(e.value)
    assert log.read_bytes() == before  # cut back: the record is absent, not half there
    append_records([{"n": 3}], log)
    assert [r["n"] for r in read_records(log)] == [1, 3]


def test_failed_fsync_rolls_the_record_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "audit.jsonl"
    append_records([{"n": 1}], log)
    before = log.read_bytes()
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:  # the append's fsync fails, the rollback's succeeds
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(AuditLogError, match="Input/output error"):
        append_records([{"n": 2}], log)
    assert log.read_bytes() == before


def test_torn_tail_is_cut_away_with_a_warning(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b'{"n":1}\n{"n":2,"reason":"half a rec')  # what a crash mid-write of an older iga leaves
    with pytest.warns(AuditLogRepairWarning, match="torn"):
        assert [r["n"] for r in read_records(log)] == [1]  # a reader skips it, never silently
    with pytest.warns(AuditLogRepairWarning, match=r"removed a torn last record \(27 bytes at offset 8\)"):
        append_records([{"n": 3}], log)
    assert log.read_bytes() == b'{"n":1}\n{"n":3}\n'


def test_complete_last_record_without_newline_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b'{"n":1}')  # a hand edit: whole, only the newline is missing
    append_records([{"n": 2}], log)
    assert [r["n"] for r in read_records(log)] == [1, 2]


def test_directory_path_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGA_AUDIT_LOG", str(tmp_path))
    with pytest.raises(AuditLogError, match="is a directory") as e:
        append_records([{"n": 1}])
    assert str(tmp_path) in str(e.value) and "Set IGA_AUDIT_LOG" in str(e.value)
    with pytest.raises(AuditLogError, match="is a directory"):
        list(read_records())


def _append_to(path: str, q) -> None:
    try:
        append_records([{"n": 1}], path)
        q.put("no error")
    except AuditLogError as e:
        q.put(f"AuditLogError: {e}")
    except BaseException as e:  # noqa: BLE001 - report anything else to the test
        q.put(f"{type(e).__name__}: {e}")


@pytest.mark.parametrize("reader", [False, True], ids=["no-reader", "with-reader"])
def test_fifo_path_is_one_clear_error_and_never_blocks(tmp_path: Path, reader: bool) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) if reader else None
    try:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_append_to, args=(str(fifo), q))
        p.start()
        p.join(10)
        hung = p.is_alive()
        if hung:
            p.kill()
        assert not hung, "append_records blocked on a FIFO"
        got = q.get(timeout=5)
        assert got.startswith("AuditLogError:") and "is a FIFO" in got and "IGA_AUDIT_LOG" in got
        with pytest.raises(AuditLogError, match="is a FIFO"):
            list(read_records(fifo))  # reading must not block either
    finally:
        if rfd is not None:
            os.close(rfd)


def test_path_under_a_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(AuditLogError, match="cannot be") as e:
        append_records([{"n": 1}], tmp_path / "file" / "audit.jsonl")
    assert "IGA_AUDIT_LOG" in str(e.value)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs")
def test_path_even_root_cannot_create_is_one_clear_error() -> None:
    with pytest.raises(AuditLogError, match=r"cannot be opened for writing \(Permission denied\)\. Set IGA_AUDIT_LOG"):
        append_records([{"n": 1}], "/sys/kernel/iga-audit.jsonl")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_path_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(AuditLogError, match="cannot be opened for writing .*Permission denied"):
            append_records([{"n": 1}], folder / "audit.jsonl")
        with pytest.raises(AuditLogError, match="cannot be created"):
            append_records([{"n": 1}], folder / "sub" / "audit.jsonl")
    finally:
        folder.chmod(0o700)


def _writer(path: str, wid: int, n: int) -> None:
    for i in range(n):
        append_records([{"w": wid, "i": i, "pad": "y" * ((i * 7919 + wid) % 20000)}, {"w": wid, "i": -i}], path)


def test_concurrent_appenders_stay_whole(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.jsonl")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = Path(path).read_bytes()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]
    assert len(records) == 4 * 40 * 2
    for k in range(0, len(records), 2):  # the two records of one append are adjacent: appends are whole
        assert records[k]["w"] == records[k + 1]["w"] and records[k]["i"] == -records[k + 1]["i"]


# --- embed: temp files and kills -----------------------------------------------------------------------------------

CHILD = """
import sys, time
from iga.checkpoint import _io
import iga.checkpoint as ck
path, tag, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
if slow:  # small chunks with a pause each: a window long enough to signal the child mid-copy
    _io.COPY_CHUNK = 1 << 20
    real = _io.copy_chunk
    def chunk(*a):
        time.sleep(slow)
        return real(*a)
    _io.copy_chunk = chunk
print("ready", flush=True)
ck.embed_recipe(path, {"iga_version": "1.0.0", "architecture": "sd1", "note": tag})
"""


def _recipe(tag: str) -> dict:
    return {"iga_version": "1.0.0", "architecture": "sd1", "note": tag}


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~24 MB safetensors file with a tight header, so an embed streams the whole file into a temp file."""
    from safetensors.numpy import save_file

    path = tmp_path_factory.mktemp("big") / "pristine.safetensors"
    save_file({"w": np.arange(6 * 1024 * 1024, dtype=np.float32)}, str(path), metadata={"k": "v"})
    return path


def _start(path: Path, tag: str, slow: float = 0.0) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(path), tag, str(slow)], stdout=subprocess.PIPE,
                         env={**os.environ}, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def _temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(_io.TEMP_SUFFIX))


def _wait_for_temp(folder: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not _temps(folder):
        assert time.monotonic() < deadline, "the child never created its temp file"
        time.sleep(0.005)


def test_kill_anywhere_leaves_original_or_result_and_next_run_cleans_up(tmp_path: Path, big_model: Path) -> None:
    target = tmp_path / "m.safetensors"
    ref = tmp_path / "ref" / "m.safetensors"
    ref.parent.mkdir()
    ref.write_bytes(big_model.read_bytes())
    ck.embed_recipe(ref, _recipe("A"))
    original, embedded = big_model.read_bytes(), ref.read_bytes()
    rng = random.Random(8)
    mid_write = 0
    for trial in range(10):
        target.write_bytes(original)
        slow = 0.004 if trial % 2 else 0.0  # half at full speed (kill anywhere), half slowed (kill mid-copy)
        p = _start(target, "A", slow)
        if slow:
            _wait_for_temp(tmp_path)  # ~24 chunks of 4 ms: the copy runs for ~100 ms from here
            time.sleep(rng.uniform(0, 0.08))
        else:
            time.sleep(rng.uniform(0, 0.15))
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        mid_write += bool(_temps(tmp_path))
        got = target.read_bytes()
        assert got in (original, embedded), f"trial {trial}: the file is neither the original nor the result"
        ck.embed_recipe(target, _recipe("A"))  # the next run
        assert _temps(tmp_path) == [], f"trial {trial}: temp files survived the next run"
        assert target.read_bytes() == embedded
    assert mid_write >= 1, "no kill landed mid-write: the test lost its point"


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_removes_the_temp_file_and_dies_by_the_signal(tmp_path: Path, big_model: Path, signame: str) -> None:
    target = tmp_path / "m.safetensors"
    target.write_bytes(big_model.read_bytes())
    original = target.read_bytes()
    p = _start(target, "A", slow=0.01)
    _wait_for_temp(tmp_path)
    sig = getattr(signal, signame)
    p.send_signal(sig)
    assert p.wait(30) == -sig  # the default behaviour after cleanup: killed by that signal
    assert _temps(tmp_path) == []
    assert target.read_bytes() == original


def test_stale_temp_of_a_live_process_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"x")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".m.safetensors.{int(dead.stdout)}.abcd1234{_io.TEMP_SUFFIX}"
    live = tmp_path / f".m.safetensors.{os.getppid()}.abcd1234{_io.TEMP_SUFFIX}"
    ours = tmp_path / f".m.safetensors.{os.getpid()}.abcd1234{_io.TEMP_SUFFIX}"
    other_target = tmp_path / f".m.safetensors.old.{int(dead.stdout)}.abcd1234{_io.TEMP_SUFFIX}"
    legacy_new = tmp_path / f".m.safetensors.zz9_abcd{_io.TEMP_SUFFIX}"
    legacy_old = tmp_path / f".m.safetensors.zz8_abcd{_io.TEMP_SUFFIX}"
    for f in (stale, live, ours, other_target, legacy_new, legacy_old):
        f.write_bytes(b"tmp")
    old = time.time() - _io.LEGACY_TEMP_AGE - 60
    os.utime(legacy_old, (old, old))
    assert sorted(_io.remove_stale_temps(str(target))) == sorted([str(stale), str(legacy_old)])
    assert not stale.exists() and not legacy_old.exists()
    assert live.exists() and ours.exists() and other_target.exists() and legacy_new.exists()


def test_locked_temp_of_a_dead_pid_is_kept(tmp_path: Path) -> None:
    # a recycled or foreign-namespace pid can look dead; the lock the writer holds says otherwise
    import fcntl

    target = tmp_path / "m.safetensors"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    tmp = tmp_path / f".m.safetensors.{int(dead.stdout)}.abcd1234{_io.TEMP_SUFFIX}"
    tmp.write_bytes(b"tmp")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert _io.remove_stale_temps(str(target)) == []
        assert tmp.exists()
    finally:
        os.close(fd)
    assert _io.remove_stale_temps(str(target)) == [str(tmp)]
