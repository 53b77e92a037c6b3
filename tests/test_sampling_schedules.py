"""Inference sigma schedules vs diffusers (where it has the same schedule) and samplers.md's golden values."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler  # noqa: E402
from diffusers.schedulers import AysSchedules  # noqa: E402

from iga.sampling.parameterization import FlowSchedule, sd_schedule  # noqa: E402
from iga.sampling.schedules import (  # noqa: E402
    AYS_NOISE_LEVELS,
    AYS_TIMESTEPS,
    SCHEDULES,
    ScheduleError,
    ays,
    beta,
    compute_schedule,
    discard_penultimate,
    explicit_grid,
    exponential,
    karras,
    kl_optimal,
    linear_quadratic,
    normal,
    polyexponential,
    simple,
    turbo,
    validate_sigmas,
)

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
VP = sd_schedule()
FLOW = FlowSchedule(shift=3.0)

# samplers.md section 1.4 / 4.2 (computed there by an independent numpy re-implementation of ComfyUI).
GOLDEN_10 = {
    "normal": "14.6146 7.8399 4.6092 2.9183 1.9502 1.3449 0.9324 0.6250 0.3687 0.0292 0",
    "sgm_uniform": "14.6146 8.3072 5.0924 3.3251 2.2797 1.6156 1.1629 0.8319 0.5712 0.3437 0",
    "simple": "14.6146 8.3028 5.0878 3.3211 2.2765 1.6129 1.1606 0.8299 0.5693 0.3417 0",
    "karras": "14.6146 9.1029 5.4784 3.1686 1.7494 0.9141 0.4469 0.2014 0.0819 0.0292 0",
    "exponential": "14.6146 7.3249 3.6712 1.8400 0.9222 0.4622 0.2317 0.1161 0.0582 0.0292 0",
    "ddim_uniform": "8.3907 5.1344 3.3478 2.2929 1.6237 1.1682 0.8357 0.5741 0.3462 0.0413 0",
    "beta": "14.6146 11.5428 7.3718 4.3728 2.6152 1.6183 1.0273 0.6549 0.3955 0.1991 0",
    "kl_optimal": "14.6146 4.2324 2.3937 1.5971 1.1330 0.8152 0.5729 0.3725 0.1953 0.0292 0",
    "ays": "14.6146 6.4746 3.8637 2.6946 1.8842 1.3944 0.9643 0.6524 0.3977 0.1515 0",
}
AYS_SD1_20 = ("14.6146 9.7275 6.4746 5.0016 3.8637 3.2266 2.6946 2.2533 1.8842 1.6209 1.3944 1.1595 0.9643 0.7931 "
              "0.6524 0.5094 0.3977 0.2455 0.1515 0.0665 0")


def _vals(s: str) -> torch.Tensor:
    return torch.tensor([float(v) for v in s.split()], dtype=torch.float64)


def _euler_sigmas(n: int, **kw) -> torch.Tensor:
    sch = EulerDiscreteScheduler(**SD, **kw)
    sch.set_timesteps(n)
    return sch.sigmas.double()


@pytest.mark.parametrize("name", sorted(GOLDEN_10))
def test_golden_values_sd15_10_steps(name):
    ours = compute_schedule(name, 10, VP).double()
    torch.testing.assert_close(ours, _vals(GOLDEN_10[name]), atol=6e-5, rtol=0)  # 4 printed decimals


def test_ays_20_steps_golden():
    torch.testing.assert_close(ays(20, VP).double(), _vals(AYS_SD1_20), atol=6e-5, rtol=0)


# ---- diffusers oracle. Tolerance: diffusers' float32 sigma table differs from ours by <= 1.3e-5 relative
# (at sigma_min; see DiscreteVPSchedule), so exact-equivalent schedules are compared with rtol 2e-5.
EXACT = dict(rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 25, 50])
def test_simple_equals_diffusers_trailing_when_n_divides_1000(n):
    torch.testing.assert_close(simple(n, VP).double(), _euler_sigmas(n, timestep_spacing="trailing"), **EXACT)


@pytest.mark.parametrize("n", [3, 7, 37])
def test_simple_vs_trailing_otherwise_one_index_apart(n):
    # floor (ComfyUI) vs round (diffusers) of k*1000/n: the training index differs by at most one
    ours = VP.sigma_to_t(simple(n, VP)[:-1])
    sch = EulerDiscreteScheduler(**SD, timestep_spacing="trailing")
    sch.set_timesteps(n)
    diff = ours - sch.timesteps.float()
    assert diff.abs().max() <= 1.0 + 1e-3 and diff.min() >= -1e-3


@pytest.mark.parametrize("n", [1, 3, 10, 20, 30, 50])
def test_ddim_uniform_equals_diffusers_leading_offset_1(n):
    ref = _euler_sigmas(n, timestep_spacing="leading", steps_offset=1)
    torch.testing.assert_close(compute_schedule("ddim_uniform", n, VP).double(), ref, **EXACT)


@pytest.mark.parametrize("n", [2, 10, 20, 37, 100])
def test_karras_equals_diffusers(n):
    torch.testing.assert_close(karras(n, VP).double(), _euler_sigmas(n, use_karras_sigmas=True), **EXACT)


@pytest.mark.parametrize("n", [2, 10, 20, 37])
def test_exponential_equals_diffusers(n):
    torch.testing.assert_close(exponential(n, VP).double(), _euler_sigmas(n, use_exponential_sigmas=True), **EXACT)


@pytest.mark.parametrize("n", [2, 10, 20, 37])
def test_beta_linear_equals_diffusers_beta_sigmas(n):
    ref = _euler_sigmas(n, use_beta_sigmas=True)
    torch.testing.assert_close(compute_schedule("beta_linear", n, VP).double(), ref, **EXACT)


@pytest.mark.parametrize("n", [4, 10, 28, 38])
def test_normal_equals_diffusers_linspace_when_t_is_integer(n):
    # 999 / (n - 1) is an integer: linear-in-sigma (diffusers) and log-sigma (ComfyUI) interpolation coincide
    torch.testing.assert_close(normal(n, VP).double(), _euler_sigmas(n, timestep_spacing="linspace"), **EXACT)


@pytest.mark.parametrize("n", [7, 20, 33])
def test_normal_close_to_diffusers_linspace_otherwise(n):
    ours, ref = normal(n, VP).double(), _euler_sigmas(n, timestep_spacing="linspace")
    rel = ((ours[:-1] - ref[:-1]) / ref[:-1]).abs()
    assert rel.max() < 5e-3  # documented: < 0.5%
    assert rel.max() > 1e-6  # and genuinely different (log vs linear interpolation)


@pytest.mark.parametrize("n", [1, 5, 10, 30])
def test_flow_normal_equals_diffusers_flow_match_euler(n):
    sch = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sch.set_timesteps(n)
    torch.testing.assert_close(normal(n, FLOW).double(), sch.sigmas.double(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("family,key", [("sd1", "StableDiffusion"), ("sdxl", "StableDiffusionXL")])
def test_ays_tables_vs_diffusers(family, key):
    # ComfyUI's levels are the model sigma at NVIDIA's timesteps ...
    t = torch.tensor(AysSchedules[f"{key}Timesteps"], dtype=torch.float64)
    assert tuple(int(v) for v in t) == AYS_TIMESTEPS[family]
    torch.testing.assert_close(VP.t_to_sigma(t).double(), torch.tensor(AYS_NOISE_LEVELS[family][:-1]).double(),
                               rtol=2e-5, atol=0)
    # ... and diffusers' sigma lists are the same table rounded to 3 decimals, last value 0
    ref = torch.tensor(AysSchedules[f"{key}Sigmas"], dtype=torch.float64)
    torch.testing.assert_close(ays(10, VP, model_family=family).double(), ref, atol=4e-3, rtol=0)


def test_turbo_matches_table_at_timesteps():
    s = turbo(4, VP)
    torch.testing.assert_close(s[:-1], VP.sigmas[[999, 899, 799, 699]])
    assert s[-1] == 0
    with pytest.raises(ScheduleError, match="n_steps"):
        turbo(11, VP)


def test_polyexponential():
    torch.testing.assert_close(polyexponential(12, VP), exponential(12, VP))
    r = np.linspace(1, 0, 6) ** 2.0
    lo, hi = VP.sigma_min, VP.sigma_max
    expected = np.exp(r * (np.log(hi) - np.log(lo)) + np.log(lo))
    torch.testing.assert_close(polyexponential(6, VP, rho=2.0)[:-1].double(), torch.tensor(expected), rtol=1e-6, atol=0)


def test_linear_quadratic_hand_derived_values():
    # n=10: linear part i*0.025/5 for i<5; then q(i) = 0.025 + 0.005 (i-5) + a (i-5)^2 with a = (5 - 0.25)/(5*25)
    s = [0, 0.005, 0.010, 0.015, 0.020, 0.025, 0.068, 0.187, 0.382, 0.653, 1.0]
    expected = torch.tensor([1 - v for v in s], dtype=torch.float64)
    torch.testing.assert_close(linear_quadratic(10, FLOW).double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(linear_quadratic(10, VP).double(), expected * VP.sigma_max, atol=1e-5, rtol=1e-6)
    assert linear_quadratic(1, FLOW).tolist() == [1.0, 0.0]


def test_kl_optimal_formula_and_single_step():
    n = 7
    u = np.linspace(0, 1, n)
    expected = np.tan(u * np.arctan(VP.sigma_min) + (1 - u) * np.arctan(VP.sigma_max))
    torch.testing.assert_close(kl_optimal(n, VP)[:-1].double(), torch.tensor(expected), rtol=1e-6, atol=0)
    assert kl_optimal(1, VP).tolist() == pytest.approx([VP.sigma_max, 0.0])


def test_beta_drops_duplicate_timesteps_at_high_step_counts():
    s = beta(300, VP)
    assert len(s) < 301 and SCHEDULES["beta"].may_shorten
    validate_sigmas(s)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("n", [1, 2, 3, 7, 50])
def test_every_schedule_is_valid(name, n):
    spec = SCHEDULES[name]
    if name == "turbo" and n > 10:
        pytest.skip("turbo has at most 10 steps")
    for sched in (VP, FLOW):
        if sched.kind not in spec.kinds:
            with pytest.raises(ScheduleError, match="defined for"):
                compute_schedule(name, n, sched)
            continue
        s = compute_schedule(name, n, sched)
        assert s.dtype == torch.float32 and s.ndim == 1
        assert s[-1] == 0 and torch.isfinite(s).all() and (s[1:] < s[:-1]).all()
        if not spec.may_shorten:
            assert len(s) == n + 1, (name, sched)
        assert float(s[0]) <= sched.sigma_max * (1 + 1e-6)


def test_registry_lookup_errors():
    with pytest.raises(ScheduleError, match="did you mean karras"):
        compute_schedule("karas", 10, VP)
    with pytest.raises(ScheduleError, match="does not take"):
        compute_schedule("normal", 10, VP, rho=3)
    with pytest.raises(ScheduleError, match="n_steps"):
        compute_schedule("karras", 0, VP)
    with pytest.raises(ScheduleError, match="model_family"):
        compute_schedule("ays", 10, VP, model_family="sd3")
    assert compute_schedule("karras", 5, VP, rho=3.0)[1] != karras(5, VP)[1]
    assert set(SCHEDULES) >= {"normal", "karras", "exponential", "polyexponential", "sgm_uniform", "simple",
                              "ddim_uniform", "beta", "beta_linear", "linear_quadratic", "kl_optimal", "ays", "turbo"}


def test_explicit_grid_subsampling_rule():
    grid = [14.6, 9.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.0]  # 8 steps
    torch.testing.assert_close(explicit_grid(grid).double(), torch.tensor(grid, dtype=torch.float64), rtol=1e-6, atol=0)
    assert explicit_grid(grid[:-1]).tolist() == explicit_grid(grid).tolist()  # trailing 0 implied
    # n=4: indices round(linspace(0, 7, 4)) = round([0, 2.33, 4.67, 7]) = [0, 2, 5, 7]
    torch.testing.assert_close(explicit_grid(grid, 4).double(), torch.tensor([14.6, 5.0, 1.0, 0.2, 0.0]).double(),
                               rtol=1e-6, atol=0)
    for n in range(1, 9):
        s = explicit_grid(grid, n)
        assert len(s) == n + 1 and s[0] == pytest.approx(14.6) and (s[1:] < s[:-1]).all()
        if n >= 2:
            assert float(s[-2]) == pytest.approx(0.2)
    with pytest.raises(ScheduleError, match="only 8 steps"):
        explicit_grid(grid, 9)
    with pytest.raises(ScheduleError, match="strictly decreasing"):
        explicit_grid([5.0, 6.0, 0.0])
    with pytest.raises(ScheduleError, match="non-finite"):
        explicit_grid([float("nan"), 1.0])


def test_validate_sigmas_errors():
    with pytest.raises(ScheduleError, match="last sigma must be 0"):
        validate_sigmas(torch.tensor([2.0, 1.0]))
    with pytest.raises(ScheduleError, match="strictly decreasing"):
        validate_sigmas(torch.tensor([2.0, 2.0, 0.0]))
    with pytest.raises(ScheduleError, match="at least 2"):
        validate_sigmas(torch.tensor([0.0]))
    with pytest.raises(ScheduleError, match=">= 0"):
        validate_sigmas(torch.tensor([1.0, -1.0]))


def test_discard_penultimate():
    s = karras(11, VP)
    d = discard_penultimate(s)
    assert len(d) == 11 and d[-1] == 0 and d[-2] == s[-3]
