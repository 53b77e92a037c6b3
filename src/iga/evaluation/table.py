"""The results table of a run: a journal written row by row (crash-safe, resumable), then Parquet and CSV.

``rows.jsonl`` is the journal: one JSON object per finished image (or refused point), appended and fsync'd as
each one finishes, so a crash or Ctrl-C loses at most the image in flight and a rerun skips every key in it.
``results.parquet`` and ``results.csv`` are rewritten from the journal (atomically) whenever a run stops.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from .metrics import IMAGE_METRICS, REFERENCE_METRICS

# Extra per-image figures beyond the built-in metrics: the demo judge's reading and the learned metrics.
EXTRA_METRICS = ("judge_confidence", "adherence_shape", "adherence_fg", "adherence_bg", "adherence_all",
                 "clip_score", "lpips")
METRIC_COLUMNS = (*REFERENCE_METRICS, *IMAGE_METRICS, *EXTRA_METRICS)

# (name, type) in table order; "str" columns are never null ("" means none), int/float ones may be.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("key", "str"), ("role", "str"), ("arm", "str"), ("draw", "int"), ("axis", "str"), ("value", "str"),
    ("value_order", "int"), ("grid_value", "str"),
    ("prompt", "str"), ("seed", "int"), ("sampler", "str"), ("schedule", "str"), ("steps", "int"),
    ("cfg", "float"), ("cfg_variant", "str"), ("eta", "float"), ("vae", "str"), ("clip_skip", "int"),
    ("prediction_type", "str"), ("sigmas", "str"),
    ("image", "str"), ("plan_sha256", "str"), ("pixels_sha256", "str"), ("nfe", "int"),
    *((m, "float") for m in METRIC_COLUMNS),
    ("failure", "str"), ("failures", "str"), ("refused", "str"), ("error", "str"), ("overrides", "str"),
    ("seconds", "float"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
MAX_JOURNAL_LINE = 1 << 20


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """Every column present, in table order, with its type (missing str -> "", missing number -> None)."""
    out: dict[str, Any] = {}
    for name, kind in COLUMNS:
        v = row.get(name)
        if kind == "str":
            out[name] = "" if v is None else str(v)
        elif v is None or (isinstance(v, float) and math.isnan(v) and kind == "int"):
            out[name] = None
        else:
            out[name] = int(v) if kind == "int" else float(v)
    return out


class Journal:
    """Append-only JSONL of finished rows; ``rows`` maps key -> row for what is already there."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open("rb") as f:
            for line in f:
                if len(line) > MAX_JOURNAL_LINE or not line.endswith(b"\n"):
                    continue  # a line cut short by a crash: that image is simply made again
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("key"), str):
                    self.rows[row["key"]] = normalise_row(row)

    def append(self, row: dict[str, Any]) -> None:
        """Write one row durably (one write of one line, then fsync)."""
        row = normalise_row(row)
        line = (json.dumps(row, allow_nan=True, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rows[row["key"]] = row


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file whole or not at all (temp file in the same folder, fsync, rename, fsync the folder)."""
    from iga.checkpoint import write_bytes_atomic

    write_bytes_atomic(str(path), data)


def _arrow_table(rows: list[dict[str, Any]]):
    import pyarrow as pa

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
    schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS])
    return pa.Table.from_pylist([normalise_row(r) for r in rows], schema=schema)


def write_tables(run_dir: Path, rows: Iterable[dict[str, Any]]) -> tuple[Path, Path]:
    """results.parquet and results.csv from the rows (table order, one row per image or refused point)."""
    import pyarrow.parquet as pq

    rows = list(rows)
    buf = io.BytesIO()
    pq.write_table(_arrow_table(rows), buf)
    parquet = run_dir / "results.parquet"
    atomic_write(parquet, buf.getvalue())
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=COLUMN_NAMES, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in normalise_row(r).items()})
    path_csv = run_dir / "results.csv"
    atomic_write(path_csv, text.getvalue().encode())
    return parquet, path_csv


def read_table(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of results.parquet as dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(run_dir / "results.parquet").to_pylist()
