"""The repository keeps its promises: README commands, CI and the CLI's start-up cost."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
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


def test_help_is_fast():
    env = {**os.environ, "COLUMNS": "100"}
    best = min(_timed([sys.executable, "-m", "iga.cli", "--help"], env) for _ in range(3))
    # "well under half a second" on an idle machine; allow slack for a loaded CI box
    assert best < 0.5, f"iga --help took {best:.2f}s"


def _timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "torch" not in out.stderr
    return time.perf_counter() - t
