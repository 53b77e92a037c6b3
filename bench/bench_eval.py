"""Sweep speed: images per second of `iga eval` against the same plans through iga.sampling alone.

    python bench/bench_eval.py [--prompts 10] [--seeds 4] [--repeats 2]

The eval side is the whole `run_experiment` (guard, workers, metrics, provenance PNGs, journal, tables,
summary and report) on the bundled demo model, 4 samplers. The peer is the bare engine on the same plans (read
back from the images' provenance): load the model once, encode the prompt, sample, decode, nothing written.
Runs alternate (eval, peer, eval, peer, ...) in one process; the ratio is peer wall / eval wall of each pair,
and the median is printed. Target: >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def eval_once(prompts: int, seeds: int, out: Path) -> tuple[float, list[dict]]:
    from iga.evaluation import parse_spec, run_experiment

    spec = parse_spec({"vary": {"sampler": ["euler", "heun", "dpmpp_2m", "uni_pc"]},
                       "prompts": f"demo:all:{prompts}", "seeds": seeds})
    t = time.perf_counter()
    result = run_experiment(spec, out)
    return time.perf_counter() - t, [r for r in result.rows if r["pixels_sha256"]]


def sampling_once(run_dir: Path, rows: list[dict]) -> float:
    """The same plans through the engine alone: load once, then encode + sample + decode each."""
    import torch

    from iga.generate import build_denoiser, to_uint8
    from iga.guard import Plan
    from iga.models.loader import load_backend
    from iga.paths import DEMO_MODEL
    from iga.provenance import read_provenance
    from iga.sampling.noise import initial_noise, make_noise_sampler
    from iga.sampling.run import sample
    from iga.sampling.samplers import SAMPLERS

    by_sha = {r["plan_sha256"]: Plan.from_dict(read_provenance(run_dir / r["image"]).plan) for r in rows
              if r["image"]}
    plans = [by_sha[r["plan_sha256"]] for r in rows]  # repeats were rendered too (not saved): their point's plan
    t = time.perf_counter()
    backend = load_backend(str(DEMO_MODEL))
    with torch.inference_mode():
        for plan in plans:
            cond, uncond = backend.encode_prompt([plan.prompt], [plan.negative_prompt], clip_skip=plan.clip_skip,
                                                 width=plan.width, height=plan.height)
            spec = SAMPLERS[plan.sampler]
            sigmas = torch.tensor(plan.sigmas, dtype=torch.float32)
            noise = initial_noise(backend.latent_shape(plan.width, plan.height), [plan.seed])
            den = build_denoiser(plan, backend, cond, uncond)
            x = sample(spec, den, noise, sigmas, noise_sampler=make_noise_sampler(spec.noise, noise, [plan.seed],
                       sigmas), options=plan.sampler_options, noise_scaling=plan.noise_scaling)
            to_uint8(backend.decode(x)[0])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("IGA_AUDIT_LOG", os.path.join(tempfile.gettempdir(), "iga-bench-audit.jsonl"))
    import iga.demo.net  # noqa: F401  (import costs, paid once by both sides, stay out of the timings)
    import iga.evaluation.experiment  # noqa: F401
    import iga.models.loader  # noqa: F401

    ratios = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t_eval, rows = eval_once(args.prompts, args.seeds, Path(tmp) / "run")
            t_peer = sampling_once(Path(tmp) / "run", rows)
        n = len(rows)
        ratios.append(t_peer / t_eval)
        print(f"run {i + 1}: {n} images; iga eval {t_eval:.1f} s ({n / t_eval:.2f} img/s), "
              f"sampling alone {t_peer:.1f} s ({n / t_peer:.2f} img/s); ratio {t_peer / t_eval:.3f}", flush=True)
    med = statistics.median(ratios)
    print(f"images/s of iga eval / pure sampling: median {med:.3f} over {len(ratios)} runs "
          f"(target >= 0.8: {'pass' if med >= 0.8 else 'MISS'})")
    sys.exit(0)


if __name__ == "__main__":
    main()
