"""`iga samplers` and `iga schedules`: every catalog entry, machine-readable, and readable at 80 columns."""

import json
import os
import subprocess
import sys

import pytest

from iga.catalog.samplers import COMFYUI_SAMPLERS, SAMPLERS
from iga.catalog.schedules import SCHEDULES


def _iga(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "iga.cli", *args], capture_output=True, text=True, env=env)


def test_samplers_json_lists_comfyuis_42_names_and_igas_extras_with_their_options():
    p = _iga("samplers", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)["samplers"]}
    assert set(rows) == set(SAMPLERS) and sum(r["comfyui"] for r in rows.values()) == len(COMFYUI_SAMPLERS) == 42
    assert {n for n, r in rows.items() if not r["comfyui"]} >= {"restart", "lms_exact", "uni_pc_diffusers"}
    assert rows["dpmpp_2m_sde"]["options"]["solver_type"] == "midpoint|heun"
    assert rows["euler_ancestral"]["options"]["eta"] == "float 0..100"


@pytest.mark.parametrize("args", [("samplers",), ("schedules",), ("samplers", "--long"), ("schedules", "--long")])
def test_listings_fit_80_columns(args):
    p = _iga(*args)
    assert p.returncode == 0, p.stderr
    too_wide = [line for line in p.stdout.splitlines() if len(line) > 80]
    assert not too_wide, too_wide[:3]
    for name in (SAMPLERS if args[0] == "samplers" else SCHEDULES):
        assert name in p.stdout
