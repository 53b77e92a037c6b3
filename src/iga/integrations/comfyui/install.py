"""Install iga's node pack into a ComfyUI folder: one small loader in ``custom_nodes/iga_nodes``.

The loader only imports :mod:`iga.integrations.comfyui.nodes`, so the nodes always come from the iga installed in
ComfyUI's Python environment (``pip install iga`` there); upgrading iga upgrades the nodes, with no copy to update.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

PACK = "iga_nodes"
LOADER = '''"""iga's node pack for ComfyUI (written by `iga comfyui install`; delete this folder to uninstall).

It needs iga installed in ComfyUI's Python environment: `pip install iga` (or `pip install -e PATH_TO_IGA`).
"""

from iga.integrations.comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
'''


class NotComfyUI(ValueError):
    """The target is not a ComfyUI folder (nor its custom_nodes folder)."""


def comfyui_root(target: Path) -> Path:
    """The ComfyUI folder for ``target``: ComfyUI's own folder (main.py, nodes.py, custom_nodes/), a base folder
    ComfyUI runs with (``--base-directory``, ComfyUI Desktop: custom_nodes/ and models/), or the custom_nodes folder
    of either. NotComfyUI, saying why, for any other path."""
    target = Path(target).expanduser()
    if not target.is_dir():
        raise NotComfyUI(f"{target} is not a folder; give the ComfyUI folder (the one holding main.py and "
                         "custom_nodes/)")
    for root in (target, target.parent) if target.name == "custom_nodes" else (target,):
        if (root / "custom_nodes").is_dir() and ((root / "main.py").is_file() and (root / "nodes.py").is_file()
                                                 or (root / "models").is_dir()):
            return root.resolve()
    raise NotComfyUI(f"{target} is not a ComfyUI folder: it holds neither main.py, nodes.py and custom_nodes/ (where "
                     "ComfyUI is installed) nor custom_nodes/ and models/ (a --base-directory); give one of those, "
                     "or its custom_nodes folder")


def install(target: Path, *, say: Callable[[str], None] = print) -> Path:
    """Write ``custom_nodes/iga_nodes/__init__.py`` under the ComfyUI folder ``target`` (atomically; a second run
    changes nothing); return the loader's path. Raises NotComfyUI for any other folder."""
    from iga.checkpoint import write_bytes_atomic

    loader = comfyui_root(target) / "custom_nodes" / PACK / "__init__.py"
    data = LOADER.encode("utf-8")
    if loader.is_file() and loader.read_bytes() == data:
        say(f"already installed: {loader} (restart ComfyUI if it was running before)")
        return loader
    existed = loader.exists()
    loader.parent.mkdir(exist_ok=True)
    write_bytes_atomic(str(loader), data)
    say(f"{'updated' if existed else 'installed'} {loader}: restart ComfyUI; the nodes appear under 'iga' "
        "(IGA Checkpoint Loader, IGA KSampler, IGA Save Image)")
    return loader
