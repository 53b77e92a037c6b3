"""The audit log: append-only JSONL, no lost or interleaved records under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest

from iga.guard import ModelIdentity, Plan, Request, append_records, read_records, record_plan_overrides, resolve


def _writer(path: str, wid: int, n: int) -> None:
    for i in range(n):
        # records of different sizes, some large, make torn or interleaved writes visible
        append_records([{"writer": wid, "i": i, "pad": "x" * ((i * 977 + wid * 131) % 9000)}], path)


def test_concurrent_writers_lose_nothing_and_never_interleave(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    writers, per = 6, 60
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, per)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = open(path, "rb").read().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]  # raises if any line is torn or interleaved
    assert len(records) == writers * per
    seen = {(r["writer"], r["i"]) for r in records}
    assert seen == {(w, i) for w in range(writers) for i in range(per)}
    for w in range(writers):  # each writer's records appear in its own order
        order = [r["i"] for r in records if r["writer"] == w]
        assert order == sorted(order)


def test_append_never_truncates(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text('{"pre":"existing"}\n')
    append_records([{"a": 1}], path)
    append_records([{"a": 2}, {"a": 3}], path)
    assert [r.get("a", r.get("pre")) for r in read_records(path)] == ["existing", 1, 2, 3]


def test_overrides_of_a_plan_land_in_the_log(tmp_path, monkeypatch):
    from iga.recipe import parse_recipe_dict

    rec, _ = parse_recipe_dict({
        "iga_version": "1.0.0", "prediction_type": "eps", "sampler": {"name": "euler"},
        "scheduler": {"name": "karras"}, "cfg": {"default": 7, "min": 5, "max": 8},
        "steps": {"default": 20, "min": 10, "max": 30}})
    plan, _ = resolve(rec, Request(steps=40, cfg=9, overrides=["steps", "cfg"], reason="sweep", seed=5),
                      model=ModelIdentity(name="m", weights_sha256="a" * 64))
    monkeypatch.setenv("IGA_AUDIT_LOG", str(tmp_path / "env.jsonl"))
    path = record_plan_overrides(plan)
    assert path == tmp_path / "env.jsonl"
    got = list(read_records(path))
    assert {(r["field"], r["requested_value"], r["recipe_value"]) for r in got} == {("steps", 40, 20), ("cfg", 9.0, 7.0)}
    assert all(r["reason"] == "sweep" and r["mode"] == "guarded" and r["weights_sha256"] == "a" * 64 for r in got)
    assert record_plan_overrides(Plan.model_validate({**plan.to_dict(), "overrides": []})) is None


def test_damaged_log_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text('{"ok":1}\nnot json\n')
    with pytest.raises(ValueError, match=r"audit.jsonl:2"):
        list(read_records(path))


def test_tail_records_reads_the_last_records_from_the_end(tmp_path):
    from iga.guard.audit import append_records, tail_records

    log = tmp_path / "audit.jsonl"
    append_records([{"k": i, "pad": "x" * 300} for i in range(1000)], log)
    assert [r["k"] for r in tail_records(3, log)] == [997, 998, 999]
    assert [r["k"] for r in tail_records(2000, log)] == list(range(1000))
    assert tail_records(5, tmp_path / "missing.jsonl") == []
    with open(log, "ab") as f:
        f.write(b'{"k": "torn')  # a record still being written is not part of the tail
    assert [r["k"] for r in tail_records(2, log)] == [998, 999]
