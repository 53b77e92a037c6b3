"""Where iga's bundled files live (inside the installed package)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_MODEL = DATA_DIR / "demo" / "iga-demo-v1.safetensors"
DEMO_JUDGE = DATA_DIR / "demo" / "iga-demo-judge-v1.safetensors"


def default_model_path() -> Path:
    """The model used when no --model is given: the bundled demo model."""
    return DEMO_MODEL
