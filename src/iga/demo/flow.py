"""``iga-demo-flow-v1``: a rectified-flow model on the shapes data, pixel space, the pixel demo's networks.

``x_sigma = (1 - sigma) x0 + sigma eps`` with the network predicting the velocity ``eps - x0`` at time
``sigma * 1000``, as SD3 and Flux do. Training times are drawn logit-normal (SD3's choice) and then shifted
with SD3's rule ``shift * t / (1 + (shift - 1) t)`` at SHIFT, so the model sees mostly high-noise times; its
recipe samples along the same shifted schedule. It runs through iga's flow parameterization with the
bundled demo backend (``prediction_type`` "flow" in its ``iga.demo.config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data
from .model import FAMILY
from .trainer import DemoModel, dropped_prompts, export_demo_file, step_generator

NAME = FAMILY["flow"]
SHIFT = 3.0
TRAINING_SCHEDULE: dict[str, Any] = {"kind": "flow", "shift": SHIFT, "multiplier": 1000, "num_train_timesteps": 1000}
STAGE_SETTINGS: dict[str, Any] = {"batch": 64, "max_steps": 3000, "lr": 1e-3, "warmup": 100, "ema_decay": 0.999}


class FlowTask:
    """Velocity regression on shifted logit-normal times, CFG dropout, training-split prompts."""

    name = "flow"

    def __init__(self) -> None:
        from iga.sampling.parameterization import schedule_from_config

        self.schedule = schedule_from_config(TRAINING_SCHEDULE)

    def build(self) -> nn.Module:
        return DemoModel()

    def loss(self, model: nn.Module, cfg: Any, step: int) -> torch.Tensor:
        b = data.batch_for_step(cfg.seed, step, cfg.batch)
        g = step_generator(cfg, step)
        prompts = dropped_prompts(b.prompts, g)
        u = torch.sigmoid(torch.randn(cfg.batch, generator=g, dtype=torch.float64))
        sigma = self.schedule.time_to_sigma(u).float().view(-1, 1, 1, 1)
        x0 = torch.from_numpy(b.images)
        eps = torch.randn(x0.shape, generator=g)
        states, pooled = model.encode(prompts)
        pred = model((1 - sigma) * x0 + sigma * eps, sigma.flatten() * self.schedule.multiplier, states, pooled)
        return torch.nn.functional.mse_loss(pred, eps - x0)

    def export(self, ema: nn.Module, path: Path, training: dict[str, Any]) -> Path:
        return export_demo_file(ema, path, training, prediction_type="flow", schedule=TRAINING_SCHEDULE,
                                architecture=NAME, title="iga demo shapes, rectified flow v1")
