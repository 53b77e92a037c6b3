"""The repository keeps its promises: README commands, CI and the CLI's start-up cost."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md must start with a code block holding the two commands"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_test_command():
    setup, test = readme_commands()[:2]
    assert "scripts/setup.sh" in setup
    assert "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci, f"README test command {test!r} must appear verbatim in .ci/run"


def test_import_and_help_do_not_import_torch():
    code = "import sys, iga, iga.cli; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


HEAVY = ("torch", "diffusers", "transformers", "numpy", "scipy", "PIL", "safetensors", "fastapi", "uvicorn",
         "starlette", "pyarrow", "matplotlib", "cryptography", "yaml")


def test_help_imports_nothing_heavy():
    """What keeps `iga --help` fast (about 0.3 s of CPU here): none of the heavy libraries load until a command
    runs. Checked by module, not by a timer, so a busy machine cannot fail it."""
    code = ("import runpy, sys\nsys.argv = ['iga', '--help']\ntry:\n    runpy.run_module('iga.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "100"})
    assert "Usage" in out.stdout, out.stderr
    loaded = out.stdout.rsplit("LOADED", 1)[1].strip()
    assert loaded == "[]", f"iga --help imported {loaded}"

