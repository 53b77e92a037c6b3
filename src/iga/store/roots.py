"""Where the model store looks: $IGA_MODELS, the config file's "models" folders, and the bundled models.

The config file is JSON: ``{"models": ["~/models", "/data/sd/vae"]}``; relative folders are taken from the config
file's own folder. It lives at ``$IGA_CONFIG``, else ``config.json`` in platformdirs' ``user_config_dir("iga")``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

MODELS_ENV = "IGA_MODELS"
CONFIG_ENV = "IGA_CONFIG"
MAX_CONFIG_BYTES = 1 << 20


class StoreConfigError(ValueError):
    """The store's config file cannot be used; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class Roots:
    """The folders to walk (in order, each once) and the bundled model files."""

    folders: tuple[Path, ...]
    bundled: tuple[Path, ...]


def config_path() -> Path:
    """The config file: $IGA_CONFIG, else config.json in iga's user config folder."""
    from iga.paths import user_file

    return user_file(CONFIG_ENV, "config", "config.json").expanduser()


def config_folders(path: Path | None = None) -> list[Path]:
    """The "models" folders the config file names (none when it does not exist); StoreConfigError when it is
    unreadable, not JSON, or "models" is not a list of folder names."""
    path = path or config_path()
    fix = f'fix it (a JSON object such as {{"models": ["~/models"]}}) or point {CONFIG_ENV} elsewhere'
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise StoreConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; {fix}")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise StoreConfigError(f"config file {path} cannot be read ({e.__class__.__name__}); {fix}") from None
    except ValueError as e:
        raise StoreConfigError(f"config file {path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise StoreConfigError(f"config file {path} holds a {type(data).__name__}, not a JSON object; {fix}")
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m.strip() for m in models):
        raise StoreConfigError(f'config file {path}: "models" must be a list of folder names; {fix}')
    return [(path.parent / Path(m).expanduser()) for m in models]


def roots() -> Roots:
    """$IGA_MODELS folders first, then the config file's, then the bundled models; duplicates dropped."""
    from iga.paths import bundled_models

    env = [Path(p).expanduser() for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p.strip()]
    seen: set[str] = set()
    folders = []
    for folder in env + config_folders():
        key = os.path.realpath(folder)
        if key not in seen:
            seen.add(key)
            folders.append(folder)
    return Roots(tuple(folders), bundled_models())
