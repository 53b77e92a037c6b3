"""Training the demo model and its judge on this CPU: time-bounded, checkpointed, resumable, reproducible.

The diffusion model is trained with v-prediction on the DDPM `linear` schedule (beta 1e-4 -> 0.02 over 1000
steps, the classic schedule for 32x32 pixel models). Every random draw of step k comes from generators seeded
with (seed, k), so a resumed run continues exactly as an uninterrupted one would (with a step-based LR
schedule; a time-bounded run decays its LR over the time budget instead).

Checkpoints are safetensors (weights, EMA, optimizer moments) plus a small JSON file; nothing is pickled.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from . import data
from .model import FAMILY
from .net import MAX_TOKENS, Judge, TextEncoder, WordTokenizer, build_unet, config_json, default_vocab, unet_config

TRAINING_SCHEDULE = {"kind": "linear", "beta_start": 0.0001, "beta_end": 0.02, "num_train_timesteps": 1000,
                     "zero_terminal_snr": False}
CFG_DROPOUT = 0.1


@dataclass
class TrainConfig:
    """What a training run does; stored in the checkpoint so resume uses the same settings."""

    seed: int = 0
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 100
    max_steps: int | None = None  # step-based LR schedule and stop; None: time-bounded
    max_minutes: float = 70.0
    ema_decay: float = 0.999
    checkpoint_every_s: float = 180.0


def alphas_cumprod() -> torch.Tensor:
    """The training schedule's cumulative alphas (float64)."""
    betas = torch.linspace(TRAINING_SCHEDULE["beta_start"], TRAINING_SCHEDULE["beta_end"],
                           TRAINING_SCHEDULE["num_train_timesteps"], dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


class DemoModel(nn.Module):
    """UNet + text encoder, trained together."""

    def __init__(self, vocab: list[str] | None = None):
        super().__init__()
        self.vocab = vocab or default_vocab()
        self.tokenizer = WordTokenizer(self.vocab)
        self.unet = build_unet(unet_config())
        self.text_encoder = TextEncoder(len(self.vocab))

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token states, pooled embedding) for prompts."""
        return self.text_encoder(self.tokenizer(prompts))

    def forward(self, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=states, class_labels=pooled).sample


def _lr(cfg: TrainConfig, step: int, elapsed: float) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup)
    if cfg.max_steps:
        progress = step / cfg.max_steps
    else:
        progress = elapsed / (cfg.max_minutes * 60.0)
    return cfg.lr * warm * max(0.05, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def step_generator(cfg: TrainConfig, step: int) -> torch.Generator:
    """The generator of every random draw of step ``step`` (besides the images): resume-exact by construction."""
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)


def dropped_prompts(prompts: list[str], g: torch.Generator) -> list[str]:
    """Classifier-free-guidance dropout: each prompt becomes the empty prompt with probability CFG_DROPOUT."""
    drop = torch.rand(len(prompts), generator=g) < CFG_DROPOUT
    return ["" if d else p for d, p in zip(drop.tolist(), prompts)]


def vp_noised(ab: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` per image; with (eps, -x0) in place of (x0, eps) it is the
    v-prediction target ``sqrt(abar_t) eps - sqrt(1 - abar_t) x0``."""
    a = ab[t].sqrt().float().view(-1, 1, 1, 1)
    s = (1 - ab[t]).sqrt().float().view(-1, 1, 1, 1)
    return a * x0 + s * eps


def _step_batch(cfg: TrainConfig, step: int, ab: torch.Tensor):
    """Everything random about step ``step``: images, prompts (with CFG dropout), timesteps, noise."""
    b = data.batch_for_step(cfg.seed, step, cfg.batch)
    g = step_generator(cfg, step)
    prompts = dropped_prompts(b.prompts, g)
    t = torch.randint(0, ab.shape[0], (cfg.batch,), generator=g)
    eps = torch.randn(cfg.batch, 3, data.SIZE, data.SIZE, generator=g)
    x0 = torch.from_numpy(b.images)
    return prompts, t, vp_noised(ab, t, x0, eps), vp_noised(ab, t, eps, -x0)


class Task(Protocol):
    """What one model's training needs: its network, the loss of step k (a pure function of seed and k, so a
    resumed run equals an uninterrupted one) and the shipped file(s)."""

    name: str

    def build(self) -> nn.Module: ...

    def loss(self, model: nn.Module, cfg: TrainConfig, step: int) -> torch.Tensor: ...

    def export(self, ema: nn.Module, path: Path, training: dict[str, Any]) -> Path: ...


class PixelTask:
    """The bundled pixel-space model: v-prediction on the linear schedule."""

    name = "pixel"

    def __init__(self) -> None:
        self.ab = alphas_cumprod()

    def build(self) -> nn.Module:
        return DemoModel()

    def loss(self, model: nn.Module, cfg: TrainConfig, step: int) -> torch.Tensor:
        prompts, t, xt, v = _step_batch(cfg, step, self.ab)
        states, pooled = model.encode(prompts)
        return torch.nn.functional.mse_loss(model(xt, t, states, pooled), v)

    def export(self, ema: nn.Module, path: Path, training: dict[str, Any]) -> Path:
        return export_demo_file(ema, path, training, prediction_type="v", schedule=TRAINING_SCHEDULE,
                                architecture=FAMILY["pixel"], title="iga demo shapes v1")


def export_demo_file(ema: nn.Module, path: Path, training: dict[str, Any], *, prediction_type: str,
                     schedule: dict[str, Any], architecture: str, title: str) -> Path:
    """Write a pixel-space demo model (EMA weights + config metadata) as one .safetensors file."""
    from iga.models.export import save_safetensors

    tensors = {f"demo.unet.{k}": v.contiguous() for k, v in ema.unet.state_dict().items()}
    tensors.update({f"demo.text_encoder.{k}": v.contiguous() for k, v in ema.text_encoder.state_dict().items()})
    meta = {
        "iga.architecture": "demo",
        "iga.demo.config": config_json(unet_config(), ema.text_encoder.config, ema.vocab, schedule,
                                       prediction_type),
        "iga.demo.training": json.dumps(training),
        "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": architecture,
        "modelspec.implementation": "diffusers", "modelspec.title": title,
        "modelspec.prediction_type": prediction_type, "modelspec.resolution": f"{data.SIZE}x{data.SIZE}",
    }
    return save_safetensors(path, tensors, meta)


class Trainer:
    """Training with EMA, checkpoint and resume; what is trained and how is the task's (default: pixel)."""

    def __init__(self, out: str | os.PathLike[str], cfg: TrainConfig, resume: bool = False,
                 task: Task | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.task = task or PixelTask()
        torch.manual_seed(cfg.seed)
        self.model = self.task.build()
        self.ema = self.task.build()
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False)
        self.cfg = cfg
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.step, self.elapsed, self.losses = 0, 0.0, []
        if resume and (self.out / "state.json").exists():
            self._load()

    # --- checkpoint ---------------------------------------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        t = {f"model.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        t.update({f"ema.{k}": v.detach().contiguous() for k, v in self.ema.state_dict().items()})
        for i, st in self.opt.state_dict()["state"].items():
            for name, v in st.items():
                t[f"opt.{i}.{name}"] = torch.as_tensor(v).detach().contiguous()
        return t

    def save(self) -> None:
        """Write the resumable checkpoint atomically (weights first, then the JSON that points at them)."""
        from iga.models.export import save_safetensors

        save_safetensors(self.out / "ckpt.safetensors", self._tensors())
        state = {"task": self.task.name, "step": self.step, "elapsed": self.elapsed, "config": self.cfg.__dict__,
                 "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                  for g in self.opt.state_dict()["param_groups"]],
                 "recent_loss": float(np.mean(self.losses[-100:])) if self.losses else None}
        tmpj = self.out / "state.json.tmp"
        tmpj.write_text(json.dumps(state, indent=1))
        os.replace(tmpj, self.out / "state.json")

    def _load(self) -> None:
        from safetensors.torch import load_file

        state = json.loads((self.out / "state.json").read_text())
        if state.get("task", "pixel") != self.task.name:
            raise ValueError(f"{self.out} holds a checkpoint of the {state.get('task', 'pixel')!r} model, not "
                             f"{self.task.name!r}; use another --out folder or the matching --model")
        t = load_file(str(self.out / "ckpt.safetensors"))
        self.model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                opt_state.setdefault(int(i), {})[name] = v
        sd = self.opt.state_dict()
        sd["state"] = opt_state
        for g, saved in zip(sd["param_groups"], state["param_groups"]):
            g.update(saved)
        self.opt.load_state_dict(sd)
        self.step, self.elapsed = state["step"], state["elapsed"]

    # --- training -----------------------------------------------------------------------------------------------
    def train_step(self) -> float:
        """One optimisation step; returns the loss."""
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = _lr(cfg, self.step, self.elapsed)
        loss = self.task.loss(self.model, cfg, self.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                if pm.requires_grad:
                    pe.lerp_(pm, 1 - decay)
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        return value

    def run(self, progress: Callable[[int, float, float], None] | None = None) -> dict[str, Any]:
        """Train until max_steps or the time budget; checkpoint regularly and at the end."""
        cfg = self.cfg
        last_ckpt = time.perf_counter()
        start = time.perf_counter() - self.elapsed
        while True:
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                break
            if cfg.max_steps is None and self.elapsed >= cfg.max_minutes * 60:
                break
            loss = self.train_step()
            self.elapsed = time.perf_counter() - start
            if progress:
                progress(self.step, loss, self.elapsed)
            if time.perf_counter() - last_ckpt > cfg.checkpoint_every_s:
                self.save()
                last_ckpt = time.perf_counter()
        self.save()
        return {"steps": self.step, "minutes": self.elapsed / 60,
                "final_loss": float(np.mean(self.losses[-100:])) if self.losses else None}

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the shipped file(s) from the EMA weights."""
        training = {"steps": self.step, "minutes": round(self.elapsed / 60, 1), "batch": self.cfg.batch,
                    "seed": self.cfg.seed}
        return self.task.export(self.ema, Path(path), training)


# --- the judge -----------------------------------------------------------------------------------------------------

def train_judge(steps: int = 1500, batch: int = 128, seed: int = 1, lr: float = 2e-3,
                progress: Callable[[int, float], None] | None = None) -> tuple[Judge, dict[str, float]]:
    """Train the judge on all prompt combinations; return it with its accuracy on fresh images."""
    torch.manual_seed(seed)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    ce = nn.CrossEntropyLoss()
    for step in range(steps):
        b = data.sample_batch(batch, np.random.default_rng([seed, step]), split="all")
        x = torch.from_numpy(b.images)
        x = x + 0.03 * torch.randn_like(x)  # generated images are never perfectly clean
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        out = judge(x)
        loss = ce(out["shape"], torch.from_numpy(b.shape)) + ce(out["fg"], torch.from_numpy(b.fg)) + \
            ce(out["bg"], torch.from_numpy(b.bg))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress(step + 1, float(loss.detach()))
    judge.eval()
    return judge, judge_accuracy(judge, seed=seed + 999)


@torch.no_grad()
def judge_accuracy(judge: Judge, n: int = 2000, seed: int = 12345) -> dict[str, float]:
    """Accuracy per attribute on fresh procedural images (train and held-out prompts)."""
    out: dict[str, float] = {}
    for split in ("train", "held_out"):
        b = data.sample_batch(n, np.random.default_rng(seed), split=split)
        pred = judge(torch.from_numpy(b.images))
        for k, labels in (("shape", b.shape), ("fg", b.fg), ("bg", b.bg)):
            out[f"{split}.{k}"] = float((pred[k].argmax(1).numpy() == labels).mean())
    return out


def export_judge(judge: Judge, path: str | os.PathLike[str], accuracy: dict[str, float]) -> Path:
    """Write the judge as one .safetensors file with its config and measured accuracy."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(tmp),
              metadata={"iga.architecture": "demo-judge", "iga.judge.config": json.dumps(judge.config),
                        "iga.judge.accuracy": json.dumps(accuracy), "iga.judge.labels": json.dumps(
                            {"shape": list(data.SHAPES), "fg": list(data.FG_COLORS), "bg": list(data.BG_COLORS)})})
    os.replace(tmp, p)
    return p


__all__ = ["MAX_TOKENS", "TRAINING_SCHEDULE", "DemoModel", "PixelTask", "Task", "TrainConfig", "Trainer",
           "export_demo_file", "export_judge", "judge_accuracy", "train_judge"]
