#!/usr/bin/env bash
# Set up iga in ./.venv on a fresh machine: torch is pinned to the CPU wheel first, because a looser
# requirement (ours or a dependency's) would let pip pull a multi-GB CUDA build. Never installs torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=${IGA_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" - <<'PY'
import importlib.util, sys, torch
assert torch.__version__.startswith("2.13.0"), f"expected torch 2.13.0, got {torch.__version__}"
assert importlib.util.find_spec("torchvision") is None, "torchvision is installed: it breaks diffusers imports here"
print(f"iga set up: torch {torch.__version__}, python {sys.version.split()[0]}")
PY
