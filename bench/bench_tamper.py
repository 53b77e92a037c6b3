"""The tamper matrix on a copy of the bundled demo model with a current (1.2) recipe.

    python bench/bench_tamper.py [--per-region 1000]

Flips one bit at up to N positions of each region (all positions when fewer) and prints, per region, how many
flips were caught (refused at load or named by `iga verify`), harmless (nothing parsed changed), missed and false
alarms. Target: 0 missed, 0 false alarms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-region", type=int, default=1000)
    args = ap.parse_args()
    from iga.checkpoint import embed_recipe_with_hashes, find_recipe
    from iga.checkpoint.tamper import run_matrix
    from iga.paths import default_model_path
    from iga.recipe import RECIPE_VERSION

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IGA_CACHE_DIR"] = str(Path(tmp) / "cache")
        model = Path(tmp) / "demo.safetensors"
        shutil.copyfile(default_model_path(), model)
        embed_recipe_with_hashes(model, {**find_recipe(model).recipe, "iga_version": RECIPE_VERSION})
        t = time.perf_counter()
        results = run_matrix(model, Path(tmp), per_region=args.per_region)
        print(f"{'region':16} {'flips':>6} {'caught':>7} {'harmless':>9} {'missed':>7} {'false alarms':>13}")
        bad = 0
        for region, r in results.items():
            o = r.outcomes
            bad += o["MISSED"] + o["false alarm"]
            print(f"{region:16} {r.flips:6} {o['caught']:7} {o['harmless']:9} {o['MISSED']:7} {o['false alarm']:13}")
        print(f"{time.perf_counter() - t:.1f} s; {'OK' if bad == 0 else 'FAIL'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
