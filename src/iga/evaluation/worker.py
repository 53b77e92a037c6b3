"""The compute side of a sweep: a worker holds one loaded model and turns resolved plans into pixels and metrics.

Workers never consult the guard, write files or touch the journal: the parent resolves every point first (so
what the engine would refuse is refused there, with a finding) and saves what workers send back. The same
worker runs in-process, in a local worker process or as a Ray actor, so every backend computes identically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from . import failures, metrics


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to load (plain data: it is sent to other processes)."""

    model_path: str
    judge_path: str | None = None  # the demo judge (adherence); None: no judge
    clip_model: str | None = None  # a local transformers CLIP folder (clip_score)
    lpips_weights: str | None = None  # LPIPS weights (lpips against the reference)
    threads: int | None = None  # torch threads in this worker; pixels depend on it, plans record it


@dataclass
class Item:
    """One plan to render: its row key, the plan (as JSON data) and the row fields fixed by the parent."""

    key: str
    plan: dict[str, Any]
    row: dict[str, Any]
    keep_pixels: bool = True  # repeats only need the pixel hash


@dataclass
class Group:
    """Every plan of one (prompt, seed): its reference first (or its pixels, when already made)."""

    prompt: str
    seed: int
    reference: Item | None
    reference_pixels: np.ndarray | None
    items: list[Item] = field(default_factory=list)


@dataclass
class Result:
    """A finished item: the row's computed fields, the pixels to save (or None) and the plan that made them."""

    key: str
    row: dict[str, Any]
    pixels: np.ndarray | None
    plan: dict[str, Any] | None


class SweepWorker:
    """Loads the model (and judge, learned metrics) once; renders groups of plans."""

    def __init__(self, config: WorkerConfig, model: Any = None):
        """``model``: an already loaded ``iga.generate.Model`` of config.model_path (in-process use)."""
        import torch

        from iga.generate import Model

        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.model = model if model is not None else Model(config.model_path)
        self.judge = None
        if config.judge_path:
            from iga.demo.judge import load_judge

            self.judge = load_judge(config.judge_path)
        self._encoded: dict[tuple, Any] = {}

    def run_group(self, group: Group) -> Iterator[Result]:
        """Render the group's reference (if needed) and items, yielding each as it finishes."""
        ref_pixels, ref_metrics = group.reference_pixels, None
        if group.reference is not None:
            res = self._render(group.reference, None, None)
            ref_pixels = res.pixels
            yield res
        if ref_pixels is not None:
            ref_metrics = metrics.image_metrics(ref_pixels)
        for item in group.items:
            yield self._render(item, ref_pixels, ref_metrics)

    def run_group_list(self, group: Group) -> list[Result]:
        """run_group as a list (what process pools and Ray send back)."""
        return list(self.run_group(group))

    def _generate(self, plan):
        from iga.generate import encode, encoding_key

        backend = self.model.backend_for(plan)
        k = (id(backend), *encoding_key(plan))
        if k not in self._encoded:
            if len(self._encoded) > 256:
                self._encoded.clear()
            self._encoded[k] = encode(plan, backend)
        [img] = self.model.generate(plan=plan, encoded=self._encoded[k])
        return img

    def _render(self, item: Item, ref: np.ndarray | None, ref_m: dict[str, float] | None) -> Result:
        from iga.guard import Plan
        from iga.sampling.base import NonFiniteError

        t0 = time.perf_counter()
        plan = Plan.from_dict(item.plan)
        row: dict[str, Any] = {}
        try:
            img = self._generate(plan)
        except NonFiniteError as e:
            row.update(failure="non_finite", failures="non_finite", error=str(e))
            return Result(item.key, {**row, "seconds": time.perf_counter() - t0}, None, None)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # recorded as a failure of this point; the sweep goes on
            row.update(failure="exception", failures="exception", error=f"{type(e).__name__}: {e}"[:500])
            return Result(item.key, {**row, "seconds": time.perf_counter() - t0}, None, None)
        px = img.pixels
        row.update(self._measure(px, plan, ref, ref_m))
        row.update(pixels_sha256=img.plan.pixels_sha256, nfe=img.nfe)
        row["seconds"] = time.perf_counter() - t0
        return Result(item.key, row, px if item.keep_pixels else None, img.plan.to_dict())

    def _measure(self, px: np.ndarray, plan, ref: np.ndarray | None, ref_m: dict[str, float] | None) -> dict:
        return measure_image(px, plan.prompt, ref, ref_m, judge=self.judge, lpips_weights=self.config.lpips_weights,
                             clip_model=self.config.clip_model)


def measure_image(px: np.ndarray, prompt: str, ref: np.ndarray | None = None, ref_m: dict[str, float] | None = None,
                  *, judge: Any = None, lpips_weights: str | None = None, clip_model: str | None = None) -> dict:
    """Every metric of one image (against its reference when given) and the failures the detectors find: the
    row fields a sweep records, and what `iga doctor` measures its own renders with."""
    m: dict[str, Any] = metrics.image_metrics(px)
    if ref is not None and ref.shape == px.shape:
        m.update(metrics.reference_metrics(px, ref))
        if lpips_weights:
            from .learned import lpips

            m["lpips"] = float(lpips(px[None], ref[None], lpips_weights)[0])
    if judge is not None:
        from .judge import adherence

        m.update(adherence(judge, px, prompt))
    if clip_model:
        from .learned import clip_score

        m["clip_score"] = float(clip_score(px[None], [prompt], clip_model)[0])
    found = failures.detect(px, m, ref_m)
    return {**m, "failure": found[0] if found else "", "failures": ";".join(found)}
