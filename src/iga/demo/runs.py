"""``iga demo train --model pixel|latent|flow``: the stages of each demo model, each resumable on its own.

A stage is one :class:`~iga.demo.trainer.Trainer` run in its own checkpoint folder under OUT. A stage whose
checkpoint has reached its step count and whose export exists is skipped, so rerunning the command after an
interruption continues where it stopped and a finished run only re-exports nothing. Stage settings default to
those of the shipped weights (``iga.demo.latent.STAGE_SETTINGS``, ``iga.demo.flow.STAGE_SETTINGS``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .model import FAMILY

MODELS = tuple(FAMILY)
PIXEL_SETTINGS: dict[str, Any] = {"max_steps": None, "max_minutes": 75.0}  # time-bounded, as the shipped run
Progress = Callable[[str, int, int | None, float], None]  # (stage, step, total, loss)


@dataclass(frozen=True)
class Limits:
    """What the user changed: exact steps of the main stage, of the VAE stages, or a time budget; batch; seed."""

    steps: int | None = None
    vae_steps: int | None = None
    max_minutes: float | None = None
    batch: int | None = None
    seed: int = 0


def _config(settings: dict[str, Any], limits: Limits, steps: int | None) -> Any:
    from .trainer import TrainConfig

    s = dict(settings)
    if steps is not None:
        s["max_steps"] = steps
    elif limits.max_minutes is not None:
        s["max_steps"], s["max_minutes"] = None, limits.max_minutes
    if limits.batch is not None:
        s["batch"] = limits.batch
    return TrainConfig(seed=limits.seed, **s)


def _finished(ckpt: Path, target: Path, cfg: Any) -> bool:
    state = ckpt / "state.json"
    if not (state.exists() and target.exists() and cfg.max_steps is not None):
        return False
    return json.loads(state.read_text()).get("step", 0) >= cfg.max_steps


def run_stage(name: str, ckpt: Path, target: Path, task: Any, cfg: Any, progress: Progress | None) -> dict[str, Any]:
    """Train (or resume) one stage and export it to ``target``; skipped when already complete."""
    from .trainer import Trainer

    if _finished(ckpt, target, cfg):
        return {"stage": name, "skipped": "already complete", "export": str(target)}
    trainer = Trainer(ckpt, cfg, resume=True, task=task)
    summary = trainer.run(None if progress is None else
                          lambda step, loss, _e: progress(name, step, cfg.max_steps, loss))
    return {"stage": name, **summary, "export": str(trainer.export(target))}


def train(model: str, out: Path, limits: Limits, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Train every stage of ``model`` into ``out``; returns one summary per stage."""
    out.mkdir(parents=True, exist_ok=True)
    if model == "pixel":
        from .trainer import PixelTask

        cfg = _config(PIXEL_SETTINGS, limits, limits.steps)
        return [run_stage("diffusion", out / "ckpt", out / f"{FAMILY['pixel']}.safetensors", PixelTask(), cfg, progress)]
    if model == "flow":
        from .flow import NAME, STAGE_SETTINGS, FlowTask

        cfg = _config(STAGE_SETTINGS, limits, limits.steps)
        return [run_stage("flow", out / "flow-ckpt", out / f"{NAME}.safetensors", FlowTask(), cfg, progress)]
    if model == "latent":
        return _train_latent(out, limits, progress)
    raise ValueError(f"unknown demo model {model!r}; use one of {', '.join(MODELS)}")


def _train_latent(out: Path, limits: Limits, progress: Progress | None) -> list[dict[str, Any]]:
    from .latent import NAME, SHIFTED_VAE_NAME, STAGE_SETTINGS, LatentDiffusionTask, ShiftedDecoderTask, VaeTask

    vae = out / "vae"
    done = [run_stage("vae", out / "vae-ckpt", vae, VaeTask(),
                      _config(STAGE_SETTINGS["vae"], limits, limits.vae_steps), progress)]
    done.append(run_stage("vae-warm", out / "vae-warm-ckpt", out / f"{SHIFTED_VAE_NAME}.safetensors",
                          ShiftedDecoderTask(vae), _config(STAGE_SETTINGS["vae-warm"], limits, limits.vae_steps),
                          progress))
    done.append(run_stage("diffusion", out / "diffusion-ckpt", out / f"{NAME}.safetensors",
                          LatentDiffusionTask(vae), _config(STAGE_SETTINGS["diffusion"], limits, limits.steps),
                          progress))
    return done
