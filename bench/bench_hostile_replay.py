"""Hostile images against `iga replay` and `iga show`: exit code, wall time and peak memory per class.

    python bench/bench_hostile_replay.py

Each class is a PNG whose stored plan (or metadata) is hostile: huge size, 100,000 sigmas, 100,000 steps, a model
path to /etc/passwd or a FIFO, wrong types, unknown names, 500-deep nesting, a zTXt decompression bomb. Each must
end with one line and exit 2, in under 5 s and 500 MB (process start-up and imports included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

PROBE = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
         "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, len(p.stderr.splitlines()))")


def run(args: list[str]) -> tuple[int, float, float, int]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE, sys.executable, "-m", "iga.cli", *args], capture_output=True,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout.split()
    return int(out[0]), time.perf_counter() - t, int(out[1]) / 1024, int(out[2])


def _png(path: Path, chunks: list[tuple[str, bytes]]) -> Path:
    """A 1x1 PNG with the given raw text chunks (keyword, already-encoded chunk data)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    body = b"".join(chunk(b"zTXt" if k == "zTXt" else b"iTXt", d) for k, d in chunks)
    idat = zlib.compress(b"\x00\x00\x00\x00")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + body + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _itxt(text: str) -> tuple[str, bytes]:
    return ("iTXt", b"iga_metadata\x00\x00\x00\x00\x00" + text.encode())


def classes(tmp: Path, plan: dict) -> dict[str, Path]:
    fifo = tmp / "model.fifo"
    os.mkfifo(fifo)
    hostile = {
        "huge size": {"width": 8192, "height": 8192},
        "100,000 sigmas": {"schedule": "explicit", "sigmas": [float(100_000 - i) for i in range(100_000)] + [0.0]},
        "100,000 steps": {"steps": 100_000},
        "model path /etc/passwd": {"model": {"name": "x", "path": "/etc/passwd", "weights_sha256": "0" * 64}},
        "model path FIFO": {"model": {"name": "x", "path": str(fifo), "weights_sha256": "1" * 64}},
        "wrong types": {"steps": "many", "cfg": [1]},
        "unknown names": {"sampler": "no_such_sampler"},
    }
    out = {name: _png(tmp / f"{i}.png", [_itxt(json.dumps({**plan, **change}))])
           for i, (name, change) in enumerate(hostile.items())}
    out["500-deep nesting"] = _png(tmp / "deep.png", [_itxt("[" * 500 + "]" * 500)])
    bomb = zlib.compress(b"{" + b" " * (200 << 20) + b"}", 9)
    out["zTXt bomb (200 MB)"] = _png(tmp / "bomb.png", [("zTXt", b"iga_metadata\x00\x00" + bomb)])
    return out


def main() -> None:
    os.environ.setdefault("IGA_AUDIT_LOG", os.path.join(tempfile.gettempdir(), "iga-bench-audit.jsonl"))
    import iga
    from iga.provenance import read_provenance, save_image

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        [img] = iga.load().generate("a red circle on a blue background", seed=3, steps=4, overrides=["steps"])
        plan = read_provenance(save_image(img.image, img.plan.to_dict(), tmp)).plan
        print(f"{'class':26} {'command':7} {'exit':>4} {'lines':>5} {'seconds':>8} {'peak MB':>8}")
        ok = True
        for name, path in classes(tmp, plan).items():
            for cmd in ("replay", "show"):
                code, secs, mb, lines = run([cmd, str(path)])
                good = (code == 2 or cmd == "show" and code == 0) and secs < 5 and mb < 500
                ok &= good
                print(f"{name:26} {cmd:7} {code:4} {lines:5} {secs:8.2f} {mb:8.0f}{'' if good else '  MISS'}")
        print("OK" if ok else "FAIL")


if __name__ == "__main__":
    main()
