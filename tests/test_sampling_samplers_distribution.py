"""Stochastic samplers on analytic Gaussian data end with the right distribution.

With the exact denoiser of x0 ~ N(mu, std^2) every sampler step is affine in x and in the noise, so the final
sample is ``out = c + a (x_init - m0) + sum_k b_k z_k``. Running the sampler once on a batch of "probe" columns
(one column per noise draw that receives a unit draw, one with a unit initial offset, one with none) gives
a, b_k and c exactly, hence the exact final mean and variance without Monte-Carlo noise. Those must approach the
data distribution as the steps grow (the ancestral/SDE step is correct), and an ordinary Monte-Carlo run must
agree with them (the probe analysis describes what the sampler really does with random noise).
"""

from __future__ import annotations

import math

import pytest
import torch

from iga.sampling.samplers import SAMPLERS
from iga.sampling.testing import GaussianDenoiser, GuidedGaussianDenoiser, TorchNoise

MU, STD = 0.7, 0.6


def karras(n: int, smin: float = 0.01, smax: float = 20.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (smax ** (1 / 7) + ramp * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7
    return torch.cat([s, s.new_zeros(1)])


def flow_sigmas(n: int) -> torch.Tensor:
    t = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
    return 3.0 * t / (1.0 + 2.0 * t)


GRIDS = {"vp": karras, "flow": flow_sigmas}


class ProbeNoise:
    """Call k returns a unit draw in column 2 + k and zeros elsewhere."""

    def __init__(self, width: int):
        self.width, self.calls = width, 0

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        z = torch.zeros(1, self.width, dtype=torch.float64)
        z[0, 2 + self.calls] = 1.0
        self.calls += 1
        return z


def make_model(name: str, kind: str):
    base = GaussianDenoiser(MU, STD, kind)
    if SAMPLERS[name].needs_uncond:
        return base, GuidedGaussianDenoiser(base, GaussianDenoiser(MU, STD, kind), 1.0)
    return base, base


def options(name: str, **extra) -> dict:
    opts = {"eta": 1.0} if name == "ddim" else {}
    if name.startswith("sa_solver"):
        # noise over the whole range: outside its window SA-Solver is an ODE solver, which carries the offset of a
        # flow grid's lambda cap at sigma = 1 (1 - 1e-4, as ComfyUI) to the end; its default window is checked in
        # tests/test_sampling_samplers_new.py
        opts.update(sde_start_percent=0.0, sde_end_percent=1.0)
    opts.update(extra)
    return opts


def exact_final_stats(name: str, kind: str, sig: torch.Tensor, **opts) -> tuple[float, float]:
    """Exact mean and variance of the sampler's output when x_init ~ the true marginal at sigma_0."""
    base, model = make_model(name, kind)
    m0, sd0 = base.marginal(float(sig[0]))
    width = 2 + 3 * len(sig) + 8
    x = torch.full((1, width), float(m0), dtype=torch.float64)
    x[0, 1] += 1.0
    noise = ProbeNoise(width)
    out = SAMPLERS[name].fn(model, x, sig, noise=noise, **opts)[0]
    c = out[0]
    a = out[1] - c
    b = out[2:2 + noise.calls] - c
    assert torch.equal(out[2 + noise.calls:], c.expand(width - 2 - noise.calls)), "unused columns must stay put"
    return float(c), float(a * a * sd0 ** 2 + (b * b).sum())


def final_target(kind: str, sig: torch.Tensor) -> tuple[float, float]:
    """Mean and variance of D(x, sigma_last) when x is exactly distributed at the last nonzero sigma."""
    s = float(sig[-2])
    a = 1.0 if kind == "vp" else 1.0 - s
    return MU, (a * STD ** 2) ** 2 / (a * a * STD ** 2 + s * s)


ANCESTRAL = [n for n, s in SAMPLERS.items() if s.stochastic and n != "lcm"] + ["ddim"]
CASES = [(n, k) for n in ANCESTRAL for k in GRIDS if k in ("vp",) or "flow" in SAMPLERS[n].parameterizations]


@pytest.mark.parametrize("name,kind", CASES)
def test_exact_final_distribution_converges(name: str, kind: str) -> None:
    mean_t, var_t = final_target(kind, GRIDS[kind](800))
    errs = []
    for n in (100, 800):
        sig = GRIDS[kind](n)
        mean_t, var_t = final_target(kind, sig)
        mean, var = exact_final_stats(name, kind, sig, **options(name))
        assert mean == pytest.approx(mean_t, abs=1e-6), "the mean is preserved exactly by every step"
        errs.append(abs(var / var_t - 1.0))
    assert errs[1] < 0.02, f"{name}/{kind}: final variance off by {errs[1]:.2%} after 800 steps"
    assert errs[1] < errs[0] / 3 or errs[1] < 1e-3, f"{name}/{kind}: variance error does not shrink: {errs}"


@pytest.mark.parametrize("name,kind", [c for c in CASES if "s_noise" in SAMPLERS[c[0]].options])
def test_wrong_noise_scale_is_detected(name: str, kind: str) -> None:
    """Negative control: 20% too much noise (s_noise = 1.2) gives a clearly wrong final variance."""
    sig = GRIDS[kind](800)
    _, var_t = final_target(kind, sig)
    _, var = exact_final_stats(name, kind, sig, **options(name, s_noise=1.2))
    assert var / var_t - 1.0 > 0.2


@pytest.mark.parametrize("name,kind", [("euler_ancestral", "vp"), ("euler_ancestral", "flow"),
                                       ("dpmpp_2m_sde", "flow"), ("dpm_2_ancestral", "vp"), ("ddpm", "flow"),
                                       ("dpmpp_sde", "vp")])
def test_monte_carlo_agrees_with_exact_stats(name: str, kind: str) -> None:
    """A real random run (32768 samples, 50 steps) has the mean/variance the probe analysis predicts."""
    sig = GRIDS[kind](50)
    mean_x, var_x = exact_final_stats(name, kind, sig, **options(name))
    base, model = make_model(name, kind)
    x = base.sample_marginal(float(sig[0]), (4, 8192), torch.Generator().manual_seed(0))
    out = SAMPLERS[name].fn(model, x, sig, noise=TorchNoise(x, 1), **options(name))
    n = out.numel()
    assert abs(float(out.mean()) - mean_x) < 5 * math.sqrt(var_x / n)
    assert abs(float(out.var()) - var_x) < 5 * var_x * math.sqrt(2.0 / (n - 1))


def test_flow_euler_ancestral_from_pure_noise() -> None:
    """Flow: start at sigma = 1 from pure noise (the real use) and land on N(mu, std^2) (Monte Carlo, 400 steps)."""
    sig = flow_sigmas(400)
    base = GaussianDenoiser(MU, STD, "flow")
    x = torch.randn(4, 8192, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = SAMPLERS["euler_ancestral"].fn(base, x, sig, noise=TorchNoise(x, 3))
    n = out.numel()
    assert abs(float(out.mean()) - MU) < 5 * STD / math.sqrt(n)
    assert float(out.var()) / STD ** 2 == pytest.approx(1.0, abs=0.05)


def test_lcm_step_is_denoise_then_fresh_noise() -> None:
    """LCM: x' = alpha' D(x, sigma) + sigma' z (VP: alpha' = 1; flow: 1 - sigma')."""
    for kind, sig in (("vp", torch.tensor([5.0, 1.5, 0.0], dtype=torch.float64)),
                      ("flow", torch.tensor([1.0, 0.4, 0.0], dtype=torch.float64))):
        base = GaussianDenoiser(MU, STD, kind)
        x = torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        seen = []
        SAMPLERS["lcm"].fn(base, x, sig, noise=TorchNoise(x, 4), callback=seen.append)
        z = torch.randn(2, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        d0 = base(x, torch.full((2,), float(sig[0]), dtype=torch.float64))
        a1 = 1.0 if kind == "vp" else 1.0 - float(sig[1])
        torch.testing.assert_close(seen[0].x, a1 * d0 + float(sig[1]) * z)
        torch.testing.assert_close(seen[1].x, seen[1].denoised)
