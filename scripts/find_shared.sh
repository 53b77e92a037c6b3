#!/usr/bin/env bash
# Print the `shared` folder of this checkout (fact sheets, ComfyUI's code as a GPL test oracle and harness):
# $IGA_SHARED_DIR, else the one beside the repository, else — in a clean clone of a local repository, as CI makes —
# the one beside the repository it was cloned from. Exits 3, printing nothing, when there is none.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
candidates=("${IGA_SHARED_DIR:-}" "$REPO/../shared")
origin=$(git -C "$REPO" config --get remote.origin.url 2>/dev/null || true)
[ -n "$origin" ] && [ -d "$origin" ] && candidates+=("$origin/../shared")
for d in "${candidates[@]}"; do
  [ -n "$d" ] && [ -d "$d" ] && { (cd "$d" && pwd); exit 0; }
done
exit 3
