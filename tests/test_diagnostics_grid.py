"""`iga grid`: X/Y/Z plots on the sweep runner, refusals as cells, provenance in every cell and in the grid."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iga.diagnostics.grid import GridSpec, parse_axis, run_grid
from iga.diagnostics.grid_image import read_grid_record
from iga.evaluation.axes import SpecError
from iga.guard import Request
from iga.provenance import read_provenance

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def grid(tmp_path_factory, module_audit):
    """A 2 x 2 x 2 grid on the bundled demo model at 3 steps; one Y value the recipe forbids."""
    spec = GridSpec(PROMPT, x=parse_axis("cfg=2,5"), y=parse_axis("sampler=euler,lcm"), z=parse_axis("steps=3,4"),
                    seed=5)
    out = tmp_path_factory.mktemp("grid") / "g"
    return run_grid(spec, out), module_audit


def test_an_axis_is_a_list_a_range_or_a_keyword():
    assert parse_axis("cfg=2,3.5,7").values == (2.0, 3.5, 7.0)
    assert parse_axis("steps=10-40:10").values == (10, 20, 30, 40)
    assert parse_axis("seed=1-3").values == (1, 2, 3)
    assert parse_axis("sampler=Euler a,DPM++ 2M").values == ("euler_ancestral", "dpmpp_2m")
    assert parse_axis("prompt=red,\"green, glossy\"").values == ("red", "green, glossy")
    assert parse_axis("cfg-rescale=0,0.5").name == "cfg_rescale"
    assert parse_axis("sampler=recipe").values == "recipe"


@pytest.mark.parametrize("text, message", [
    ("colour=1,2", "unknown axis 'colour'"), ("steps=40-10", "LOW <= HIGH"), ("steps=", "has no values"),
    ("cfg", "write AXIS=VALUES"), ("eta=-1", "out of range"), ("steps=2.5", "whole number"),
])
def test_a_bad_axis_names_what_is_wrong(text, message):
    with pytest.raises(SpecError, match=message):
        parse_axis(text)


def test_every_combination_is_a_cell_and_each_z_value_a_grid_image(grid):
    result, _ = grid
    assert len(result.cells) == 8
    assert {(c.x, c.y, c.z) for c in result.cells} == {(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)}
    assert [p.name for p in result.grids] == ["grid-z0.png", "grid-z1.png"]
    from PIL import Image

    with Image.open(result.grids[0]) as im:  # 2 columns of cells scaled to >= 128 px, labels on the left
        assert im.width >= 2 * 128 and im.height >= 2 * 128


def test_a_forbidden_value_is_a_cell_with_the_guards_reason_and_no_image(grid):
    result, _ = grid
    lcm = [c for c in result.cells if c.y == 1]
    assert lcm and all("lcm is forbidden" in c.refused and not c.row["image"] for c in lcm)
    assert all(not c.refused and c.row["image"] for c in result.cells if c.y == 0)


def test_each_cell_is_saved_with_the_plan_of_its_position(grid):
    result, _ = grid
    for c in result.cells:
        if c.refused:
            continue
        plan = read_provenance(result.run_dir / c.row["image"]).plan
        assert plan["cfg"] == (2.0, 5.0)[c.x] and plan["steps"] == (3, 4)[c.z]
        assert plan["sampler"] == "euler" and plan["seed"] == 5 and plan["prompt"] == PROMPT


def test_the_grid_png_carries_every_cell_of_its_z_value_with_its_plan(grid):
    result, _ = grid
    for z, path in enumerate(result.grids):
        record = read_grid_record(path)
        assert record["schema"] == "iga.grid/1" and record["z"] == z
        assert record["axes"]["x"] == {"name": "cfg", "values": ["2", "5"]}
        cells = record["cells"]
        assert len(cells) == 4 and all(c["z"] == z for c in cells)
        for c in cells:
            if c["refused"]:
                assert c["plan"] is None and c["image"] is None
            else:
                assert c["plan"]["steps"] == (3, 4)[z] and c["plan"]["pixels_sha256"]
    assert len(json.loads((result.run_dir / "grid.json").read_text())["cells"]) == 8


def test_varied_axes_are_explicit_overrides_recorded_in_plans_and_the_audit_log(grid):
    result, audit = grid
    plan = read_provenance(result.run_dir / result.cells[0].row["image"]).plan
    # euler and 3 steps leave the demo recipe (dpmpp_2m, 15-40 steps): each is an override; cfg 2 is in range
    assert {o["field"] for o in plan["overrides"]} == {"sampler", "steps"}
    assert "iga grid" in plan["overrides"][0]["reason"]
    logged = [json.loads(line) for line in Path(audit).read_text().splitlines()]
    assert any(e.get("action") == "grid" for e in logged)


def test_a_rerun_in_the_same_folder_renders_nothing_again(grid):
    result, _ = grid
    before = {p.name: p.stat().st_mtime_ns for p in (result.run_dir / "images").iterdir()}
    calls = []
    again = run_grid(GridSpec(PROMPT, x=parse_axis("cfg=2,5"), y=parse_axis("sampler=euler,lcm"),
                              z=parse_axis("steps=3,4"), seed=5), result.run_dir,
                     progress=lambda done, total: calls.append(done))
    assert calls == [] and len(again.cells) == 8
    assert {p.name: p.stat().st_mtime_ns for p in (result.run_dir / "images").iterdir()} == before


def test_a_prompt_axis_replaces_its_first_value_and_a_seed_axis_sets_each_seed(tmp_path, offline_audit):
    spec = GridSpec(PROMPT, x=parse_axis("prompt=red,yellow"), y=parse_axis("seed=7,8"),
                    base=Request(steps=2, overrides=["steps"]))
    result = run_grid(spec, tmp_path / "g")
    plans = {(c.x, c.y): read_provenance(tmp_path / "g" / c.row["image"]).plan for c in result.cells}
    assert plans[(0, 0)]["prompt"] == PROMPT
    assert plans[(1, 0)]["prompt"] == "a yellow circle on a blue background"
    assert [plans[(0, j)]["seed"] for j in (0, 1)] == [7, 8]


def test_a_search_text_missing_from_the_prompt_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(SpecError, match="does not occur in the prompt"):
        run_grid(GridSpec(PROMPT, x=parse_axis("prompt=green,red")), tmp_path / "g")
    assert not (tmp_path / "g").exists()


def _cli(*args, env_extra=None, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "iga.cli", "grid", *args], capture_output=True, text=True,
                          env=env, **kw)


@pytest.mark.parametrize("args, message", [
    (["--x", "colour=1,2"], "unknown axis 'colour'"),
    (["--x", "steps=30-10"], "LOW <= HIGH"),
    (["--x", "cfg=2,3", "--model", "MISSING"], "not found"),
    (["--x", "cfg=2,3", "--z", "steps=2,3"], "--z needs --y"),
    (["--x", "sampler=eulr"], "euler"),
])
def test_bad_input_is_one_clear_line_exit_2_and_nothing_written(tmp_path, args, message):
    out = tmp_path / "g"
    args = [str(tmp_path / "none.safetensors") if a == "MISSING" else a for a in args]
    p = _cli(PROMPT, *args, "--out", str(out), env_extra={"IGA_AUDIT_LOG": str(tmp_path / "a.jsonl")})
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert not out.exists()


def test_the_command_prints_the_grid_and_json_names_its_files(tmp_path):
    p = _cli(PROMPT, "--x", "cfg=2,4", "--steps", "2", "--override", "steps", "--seed", "1",
             "--out", str(tmp_path / "g"), "--json",
             env_extra={"IGA_AUDIT_LOG": str(tmp_path / "a.jsonl")})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["rendered"] == 2 and out["refused"] == 0 and Path(out["grids"][0]).is_file() and out["seed"] == 1


def test_ctrl_c_exits_130_keeps_finished_cells_and_draws_the_partial_grid(tmp_path):
    out = tmp_path / "g"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "IGA_AUDIT_LOG": str(tmp_path / "a.jsonl")}
    proc = subprocess.Popen([sys.executable, "-m", "iga.cli", "grid", PROMPT, "--x", "steps=20-40:2", "--y",
                             "seed=1-3", "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    journal = out / "rows.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or journal.read_text().count("\n") < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun" in err and "Traceback" not in err
    done = journal.read_text().count("\n")
    assert 2 <= done < 33 and len(list((out / "images").iterdir())) == done
    record = read_grid_record(out / "grid.png")
    assert len(record["cells"]) == done
