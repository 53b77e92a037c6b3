"""Grid speed: wall time of a 4x4 `iga grid` at 20 steps against the same 16 samplings alone.

    python bench/bench_grid.py [--repeats 3]

The grid side is the whole `run_grid` on the bundled demo model (guard, the sweep runner, metrics and failure
detectors, 16 provenance PNGs, the journal, tables, the labelled grid image carrying 16 plans). The peer is the
bare engine on the same 16 plans (read back from the cells' provenance): load the model, encode, sample,
decode, nothing written. A one-cell grid first pays the one-time imports. Runs alternate (grid, peer, grid, peer, ...) in one process; the printed ratio is grid
wall / peer wall of each pair and its median. Target (issue 14): <= 1.5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_eval import sampling_once  # noqa: E402  (the same peer as the eval benchmark)

X = "cfg=1.5,2,3,4"
Y = "sampler=euler,dpmpp_2m,uni_pc,euler_ancestral"


def grid_once(out: Path) -> tuple[float, list[dict]]:
    from iga.diagnostics.grid import GridSpec, parse_axis, run_grid
    from iga.guard import Request

    spec = GridSpec("a red circle on a blue background", x=parse_axis(X), y=parse_axis(Y),
                    base=Request(steps=20), seed=1)
    t = time.perf_counter()
    result = run_grid(spec, out)
    return time.perf_counter() - t, [c.row for c in result.cells if c.row.get("image")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("IGA_AUDIT_LOG", os.path.join(tempfile.gettempdir(), "iga-bench-audit.jsonl"))
    import iga.demo.net  # noqa: F401  (import costs, paid once by both sides, stay out of the timings)
    import iga.diagnostics.grid  # noqa: F401
    import iga.evaluation.experiment  # noqa: F401
    import iga.models.loader  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:  # warm-up: one-time imports (metrics, PNG, fonts) stay out
        from iga.diagnostics.grid import GridSpec, parse_axis, run_grid

        run_grid(GridSpec("a red circle on a blue background", x=parse_axis("cfg=2"), seed=1), Path(tmp) / "w")
    ratios = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t_grid, rows = grid_once(Path(tmp) / "g")
            t_peer = sampling_once(Path(tmp) / "g", rows)
        ratios.append(t_grid / t_peer)
        print(f"run {i + 1}: {len(rows)} cells; iga grid {t_grid:.2f} s, the 16 samplings alone {t_peer:.2f} s; "
              f"ratio {t_grid / t_peer:.3f}", flush=True)
    med = statistics.median(ratios)
    print(f"4x4 grid wall / sampling alone: median {med:.3f} over {len(ratios)} runs "
          f"(target <= 1.5: {'pass' if med <= 1.5 else 'MISS'})")


if __name__ == "__main__":
    main()
