"""Benchmark step previews: what ``PreviewStream`` costs when every step is previewed, against the same run without.

    python bench/bench_preview.py               # ~40 s on 2 shared CPU cores
    python bench/bench_preview.py --repeats 15 --threads 2

Models: the bundled demo model (32x32 pixel space; its recipe: sampler, schedule, 20 steps, CFG) and a tiny random
SD1 model (iga.models.testing, 64x64 -> 8x8 latents, dpmpp_2m + karras, 20 steps, CFG 6), built in a temp folder.

Sides, in one process and interleaved (the order rotates every repeat), after a warm-up generation of each:

- ``none``: ``Model.generate(plan=...)`` with a callback that only records when the last step ended;
- ``linear``: the same with ``PreviewStream(every=1, decoder="linear")`` (the published table; for the demo model
  the identity map of its pixel space);
- ``fit`` (tiny SD1 only): ``decoder="fit"``, the map fitted to the model's own VAE, since the published SD1
  table does not describe a random VAE. The one-off fit (a few small VAE decodes, cached per backend) is timed
  separately and is not in the per-run figures.

Figures (medians over the repeats):

- ``preview ms``: time spent inside the preview callback per generation, measured around each call;
- ``share``: preview ms / the sampling time of the ``none`` side (generate start to the end of the last step,
  prompt encoding included, VAE decode excluded). This is the target: < 5 %;
- ``wall ratio``: median of per-repeat ratios side / none of the whole generate call (adjacent runs, so slow drift
  in the machine's load cancels; still noisy on a shared CPU, hence the direct measurement above).

The tiny SD1 UNet is far cheaper than a real one, while the preview's cost depends only on the latent size, so its
share is a pessimistic bound for real SD1 models at the same latent size.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("IGA_AUDIT_LOG", os.devnull)

PROMPT = "a red circle on a blue background"
TARGET = 0.05


class _Timed:
    """Wraps a callback: accumulates the time spent in it and records when the last step ended."""

    def __init__(self, inner=None):
        self.inner, self.spent, self.last_end = inner, 0.0, 0.0

    def __call__(self, info) -> None:
        if self.inner is not None:
            t = time.perf_counter()
            self.inner(info)
            self.spent += time.perf_counter() - t
        self.last_end = time.perf_counter()


def _one(model, plan, decoder: str | None) -> dict[str, float]:
    from iga.diagnostics.preview import PreviewStream

    stream = None if decoder is None else PreviewStream(model.backend_for(plan), every=1, decoder=decoder,
                                                        total=len(plan.sigmas) - 1)
    timed = _Timed(stream)
    t0 = time.perf_counter()
    [result] = model.generate(plan=plan, callback=timed)
    wall = time.perf_counter() - t0
    if stream is not None and len(stream.frames) != len(plan.sigmas) - 1:
        raise SystemExit(f"expected a frame per step, got {len(stream.frames)}")
    return {"wall": wall, "sampling": timed.last_end - t0 - timed.spent, "preview": timed.spent,
            "pixels": result.pixels}


def _measure(name: str, model, plan, sides: list[str], repeats: int) -> None:
    import numpy as np

    decoders = {"none": None, "linear": "linear", "fit": "fit"}
    fit_note = ""
    if "fit" in sides:
        from iga.diagnostics.preview import fit_map

        t = time.perf_counter()
        fit_map(model.backend_for(plan))
        fit_note = f"; one-off VAE fit {1000 * (time.perf_counter() - t):.0f} ms"
    for side in sides:
        _one(model, plan, decoders[side])  # warm-up: oneDNN picks its kernels on first use
    rows: dict[str, list[dict]] = {s: [] for s in sides}
    for rep in range(repeats):
        for side in sides[rep % len(sides):] + sides[:rep % len(sides)]:
            rows[side].append(_one(model, plan, decoders[side]))
    ref = rows["none"][0]["pixels"]
    if not all(np.array_equal(r["pixels"], ref) for side in sides for r in rows[side]):
        raise SystemExit(f"{name}: previews changed the generated pixels")
    base = statistics.median(r["sampling"] for r in rows["none"])
    print(f"\n{name}: {plan.sampler} + {plan.schedule}, {plan.steps} steps, CFG {plan.cfg:g}, "
          f"{plan.width}x{plan.height}, median of {repeats} interleaved repeats; sampling (none) {1000 * base:.0f} ms"
          + fit_note)
    print(f"  {'side':7s} {'wall ms':>8s} {'wall ratio':>10s} {'preview ms':>10s} {'ms/step':>8s} {'share':>7s} "
          f"{'< 5 %':5s}")
    for side in sides:
        wall = statistics.median(r["wall"] for r in rows[side])
        ratio = statistics.median(r["wall"] / n["wall"] for r, n in zip(rows[side], rows["none"]))
        spent = statistics.median(r["preview"] for r in rows[side])
        if side == "none":
            print(f"  {side:7s} {1000 * wall:8.1f} {'':>10s}")
            continue
        share = spent / base
        print(f"  {side:7s} {1000 * wall:8.1f} {ratio:10.3f} {1000 * spent:10.2f} {1000 * spent / plan.steps:8.3f} "
              f"{100 * share:6.2f}% {'PASS' if share < TARGET else 'MISS':5s}")


def main() -> None:
    """Parse arguments, build the tiny model, measure both models and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared CPU)")
    args = ap.parse_args()

    import torch

    import iga
    from iga.models import testing

    torch.set_num_threads(args.threads)
    print(f"step previews, every step previewed; {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s)", flush=True)
    demo = iga.load()
    _measure("demo model", demo, demo.plan(PROMPT, seed=1), ["none", "linear"], args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = testing.save_single_file(testing.build_tiny("sd1", seed=0), Path(tmp) / "tiny-sd1.safetensors")
        tiny = iga.load(path)
        plan = tiny.plan(PROMPT, seed=1, size="64x64", steps=20, cfg=6.0)
        _measure("tiny SD1 model", tiny, plan, ["none", "linear", "fit"], args.repeats)
    print("\n(share: time inside the preview callback / sampling time without previews; target < 5 %. "
          "wall ratio: whole generate call with / without previews, noisy on a shared CPU)")


if __name__ == "__main__":
    main()
