"""Every backend computes the same rows: in-process, local worker processes and Ray actors."""

import os

from iga.evaluation import parse_spec, run_experiment

SPEC = {"vary": {"cfg": [2, 3]}, "prompts": "demo:all:2", "seeds": 1, "threads": 1}
VOLATILE = ("seconds", "image")  # wall time, and file names that carry the time of day


def _rows(tmp_path, name, **extra):
    result = run_experiment(parse_spec({**SPEC, **extra}), tmp_path / name, report=False)
    return {r["key"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in result.rows}


def test_local_worker_processes_give_the_rows_and_pixels_of_the_in_process_run(tmp_path, offline_audit):
    inline = _rows(tmp_path, "inline")
    pooled = _rows(tmp_path, "pool", workers=2)
    assert pooled == inline
    assert all(r["pixels_sha256"] for r in inline.values())


def test_the_ray_backend_gives_the_rows_and_pixels_of_the_local_backend(tmp_path, offline_audit):
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    local = _rows(tmp_path, "local")
    on_ray = _rows(tmp_path, "ray", backend="ray", workers=2)
    assert on_ray == local
