"""Where iga's bundled files live (inside the installed package), and where it keeps the user's own files."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_DIR = DATA_DIR / "demo"
DEMO_MODEL = DEMO_DIR / "iga-demo-v1.safetensors"
DEMO_JUDGE = DEMO_DIR / "iga-demo-judge-v1.safetensors"


def bundled_models() -> tuple[Path, ...]:
    """The model files shipped with iga (checkpoints and VAEs; the judge is not a model), default model first."""
    others = sorted(p for p in DEMO_DIR.glob("*.safetensors") if p not in (DEMO_MODEL, DEMO_JUDGE))
    return (DEMO_MODEL, *others)


def user_file(env: str, kind: str, name: str) -> Path:
    """A file iga keeps for the user: ``$env`` when set, else ``name`` in platformdirs' user folder of ``kind``
    ("data" or "config") for iga."""
    given = os.environ.get(env)
    if given:
        return Path(given)
    import platformdirs

    folder = platformdirs.user_config_dir("iga") if kind == "config" else platformdirs.user_data_dir("iga")
    return Path(folder) / name


def default_model_path() -> Path:
    """The model used when no --model is given: the bundled demo model."""
    return DEMO_MODEL
