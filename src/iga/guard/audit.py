"""The override audit log: one JSON object per line, append-only, safe under concurrent writers.

Every record is written with a single ``write`` on a descriptor opened with O_APPEND (never O_TRUNC), under
an exclusive ``flock``, then fsync'd: concurrent processes cannot interleave or lose lines, and iga never
truncates or rewrites the file. Default path: ``<user data dir>/iga/audit.jsonl``; override with the
``IGA_AUDIT_LOG`` environment variable or the ``path`` argument.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from .plan import Plan

MAX_LINE = 1 << 20  # a record larger than this is a bug, not an override


def default_audit_path() -> Path:
    """Where the audit log lives unless told otherwise."""
    env = os.environ.get("IGA_AUDIT_LOG")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("iga")) / "audit.jsonl"


def append_records(records: list[dict[str, Any]], path: str | Path | None = None) -> Path:
    """Append records to the audit log atomically (one write under an exclusive lock); return the path."""
    p = Path(path) if path is not None else default_audit_path()
    if not records:
        return p
    p.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(json.dumps(r, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() + b"\n"
                    for r in records)
    if len(data) > MAX_LINE * len(records):
        raise ValueError("audit record too large")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            view = memoryview(data)
            while view:  # a regular-file write is complete in practice; loop in case of a short write
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
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
    """Yield the records of an audit log; a damaged line raises ValueError naming its line number."""
    p = Path(path) if path is not None else default_audit_path()
    if not p.exists():
        return
    with p.open("rb") as f:
        for i, line in enumerate(f, 1):
            if len(line) > MAX_LINE:
                raise ValueError(f"{p}:{i}: line longer than {MAX_LINE} bytes")
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{i}: not a JSON record ({e.msg})") from None
