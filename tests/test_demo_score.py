"""`iga demo score`: the prompt set, scoring through the guard, the command, and the shipped model's adherence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from iga.demo import data  # noqa: E402
from iga.demo.score import GROUPS, prompt_set, score  # noqa: E402
from iga.paths import DEMO_JUDGE, DEMO_MODEL  # noqa: E402

DEMO_RECIPE = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "demo.json"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    """A one-step demo model with the demo recipe embedded, as a publisher would ship it."""
    from iga.checkpoint import embed_recipe
    from iga.demo.trainer import TrainConfig, Trainer

    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("score")
    tr = Trainer(d / "ckpt", TrainConfig(seed=0, batch=2, max_steps=1, warmup=1, checkpoint_every_s=1e9))
    tr.train_step()
    path = tr.export(d / "tiny.safetensors")
    embed_recipe(path, json.loads(DEMO_RECIPE.read_text()))
    return path


@pytest.mark.parametrize("group", GROUPS)
def test_prompt_set_is_fixed_in_its_group_and_uses_distinct_seeds(group):
    pairs = prompt_set(group, 30)
    assert pairs == prompt_set(group, 30) and len(pairs) == 30
    held = {t.prompt for t in data.held_out_triples()}
    assert all((p in held) == (group == "held_out") for p, _ in pairs)
    assert len(set(pairs)) == 30
    assert len({p for p, _ in pairs}) == min(30, len(data.held_out_triples() if group == "held_out"
                                                   else data.train_triples()))


def test_prompt_sets_of_the_two_groups_never_share_a_seed():
    train, held = prompt_set("train", 200), prompt_set("held_out", 200)
    assert not {s for _, s in train} & {s for _, s in held}


def test_score_goes_through_the_guard_and_counts_every_image(tiny_path):
    import iga
    from iga.demo.judge import load_judge

    calls = []
    rep = score(iga.load(tiny_path), load_judge(), n_per_group=3, request={"steps": 15},
                progress=lambda d, t: calls.append((d, t)))
    assert rep["schema"] == "iga.demo-score/1" and rep["mode"] == "guarded"
    assert rep["settings"]["steps"] == 15 and rep["settings"]["sampler"] == "dpmpp_2m"
    assert rep["settings"]["nfe"] == 15 and rep["settings"]["prediction_type"] == "v"
    for g in GROUPS:
        r = rep["groups"][g]
        assert r["n"] == 3 and np.isfinite(r["frechet"])
        acc = r["accuracy"]
        assert set(acc) == {"shape", "fg", "bg", "all"}
        assert all(0.0 <= v <= 1.0 for v in acc.values())
        assert acc["all"] <= min(acc["shape"], acc["fg"], acc["bg"])
    assert calls[-1] == (6, 6) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_score_refuses_what_the_guard_refuses_and_records_permissive_overrides(tiny_path):
    import iga
    from iga.demo.judge import load_judge
    from iga.guard import GuardRefused

    model, judge = iga.load(tiny_path), load_judge()
    with pytest.raises(GuardRefused):
        score(model, judge, n_per_group=1, request={"sampler": "lcm"})
    rep = score(model, judge, n_per_group=1, request={"sampler": "euler", "steps": 3}, mode="permissive")
    assert rep["settings"]["sampler"] == "euler" and rep["settings"]["steps"] == 3
    assert rep["groups"]["train"]["n"] == 1 and rep["groups"]["train"]["frechet"] is None  # undefined for 1
    assert {"sampler", "steps"} <= set(rep["settings"]["overrides"])


def test_score_command_prints_a_table_and_json(tiny_path):
    from typer.testing import CliRunner

    from iga.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["demo", "score", "--model", str(tiny_path), "--n", "2", "--steps", "15", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert [rep["groups"][g]["n"] for g in GROUPS] == [2, 2]
    res = runner.invoke(app, ["demo", "score", "--model", str(tiny_path), "--n", "1", "--steps", "15"])
    assert res.exit_code == 0, res.output
    assert "dpmpp_2m + karras, 15 steps" in res.output and "held_out" in res.output and "n/a" in res.output
    res = runner.invoke(app, ["demo", "score", "--model", str(tiny_path), "--n", "1", "--sampler", "lcm"])
    assert res.exit_code == 3 and "lcm" in res.output


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
def test_shipped_model_follows_prompts_at_its_recipe_default():
    import iga
    from iga.demo.judge import load_judge

    rep = score(iga.load(), load_judge(), n_per_group=12)
    for g in GROUPS:
        acc = rep["groups"][g]["accuracy"]
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
