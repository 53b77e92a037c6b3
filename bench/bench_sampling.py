"""Benchmark iga's sampling engine: its own overhead per step, and a 20-step run against a diffusers pipeline.

    python bench/bench_sampling.py              # tiny UNet and an SD1.5-sized random UNet (25-60 min on 2 cores)
    python bench/bench_sampling.py --quick      # tiny UNet only (~20 s)

(a) Engine overhead. Every registered sampler runs through ``run.sample`` with a zero-cost network: a raw model that
    returns a cached tensor inside the real ``CFGDenoiser`` (batched cond+uncond, CFG 7) and ``VPParameterization``,
    with the sampler's declared noise source. That time per step is everything iga adds around the network. It is
    set against the measured time of one batched (cond+uncond) UNet call: ``overhead / (overhead + NFE/step x
    t_model)`` is the share of wall time the engine costs. A second column ("sampler only") times the bare sampler
    on a denoiser that returns a cached x0, to show where the overhead sits.
(b) End to end. 20 steps, CFG 7, batch 1: iga's path (``StableDiffusionBackend.encode_prompt``, ``CFGDenoiser``
    around ``backend.raw_model``, ``run.sample``) against ``StableDiffusionPipeline(..., output_type="latent")``
    built from the same UNet, a tiny VAE and a tiny CLIP text encoder (vendored CLIP tokenizer), for Euler (diffusers
    "trailing" = iga "simple") and DPM++ 2M Karras (diffusers rounds Karras timesteps: iga quantizes). Both run under
    ``torch.inference_mode`` from the same initial latents; repeats are interleaved (alternating which goes first)
    and the ratio iga / diffusers is the median of the per-pair ratios (adjacent runs, so slow drift in the machine's
    load cancels). Forward hooks on the shared UNet split each run into UNet time and everything else ("loop
    ms/step"), which is much less noisy than the wall ratio on a shared CPU: both sides call the same UNet on the same
    shapes, so a wall difference beyond the loop difference is load noise.
    The final latents of the two runs are compared (relative L2) to show both computed the same thing.
(c) The paths of (b) once more with the UNet's forward swapped for one that returns a cached tensor: the whole
    per-step cost of each tool around the network (prompt encoding and schedule set-up included), free of the
    network's timing noise. 20 interleaved repeats, median of the paired ratios.

Targets: ratio <= 1.0 (wall (b) and loop overhead (c), each model size) and engine overhead < 1% of wall time
at SD1.5 size (every sampler).
The machine's CPU is shared with other jobs: wall times wander by tens of percent between repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _tiny_unet import SD15_UNET, SD_BETAS, TINY_UNET, build_unet  # noqa: E402

from iga.sampling.guidance import CFGDenoiser  # noqa: E402
from iga.sampling.noise import initial_noise, make_noise_sampler  # noqa: E402
from iga.sampling.parameterization import VPParameterization, make_parameterization, schedule_from_config  # noqa: E402
from iga.sampling.run import sample  # noqa: E402
from iga.sampling.samplers import SAMPLERS  # noqa: E402
from iga.sampling.schedules import karras, simple  # noqa: E402

TRAINING = {"kind": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000,
            "zero_terminal_snr": False}
CFG = 7.0
PROMPT, NEGATIVE = "a photograph of an astronaut riding a horse", ""


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------

class Size:
    """One model size: UNet config, latent side, and the CLIP width its cross-attention expects."""

    def __init__(self, name: str, unet_config: dict, latent: int):
        self.name, self.unet_config, self.latent = name, unet_config, latent
        self.ctx_dim = int(unet_config["cross_attention_dim"])


def tiny_components(ctx_dim: int):
    """A tiny VAE (scale factor 8) and a one-layer CLIP text encoder of width ``ctx_dim`` with the real tokenizer."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from iga.models.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    tok = clip_tokenizer()
    vae = AutoencoderKL(block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                        scaling_factor=0.18215).eval()
    heads = 12 if ctx_dim % 12 == 0 else 4
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=ctx_dim, intermediate_size=64,
                                      num_attention_heads=heads, num_hidden_layers=1, projection_dim=ctx_dim,
                                      max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    return vae, te, tok


def iga_backend(unet, vae, te, tok):
    """iga's SD1 backend over the given components (the path ``iga generate`` takes)."""
    from iga.models.stable_diffusion import StableDiffusionBackend
    from iga.models.text import TextEncoderSlot

    return StableDiffusionBackend(architecture="sd1", prediction_type="eps", training_schedule=dict(TRAINING),
                                  unet=unet, vae=vae, text_encoders=[TextEncoderSlot(te, tok, "last", False)],
                                  device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


def diffusers_pipe(unet, vae, te, tok, scheduler):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


SAMPLER_PAIRS = {  # label -> (iga sampler, iga schedule fn, quantize, diffusers scheduler factory, noise scaling)
    "Euler": ("euler", simple, False,
              lambda: __import__("diffusers").EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="trailing",
                                                                    steps_offset=1), "sigma"),
    "DPM++ 2M Karras": ("dpmpp_2m", karras, True,
                        lambda: __import__("diffusers").DPMSolverMultistepScheduler(**SD_BETAS, use_karras_sigmas=True,
                                                                                    steps_offset=1), "vp_max"),
}


class UNetClock:
    """Forward hooks that add up the time spent inside the UNet (and count the calls)."""

    def __init__(self, unet):
        self.total, self.calls, self._t0 = 0.0, 0, 0.0
        unet.register_forward_pre_hook(self._pre)
        unet.register_forward_hook(self._post)

    def _pre(self, module, args):
        self._t0 = time.perf_counter()

    def _post(self, module, args, out):
        self.total += time.perf_counter() - self._t0
        self.calls += 1

    def reset(self):
        self.total, self.calls = 0.0, 0


def time_model_call(unet, latent: int, ctx_dim: int, repeats: int) -> float:
    """Median seconds of one batched cond+uncond UNet call (batch 2) at the given latent side."""
    x = torch.randn(2, 4, latent, latent)
    ctx = torch.randn(2, 77, ctx_dim)
    t = torch.tensor([500.0, 500.0])
    times = []
    with torch.inference_mode():
        unet(x, t, encoder_hidden_states=ctx)  # warm-up (allocations, kernel selection)
        for _ in range(repeats):
            t0 = time.perf_counter()
            unet(x, t, encoder_hidden_states=ctx)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------------------------
# (a) engine overhead with a zero-cost network
# ---------------------------------------------------------------------------------------------------------------

class CachedRaw:
    """A zero-cost raw model: returns a cached prediction of the right batch size."""

    def __init__(self, out: torch.Tensor):
        self.out = out

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return self.out[: x.shape[0]]


class CachedDenoiser:
    """A zero-cost denoiser for the bare samplers: returns a cached x0 estimate (and, for CFG++, the same as uncond)."""

    kind, prediction = "vp", "eps"

    def __init__(self, x0: torch.Tensor):
        self.x0, self.nfe = x0, 0

    def __call__(self, x, sigma):
        self.nfe += 1
        return self.x0

    def denoise_with_uncond(self, x, sigma):
        self.nfe += 1
        return self.x0, self.x0


def engine_overhead(latent: int, ctx_dim: int, steps: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    """sampler -> (engine seconds per step, bare-sampler seconds per step, NFE per step)."""
    vp = schedule_from_config(TRAINING)
    sigmas = karras(steps, vp)
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn((2, 4, latent, latent), generator=gen) * 0.8
    x0 = torch.randn((1, 4, latent, latent), generator=gen) * 0.5
    cond = {"encoder_hidden_states": torch.randn((1, 77, ctx_dim), generator=gen)}
    uncond = {"encoder_hidden_states": torch.randn((1, 77, ctx_dim), generator=gen)}
    out: dict[str, tuple[float, float, float]] = {}
    with torch.inference_mode():
        for name, spec in SAMPLERS.items():
            engine, bare, nfe = [], [], 0
            for r in range(repeats + 1):  # the first round warms up
                noise = initial_noise((4, latent, latent), [r])
                den = CFGDenoiser(CachedRaw(pred), VPParameterization(vp, "eps"), cond, uncond, CFG)
                t0 = time.perf_counter()
                ns = make_noise_sampler(spec.noise, noise, [r], sigmas)
                sample(spec, den, noise, sigmas, noise_sampler=ns)
                t1 = time.perf_counter()
                bare_den = CachedDenoiser(x0)
                ns = make_noise_sampler(spec.noise, noise, [r], sigmas)
                t2 = time.perf_counter()
                spec.fn(bare_den, noise * float(sigmas[0]), sigmas, noise=ns)
                t3 = time.perf_counter()
                if r:
                    engine.append((t1 - t0) / steps)
                    bare.append((t3 - t2) / steps)
                nfe = den.nfe
            out[name] = (statistics.median(engine), statistics.median(bare), nfe / steps)
    return out


# ---------------------------------------------------------------------------------------------------------------
# (b) 20 steps end to end against a diffusers pipeline
# ---------------------------------------------------------------------------------------------------------------

def run_iga(backend, label: str, steps: int, noise: torch.Tensor) -> torch.Tensor:
    """iga's generation path for one image, without the VAE decode (like output_type="latent")."""
    name, schedule_fn, quantize, _, scaling = SAMPLER_PAIRS[label]
    with torch.inference_mode():
        cond, uncond = backend.encode_prompt([PROMPT], [NEGATIVE], width=8 * noise.shape[-1],
                                             height=8 * noise.shape[-2])
        training = dict(backend.training_schedule, quantize=quantize)
        schedule = schedule_from_config(training)
        sigmas = schedule_fn(steps, schedule)
        den = CFGDenoiser(backend.raw_model, make_parameterization("eps", schedule), cond, uncond, CFG)
        spec = SAMPLERS[name]
        ns = make_noise_sampler(spec.noise, noise, [0], sigmas)
        return sample(spec, den, noise, sigmas, noise_sampler=ns, noise_scaling=scaling)


def run_diffusers(pipe, steps: int, noise: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=CFG,
                    latents=noise.clone(), height=8 * noise.shape[-2], width=8 * noise.shape[-1],
                    output_type="latent").images


def end_to_end(size: Size, unet, steps: int, repeats: int) -> dict[str, dict[str, float]]:
    """label -> figures: median wall times, ratio, loop overhead per step, latent agreement."""
    vae, te, tok = tiny_components(size.ctx_dim)
    backend = iga_backend(unet, vae, te, tok)
    clock = UNetClock(unet)
    noise = initial_noise((4, size.latent, size.latent), [1234])
    results = {}
    for label, (_, _, _, make_scheduler, _) in SAMPLER_PAIRS.items():
        pipe = diffusers_pipe(unet, vae, te, tok, make_scheduler())
        run_iga(backend, label, 2, noise)  # warm-up both paths
        run_diffusers(pipe, 2, noise)
        walls = {"iga": [], "diffusers": []}
        other = {"iga": [], "diffusers": []}
        inside = {"iga": [], "diffusers": []}
        calls = {}
        latents = {}
        for r in range(repeats):
            order = ("iga", "diffusers") if r % 2 == 0 else ("diffusers", "iga")
            for who in order:
                clock.reset()
                t0 = time.perf_counter()
                x = run_iga(backend, label, steps, noise) if who == "iga" else run_diffusers(pipe, steps, noise)
                wall = time.perf_counter() - t0
                walls[who].append(wall)
                inside[who].append(clock.total)
                other[who].append((wall - clock.total) / steps)
                calls[who] = clock.calls
                latents[who] = x
        med = {k: statistics.median(v) for k, v in walls.items()}
        agree = float((latents["iga"] - latents["diffusers"]).norm() / latents["diffusers"].norm())
        pairs = [a / b for a, b in zip(walls["iga"], walls["diffusers"])]
        results[label] = {
            "iga_s": med["iga"], "diffusers_s": med["diffusers"], "ratio": statistics.median(pairs), "ratios": pairs,
            "iga_unet_s": statistics.median(inside["iga"]), "diffusers_unet_s": statistics.median(inside["diffusers"]),
            "iga_other_ms": 1e3 * statistics.median(other["iga"]),
            "diffusers_other_ms": 1e3 * statistics.median(other["diffusers"]),
            "iga_calls": calls["iga"], "diffusers_calls": calls["diffusers"], "agreement": agree,
        }
    return results


class ZeroCostForward:
    """Swaps a UNet's forward for one that returns a cached prediction (restored on exit); hooks still run."""

    def __init__(self, unet, latent: int):
        self.unet = unet
        self.out = torch.randn((2, 4, latent, latent), generator=torch.Generator().manual_seed(5)) * 0.5

    def forward(self, sample, timestep, encoder_hidden_states=None, *args, return_dict=True, **kwargs):
        out = self.out[: sample.shape[0]]
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)

    def __enter__(self):
        self.unet.forward = self.forward
        return self

    def __exit__(self, *exc):
        del self.unet.forward


def loop_overhead(size: Size, unet, steps: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    """label -> (iga us/step, diffusers us/step, median paired ratio) of the whole paths of (b), zero-cost UNet.

    Everything but the network runs: prompt encoding, schedule set-up, CFG batching, parameterization, sampler or
    scheduler step, pipeline bookkeeping. The UNet object only provides the pipeline's config here, so its real size
    does not matter; latents and text width are those of ``size``.
    """
    vae, te, tok = tiny_components(size.ctx_dim)
    backend = iga_backend(unet, vae, te, tok)
    noise = initial_noise((4, size.latent, size.latent), [1234])
    results = {}
    with ZeroCostForward(unet, size.latent):
        for label, (_, _, _, make_scheduler, _) in SAMPLER_PAIRS.items():
            pipe = diffusers_pipe(unet, vae, te, tok, make_scheduler())
            run_iga(backend, label, steps, noise)
            run_diffusers(pipe, steps, noise)
            ours, theirs = [], []
            for r in range(repeats):
                for who in (("iga", "diffusers") if r % 2 == 0 else ("diffusers", "iga")):
                    t0 = time.perf_counter()
                    run_iga(backend, label, steps, noise) if who == "iga" else run_diffusers(pipe, steps, noise)
                    (ours if who == "iga" else theirs).append((time.perf_counter() - t0) / steps)
            results[label] = (statistics.median(ours), statistics.median(theirs),
                              statistics.median([a / b for a, b in zip(ours, theirs)]))
    return results


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------

def fmt_us(s: float) -> str:
    return f"{s * 1e6:9.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny UNet only (skip the SD1.5-sized UNet)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved repeats of each end-to-end run with the SD1.5-sized UNet (default 3)")
    ap.add_argument("--tiny-repeats", type=int, default=15,
                    help="interleaved repeats with the tiny UNet, whose runs take ~0.3 s (default 15)")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps of the end-to-end runs (default 20)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a shared CPU, more threads mostly add contention)")
    ap.add_argument("--sd-latent", type=int, default=32, help="latent side for the SD1.5-sized UNet (default 32)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.tiny_repeats < 1 or args.steps < 2:
        ap.error("--repeats and --tiny-repeats must be >= 1, --steps >= 2")
    torch.set_num_threads(args.threads)
    sizes = [Size("tiny", TINY_UNET, 8)]
    if not args.quick:
        sizes.append(Size("SD1.5", SD15_UNET, args.sd_latent))

    import diffusers

    print(f"iga sampling benchmark: torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
          f"{args.threads} thread(s), {args.steps} steps, CFG {CFG:g}, repeats {args.tiny_repeats} (tiny) / "
          f"{args.repeats} (SD1.5)")
    checks: list[tuple[str, bool]] = []
    for size in sizes:
        t0 = time.perf_counter()
        unet = build_unet(size.unet_config, perturb=0.0 if size.name == "SD1.5" else 0.05)
        n_params = sum(p.numel() for p in unet.parameters())
        t_model = time_model_call(unet, size.latent, size.ctx_dim, 3 if size.name == "SD1.5" else 20)
        print(f"\n== {size.name} UNet: {n_params / 1e6:.1f}M parameters (built in {time.perf_counter() - t0:.1f} s), "
              f"latent {size.latent}x{size.latent}; one batched cond+uncond call: {t_model * 1e3:.1f} ms")

        print(f"\n(a) engine overhead per step with a zero-cost network ({args.steps}-step Karras list, "
              f"latent {size.latent}x{size.latent})")
        over = engine_overhead(size.latent, size.ctx_dim, args.steps, repeats=5)
        print(f"{'sampler':24} {'NFE/step':>8} {'engine us':>9} {'sampler us':>10} {'% of wall':>9}")
        worst = ("", 0.0)
        for name, (eng, bare, nfe) in over.items():
            share = eng / (eng + nfe * t_model)
            worst = max(worst, (name, share), key=lambda p: p[1])
            print(f"{name:24} {nfe:8.2f} {fmt_us(eng)} {fmt_us(bare):>10} {100 * share:8.3f}%")
        print(f"largest share: {worst[0]} {100 * worst[1]:.3f}%")
        if size.name == "SD1.5":
            checks.append((f"engine overhead < 1% of wall time at SD1.5 size (max {100 * worst[1]:.3f}%, {worst[0]})",
                           worst[1] < 0.01))

        repeats = args.repeats if size.name == "SD1.5" else args.tiny_repeats
        print(f"\n(b) {args.steps} steps end to end vs StableDiffusionPipeline (output_type='latent'), "
              f"median of {repeats} interleaved repeats")
        e2e = end_to_end(size, unet, args.steps, repeats)
        print(f"{'sampler':16} {'iga s':>8} {'diffusers s':>11} {'ratio':>6} {'ratio range':>12} "
              f"{'UNet s iga':>10} {'diffusers':>9} {'loop ms/step iga':>16} {'diffusers':>9} {'UNet calls':>10} "
              f"{'latent rel L2':>13}")
        for label, f in e2e.items():
            rs = sorted(f["ratios"])
            ratios = f"{rs[0]:.3f}..{rs[-1]:.3f}"
            print(f"{label:16} {f['iga_s']:8.3f} {f['diffusers_s']:11.3f} {f['ratio']:6.3f} {ratios:>12} "
                  f"{f['iga_unet_s']:10.3f} {f['diffusers_unet_s']:9.3f} {f['iga_other_ms']:16.2f} "
                  f"{f['diffusers_other_ms']:9.2f} "
                  f"{f['iga_calls']:>4}/{f['diffusers_calls']:<5} {f['agreement']:13.2e}")
            checks.append((f"{size.name} {label}: wall ratio iga/diffusers {f['ratio']:.3f} <= 1.0", f["ratio"] <= 1.0))

        print(f"\n(c) the same two paths with a zero-cost UNet (its forward returns a cached tensor): loop overhead "
              f"per step, median of 20 interleaved repeats")
        print(f"{'sampler':16} {'iga us/step':>11} {'diffusers us/step':>17} {'ratio':>6}")
        for label, (ours, theirs, ratio) in loop_overhead(size, unet, args.steps, 20).items():
            print(f"{label:16} {fmt_us(ours):>11} {fmt_us(theirs):>17} {ratio:6.3f}")
            checks.append((f"{size.name} {label}: loop overhead ratio iga/diffusers {ratio:.3f} <= 1.0", ratio <= 1.0))
        del unet
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
