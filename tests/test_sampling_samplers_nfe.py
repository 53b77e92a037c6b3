"""Every sampler makes exactly expected_nfe(name, sigmas) model calls, on many grids, kinds and options."""

from __future__ import annotations

import math

import pytest
import torch

from iga.sampling.base import SamplingError, StepInfo
from iga.sampling.samplers import SAMPLERS, expected_nfe, restart_segments
from iga.sampling.testing import GaussianDenoiser, GuidedGaussianDenoiser, TorchNoise


def karras(n: int, smin: float, smax: float, zero: bool = True) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n if zero else n + 1, dtype=torch.float64)
    s = (smax ** (1 / 7) + ramp * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7
    return torch.cat([s, s.new_zeros(1)]) if zero else s


def flow_grid(n: int, smin: float = 0.0) -> torch.Tensor:
    """Linear flow grid from 1 to smin (a common flow schedule shape)."""
    return torch.linspace(1.0, smin, n + 1, dtype=torch.float64)


GRIDS = {
    "vp_karras_10": ("vp", karras(10, 0.03, 14.6)),
    "vp_karras_3": ("vp", karras(3, 0.03, 14.6)),
    "vp_one_step": ("vp", torch.tensor([14.6, 0.0], dtype=torch.float64)),
    "vp_two_steps": ("vp", torch.tensor([14.6, 1.0, 0.0], dtype=torch.float64)),
    "vp_no_zero_7": ("vp", karras(7, 0.3, 5.0, zero=False)),
    "flow_from_1": ("flow", flow_grid(8)),
    "flow_no_zero": ("flow", torch.tensor([0.9, 0.7, 0.5, 0.4, 0.3, 0.2], dtype=torch.float64)),
}

VARIANTS = {
    "euler": [{}, {"s_churn": 2.0}],
    "heun": [{}, {"s_churn": 2.0, "s_tmin": 0.5, "s_tmax": 5.0}],
    "heunpp2": [{}, {"s_churn": 1.0}],
    "dpm_2": [{}, {"s_churn": 1.0}],
    "euler_ancestral": [{}, {"eta": 0.0}, {"eta": 0.5}],
    "dpm_2_ancestral": [{}, {"eta": 0.0}, {"eta": 3.0}],
    "dpmpp_2s_ancestral": [{}, {"eta": 0.0}, {"eta": 3.0}],
    "dpmpp_sde": [{}, {"eta": 0.0}, {"r": 0.3}],
    "dpmpp_2m_sde": [{}, {"solver_type": "heun"}, {"eta": 0.0}],
    "ddim": [{}, {"eta": 1.0}],
    "lms": [{}, {"order": 2}],
    "uni_pc": [{}, {"lower_order_final": False}, {"order": 1}],
    "uni_pc_bh2": [{}, {"order": 2}],
    "dpm_fast": [{}, {"eta": 0.5}],
}


def make_model(name: str, kind: str):
    base = GaussianDenoiser(torch.tensor([0.5, -0.3]), torch.tensor([0.8, 1.2]), kind)
    if SAMPLERS[name].needs_uncond:
        return GuidedGaussianDenoiser(base, GaussianDenoiser(torch.tensor([0.1, 0.2]), 1.0, kind), 1.5)
    return base


def cases():
    for name in SAMPLERS:
        for grid in GRIDS:
            for opts in VARIANTS.get(name, [{}]):
                yield name, grid, opts


@pytest.mark.parametrize("name,grid,opts", list(cases()))
def test_nfe_matches_expected(name: str, grid: str, opts: dict) -> None:
    kind, sig = GRIDS[grid]
    spec = SAMPLERS[name]
    if kind == "flow" and "flow" not in spec.parameterizations:
        with pytest.raises(SamplingError):
            spec.fn(make_model(name, kind), torch.zeros(2, 2, dtype=torch.float64), sig)
        return
    if name in ("dpm_fast", "dpm_adaptive") and (sig[-1] == 0 and len(sig) == 2):
        with pytest.raises(SamplingError, match="coincide"):
            spec.fn(make_model(name, kind), torch.zeros(2, 2, dtype=torch.float64), sig, **opts)
        return
    model = make_model(name, kind)
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * float(sig[0])
    steps: list[StepInfo] = []
    out = spec.fn(model, x, sig, noise=TorchNoise(x, 0), callback=steps.append, **opts)
    assert out.shape == x.shape and torch.isfinite(out).all()
    want = expected_nfe(name, sig, kind=kind, **opts)
    if spec.adaptive:
        assert want is None and model.nfe > 0
    else:
        assert model.nfe == want
    assert steps, "the callback must be called"
    assert [s.i for s in steps] == list(range(len(steps)))


def test_nfe_formulas_by_hand() -> None:
    """Counts from the definitions, for a 10-step list ending at 0 (independent of the nfe functions)."""
    sig = karras(10, 0.03, 14.6)
    assert expected_nfe("euler", sig) == 10
    assert expected_nfe("heun", sig) == 19  # 9 two-call steps + the Euler step to 0
    assert expected_nfe("dpm_2", sig) == 19
    assert expected_nfe("heunpp2", sig) == 3 * 8 + 2 + 1
    assert expected_nfe("dpmpp_sde", sig) == 19
    assert expected_nfe("dpmpp_2s_ancestral", sig) == 19
    assert expected_nfe("dpm_fast", sig) == 10
    assert expected_nfe("uni_pc", sig) == 10
    assert expected_nfe("dpm_adaptive", sig) is None
    assert expected_nfe("restart", sig) == 19  # fewer than 20 steps: plain Heun


def test_restart_default_plan_matches_a1111_rule() -> None:
    """20..35 steps: 9 restart steps once; 36+: steps // 4 restart steps twice; base grid Karras of the rest."""
    for steps, (r_steps, r_times) in ((20, (9, 1)), (30, (9, 1)), (40, (10, 2))):
        sig = karras(steps, 0.0292, 14.6146)
        segs = restart_segments(sig)
        base_steps = steps - r_steps * r_times
        # the segments are the base steps plus (r_steps) restart segments per restart, each of r_steps + 1 points
        assert len(segs) == base_steps + r_steps * r_times
        ups = [k for k in range(1, len(segs)) if segs[k][0] > segs[k - 1][1]]
        assert len(ups) == r_times
        base = karras(base_steps, float(sig[-2]), float(sig[0])).tolist()
        lo = min(base, key=lambda v: abs(v - 0.1))
        hi = min(base, key=lambda v: abs(v - 2.0))
        for k in ups:
            assert segs[k][0] == pytest.approx(hi, rel=1e-12)
            assert segs[k - 1][1] == pytest.approx(lo, rel=1e-12)
        assert [a for a, _ in segs[:base.index(lo)]] == pytest.approx(base[:base.index(lo)], rel=1e-12)
        assert segs[0][0] == pytest.approx(14.6146) and segs[-1][1] == 0.0
        want = sum(1 if b == 0 else 2 for _, b in segs)
        assert expected_nfe("restart", sig) == want
        model = GaussianDenoiser(0.0, 1.0)
        x = torch.randn(1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 14.6146
        SAMPLERS["restart"].fn(model, x, sig, noise=TorchNoise(x, 1))
        assert model.nfe == want


def test_restart_custom_list_and_flow_refused() -> None:
    sig = karras(12, 0.03, 14.6)
    plan = {0.5: [4, 2, 3.0]}
    segs = restart_segments(sig, plan)
    assert len(segs) == 12 + 2 * 3
    model = GaussianDenoiser(0.0, 1.0)
    x = torch.zeros(1, 2, dtype=torch.float64)
    SAMPLERS["restart"].fn(model, x, sig, noise=TorchNoise(x, 0), restart_list=plan)
    assert model.nfe == expected_nfe("restart", sig, restart_list=plan)
    with pytest.raises(SamplingError, match="VP"):
        SAMPLERS["restart"].fn(GaussianDenoiser(0.0, 1.0, "flow"), x, flow_grid(4))


def test_dpm_adaptive_counts_are_reported_by_model() -> None:
    """dpm_adaptive stops at the last nonzero sigma and spends more calls for a tighter tolerance."""
    sig = karras(10, 0.1, 10.0)
    calls = []
    for rtol in (0.05, 1e-4):
        model = GaussianDenoiser(torch.tensor([0.5, -0.3]), torch.tensor([0.8, 1.2]))
        x = torch.randn(2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 10.0
        seen: list[StepInfo] = []
        SAMPLERS["dpm_adaptive"].fn(model, x, sig, rtol=rtol, atol=rtol / 10, callback=seen.append)
        assert seen[-1].sigma_next == pytest.approx(float(sig[-2]))
        calls.append(model.nfe)
    assert calls[1] > calls[0]
    with pytest.raises(SamplingError, match="max_nfe"):
        model = GaussianDenoiser(0.0, 1.0)
        SAMPLERS["dpm_adaptive"].fn(model, torch.ones(1, 2, dtype=torch.float64) * 10, sig, rtol=1e-9, atol=1e-12,
                                    max_nfe=30)


def test_sigma_batch_dtype_and_shape() -> None:
    """The model receives one sigma per image, in the sigma list's dtype (at least float32)."""
    seen = []

    class Spy(GaussianDenoiser):
        def __call__(self, x, sigma):
            seen.append((sigma.shape, sigma.dtype))
            return super().__call__(x, sigma)

    x = torch.zeros(3, 4, dtype=torch.float16)
    SAMPLERS["euler"].fn(Spy(0.0, 1.0), x, torch.tensor([2.0, 1.0, 0.0]))
    assert seen and all(s == (torch.Size([3]), torch.float32) for s in seen)
    assert math.isfinite(float(seen[0][0][0]))
