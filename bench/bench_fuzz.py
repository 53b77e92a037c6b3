"""Hostile-input fuzz of the safetensors header reader at scale (the generator of tests/test_checkpoint_reliability.py).

Prints how many inputs ended as a parsed header, as each typed error class, and as any other exception (must be 0),
plus the differential against the official safetensors library on every --diff-every-th input
("iga accepts, safetensors rejects" must be 0), and the run time. Exit status 1 if either count is not 0.

    nice python bench/bench_fuzz.py --n 100000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# The generator lives with its tests, so the benchmark and the test suite damage files the same way.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_checkpoint_reliability import IGA_ACCEPTS_OFFICIAL_REJECTS, run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="number of hostile inputs")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--diff-every", type=int, default=1, help="also ask safetensors on every k-th input (0: never)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    outcomes, differential = run(args.seed, args.n, differential_every=args.diff_every)
    elapsed = time.perf_counter() - t0

    others = sum(v for k, v in outcomes.items() if k.startswith("other:"))
    print(f"{args.n:,} inputs, seed {args.seed}, {elapsed:.1f} s ({elapsed / args.n * 1e6:.0f} us per input, "
          "generation and the safetensors differential included)")
    print("outcomes:")
    for name, count in sorted(outcomes.items(), key=lambda kv: (kv[0] != "parsed", kv[0])):
        print(f"  {name:<28} {count:>8,}")
    print(f"  {'other exceptions (must be 0)':<28} {others:>8,}")
    print("differential:")
    for name, count in sorted(differential.items()):
        print(f"  {name:<52} {count:>8,}")
    bad = differential[IGA_ACCEPTS_OFFICIAL_REJECTS]
    print(f"  {IGA_ACCEPTS_OFFICIAL_REJECTS + ' (must be 0)':<52} {bad:>8,}")
    return 1 if others or bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
