"""The demo judge: Frechet distance math, network shapes, the shipped judge's accuracy, `iga demo judge`."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from iga.demo import data  # noqa: E402
from iga.evaluation.frechet import feature_stats, frechet_distance  # noqa: E402
from iga.paths import DEMO_JUDGE  # noqa: E402

needs_judge = pytest.mark.skipif(not DEMO_JUDGE.is_file(), reason="the trained judge is not bundled yet")


def _commuting_pair(d: int, seed: int):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    return rng, q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T, a, b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_matches_closed_form_for_commuting_covariances(seed):
    # For S1, S2 sharing eigenvectors: FD = |m1-m2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    rng, s1, s2, a, b = _commuting_pair(8, seed)
    m1, m2 = rng.normal(size=8), rng.normal(size=8)
    expected = float(((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_is_zero_for_identical_and_finite_for_singular_covariances():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 10))  # 4 samples in 10-D: rank-deficient covariance
    mu, s = feature_stats(x)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-6
    y = rng.normal(size=(5, 10)) + 1.0
    fd = frechet_distance(mu, s, *feature_stats(y))
    assert np.isfinite(fd) and fd > 5.0  # a mean shift of 1 in 10 dimensions alone contributes ~10


def test_judge_network_shapes():
    from iga.demo.net import Judge

    j = Judge()
    x = torch.zeros(3, 3, 32, 32)
    out = j(x)
    assert out["shape"].shape == (3, len(data.SHAPES))
    assert out["fg"].shape == (3, len(data.FG_COLORS)) and out["bg"].shape == (3, len(data.BG_COLORS))
    assert j.features(x).shape == (3, 4 * j.config["width"])


@needs_judge
def test_shipped_judge_reads_fresh_real_images_at_least_99_percent():
    from iga.demo.judge import load_judge
    from iga.demo.trainer import judge_accuracy

    acc = judge_accuracy(load_judge(), n=400, seed=777)  # seed unused in judge training
    assert min(acc.values()) >= 0.99, acc


@needs_judge
def test_shipped_judge_features_separate_different_distributions():
    from iga.demo.judge import features, load_judge

    judge = load_judge()
    a = data.to_uint8(data.sample_batch(200, np.random.default_rng(1)).images)
    b = data.to_uint8(data.sample_batch(200, np.random.default_rng(2)).images)
    same = frechet_distance(*feature_stats(features(judge, a)), *feature_stats(features(judge, b)))
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, size=a.shape, dtype=np.uint8)
    other = frechet_distance(*feature_stats(features(judge, a)), *feature_stats(features(judge, noise)))
    assert other > 10 * same


@needs_judge
def test_iga_demo_judge_command_reads_images(tmp_path):
    import typer
    from PIL import Image
    from typer.testing import CliRunner

    from iga.commands.demo import register

    app = typer.Typer()
    register(app)

    @app.command()
    def _noop() -> None:  # a second command keeps typer from collapsing the group into the root
        pass

    paths, want = [], []
    for i, t in enumerate([data.Attributes("star", "yellow", "blue"), data.Attributes("ring", "red", "white")]):
        img = data.to_uint8(data.render([t], np.random.default_rng(i)))[0]
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
        want.append(t.prompt)
    res = CliRunner().invoke(app, ["demo", "judge", *paths])
    assert res.exit_code == 0, res.output
    for w in want:
        assert w in res.output
    bad = CliRunner().invoke(app, ["demo", "judge", str(tmp_path / "missing.png")])
    assert bad.exit_code != 0


def test_feature_stats_refuses_a_single_image_instead_of_returning_nan():
    with pytest.raises(ValueError, match="at least 2 images"):
        feature_stats(np.ones((1, 8)))
    mu, cov = feature_stats(np.arange(16, dtype=float).reshape(2, 8))
    assert mu.shape == (8,) and cov.shape == (8, 8) and np.isfinite(cov).all()
