"""`iga comfyui install PATH`: put iga's node pack (recipe-aware loader, guarded KSampler, provenance saver) into
a ComfyUI folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

comfyui_app = typer.Typer(help="Use iga inside ComfyUI: install the node pack (`iga comfyui install PATH`).",
                          no_args_is_help=True)


@comfyui_app.command("install")
def install_command(
    path: Annotated[Path, typer.Argument(help="the ComfyUI folder (holding main.py and custom_nodes/), or its "
                                         "custom_nodes folder")],
) -> None:
    """Install iga's ComfyUI nodes: writes custom_nodes/iga_nodes/__init__.py, a loader of the nodes in this iga.

    Run it once; running it again changes nothing. iga must also be installed in ComfyUI's own Python environment
    (`pip install iga` there), since ComfyUI imports the nodes from it. Restart ComfyUI; under "iga" you find:

    IGA Checkpoint Loader: loads a checkpoint with ComfyUI's loader, reads and verifies its recipe, and outputs the
    recipe's (or a preset's) sampler, scheduler, steps and CFG, ready to wire into any KSampler.

    IGA KSampler: ComfyUI's sampling behind iga's guard. A forbidden sampler or schedule stops the run with the
    reason; a deviation from the recipe runs only when named in its overrides with a reason (written to iga's
    audit log).

    IGA Save Image: PNGs with iga's plan and A1111 parameters beside ComfyUI's workflow, named by iga's pattern
    (`iga show` and `iga replay` read them).

    Exit codes: 0 installed (or already installed), 2 the path is not a ComfyUI folder.

    Example:
      iga comfyui install ~/ComfyUI
    """
    from iga.integrations.comfyui.install import NotComfyUI, install

    try:
        install(path, say=typer.echo)
    except (NotComfyUI, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add `iga comfyui ...` to the CLI."""
    app.add_typer(comfyui_app, name="comfyui")
