"""Shared helpers for the iga.checkpoint tests (no tests here).

The writers below are deliberately independent of iga's own header builder, so tests never check iga against itself.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import typer

NP_DTYPES = {
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
    "I8": np.int8,
    "U8": np.uint8,
    "I16": np.int16,
    "U16": np.uint16,
    "I32": np.int32,
    "U32": np.uint32,
    "I64": np.int64,
    "U64": np.uint64,
    "BOOL": np.bool_,
}
ITEMSIZE = {"BF16": 2, **{k: np.dtype(v).itemsize for k, v in NP_DTYPES.items()}}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own hash cache folder (never the user's)."""
    d = tmp_path_factory.mktemp("iga-cache")
    monkeypatch.setenv("IGA_CACHE_DIR", str(d))
    yield d


def raw_file(path: Path, header: str | bytes, data: bytes = b"", *, n: int | None = None) -> Path:
    """Write 8-byte length + header + data exactly as given (for malformed files)."""
    hb = header.encode("utf-8") if isinstance(header, str) else header
    path.write_bytes(struct.pack("<Q", len(hb) if n is None else n) + hb + data)
    return path


def write_reference(
    path: Path,
    tensors: Sequence[tuple[str, str, Sequence[int]]],
    metadata: Mapping[str, str] | None = None,
    *,
    pad_to: int | None = None,
    sparse: bool = False,
    seed: int = 0,
) -> dict[str, bytes]:
    """A straightforward safetensors writer: tensors in the given order, random bytes (or sparse zeros).

    Returns the bytes of every tensor (empty when sparse).
    """
    rng = np.random.default_rng(seed)
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offset = 0
    blobs: dict[str, bytes] = {}
    for name, dtype, shape in tensors:
        nbytes = int(np.prod(shape, dtype=np.int64)) * ITEMSIZE[dtype] if shape else ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        blobs[name] = b"" if sparse else rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    target = pad_to if pad_to is not None else (len(text) + 7) // 8 * 8
    text += b" " * (target - len(text))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        if sparse:
            f.truncate(8 + len(text) + offset)
        else:
            for name, _, _ in tensors:
                f.write(blobs[name])
    return blobs


def data_region(path: Path) -> bytes:
    """The bytes after 8 + N, read with nothing but struct."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8 + n :]


def header_bytes(path: Path) -> bytes:
    """The N header bytes, read with nothing but struct."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8 : 8 + n]


def official_read(path: Path) -> tuple[dict[str, str] | None, dict[str, np.ndarray]]:
    """Metadata and every tensor as read by the official safetensors library (numpy; BF16 via torch)."""
    from safetensors import safe_open

    tensors: dict[str, np.ndarray] = {}
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        for k in f.keys():
            t = f.get_tensor(k)
            tensors[k] = t.view(dtype=_torch_int_view(t.dtype)).numpy() if _is_bf16(t) else t.numpy()
    return meta, tensors


def _is_bf16(t: object) -> bool:
    import torch

    return getattr(t, "dtype", None) == torch.bfloat16


def _torch_int_view(_dtype: object) -> object:
    import torch

    return torch.int16


def temp_leftovers(folder: Path) -> list[str]:
    """Temp or journal files iga may have left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".iga-tmp", ".iga-undo")))


def list_dir(folder: Path) -> list[str]:
    """Names in a folder, sorted."""
    return sorted(os.listdir(folder))


def run(app: "typer.Typer", *args: object) -> tuple[int, str, str]:
    """Invoke a CLI app in-process: (exit code, stdout, stderr); an unexpected exception fails the test."""
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr
