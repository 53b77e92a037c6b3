"""Quick evaluation of the demo model across sampler / schedule / steps / CFG, read back by the judge.

This bypasses the guard on purpose: it measures what the model does under each setting (including clearly
wrong ones, such as treating the v-prediction model as eps-prediction), which is the evidence a recipe is
written from. Sampling uses :mod:`iga.sampling` (the same engine as generation); images are read by the judge.

    python -m iga.demo.quick_eval --model runs/demo/iga-demo-v1.safetensors --n 200 --grid default
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Setting:
    """One sampling configuration to evaluate."""

    sampler: str = "dpmpp_2m"
    schedule: str = "karras"
    steps: int = 20
    cfg: float = 3.0
    prediction: str = "v"  # what the model is *treated* as; "eps" is deliberately wrong for the demo model

    @property
    def label(self) -> str:
        """Short human-readable name."""
        wrong = "" if self.prediction == "v" else f" AS {self.prediction.upper()}"
        return f"{self.sampler}/{self.schedule}/{self.steps}/cfg{self.cfg:g}{wrong}"


def default_grid() -> list[Setting]:
    """The settings the report compares: steps, CFG, sampler, schedule, and one wrong parameterization."""
    grid = [Setting(), Setting(prediction="eps")]
    grid += [Setting(cfg=c) for c in (1.0, 2.0, 5.0)]
    grid += [Setting(steps=s) for s in (10, 30)]
    grid += [Setting(schedule="normal"), Setting(sampler="euler_ancestral", schedule="normal")]
    grid += [Setting(sampler="euler", schedule=sch, steps=s) for sch in ("karras", "normal") for s in (10, 20)]
    grid += [Setting(sampler="euler", schedule="normal", prediction="eps")]
    return grid


def prompts_and_seeds(n: int) -> list[tuple[str, int, str]]:
    """``n`` (prompt, seed, group) triples: half training prompts, half held-out prompts, fixed seeds."""
    from iga.demo import data

    out: list[tuple[str, int, str]] = []
    for group, triples, base in (("train", data.train_triples(), 1000), ("held_out", data.held_out_triples(), 2000)):
        k = n // 2 if group == "train" else n - n // 2
        for i in range(k):
            t = triples[(i * 7) % len(triples)] if group == "train" else triples[i % len(triples)]
            out.append((t.prompt, base + i, group))
    return out


def generate(unet: Any, text_encoder: Any, tokenizer: Any, config: dict[str, Any], setting: Setting,
             prompts: list[str], seeds: list[int], batch: int = 100) -> np.ndarray:
    """Sample images (uint8 [N, 32, 32, 3]) for prompts/seeds under ``setting`` with the iga sampling engine."""
    import torch

    from iga.demo.model import encode
    from iga.sampling.guidance import CFGDenoiser
    from iga.sampling.noise import initial_noise, make_noise_sampler
    from iga.sampling.parameterization import VPParameterization, schedule_from_config
    from iga.sampling.run import sample
    from iga.sampling.samplers.registry import get_sampler
    from iga.sampling.schedules import compute_schedule

    schedule = schedule_from_config(config["training_schedule"])
    sigmas = compute_schedule(setting.schedule, setting.steps, schedule)
    spec = get_sampler(setting.sampler)
    param = VPParameterization(schedule, setting.prediction)  # type: ignore[arg-type]

    def raw(x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return unet(x, t, encoder_hidden_states=cond["encoder_hidden_states"],
                    class_labels=cond["class_labels"]).sample

    size = int(config["unet"].get("sample_size", 32))
    out = []
    for i in range(0, len(prompts), batch):
        ps, ss = prompts[i:i + batch], seeds[i:i + batch]
        cond = encode(text_encoder, tokenizer, ps)
        uncond = encode(text_encoder, tokenizer, [""] * len(ps))
        den = CFGDenoiser(raw, param, cond, uncond, setting.cfg)
        x = initial_noise((3, size, size), ss)
        # The sampler's declared prediction support is checked by `sample`; the wrong-eps run is still "eps".
        ns = make_noise_sampler(spec.noise, x, ss, sigmas)
        with torch.no_grad():
            img = sample(spec, den, x, sigmas, noise_sampler=ns)
        out.append(((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def evaluate(model_path: str | Path, judge_path: str | Path | None, settings: list[Setting], n: int = 200,
             batch: int = 100, on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Judge accuracy per attribute (train / held-out prompts) and judge-feature Frechet distance per setting."""
    from iga.demo import data
    from iga.demo.judge import feature_stats, features, frechet_distance, load_judge, read
    from iga.demo.model import load_demo_model

    unet, te, tok, config = load_demo_model(model_path)
    judge = load_judge(judge_path)
    items = prompts_and_seeds(n)
    prompts, seeds, groups = [p for p, _, _ in items], [s for _, s, _ in items], [g for _, _, g in items]
    real = []
    for p, s in zip(prompts, seeds):
        real.append(data.render([data.parse_prompt(p)], np.random.default_rng(s)))
    real_stats = feature_stats(features(judge, data.to_uint8(np.concatenate(real))))
    rows = []
    for st in settings:
        t0 = time.perf_counter()
        imgs = generate(unet, te, tok, config, st, prompts, seeds, batch=batch)
        secs = time.perf_counter() - t0
        readings = read(judge, imgs)
        acc: dict[str, dict[str, float]] = {}
        for group in ("train", "held_out", "all"):
            idx = [i for i, g in enumerate(groups) if group in ("all", g)]
            c = {"shape": 0, "fg": 0, "bg": 0, "all3": 0}
            for i in idx:
                w, r = data.parse_prompt(prompts[i]), readings[i]
                ok = (r.shape == w.shape, r.fg == w.fg, r.bg == w.bg)
                c["shape"] += ok[0]
                c["fg"] += ok[1]
                c["bg"] += ok[2]
                c["all3"] += all(ok)
            acc[group] = {k: v / max(1, len(idx)) for k, v in c.items()}
        fd = frechet_distance(*feature_stats(features(judge, imgs)), *real_stats)
        rows.append({"setting": asdict(st), "label": st.label, "accuracy": acc, "frechet": fd,
                     "seconds": round(secs, 1), "n": len(prompts)})
        if on_row:
            on_row(rows[-1])
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of evaluation rows."""
    head = ("| setting | shape | fg | bg | all 3 (train) | all 3 (held-out) | Frechet | s |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        a, tr, ho = r["accuracy"]["all"], r["accuracy"]["train"], r["accuracy"]["held_out"]
        lines.append(f"| {r['label']} | {a['shape']:.1%} | {a['fg']:.1%} | {a['bg']:.1%} | {tr['all3']:.1%} | "
                     f"{ho['all3']:.1%} | {r['frechet']:.2f} | {r['seconds']} |")
    return "\n".join(lines)


def _main() -> None:
    import argparse

    import torch

    ap = argparse.ArgumentParser(description="Evaluate the demo model over sampling settings with the judge.")
    ap.add_argument("--model", default=None, help="demo model file (default: the bundled one)")
    ap.add_argument("--judge", default=None, help="judge file (default: the bundled one)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--grid", default="default", help="'default' or 'base' (just the recipe default)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    settings = default_grid() if a.grid == "default" else [Setting()]
    print(format_table([]), flush=True)
    rows = evaluate(a.model or _default_model(), a.judge, settings, n=a.n, batch=a.batch,
                    on_row=lambda r: print(format_table([r]).splitlines()[-1], flush=True))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def _default_model() -> str:
    from iga.demo.model import shipped_model_path

    return str(shipped_model_path())


if __name__ == "__main__":
    _main()
