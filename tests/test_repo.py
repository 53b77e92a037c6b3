"""The repository keeps its promises: README commands, CI and the CLI's start-up cost."""

from __future__ import annotations

import os
import re
import resource
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


def test_help_is_fast():
    """CPU time, not wall time: a loaded machine stretches wall time but not the work `--help` does."""
    env = {**os.environ, "COLUMNS": "100"}
    best = min(_cpu_seconds([sys.executable, "-m", "iga.cli", "--help"], env) for _ in range(3))
    assert best < 0.5, f"iga --help used {best:.2f}s of CPU"


def _cpu_seconds(cmd: list[str], env: dict) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
