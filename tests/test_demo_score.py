"""`iga demo score` (a client of the evaluation runner): image counts, accuracy, refusals, JSON, the run folder;
and the shipped model's adherence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from iga.demo import data  # noqa: E402
from iga.paths import DEMO_JUDGE, DEMO_MODEL  # noqa: E402

DEMO_RECIPE = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "demo.json"
GROUPS = ("train", "held_out")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    """A one-step demo model with the demo recipe embedded, as a publisher would ship it."""
    from iga.checkpoint import embed_recipe
    from iga.demo.trainer import TrainConfig, Trainer

    d = tmp_path_factory.mktemp("score")
    tr = Trainer(d / "ckpt", TrainConfig(seed=0, batch=2, max_steps=1, warmup=1, checkpoint_every_s=1e9))
    tr.train_step()
    path = tr.export(d / "tiny.safetensors")
    embed_recipe(path, json.loads(DEMO_RECIPE.read_text()))
    return path


def _score(*args: str):
    from typer.testing import CliRunner

    from iga.cli import app

    return CliRunner().invoke(app, ["demo", "score", *args])


def _point_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    return [r for r in rows if r["role"] == "point"]


@pytest.mark.parametrize(("n", "train", "held_out"), [(4, (4, 1), (4, 1)), (13, (13, 1), (7, 2)),
                                                      (110, (55, 2), (11, 10))])
def test_each_group_asks_for_the_fewest_seeds_and_enough_prompts(n, train, held_out):
    # 99 training and 11 held-out prompts: K prompts x S seeds >= n, S as small as possible
    from iga.commands.demo import _group_spec

    for group, (k, seeds) in (("train", train), ("held_out", held_out)):
        spec = _group_spec(group, n, None, {}, [], "guarded")
        assert (spec.prompts, spec.seeds, spec.vary, spec.repeat) == (f"demo:{group}:{k}", seeds, {}, False)


def test_score_json_counts_every_image_of_each_group_and_keeps_the_run(tiny_path, offline_audit, tmp_path):
    out = tmp_path / "run"
    res = _score("--model", str(tiny_path), "--n", "4", "--steps", "15", "--json", "--out", str(out))
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["schema"] == "iga.demo-score/1" and rep["mode"] == "guarded" and set(rep["groups"]) == set(GROUPS)
    assert rep["settings"] == {"sampler": "dpmpp_2m", "schedule": "karras", "steps": 15, "cfg": 3.0, "nfe": 15,
                               "prediction_type": "v", "overrides": []}
    held = {t.prompt for t in data.held_out_triples()}
    for g in GROUPS:
        r = rep["groups"][g]
        assert set(r) == {"n", "accuracy", "frechet"} and r["n"] == 4 and np.isfinite(r["frechet"])
        acc = r["accuracy"]
        assert set(acc) == {"shape", "fg", "bg", "all"} and all(0.0 <= v <= 1.0 for v in acc.values())
        assert acc["all"] <= min(acc["shape"], acc["fg"], acc["bg"])
        points = _point_rows(out / g)
        assert len(points) == 4 and all((out / g / p["image"]).is_file() for p in points)
        assert len({p["prompt"] for p in points}) == 4 and all((p["prompt"] in held) == (g == "held_out")
                                                              for p in points)
        assert acc["fg"] == np.mean([p["adherence_fg"] for p in points])
    journal = (out / "train" / "rows.jsonl").read_text()
    again = _score("--model", str(tiny_path), "--n", "4", "--steps", "15", "--json", "--out", str(out))
    assert again.exit_code == 0 and json.loads(again.stdout) == rep
    assert (out / "train" / "rows.jsonl").read_text() == journal  # resumed: nothing rendered twice
    other = _score("--model", str(tiny_path), "--n", "4", "--steps", "16", "--out", str(out))
    assert other.exit_code == 2 and "another experiment" in other.output


def test_score_table_of_one_image_per_group_leaves_no_temporary_folder(tiny_path, offline_audit, tmp_path,
                                                                      monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    res = _score("--model", str(tiny_path), "--n", "1", "--steps", "15")
    assert res.exit_code == 0, res.output
    assert "dpmpp_2m + karras, 15 steps, cfg 3, 15 model calls per image (guarded mode)" in res.stdout
    lines = {line.split()[0]: line.split() for line in res.stdout.splitlines()[2:]}
    assert set(lines) == set(GROUPS) and all(lines[g][1] == "1" and lines[g][-1] == "n/a" for g in GROUPS)
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.parametrize("extra", [["--override", "sampler"], []])
def test_forbidden_sampler_exits_3_with_the_guards_reason_before_rendering(tiny_path, offline_audit, tmp_path,
                                                                          extra):
    out = tmp_path / "run"
    res = _score("--model", str(tiny_path), "--n", "4", "--sampler", "lcm", *extra, "--out", str(out))
    assert res.exit_code == 3, res.output
    assert "refused by the guard" in res.output and "lcm" in res.output and res.stdout == ""
    assert not list(out.rglob("*.png"))


def test_permissive_mode_records_every_deviation_in_settings_and_the_audit_log(tiny_path, offline_audit, tmp_path):
    res = _score("--model", str(tiny_path), "--n", "1", "--sampler", "euler", "--steps", "3", "--mode",
                 "permissive", "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["mode"] == "permissive" and rep["settings"]["sampler"] == "euler" and rep["settings"]["steps"] == 3
    assert {"sampler", "steps"} <= set(rep["settings"]["overrides"])
    assert rep["groups"]["train"]["n"] == 1 and rep["groups"]["train"]["frechet"] is None  # undefined for 1
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {"sampler", "steps"} <= {r["field"] for r in audit}


def test_bad_input_exits_2(tiny_path, offline_audit):
    res = _score("--model", str(tiny_path), "--n", "1", "--sampler", "no-such-sampler", "--override", "sampler")
    assert res.exit_code == 2 and "no-such-sampler" in res.output
    assert _score("--model", str(tiny_path), "--n", "0").exit_code == 2


def test_sigma_space_v_denoiser_matches_the_discrete_training_formula(tiny_path):
    # Training: x_t = a x0 + s eps, v = a eps - s x0, so x0 = a x_t - s v. The sampler works in sigma space
    # (x = x_t / a, sigma = s / a) and must recover the same x0 through iga's v parameterization.
    from iga.demo.model import encode, load_demo_model
    from iga.demo.trainer import alphas_cumprod
    from iga.sampling.parameterization import VPParameterization, schedule_from_config

    unet, te, tok, cfg = load_demo_model(tiny_path)
    param = VPParameterization(schedule_from_config(cfg["training_schedule"]), "v")
    ab = alphas_cumprod().float()
    x0 = torch.from_numpy(data.sample_batch(2, np.random.default_rng(0)).images)
    cond = encode(te, tok, ["a red circle on a black background"] * 2)
    for t in (30, 400, 900):
        a, s = ab[t].sqrt(), (1 - ab[t]).sqrt()
        xt = a * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
        with torch.no_grad():
            v = unet(xt, torch.full((2,), t), **cond).sample
            sigma = torch.full((2,), float(s / a))
            x_in, t_in = param.model_inputs(xt / a, sigma)
            assert torch.allclose(t_in.float(), torch.full((2,), float(t)), atol=1e-2)
            assert torch.allclose(x_in, xt, atol=1e-5)
            d = param.to_denoised(xt / a, sigma, unet(x_in, t_in, **cond).sample)
        assert torch.allclose(d, a * xt - s * v, atol=1e-4)


@pytest.mark.skipif(not (DEMO_MODEL.is_file() and DEMO_JUDGE.is_file()), reason="demo model/judge not bundled")
def test_shipped_model_follows_prompts_at_its_recipe_default(offline_audit):
    res = _score("--n", "12", "--json")
    assert res.exit_code == 0, res.output
    for g in GROUPS:
        acc = json.loads(res.stdout)["groups"][g]["accuracy"]
        # Issue 6's target is >= 90 % per attribute; the full measurement (`iga demo score --n 110`) is in the
        # README. 12 images per group keep this fast: at most one shape miss per group is tolerated.
        assert min(acc["fg"], acc["bg"]) == 1.0, (g, acc)
        assert acc["shape"] >= 11 / 12, (g, acc)


@pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="demo model not bundled")
def test_shipped_model_treated_as_eps_loses_the_prompt():
    import iga
    from iga.demo.judge import load_judge, read

    model = iga.load()
    prompt = "a red circle on a blue background"
    plan = model.plan(prompt, seeds=[1, 2, 3, 4], batch=4)
    right = np.stack([im.pixels for im in model.generate(plan=plan)])
    wrong = np.stack([im.pixels for im in model.generate(plan=plan.model_copy(update={"prediction_type": "eps"}))])
    judge = load_judge()
    ok = [r.fg == "red" and r.bg == "blue" for r in read(judge, right)]
    bad = [r.fg == "red" and r.bg == "blue" for r in read(judge, wrong)]
    assert sum(ok) == 4 and sum(bad) <= 2
    assert np.abs(right.astype(int) - wrong.astype(int)).mean() > 20
