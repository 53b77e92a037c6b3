"""Shared helpers for the generation tests: tiny models with recipes, the CLI runner, an independent infotext reader.

Nothing here calls the code under test to compute an expected value: hashes are recomputed with hashlib, the
A1111 ``parameters`` line is split by its documented grammar, and pixels are compared as arrays.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PROMPT = "a red circle on a blue background"
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")


def diffusers_scheduler(name: str):
    """The diffusers scheduler iga's plan matches: Euler with Karras sigmas on linspace timesteps ("euler"), or
    DPM-Solver++ 2M with Karras sigmas ("dpmpp_2m"; iga needs quantize + vp_max noise to match it)."""
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    if name == "euler":
        return EulerDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")
    return DPMSolverMultistepScheduler(**SD_BETAS, use_karras_sigmas=True)


def pixel_diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    """(max, mean) absolute difference of two uint8 images."""
    d = np.abs(a.astype(int) - b.astype(int))
    return int(d.max()), float(d.mean())

# A recipe for a tiny SD1 model: native euler + karras, 4 steps (2..8), CFG 6 (3..9), 64x64, its own VAE id.
TINY_RECIPE: dict[str, Any] = {
    "iga_version": "1.0.0",
    "model_id": "tiny-sd1-test",
    "architecture": "sd1",
    "prediction_type": "eps",
    "training_schedule": {"kind": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                          "num_train_timesteps": 1000, "zero_terminal_snr": False},
    "sampler": {"name": "euler"},
    "scheduler": {"name": "karras"},
    "cfg": {"default": 6.0, "min": 3.0, "max": 9.0},
    "steps": {"default": 4, "min": 2, "max": 8},
    "vae": {"id": "tiny-vae", "embedded": True},
    "clip_skip": 1,
    "resolution": {"preferred": ["64x64"], "max": "64x64"},
    "presets": [{"name": "Fast", "steps": 2, "cfg": 5.0}],
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run a module's torch work on one thread (import this fixture into the module to use it).

    On the shared 2-core test machine two OpenMP threads competing with other processes made the tiny
    models' convolutions ~15x slower. Every comparison in these tests is made within one process, at one
    thread count (results can differ by 1/255 between thread counts: oneDNN reduces in another order).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_with_recipe(root: Path, name: str, seed: int, recipe: dict[str, Any] | None = None) -> Path:
    """A tiny SD1 single file with ``recipe`` (default TINY_RECIPE) embedded in its header."""
    from iga.checkpoint import embed_recipe
    from iga.models import testing

    path = testing.save_single_file(testing.build_tiny("sd1", seed=seed), root / f"{name}.safetensors")
    embed_recipe(path, recipe or TINY_RECIPE)
    return path


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole file (A1111's model hash is its first 10 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pixel_sha(px: np.ndarray) -> str:
    """The documented pixels_sha256: SHA-256 of 'HxWxC:' followed by the uint8 pixel bytes."""
    h = hashlib.sha256(f"{px.shape[0]}x{px.shape[1]}x{px.shape[2]}:".encode())
    h.update(np.ascontiguousarray(px, dtype=np.uint8).tobytes())
    return h.hexdigest()


def a1111_fields(parameters: str) -> dict[str, str]:
    """The 'Key: value, Key: value' settings line of A1111 infotext (the last line), as a dict of strings."""
    line = parameters.strip().splitlines()[-1]
    out: dict[str, str] = {}
    # values may be quoted ("...") when they contain commas; our fields here never are
    for m in re.finditer(r'\s*([\w /-]+):\s*("(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)', line):
        out[m.group(1).strip()] = m.group(2).strip()
    return out


def cli(args: list[str], env: dict[str, str] | None = None):
    """Run `iga ARGS` in process; return the click Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from iga.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def cli_json(args: list[str]) -> dict[str, Any]:
    """Run `iga ARGS --json`, require exit 0, return the parsed JSON."""
    res = cli([*args, "--json"])
    assert res.exit_code == 0, f"iga {' '.join(map(str, args))} exited {res.exit_code}: {res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def files_in(folder: Path) -> list[str]:
    """Every entry in a folder, hidden temp files included ([] when the folder does not exist)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a1111_fields_reader():
    """The reader used as an independent check splits A1111's settings line as documented."""
    text = 'a cat\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, ' \
           'Seed: 5, Size: 512x768, Model hash: 0123456789, Lora hashes: "a: 1, b: 2", Version: v1.10'
    f = a1111_fields(text)
    assert f["Steps"] == "20" and f["Sampler"] == "DPM++ 2M" and f["Schedule type"] == "Karras"
    assert f["CFG scale"] == "7" and f["Seed"] == "5" and f["Size"] == "512x768"
    assert f["Model hash"] == "0123456789" and f["Lora hashes"] == '"a: 1, b: 2"' and f["Version"] == "v1.10"


def test_pixel_sha_matches_the_documented_layout():
    px = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert pixel_sha(px) == hashlib.sha256(b"2x3x3:" + bytes(range(18))).hexdigest()
