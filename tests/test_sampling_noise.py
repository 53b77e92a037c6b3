"""Seeded initial noise, per-step noise and the Brownian tree."""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers.utils.torch_utils import randn_tensor  # noqa: E402

from iga.sampling.noise import (  # noqa: E402
    BrownianPath,
    BrownianTreeNoiseSampler,
    NoiseError,
    SeededNoiseSampler,
    initial_noise,
    make_noise_sampler,
)

SHAPE = (4, 16, 16)


def test_initial_noise_matches_diffusers_cpu_generator_list():
    seeds = [0, 42, 2**63 + 5]
    ours = initial_noise(SHAPE, seeds)
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    ref = randn_tensor((3, *SHAPE), generator=gens, device=torch.device("cpu"), dtype=torch.float32)
    assert torch.equal(ours, ref)


def test_initial_noise_batch_independence_and_determinism():
    batch = initial_noise(SHAPE, [7, 8, 9])
    for k, s in enumerate([7, 8, 9]):
        assert torch.equal(batch[k : k + 1], initial_noise(SHAPE, [s]))
    assert torch.equal(batch, initial_noise(SHAPE, [7, 8, 9]))
    assert not torch.equal(batch[0], batch[1])
    assert initial_noise(SHAPE, [1], dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, True, "3"])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(NoiseError):
        initial_noise(SHAPE, [bad])


def test_seeded_noise_sampler_uses_seed_plus_one_per_image():
    x = torch.zeros(2, *SHAPE)
    ns = SeededNoiseSampler(x, [10, 2**64 - 1])
    a, b = ns(1.0, 0.5), ns(0.5, 0.1)
    g0, g1 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(0)  # 2**64 - 1 + 1 wraps to 0
    assert torch.equal(a[0], torch.randn(SHAPE, generator=g0)) and torch.equal(a[1], torch.randn(SHAPE, generator=g1))
    assert torch.equal(b[0], torch.randn(SHAPE, generator=g0))
    # image k of a batch == its seed alone, and independent of the batch composition
    solo = SeededNoiseSampler(x[:1], [2**64 - 1])
    assert torch.equal(solo(0, 0)[0], a[1])
    assert ns.calls == 2


def test_seeded_noise_sampler_follows_x_dtype():
    x = torch.zeros(1, *SHAPE, dtype=torch.float64)
    assert SeededNoiseSampler(x, [1])(0, 0).dtype == torch.float64
    with pytest.raises(NoiseError, match="seeds for a batch"):
        SeededNoiseSampler(x, [1, 2])


# ---------------------------------------------------------------------------------------------------- Brownian


def test_brownian_increments_are_standard_normal():
    x = torch.zeros(1, 4, 64, 64)  # 16384 samples per interval
    ns = BrownianTreeNoiseSampler(x, [123], sigma_hi=14.6146)
    for a, b in [(14.6146, 9.1), (1.0, 0.9), (0.05, 0.0292), (0.0292, 0.0)]:
        z = ns(a, b).double()
        assert abs(z.mean()) < 0.05 and abs(z.var() - 1) < 0.05, (a, b, z.mean(), z.var())
    # disjoint intervals are uncorrelated
    z1, z2 = ns(10.0, 5.0).flatten().double(), ns(5.0, 2.0).flatten().double()
    assert abs(torch.corrcoef(torch.stack([z1, z2]))[0, 1]) < 0.05


def test_brownian_additivity_and_query_order_independence():
    x = torch.zeros(2, 3, 8, 8)
    pts = [14.0, 7.3, 3.1, 1.0, 0.31, 0.0]
    ns = BrownianTreeNoiseSampler(x, [5, 6], sigma_hi=14.6)
    fwd = [ns.increment(a, b) for a, b in zip(pts, pts[1:])]
    total = ns.increment(pts[0], pts[-1])
    torch.testing.assert_close(sum(fwd), total, rtol=0, atol=1e-12)
    # a fresh tree queried in reverse (and with unrelated queries in between) gives bit-identical increments
    ns2 = BrownianTreeNoiseSampler(x, [5, 6], sigma_hi=14.6)
    back = []
    for a, b in reversed(list(zip(pts, pts[1:]))):
        ns2.increment(0.123, 11.0)
        back.append(ns2.increment(a, b))
    for f, r in zip(fwd, reversed(back)):
        assert torch.equal(f, r)
    # tiny cache: results do not depend on caching
    ns3 = BrownianTreeNoiseSampler(x, [5, 6], sigma_hi=14.6, cache_size=1)
    assert torch.equal(ns3.increment(7.3, 3.1), fwd[1])


def test_brownian_refinement_adds_steps_without_changing_the_path():
    x = torch.zeros(1, 2, 4, 4)
    coarse = BrownianTreeNoiseSampler(x, [9], sigma_hi=14.6)
    fine = BrownianTreeNoiseSampler(x, [9], sigma_hi=14.6)
    w_coarse = coarse.increment(8.0, 2.0)
    w_fine = fine.increment(8.0, 5.5) + fine.increment(5.5, 2.0)
    torch.testing.assert_close(w_fine, w_coarse, rtol=0, atol=1e-12)


def test_brownian_batch_independence_and_scaling():
    x = torch.zeros(3, 2, 4, 4)
    batch = BrownianTreeNoiseSampler(x, [1, 2, 3], sigma_hi=1.0)
    solo = BrownianTreeNoiseSampler(x[1:2], [2], sigma_hi=1.0)
    assert torch.equal(batch(0.8, 0.3)[1], solo(0.8, 0.3)[0])
    inc = batch.increment(0.8, 0.3)
    torch.testing.assert_close(batch(0.8, 0.3), (inc / math.sqrt(0.5)).float())
    # per-image sigmas
    per = batch(torch.tensor([0.8, 0.8, 0.5], dtype=torch.float64), torch.tensor([0.3, 0.3, 0.2], dtype=torch.float64))
    assert torch.equal(per[0], batch(0.8, 0.3)[0])
    assert torch.equal(per[2], batch(0.5, 0.2)[2])


def test_brownian_path_variance_scales_with_interval_length():
    # Var(W(b) - W(a)) = b - a, checked over many independent seeds at one element
    a, b = 0.3, 0.45
    vals = torch.stack([BrownianPath(s, 0.0, 1.0, (256,))(b) - BrownianPath(s, 0.0, 1.0, (256,))(a)
                        for s in range(40)]).flatten()
    assert abs(vals.var().item() / (b - a) - 1) < 0.08
    with pytest.raises(NoiseError, match="outside its domain"):
        BrownianPath(0, 0.0, 1.0, (2,))(1.5)


def test_brownian_errors_and_dtype():
    x = torch.zeros(1, 2, 2, 2, dtype=torch.float16)
    ns = BrownianTreeNoiseSampler(x, [0], sigma_hi=1.0)
    assert ns(1.0, 0.5).dtype == torch.float16
    with pytest.raises(NoiseError, match="empty interval"):
        ns(0.5, 0.5)


def test_make_noise_sampler():
    x = torch.zeros(2, 2, 4, 4)
    sig = torch.tensor([14.6, 3.0, 0.0])
    assert make_noise_sampler("none", x, [1, 2], sig) is None
    assert isinstance(make_noise_sampler("seeded", x, [1, 2], sig), SeededNoiseSampler)
    bt = make_noise_sampler("brownian", x, [1, 2], sig)
    assert isinstance(bt, BrownianTreeNoiseSampler) and bt.sigma_hi == pytest.approx(1.5 * 14.6)
    bt(14.6 * 1.4142, 14.6)  # churned sigma above the list is inside the domain
    with pytest.raises(NoiseError):
        make_noise_sampler("gpu", x, [1, 2], sig)  # type: ignore[arg-type]
