"""Score the demo model through the guard: generate over training and held-out prompts, let the judge read them.

Two honest, offline measures: prompt adherence (does the judge read back the shape and colours the prompt
asked for?) and the Frechet distance between judge features of generated and real images of the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import data

GROUPS = ("train", "held_out")


def prompt_set(group: str, n_images: int) -> list[tuple[str, int]]:
    """(prompt, seed) pairs for a group: prompts spread evenly over the group's triples, fixed seeds."""
    triples = data.train_triples() if group == "train" else data.held_out_triples()
    n_prompts = min(len(triples), n_images)
    step = len(triples) / n_prompts
    chosen = [triples[int(i * step)] for i in range(n_prompts)]
    base = 1000 if group == "train" else 2000
    # round-robin, so exactly n_images come back even when the prompt count does not divide it
    return [(chosen[i % n_prompts].prompt, base + i // n_prompts) for i in range(n_images)]


@dataclass
class GroupScore:
    """Accuracy per attribute for one prompt group."""

    n: int = 0
    correct: dict[str, int] = field(default_factory=lambda: {"shape": 0, "fg": 0, "bg": 0, "all": 0})
    frechet: float | None = None

    def accuracy(self) -> dict[str, float]:
        """Fractions correct per attribute (and all three at once)."""
        return {k: v / self.n if self.n else 0.0 for k, v in self.correct.items()}


def score(model: Any, judge: Any, *, n_per_group: int = 110, request: dict[str, Any] | None = None,
          mode: str = "guarded", progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate ``n_per_group`` images per group through the guard and judge them; returns a JSON-able report."""
    from iga.guard import Request

    from iga.evaluation.frechet import feature_stats, frechet_distance

    from .judge import features, read

    fields = dict(request or {})
    groups: dict[str, GroupScore] = {}
    plan_info: dict[str, Any] = {}
    total = n_per_group * len(GROUPS)
    done = 0
    for group in GROUPS:
        gs = GroupScore()
        pairs = prompt_set(group, n_per_group)
        by_prompt: dict[str, list[int]] = {}
        for prompt, seed in pairs:
            by_prompt.setdefault(prompt, []).append(seed)
        gen_pixels, real_pixels = [], []
        for prompt, seeds in by_prompt.items():
            req = Request(prompt=prompt, seeds=seeds, batch=len(seeds), **fields)
            plan = model.plan(request=req, mode=mode)
            plan_info = {"sampler": plan.sampler, "schedule": plan.schedule, "steps": plan.steps, "cfg": plan.cfg,
                         "nfe": plan.nfe, "prediction_type": plan.prediction_type,
                         "overrides": [o.field for o in plan.overrides]}
            images = model.generate(plan=plan)
            pixels = np.stack([im.pixels for im in images])
            want = data.parse_prompt(prompt)
            for r in read(judge, pixels):
                ok = {"shape": r.shape == want.shape, "fg": r.fg == want.fg, "bg": r.bg == want.bg}
                for k, v in ok.items():
                    gs.correct[k] += int(v)
                gs.correct["all"] += int(all(ok.values()))
                gs.n += 1
            gen_pixels.append(pixels)
            real = data.render([want] * len(seeds), np.random.default_rng(seeds[0]))
            real_pixels.append(data.to_uint8(real))
            done += len(seeds)
            if progress:
                progress(done, total)
        if gs.n >= 2:  # one image has no covariance; the report says None instead
            fg_, fr_ = features(judge, np.concatenate(gen_pixels)), features(judge, np.concatenate(real_pixels))
            gs.frechet = frechet_distance(*feature_stats(fg_), *feature_stats(fr_))
        groups[group] = gs
    return {"schema": "iga.demo-score/1", "settings": plan_info, "mode": mode,
            "groups": {g: {"n": s.n, "accuracy": s.accuracy(), "frechet": s.frechet} for g, s in groups.items()}}
