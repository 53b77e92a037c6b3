"""Where the shared folder is (fact sheets; ComfyUI's code as a GPL-3.0 test oracle): $IGA_SHARED_DIR (`.ci/run`
sets it with scripts/find_shared.sh, which also finds the folder beside a clean clone's origin), else the folder
beside this repository. Tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IGA_SHARED_DIR") or ROOT.parent / "shared")
