"""Cross-checks between samplers that theory says coincide, determinism given a seed, and input errors."""

from __future__ import annotations

import math

import pytest
import torch

from iga.sampling.base import SamplingError, StepInfo
from iga.sampling.samplers import SAMPLERS, get_sampler, sample_with
from iga.sampling.testing import GaussianDenoiser, GuidedGaussianDenoiser, TorchNoise

MU = torch.tensor([0.4, -0.8, 1.2, 0.0])
STD = torch.tensor([0.5, 1.0, 1.5, 0.7])


def karras(n: int, smin: float = 0.03, smax: float = 14.6) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (smax ** (1 / 7) + ramp * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7
    return torch.cat([s, s.new_zeros(1)])


def flow_sigmas(n: int) -> torch.Tensor:
    t = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
    return 3.0 * t / (1.0 + 2.0 * t)  # SD3-style shift 3


def start(kind: str, sig: torch.Tensor, seed: int = 0, batch: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, generator=g, dtype=torch.float64) * float(sig[0])


def run(name: str, kind: str, sig: torch.Tensor, x: torch.Tensor, seed: int | None = 7, **opts) -> torch.Tensor:
    model = GaussianDenoiser(MU, STD, kind)
    if SAMPLERS[name].needs_uncond:
        model = GuidedGaussianDenoiser(model, GaussianDenoiser(MU, STD, kind), 1.0)
    noise = TorchNoise(x, seed) if seed is not None else None
    return SAMPLERS[name].fn(model, x.clone(), sig, noise=noise, **opts)


KINDS = [("vp", karras(12)), ("flow", flow_sigmas(12))]
TIGHT = {"rtol": 1e-10, "atol": 1e-12}

# (stochastic sampler, its options, deterministic counterpart, its options)
ETA0_PAIRS = [
    ("euler_ancestral", {"eta": 0.0}, "euler", {}),
    ("dpm_2_ancestral", {"eta": 0.0}, "dpm_2", {}),
    ("dpmpp_2m_sde", {"eta": 0.0}, "dpmpp_2m", {}),
    ("dpmpp_2m_sde_heun", {"eta": 0.0}, "res_multistep", {}),
    ("dpmpp_sde", {"eta": 0.0}, "dpmpp_2s_ancestral", {"eta": 0.0}),
    ("ddim", {"eta": 0.0}, "euler", {}),
    ("euler_ancestral_cfg_pp", {"eta": 0.0}, "euler", {}),
    ("euler_cfg_pp", {}, "euler", {}),
    ("dpmpp_2m_cfg_pp", {}, "dpmpp_2m", {}),
    ("heun", {"s_churn": 0.0}, "restart", {}),
]


@pytest.mark.parametrize("kind,sig", KINDS, ids=["vp", "flow"])
@pytest.mark.parametrize("a,a_opts,b,b_opts", ETA0_PAIRS, ids=[p[0] + "=" + p[2] for p in ETA0_PAIRS])
def test_equal_by_theory(kind, sig, a, a_opts, b, b_opts) -> None:
    """Pairs that are the same method (eta = 0, CFG++ at scale 1, Lagrange vs Newton form, ...) agree."""
    if kind == "flow" and "flow" not in SAMPLERS[b].parameterizations:
        pytest.skip(f"{b} is VP-only")
    x = start(kind, sig)
    out_a = run(a, kind, sig, x, seed=None, **a_opts)
    out_b = run(b, kind, sig, x, seed=None, **b_opts)
    torch.testing.assert_close(out_a, out_b, **TIGHT)


def test_ddpm_equals_ancestral_and_ddim_eta1() -> None:
    """The DDPM posterior step = DDIM(eta=1) (both kinds) = Euler ancestral (VP), given the same noise stream."""
    for kind, sig in KINDS:
        x = start(kind, sig)
        ddpm = run("ddpm", kind, sig, x, seed=5)
        torch.testing.assert_close(ddpm, run("ddim", kind, sig, x, seed=5, eta=1.0), **TIGHT)
        if kind == "vp":
            torch.testing.assert_close(ddpm, run("euler_ancestral", kind, sig, x, seed=5), **TIGHT)


def test_ipndm_is_lms_on_a_uniform_grid() -> None:
    """Equal-step Adams-Bashforth weights are the variable-step ones when the steps are equal."""
    sig = torch.linspace(8.0, 0.5, 17, dtype=torch.float64)
    x = start("vp", sig)
    torch.testing.assert_close(run("ipndm", "vp", sig, x, seed=None), run("lms", "vp", sig, x, seed=None), **TIGHT)
    # ... and differ on a non-uniform one
    sig = karras(16)
    assert not torch.allclose(run("ipndm", "vp", sig, x, seed=None), run("lms", "vp", sig, x, seed=None))


@pytest.mark.parametrize("comfyui,other", [("lms", "lms_exact"), ("ipndm", "ipndm_diffusers"),
                                           ("uni_pc", "uni_pc_diffusers"), ("uni_pc_bh2", "uni_pc_bh2_diffusers")])
def test_comfyui_and_other_forms_differ_only_at_sigma_zero(comfyui: str, other: str) -> None:
    """The ComfyUI forms and their k-diffusion/diffusers variants differ only in how a list ending in 0 ends."""
    for kind, sig in KINDS:
        x = start(kind, sig)
        head = sig[:-1]  # the same list without its final 0
        torch.testing.assert_close(run(comfyui, kind, head, x, seed=None), run(other, kind, head, x, seed=None),
                                   **TIGHT)
        assert not torch.allclose(run(comfyui, kind, sig, x, seed=None), run(other, kind, sig, x, seed=None))


def test_ipndm_v_is_ipndm_on_a_uniform_grid_only_up_to_order_3() -> None:
    """diff-sampler's variable-step weights reduce to AB3 for equal steps, but its 4th-order ones are not AB4's."""
    from iga.sampling.samplers.multistep import ipndm_v_weights

    sig = torch.linspace(8.0, 0.5, 17, dtype=torch.float64)
    x = start("vp", sig)
    torch.testing.assert_close(run("ipndm_v", "vp", sig, x, seed=None, max_order=3),
                               run("ipndm", "vp", sig, x, seed=None, max_order=3), **TIGHT)
    assert not torch.allclose(run("ipndm_v", "vp", sig, x, seed=None), run("ipndm", "vp", sig, x, seed=None))
    assert ipndm_v_weights([-0.5] * 3) == pytest.approx([23 / 12, -16 / 12, 5 / 12], rel=1e-14)
    assert ipndm_v_weights([-0.5] * 4) == pytest.approx([57 / 24, -65 / 24, 43 / 24, -11 / 24], rel=1e-14)


def test_euler_cfg_pp_step_formula() -> None:
    """One step of euler_cfg_pp: x' = D_cfg + sigma' (x - D_u) / sigma, computed here from the two denoisers."""
    cond, unc = GaussianDenoiser(MU, STD), GaussianDenoiser(-MU, STD * 0.5)
    guided = GuidedGaussianDenoiser(cond, unc, 2.5)
    sig = torch.tensor([3.0, 1.2], dtype=torch.float64)
    x = start("vp", sig)
    s = torch.full((x.shape[0],), 3.0, dtype=torch.float64)
    d_c, d_u = cond(x, s), unc(x, s)
    want = d_u + 2.5 * (d_c - d_u) + 1.2 * (x - d_u) / 3.0
    out = SAMPLERS["euler_cfg_pp"].fn(guided, x.clone(), sig)
    torch.testing.assert_close(out, want, **TIGHT)
    assert guided.nfe == 1
    # flow form: x' = a' D_cfg + s' (x - a D_u) / s
    cond, unc = GaussianDenoiser(MU, STD, "flow"), GaussianDenoiser(-MU, STD * 0.5, "flow")
    guided = GuidedGaussianDenoiser(cond, unc, 2.5)
    sig = torch.tensor([0.8, 0.3], dtype=torch.float64)
    s = torch.full((x.shape[0],), 0.8, dtype=torch.float64)
    d_c, d_u = cond(x, s), unc(x, s)
    want = 0.7 * (d_u + 2.5 * (d_c - d_u)) + 0.3 * (x - 0.2 * d_u) / 0.8
    torch.testing.assert_close(SAMPLERS["euler_cfg_pp"].fn(guided, x.clone(), sig), want, **TIGHT)


def test_cfg_pp_needs_guided_denoiser() -> None:
    with pytest.raises(SamplingError, match="denoise_with_uncond"):
        SAMPLERS["euler_cfg_pp"].fn(GaussianDenoiser(0.0, 1.0), torch.zeros(1, 2), torch.tensor([1.0, 0.0]))


STOCHASTIC = [n for n, s in SAMPLERS.items() if s.stochastic]


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_is_deterministic_given_seed(name: str) -> None:
    """Same seed -> bit-identical output; another seed -> a different output; no noise sampler -> clear error."""
    kind, sig = KINDS[0]
    x = start(kind, sig)
    opts = {"restart_list": {0.5: [4, 1, 3.0]}} if name == "restart" else {}
    a = run(name, kind, sig, x, seed=11, **opts)
    b = run(name, kind, sig, x, seed=11, **opts)
    c = run(name, kind, sig, x, seed=12, **opts)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(SamplingError, match="noise"):
        run(name, kind, sig, x, seed=None, **opts)


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2", "heunpp2"])
def test_churn_needs_noise_and_changes_result(name: str) -> None:
    kind, sig = KINDS[0]
    x = start(kind, sig)
    plain = run(name, kind, sig, x, seed=None)
    churned = run(name, kind, sig, x, seed=3, s_churn=5.0)
    assert not torch.allclose(plain, churned)
    with pytest.raises(SamplingError, match="s_churn"):
        run(name, kind, sig, x, seed=None, s_churn=5.0)
    # a window that excludes every sigma is the same as no churn
    torch.testing.assert_close(run(name, kind, sig, x, seed=3, s_churn=5.0, s_tmin=100.0), plain, **TIGHT)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_reports_each_step(name: str) -> None:
    """StepInfo: consecutive i, sigma > sigma_next, x after the step, and the last x is the output."""
    kind, sig = KINDS[0]
    if name == "dpm_adaptive":
        pytest.skip("adaptive steps are checked in the NFE tests")
    x = start(kind, sig)
    steps: list[StepInfo] = []
    model = GaussianDenoiser(MU, STD, kind)
    if SAMPLERS[name].needs_uncond:
        model = GuidedGaussianDenoiser(model, GaussianDenoiser(MU, STD, kind), 1.0)
    out = SAMPLERS[name].fn(model, x.clone(), sig, noise=TorchNoise(x, 0), callback=steps.append)
    assert [s.i for s in steps] == list(range(len(steps)))
    assert all(s.sigma > s.sigma_next for s in steps)
    assert torch.equal(steps[-1].x, out)
    assert all(s.denoised.shape == x.shape for s in steps)
    if name not in ("dpm_fast", "restart"):
        assert [s.sigma for s in steps] == pytest.approx(sig[:-1].tolist())


def test_flow_grid_starting_at_one_is_finite_everywhere() -> None:
    """Flow lists that start at sigma = 1 (alpha = 0) work for every flow-capable sampler."""
    sig = flow_sigmas(10)
    assert float(sig[0]) == 1.0
    for name, spec in SAMPLERS.items():
        if "flow" not in spec.parameterizations:
            continue
        x = start("flow", sig)
        out = run(name, "flow", sig, x, seed=2)
        assert torch.isfinite(out).all(), name


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([1.0]), "at least 2"),
    (torch.tensor([1.0, 2.0, 0.0]), "strictly decreasing"),
    (torch.tensor([1.0, 1.0, 0.0]), "strictly decreasing"),
    (torch.tensor([1.0, float("nan"), 0.0]), "finite"),
    (torch.tensor([1.0, -0.5]), "finite value >= 0"),
    (torch.tensor([[1.0, 0.0]]), "1-D"),
])
def test_bad_sigma_lists_are_refused(bad, match) -> None:
    with pytest.raises(SamplingError, match=match):
        SAMPLERS["euler"].fn(GaussianDenoiser(0.0, 1.0), torch.zeros(1, 2), bad)


def test_flow_sigmas_above_one_and_bad_options_are_refused() -> None:
    with pytest.raises(SamplingError, match=r"\[0, 1\]"):
        SAMPLERS["euler"].fn(GaussianDenoiser(0.0, 1.0, "flow"), torch.zeros(1, 2), torch.tensor([2.0, 0.0]))
    with pytest.raises(SamplingError, match="eta"):
        SAMPLERS["euler_ancestral"].fn(GaussianDenoiser(0.0, 1.0), torch.zeros(1, 2), torch.tensor([1.0, 0.0]),
                                       eta=-1.0)
    with pytest.raises(SamplingError, match="solver_type"):
        SAMPLERS["dpmpp_2m_sde"].fn(GaussianDenoiser(0.0, 1.0), torch.zeros(1, 2), torch.tensor([1.0, 0.0]),
                                    solver_type="rk4")
    with pytest.raises(SamplingError, match="order"):
        SAMPLERS["lms"].fn(GaussianDenoiser(0.0, 1.0), torch.zeros(1, 2), torch.tensor([1.0, 0.0]), order=9)
    with pytest.raises(SamplingError, match="injects no noise"):
        sample_with("euler", GaussianDenoiser(0.0, 1.0), torch.zeros(1, 2), torch.tensor([1.0, 0.0]), eta=1.0)
    with pytest.raises(SamplingError, match="dpmpp_2m"):
        get_sampler("dpmpp_2m_karras")


def test_noise_sampler_shape_is_checked() -> None:
    sig = karras(4)
    with pytest.raises(SamplingError, match="shape"):
        SAMPLERS["euler_ancestral"].fn(GaussianDenoiser(0.0, 1.0), torch.zeros(2, 3), sig,
                                       noise=lambda s, t: torch.zeros(3))


def test_sde_noise_uses_model_sigmas_for_brownian_queries() -> None:
    """SDE samplers query noise(sigma_i, sigma_{i+1}) on the model's own sigma grid (what a Brownian tree needs)."""
    sig = karras(6)
    x = start("vp", sig)
    noise = TorchNoise(x, 0)
    SAMPLERS["dpmpp_2m_sde"].fn(GaussianDenoiser(MU, STD), x, sig, noise=noise)
    assert noise.calls == [(float(sig[i]), float(sig[i + 1])) for i in range(len(sig) - 2)]
    noise = TorchNoise(x, 0)
    SAMPLERS["dpmpp_sde"].fn(GaussianDenoiser(MU, STD), x, sig, noise=noise)
    assert len(noise.calls) == 2 * (len(sig) - 2)
    for k in range(len(sig) - 2):
        s0, s_mid = noise.calls[2 * k]
        assert s0 == float(sig[k]) and float(sig[k + 1]) < s_mid < s0
        # r = 1/2: sigma_mid is the geometric mean for VP (lambda midpoint)
        assert s_mid == pytest.approx(math.sqrt(float(sig[k]) * float(sig[k + 1])), rel=1e-12)
        assert noise.calls[2 * k + 1] == (float(sig[k]), float(sig[k + 1]))
