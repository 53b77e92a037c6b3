"""Drawing a grid: one labelled PNG per Z value, with the cells' plans in an `iga_grid` text chunk.

Cells are the saved images scaled up by a whole factor (NEAREST, so small images stay crisp and no pixel is
invented); a refused cell shows the guard's reason, a failed one what went wrong, and an image a failure detector
flags gets the detector's name under it, so a grid shows at a glance where a setting breaks.
"""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

    from .grid import Cell, GridAxis, GridSpec

MIN_CELL = 128  # cells are scaled up to at least this many pixels wide
PAD = 6
FONT_SIZE = 13
REFUSED_FILL = (236, 236, 236)
FAILED_FILL = (250, 222, 222)
WARN_INK = (190, 20, 20)
INK = (20, 20, 20)
GRID_KEY = "iga_grid"


def label_font(size: int = FONT_SIZE) -> "ImageFont.FreeTypeFont":
    """Pillow's bundled font at ``size`` (no font file from disk): the labels of grids and the recipe matrix."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # bundled with Pillow: no font file from disk


def _text_width(font, text: str) -> int:
    return int(font.getbbox(text)[2]) if text else 0


def _cell_size(run_dir: Path, cells: list["Cell"]) -> tuple[int, int, int]:
    """(width, height, scale) of a cell's picture area from the first rendered image (all share a size)."""
    from PIL import Image

    for c in cells:
        rel = c.row.get("image")
        if rel and (run_dir / rel).exists():
            with Image.open(run_dir / rel) as im:
                w, h = im.size
            scale = max(1, -(-MIN_CELL // w))
            return w * scale, h * scale, scale
    return MIN_CELL, MIN_CELL, 1


def _wrapped(draw: "ImageDraw.ImageDraw", box: tuple[int, int, int, int], text: str, fill, ink) -> None:
    """A filled box with text wrapped to its width (cut with an ellipsis when it does not fit)."""
    font = label_font(11)
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=fill)
    per_line = max(8, int((x1 - x0 - 2 * PAD) / max(1, _text_width(font, "n"))))
    lines = textwrap.wrap(text, per_line) or [""]
    fit = max(1, (y1 - y0 - 2 * PAD) // 13)
    if len(lines) > fit:
        lines = lines[:fit]
        lines[-1] = lines[-1][: max(0, per_line - 1)] + "…"
    for n, line in enumerate(lines):
        draw.text((x0 + PAD, y0 + PAD + 13 * n), line, font=font, fill=ink)


def _paint_cell(canvas: "Image.Image", draw, run_dir: Path, cell: "Cell", box, scale: int) -> None:
    from PIL import Image

    x0, y0, x1, y1 = box
    row = cell.row
    if cell.refused:
        _wrapped(draw, box, f"refused by the guard: {cell.refused}", REFUSED_FILL, INK)
        return
    rel = row.get("image")
    if not rel or not (run_dir / rel).exists():
        what = row.get("error") or row.get("failure") or "no image"
        _wrapped(draw, box, f"failed: {what}", FAILED_FILL, WARN_INK)
        return
    with Image.open(run_dir / rel) as im:
        pic = im.convert("RGB")
    canvas.paste(pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST), (x0, y0))


def _layout(axes: list["GridAxis"], cell_w: int, cell_h: int) -> dict[str, int]:
    font = label_font()
    y_labels = axes[1].labels() if len(axes) > 1 else []
    left = PAD + max([_text_width(font, t) for t in y_labels] + [0]) + (PAD if y_labels else 0)
    caption = 16  # a line under each cell for what the failure detectors found
    return {"left": left, "top": 3 * 18 + PAD, "cw": cell_w, "ch": cell_h + caption, "pic_h": cell_h}


def draw_grid(run_dir: Path, spec: "GridSpec", axes: list["GridAxis"], cells: list["Cell"], z: int,
              seed: int) -> "Image.Image":
    """The grid image of one Z value: title, axis titles, X labels above, Y labels on the left, cells."""
    from PIL import Image, ImageDraw

    cell_w, cell_h, scale = _cell_size(run_dir, cells)
    lay = _layout(axes, cell_w, cell_h)
    nx, ny = len(axes[0].values), len(axes[1].values) if len(axes) > 1 else 1
    width = lay["left"] + nx * (lay["cw"] + PAD) + PAD
    height = lay["top"] + ny * (lay["ch"] + PAD) + PAD
    width = max(width, 360)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = label_font(), label_font(11)
    z_text = f"  ·  {axes[2].name} = {axes[2].labels()[z]}" if len(axes) > 2 else ""
    title = textwrap.shorten(f"{spec.prompt}  ·  seed {seed}{z_text}", max(20, width // 7))
    draw.text((PAD, 4), title, font=font, fill=INK)
    axis_text = f"x: {axes[0].name}" + (f"   y: {axes[1].name}" if len(axes) > 1 else "")
    draw.text((PAD, 22), axis_text, font=small, fill=(90, 90, 90))
    for i, label in enumerate(axes[0].labels()):
        x = lay["left"] + i * (lay["cw"] + PAD)
        draw.text((x, lay["top"] - 18), textwrap.shorten(label, max(6, cell_w // 7)), font=font, fill=INK)
    for j, label in enumerate(axes[1].labels() if len(axes) > 1 else []):
        y = lay["top"] + j * (lay["ch"] + PAD)
        draw.text((PAD, y + cell_h // 2 - 7), label, font=font, fill=INK)
    for c in cells:
        if c.z != z:
            continue
        x0 = lay["left"] + c.x * (lay["cw"] + PAD)
        y0 = lay["top"] + c.y * (lay["ch"] + PAD)
        _paint_cell(canvas, draw, run_dir, c, (x0, y0, x0 + cell_w, y0 + cell_h), scale)
        found = c.row.get("failures") if not c.refused and c.row.get("image") else ""
        if found:
            draw.text((x0, y0 + cell_h + 2), "! " + found.replace(";", ", "), font=small, fill=WARN_INK)
    return canvas


def write_grids(run_dir: Path, spec: "GridSpec", axes: list["GridAxis"], cells: list["Cell"], seed: int) -> list[Path]:
    """grid.png (or grid-z0.png, grid-z1.png, ... with a Z axis) and grid.json, each written atomically."""
    from iga.checkpoint import write_bytes_atomic

    from .grid import dumps, grid_record, read_cell_plans

    plans = read_cell_plans(run_dir, cells)
    zs = range(len(axes[2].values)) if len(axes) > 2 else [0]
    paths = []
    for z in zs:
        record = grid_record(spec, axes, cells, seed, z if len(axes) > 2 else None, plans)
        image = draw_grid(run_dir, spec, axes, cells, z, seed)
        path = run_dir / (f"grid-z{z}.png" if len(axes) > 2 else "grid.png")
        write_bytes_atomic(path, _png_bytes(image, dumps(record)))
        paths.append(path)
    whole = grid_record(spec, axes, cells, seed, None, plans)
    write_bytes_atomic(run_dir / "grid.json", json.dumps(whole, indent=1, default=str).encode())
    return paths


def _png_bytes(image: "Image.Image", record_json: str) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(GRID_KEY, record_json, zip=True)
    buf = io.BytesIO()
    image.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def read_grid_record(path: Path) -> dict[str, Any] | None:
    """The `iga_grid` record of a grid PNG (bounded like every provenance read), or None."""
    from iga.provenance.png import read_png_text

    raw = read_png_text(path, keys=[GRID_KEY]).texts.get(GRID_KEY)
    return json.loads(raw) if raw else None
