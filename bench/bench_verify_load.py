"""What load-time verification costs: `iga generate` cold start on the bundled model against the integrity check.

    python bench/bench_verify_load.py [--runs 3]

The peer is the whole cold start of `iga generate "a red circle on a blue background"` (fresh process, hash cache
warm, as for a user); iga's side is what verification adds at load: the recipe, header and (cache-checked) weights
hashes with the sampled-block fingerprint, measured in-process (median of 50). Target: < 5 % of the cold start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def cold_start(runs: int, out: str) -> list[float]:
    times = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "iga.cli", "generate", "a red circle on a blue background", "-o", out],
                       check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t)
    return times


def verification(n: int = 50) -> float:
    from iga.checkpoint import find_recipe
    from iga.checkpoint.hashing import weights_sha256
    from iga.checkpoint.integrity import check_integrity
    from iga.paths import default_model_path

    path = str(default_model_path())
    weights_sha256(path)  # warm cache, as after the first run
    times = []
    for _ in range(n):
        t = time.perf_counter()
        src = find_recipe(path)
        check_integrity(path, src, weights=weights_sha256(path))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("IGA_AUDIT_LOG", os.path.join(tempfile.gettempdir(), "iga-bench-audit.jsonl"))
    with tempfile.TemporaryDirectory() as out:
        cold = cold_start(args.runs, out)
    check = verification()
    share = check / statistics.median(cold)
    print(f"cold start of iga generate: {', '.join(f'{t:.2f}' for t in cold)} s (median {statistics.median(cold):.2f})")
    print(f"load-time verification: {check * 1000:.2f} ms; {share:.2%} of the cold start "
          f"(target < 5 %: {'pass' if share < 0.05 else 'MISS'})")


if __name__ == "__main__":
    main()
