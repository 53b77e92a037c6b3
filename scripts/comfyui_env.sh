#!/usr/bin/env bash
# ComfyUI for the end-to-end tests (tests/comfyui_support.py): its source extracted from the shared tarball and a
# second virtual environment (ComfyUI imports torchvision, which does not import beside iga's torch 2.13.0), with
# iga installed in it without dependencies. ComfyUI is GPL-3.0 and only a test harness: nothing of it enters the repo.
#
# Idempotent and cached under ${IGA_COMFYUI_CACHE:-~/.cache/iga/comfyui}/<key>; the key changes with the tarball
# and the pins below. Prints `export IGA_COMFYUI_DIR=...` and `export IGA_COMFYUI_PYTHON=...` on stdout (use it as
# `eval "$(bash scripts/comfyui_env.sh)"`); progress and timings go to stderr. Exits non-zero, saying why, on failure:
# 3 when there is no tarball (a clone without ../shared: the ComfyUI tests skip), 1 when the set-up itself failed.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
# the pins: torch and torchvision from the same release pair; ComfyUI's requirements minus torchaudio (only two
# audio node files need it) plus requests (imported, not listed)
PINS="torch==2.14.1 torchvision==0.29.1"
EXTRA="requests"
DROP="torchaudio"

say() { echo "comfyui_env: $*" >&2; }
die() { say "error: $*"; exit 1; }
# pip, quiet, without this machine's notes about its local package folders
pip_q() { "$V/bin/pip" install -q "$@" 2>&1 | { grep -v "^WARNING: Location" >&2 || true; }; }

find_tarball() {
  local shared d
  [ -n "${IGA_COMFYUI_TARBALL:-}" ] && { [ -f "$IGA_COMFYUI_TARBALL" ] && echo "$IGA_COMFYUI_TARBALL" && return 0
    die "IGA_COMFYUI_TARBALL=$IGA_COMFYUI_TARBALL is not a file"; }
  shared=$(bash "$REPO/scripts/find_shared.sh") || true
  d="${shared:-$REPO/../shared}/third_party/comfyui"
  for f in "$d"/comfyui-*.tar.gz; do [ -f "$f" ] && echo "$f" && return 0; done
  say "no ComfyUI tarball: set IGA_COMFYUI_TARBALL or IGA_SHARED_DIR, or put comfyui-*.tar.gz in $d"
  exit 3
}

since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
phase() { phase_start=$EPOCHREALTIME; say "$1..."; }
phase_end() { say "  $1 took $(since "$phase_start") s"; }

TARBALL=$(find_tarball)
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "no python ($PY)"
KEY=$( { sha256sum "$TARBALL" | cut -d' ' -f1; echo "$PINS|$EXTRA|$DROP|py$PYVER"; } | sha256sum | cut -c1-16)
CACHE=${IGA_COMFYUI_CACHE:-$HOME/.cache/iga/comfyui}
HOME_DIR="$CACHE/$KEY"
V="$HOME_DIR/venv"
mkdir -p "$CACHE"
exec 9>"$CACHE/$KEY.lock"
flock 9 || die "could not lock $CACHE/$KEY.lock"

build() {
  rm -rf "$HOME_DIR" && mkdir -p "$HOME_DIR"
  phase "extracting $(basename "$TARBALL")"
  tar -xzf "$TARBALL" -C "$HOME_DIR" || die "could not extract $TARBALL"
  [ -f "$HOME_DIR/ComfyUI/main.py" ] || die "$TARBALL holds no ComfyUI/main.py"
  phase_end extract
  phase "creating the venv with $PINS"
  "$PY" -m venv "$V" || die "could not create a venv with $PY"
  echo "$PINS" | tr ' ' '\n' > "$HOME_DIR/constraints.txt"
  pip_q $PINS || die "pip could not install $PINS"
  phase_end torch
  phase "installing ComfyUI's requirements (without $DROP) and $EXTRA"
  grep -vx "$DROP" "$HOME_DIR/ComfyUI/requirements.txt" > "$HOME_DIR/requirements.txt"
  pip_q -c "$HOME_DIR/constraints.txt" -r "$HOME_DIR/requirements.txt" $EXTRA ||
    die "pip could not install ComfyUI's requirements"
  phase_end requirements
  touch "$HOME_DIR/.complete"
}

# iga's own dependencies except torch (pyproject.toml is their one home), installed under the torch pin
iga_requirements() {
  "$V/bin/python" - "$REPO/pyproject.toml" <<'PY' || die "could not read $REPO/pyproject.toml"
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].strip().lower() != "torch"))
PY
}

# set-ups of another tarball or other pins (6.5 GB each) that no run holds
prune() {
  local lock k
  for lock in "$CACHE"/*.lock; do
    k=$(basename "$lock" .lock)
    [ "$k" != "$KEY" ] && [ -d "$CACHE/$k/venv" ] || continue
    { flock -n 8 && rm -rf "${CACHE:?}/$k" "$lock" && say "removed an older set-up: $CACHE/$k"; } 8>>"$lock" || true
  done
}

t0=$EPOCHREALTIME
prune
[ -f "$HOME_DIR/.complete" ] && say "cached: $HOME_DIR" || build
# iga's dependency list may change without the tarball or the pins changing: reinstall when it did
WANT_DEPS=$(iga_requirements)
if [ "$WANT_DEPS" != "$(cat "$HOME_DIR/iga-requirements.txt" 2>/dev/null)" ]; then
  phase "installing iga's dependencies (except torch)"
  pip_q -c "$HOME_DIR/constraints.txt" -r <(echo "$WANT_DEPS") || die "pip could not install iga's dependencies"
  echo "$WANT_DEPS" > "$HOME_DIR/iga-requirements.txt"
  phase_end iga-deps
fi
# this checkout's iga, editable and without dependencies (so pip cannot pull another torch); redone only when the
# venv's iga is another checkout
WANT="$REPO/src/iga/__init__.py"
HAVE=$(cd / && "$V/bin/python" -c 'import iga; print(iga.__file__)' 2>/dev/null || true)
if [ "$HAVE" != "$WANT" ]; then
  phase "installing this checkout's iga (editable, --no-deps)"
  pip_q --no-deps -e "$REPO" || die "pip could not install iga from $REPO"
  phase_end iga
fi
phase "checking the venv"
(cd / && "$V/bin/python" - "$PINS" <<'PY') ||
import sys, torch, torchvision, iga, diffusers, transformers, aiohttp, requests
pins = dict(p.split("==") for p in sys.argv[1].split())
have = {"torch": torch.__version__, "torchvision": torchvision.__version__}
assert all(have[k].split("+")[0] == v for k, v in pins.items()), f"expected {pins}, found {have}"
PY
  die "the ComfyUI venv at $V is broken: remove $HOME_DIR and run again"
phase_end check
say "ready in $(since "$t0") s: $HOME_DIR ($(du -sh "$HOME_DIR" 2>/dev/null | cut -f1))"
printf 'export IGA_COMFYUI_DIR=%q\nexport IGA_COMFYUI_PYTHON=%q\n' "$HOME_DIR/ComfyUI" "$V/bin/python"
