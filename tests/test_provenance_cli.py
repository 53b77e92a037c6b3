"""`iga show`: table and --json output, exit codes 0 (read, with or without metadata) and 2 (unreadable)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import typer
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from typer.testing import CliRunner

from iga.commands.provenance import register
from iga.provenance import save_image
from test_provenance_support import png_file, text, zlib_bomb, ztxt

KEYS = ["schema", "path", "source", "format", "prompt", "negative_prompt", "seed", "steps", "cfg", "sampler",
        "schedule", "width", "height", "model_name", "model_hash", "clip_skip", "denoise", "guidance", "shift",
        "loras", "hires_scale", "hires_steps", "hires_upscaler", "controls", "refiner", "refiner_hash",
        "refiner_switch", "image_width",
        "image_height", "plan", "raw", "warnings", "c2pa"]  # c2pa: null without a manifest


def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def main() -> None:  # a group, so that `show` stays a subcommand
        """test app"""

    register(a)
    return a


def run(*args):
    return CliRunner().invoke(app(), list(map(str, args)))


def plan():
    return {"schema": "iga.plan/1", "prompt": "a [bold]red[/bold] fox \x1b[31m", "negative_prompt": "", "seed": 7,
            "seeds": [7], "sampler": "dpmpp_2m", "schedule": "karras", "steps": 12, "cfg": 5.0, "width": 16,
            "height": 16, "model": {"name": "tiny", "autov2": "0123456789"}, "nfe": 23, "iga_version": "0.1.0",
            "overrides": [{"field": "steps"}]}


def test_show_iga_image_table(tmp_path):
    path = save_image(Image.new("RGB", (16, 16)), plan(), tmp_path, now=datetime(2024, 1, 1))
    r = run("show", path)
    assert r.exit_code == 0, r.output
    assert "source: iga (full plan)" in r.output and "dpmpp_2m" in r.output and "overrides" in r.output
    assert "[bold]red[/bold]" in r.output  # brackets shown literally, not taken as markup
    assert "\x1b" not in r.output and "\\x1b[31m" in r.output  # terminal escapes neutralised


def test_show_json_is_stable(tmp_path):
    path = save_image(Image.new("RGB", (16, 16)), plan(), tmp_path, now=datetime(2024, 1, 1))
    r = run("show", path, "--json")
    assert r.exit_code == 0
    out = json.loads(r.output)
    assert list(out) == KEYS
    assert out["schema"] == "iga.show/1" and out["source"] == "iga" and out["plan"] == plan()
    assert out["seed"] == 7 and out["sampler"] == "dpmpp_2m" and out["image_width"] == 16


def test_show_no_metadata_is_exit_0(tmp_path):
    p = tmp_path / "plain.png"
    meta = PngInfo()
    meta.add_text("Software", "paint")
    Image.new("RGB", (3, 3)).save(p, pnginfo=meta)
    r = run("show", p)
    assert r.exit_code == 0 and "no generation metadata found" in r.output
    out = json.loads(run("show", p, "--json").output)
    assert out["source"] == "none" and out["seed"] is None and out["plan"] is None


def test_show_a1111_image(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(png_file(text("parameters", "cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, "
                                              "CFG scale: 7, Seed: 3, Size: 512x512, Model: sd15")))
    out = json.loads(run("show", p, "--json").output)
    assert (out["source"], out["sampler"], out["schedule"], out["model_name"]) == ("a1111", "euler_ancestral",
                                                                                    "normal", "sd15")


def test_show_hostile_and_missing_files_exit_2(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_file(ztxt("parameters", zlib_bomb(64))))
    r = run("show", bomb)
    assert r.exit_code == 2 and "decompression bomb" in r.output
    r = run("show", bomb, "--json")
    assert r.exit_code == 2
    first = r.output[: r.output.index("\n}") + 2]
    assert json.loads(first)["error"].startswith("zTXt chunk 'parameters'")
    assert run("show", tmp_path / "missing.png").exit_code == 2
    (tmp_path / "t.txt").write_text("hello")
    assert run("show", tmp_path / "t.txt").exit_code == 2


def test_show_is_wired_into_iga_and_does_not_import_torch(tmp_path):
    code = ("import sys; from iga.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['show', '--help']); assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
