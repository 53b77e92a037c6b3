"""Benchmark iga generation against a diffusers StableDiffusionPipeline on the same weights, in the same run.

    python bench/bench_generate.py                      # defaults below; ~5 min on 2 shared CPU cores
    python bench/bench_generate.py --repeats 5 --threads 2 --unet third --size 256 --steps 10

Model: a random-weight UNet with the Stable Diffusion 1.5 structure (4 levels, 2 ResNet layers per block,
cross-attention at the three upper levels, 8 heads) at a reduced width (--unet half = channels 160/320/640/640,
211 M parameters; full = SD1.5's 320/640/1280/1280, 860 M), with iga's tiny test VAE and tiny CLIP text encoder
(iga.models.testing), saved once as a diffusers folder and as a single LDM-layout file under --cache.

Sides, each run in a fresh subprocess (so peak memory is comparable: ``ru_maxrss`` of the child, which includes
the Python interpreter, torch/diffusers imports, weights and activations):

- ``diffusers``: StableDiffusionPipeline.from_pretrained(folder) with EulerDiscreteScheduler(use_karras_sigmas=True,
  timestep_spacing="linspace", SD betas), CPU generator seeded with the seed;
- ``iga``: iga.load(folder).generate(...) with euler + karras (the same sigmas, the same initial noise);
- ``iga-file``: iga.load(single_file) (iga's own LDM -> diffusers conversion), same settings.

Each child imports, loads, warms up with a 1-step generation (oneDNN picks its kernels on first use), then times
one full generation (prompt encoding, sampling, VAE decoding, PIL image). Sides are interleaved (the order rotates
every repeat) and medians are reported. The images of all sides must agree within 2/255, or the run fails: the
comparison is only meaningful if both do the same computation.

Also, if the bundled demo model exists: cold start of ``iga generate`` (process start to PNG written), with the
breakdown from ``iga generate --json`` (resolve, load, sampling, save; imports = the rest).

Targets: iga / diffusers generation time <= 1.0 and peak RSS <= 1.0 (PASS/MISS in the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a red circle on a blue background"
NEGATIVE = ""
UNETS = {
    "full": (320, 640, 1280, 1280),
    "half": (160, 320, 640, 640),
    "third": (128, 256, 512, 512),
}
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")


# --------------------------------------------------------------------------------------------------------------
# children (run as: python bench_generate.py --child ROLE --dir DIR ...)
# --------------------------------------------------------------------------------------------------------------


def _build(d: Path, unet: str, seed: int) -> None:
    """Save the benchmark model as a diffusers folder and a single file (SD1 layout)."""
    import torch
    from diffusers import UNet2DConditionModel

    from iga.models import testing

    tiny = testing.build_tiny("sd1", seed=seed)
    torch.manual_seed(seed)
    tiny.unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=UNETS[unet], layers_per_block=2,
        attention_head_dim=8, cross_attention_dim=tiny.text_encoders[0].config.hidden_size,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    ).eval()
    with torch.no_grad():  # small perturbation of the default init, so no layer is an exact identity/zero
        gen = torch.Generator().manual_seed(seed)
        for p in tiny.unet.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    testing.save_folder(tiny, d / "folder")
    testing.save_single_file(tiny, d / "model.safetensors")


def _child(role: str, d: Path, size: int, steps: int, cfg: float, seed: int, out: Path) -> dict:
    import resource

    t0 = time.perf_counter()
    import numpy as np
    import torch

    if role == "diffusers":
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    else:
        import iga
    t_import = time.perf_counter()
    if role == "diffusers":
        pipe = StableDiffusionPipeline.from_pretrained(str(d / "folder"), local_files_only=True, safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.scheduler = EulerDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")
        pipe.set_progress_bar_config(disable=True)

        def run(n: int):
            return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=n, guidance_scale=cfg, height=size,
                        width=size, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    else:
        model = iga.load(d / ("folder" if role == "iga" else "model.safetensors"))
        model.backend()  # load the weights now (iga.load is lazy), so load time is comparable

        def run(n: int):
            return model.generate(PROMPT, negative_prompt=NEGATIVE, sampler="euler", schedule="karras", steps=n,
                                  cfg=cfg, seed=seed, size=f"{size}x{size}")[0].image
    t_load = time.perf_counter()
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run(1)
    t_warm, c_warm = time.perf_counter(), time.process_time()
    image = run(steps)
    t_gen, c_gen = time.perf_counter(), time.process_time()
    np.save(out, np.asarray(image.convert("RGB")))
    return {"role": role, "import_s": t_import - t0, "load_s": t_load - t_import, "warmup_s": t_warm - t_load,
            "generate_s": t_gen - t_warm, "generate_cpu_s": c_gen - c_warm, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_rss_after_load_mb": rss_load,
            "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------------------------


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "IGA_AUDIT_LOG": os.devnull, "TOKENIZERS_PARALLELISM": "false"}


def _run_child(args: argparse.Namespace, role: str, d: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", role, "--dir", str(d), "--size", str(args.size), "--steps",
           str(args.steps), "--cfg", str(args.cfg), "--seed", str(args.seed), "--out", str(out)]
    p = subprocess.run(cmd, env=_env(args.threads), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{role} child failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _cold_start(args: argparse.Namespace) -> list[dict] | str:
    """`iga generate` on the bundled demo model, process start to PNG written (fresh process each time)."""
    from iga.paths import default_model_path  # light: no torch

    demo = args.cold_model or default_model_path()
    if not demo.exists():
        return f"skipped: the bundled demo model {demo} does not exist yet"
    model_args = ["--model", str(demo)] if args.cold_model else []
    iga_exe = Path(sys.executable).with_name("iga")
    cmd = [str(iga_exe)] if iga_exe.exists() else [sys.executable, "-m", "iga.cli"]
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.time()
            p = subprocess.run([*cmd, "generate", PROMPT, *model_args, "--seed", "1", "--out", tmp, "--json"],
                               env=_env(args.threads), capture_output=True, text=True)
            exited = time.time()
            if p.returncode != 0:
                return f"failed: iga generate exited {p.returncode}: {p.stderr.strip()[-500:]}"
            report = json.loads(p.stdout)
            png = Path(report["images"][0])
            written = png.stat().st_mtime
            timing = report["timing"]
            to_png = written - start
            runs.append({"to_png_s": to_png, "process_s": exited - start, **timing,
                         "startup_s": to_png - sum(timing.values())})
    return runs


def _print_cold(args: argparse.Namespace) -> None:
    cold = _cold_start(args)
    name = args.cold_model or "the bundled demo model"
    if isinstance(cold, str):
        print(f"cold start of `iga generate` on {name}: {cold}")
        return
    keys = ["to_png_s", "startup_s", "resolve_s", "load_s", "sample_s", "save_s", "process_s"]
    print(f"cold start of `iga generate` on {name} (process start to PNG written), median of {len(cold)}:")
    print("  " + "  ".join(f"{k[:-2]} {_median(cold, k):.2f} s" for k in keys))
    print("  (startup = to_png - resolve - load - sample - save: interpreter start and CLI imports; torch and "
          "diffusers are imported lazily, inside resolve and load; process = "
          "until the process exited)")


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    """Parse arguments; run as the parent (orchestrate, print the table) or as a child (one measured side)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unet", choices=sorted(UNETS), default="half", help="UNet width (SD1.5 structure)")
    ap.add_argument("--size", type=int, default=256, help="image size in pixels (square)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cfg", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per side (1: stable on a shared CPU)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "iga-bench-generate",
                    help="where the benchmark model is saved (reused between runs)")
    ap.add_argument("--no-single-file", action="store_true", help="skip the iga-from-single-file side")
    ap.add_argument("--cold-model", type=Path, help="measure the cold start on this model instead of the demo model")
    ap.add_argument("--cold-only", action="store_true", help="only the cold-start measurement")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child == "build":
        _build(args.dir, args.unet, args.seed)
        return
    if args.child:
        print(json.dumps(_child(args.child, args.dir, args.size, args.steps, args.cfg, args.seed, args.out)))
        return

    if args.cold_only:
        _print_cold(args)
        return
    d = args.cache / f"sd1-{args.unet}-seed{args.seed}"
    if not (d / "model.safetensors").exists():
        print(f"building the benchmark model in {d} ...", flush=True)
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, __file__, "--child", "build", "--dir", str(d), "--unet", args.unet, "--seed",
                        str(args.seed)], env=_env(args.threads), check=True)
    roles = ["diffusers", "iga"] + ([] if args.no_single_file else ["iga-file"])
    rows: dict[str, list[dict]] = {r: [] for r in roles}
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            order = roles[rep % len(roles):] + roles[:rep % len(roles)]  # rotate who goes first
            for role in order:
                r = _run_child(args, role, d, Path(tmp) / f"{role}-{rep}.npy")
                rows[role].append(r)
                print(f"  repeat {rep + 1}/{args.repeats} {role:9s} generate {r['generate_s']:6.2f} s "
                      f"(CPU {r['generate_cpu_s']:6.2f} s)  "
                      f"load {r['load_s']:5.2f} s  import {r['import_s']:5.2f} s  peak RSS {r['peak_rss_mb']:7.0f} MB "
                      f"(after loading {r['peak_rss_after_load_mb']:.0f} MB)",
                      flush=True)
        ref = np.load(Path(tmp) / "diffusers-0.npy").astype(int)
        diffs = {role: max(int(np.abs(np.load(Path(tmp) / f"{role}-{k}.npy").astype(int) - ref).max())
                           for k in range(args.repeats)) for role in roles}
    if ref.std() < 1:
        raise SystemExit("the reference image is flat: the comparison would be vacuous")

    print()
    print(f"iga vs diffusers: SD1.5-shaped UNet at {args.unet} width {UNETS[args.unet]}, tiny CLIP + tiny VAE, "
          f"{args.size}x{args.size}, euler + karras, {args.steps} steps, CFG {args.cfg:g}, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved fresh-process runs; {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}")
    print(f"images agree: max abs pixel difference vs diffusers "
          + ", ".join(f"{role} {v}/255" for role, v in diffs.items()))
    ok = all(v <= 2 for v in diffs.values())
    print()
    print(f"{'side':10s} {'generate s':>10s} {'ratio':>6s} {'<=1.0':5s}   {'CPU s':>6s} {'ratio':>6s}   "
          f"{'peak RSS MB':>11s} {'ratio':>6s} {'<=1.0':5s}   {'min RSS MB':>10s} {'ratio':>6s}   "
          f"{'import+load s':>13s} {'ratio':>6s}")
    base: dict[str, float] = {}
    for role in roles:
        g, m = _median(rows[role], "generate_s"), _median(rows[role], "peak_rss_mb")
        c = _median(rows[role], "generate_cpu_s")
        lo = min(r["peak_rss_mb"] for r in rows[role])
        st = statistics.median(r["import_s"] + r["load_s"] for r in rows[role])
        if role == "diffusers":
            base = {"g": g, "c": c, "m": m, "lo": lo, "st": st}
            print(f"{role:10s} {g:10.2f} {'':6s} {'':5s}   {c:6.2f} {'':6s}   {m:11.0f} {'':6s} {'':5s}   {lo:10.0f} "
                  f"{'':6s}   {st:13.2f}")
            continue
        rg, rm = g / base["g"], m / base["m"]
        print(f"{role:10s} {g:10.2f} {rg:6.3f} {'PASS' if rg <= 1.0 else 'MISS':5s}   {c:6.2f} {c / base['c']:6.3f}   "
              f"{m:11.0f} {rm:6.3f} {'PASS' if rm <= 1.0 else 'MISS':5s}   {lo:10.0f} {lo / base['lo']:6.3f}   "
              f"{st:13.2f} {st / base['st']:6.3f}")
    print("(generate: wall time of prompt encoding + sampling + VAE decoding + PIL image, after a 1-step warm-up; "
          "CPU s: the same in process CPU time, less sensitive to other load on the machine; peak RSS: whole "
          "child process; min RSS: lowest peak over the repeats, less sensitive to allocator noise; iga imports "
          "torch/diffusers lazily, so compare import+load)")
    if not ok:
        print("FAIL: the images differ by more than 2/255; the sides do not compute the same thing")

    print()
    _print_cold(args)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
