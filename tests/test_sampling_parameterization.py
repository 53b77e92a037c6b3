"""Training schedules, sigma<->t, and the eps/v/x0/flow denoisers, checked against diffusers as an oracle."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import (  # noqa: E402
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as diffusers_rescale_zsnr  # noqa: E402

from iga.sampling.base import Denoiser  # noqa: E402
from iga.sampling.parameterization import (  # noqa: E402
    COMFY_ZSNR_TERMINAL_ALPHA_CUMPROD,
    DiscreteVPSchedule,
    FlowDenoiser,
    FlowParameterization,
    FlowSchedule,
    ModelDenoiser,
    ScheduleConfigError,
    VPDenoiser,
    VPParameterization,
    betas_squaredcos_cap_v2,
    rescale_zero_terminal_snr,
    schedule_from_config,
    sd_schedule,
)
from iga.sampling.schedules import karras  # noqa: E402

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


def _diffusers_sigma_table(sched) -> torch.Tensor:
    ac = sched.alphas_cumprod
    return ((1 - ac) / ac) ** 0.5


# ---------------------------------------------------------------------------------------------------- tables


def test_sd_sigma_table_matches_diffusers_and_reference_constants():
    s = sd_schedule()
    ref = _diffusers_sigma_table(EulerDiscreteScheduler(**SD)).to(torch.float32)
    assert s.sigmas.dtype == torch.float32 and s.sigmas.shape == (1000,)
    # diffusers computes (1 - abar) in float32: 1.3e-5 relative error at the small-sigma end, ~1e-7 at the top
    torch.testing.assert_close(s.sigmas, ref, rtol=2e-5, atol=0)
    torch.testing.assert_close(s.sigmas[300:], ref[300:], rtol=1e-6, atol=0)
    # samplers.md 4.1: sigma_min 0.029167159, sigma_max 14.614642, abar_999 = 0.0046601
    assert s.sigma_min == pytest.approx(0.029167159, rel=1e-7)
    assert s.sigma_max == pytest.approx(14.614642, rel=1e-6)
    assert float(s.alphas_cumprod[-1]) == pytest.approx(0.0046601, rel=1e-4)
    assert s.alphas_cumprod.dtype == torch.float64


@pytest.mark.parametrize("kind", ["linear", "squaredcos_cap_v2"])
def test_other_beta_schedules_match_diffusers(kind):
    cfg = {"kind": kind, "num_train_timesteps": 1000}
    if kind == "linear":
        cfg.update(beta_start=0.0001, beta_end=0.02)
    s = schedule_from_config(cfg)
    ref = DDPMScheduler(beta_schedule=kind, beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000)
    torch.testing.assert_close(s.alphas_cumprod, ref.alphas_cumprod.double(), rtol=2e-5, atol=1e-7)


def test_squaredcos_betas_are_capped():
    b = betas_squaredcos_cap_v2(1000)
    assert b.max() == pytest.approx(0.999) and np.all(b > 0)


def test_zero_terminal_snr_matches_diffusers_rescale():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ours = rescale_zero_terminal_snr(betas.numpy())
    ref = diffusers_rescale_zsnr(betas.clone()).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)
    assert ours[-1] == pytest.approx(1.0)
    abar = np.cumprod(1 - ours)
    # first alpha_bar unchanged, last exactly zero SNR
    assert abar[0] == pytest.approx(1 - 0.00085, rel=1e-12)


def test_zero_terminal_snr_schedule_clamps_like_diffusers():
    z = sd_schedule(zero_terminal_snr=True)
    assert float(z.alphas_cumprod[-1]) == 0.0
    assert z.sigma_max == pytest.approx(math.sqrt((1 - 2**-24) / 2**-24), rel=1e-6)  # ~4096
    ref = EulerDiscreteScheduler(**SD, rescale_betas_zero_snr=True)
    torch.testing.assert_close(z.sigmas, _diffusers_sigma_table(ref).float(), rtol=2e-5, atol=1e-6)
    comfy = sd_schedule(zero_terminal_snr=True, terminal_alpha_cumprod=COMFY_ZSNR_TERMINAL_ALPHA_CUMPROD)
    assert comfy.sigma_max == pytest.approx(math.sqrt((1 - 4.8973e-08) / 4.8973e-08), rel=1e-4)


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "cosine"},
        {"kind": "scaled_linear", "beta_start": 0.02, "beta_end": 0.01},
        {"kind": "scaled_linear", "num_train_timesteps": True},
        {"kind": "scaled_linear", "num_train_timesteps": 1},
        {"kind": "scaled_linear", "zero_terminal_snr": "yes"},
        {"kind": "scaled_linear", "typo_key": 1},
        {"kind": "scaled_linear", "beta_start": float("nan")},
        {"kind": "flow", "shift": -1.0},
        {"kind": "flow", "beta_start": 0.1},
        "scaled_linear",
    ],
)
def test_schedule_from_config_rejects_bad_input(bad):
    with pytest.raises(ScheduleConfigError):
        schedule_from_config(bad)


def test_schedule_from_config_defaults_and_flow():
    s = schedule_from_config({"kind": "scaled_linear"})
    assert s.sigma_max == pytest.approx(14.614642, rel=1e-6)
    f = schedule_from_config({"kind": "flow", "shift": 3.0})
    assert isinstance(f, FlowSchedule) and f.shift == 3.0 and f.sigma_max == 1.0


# ---------------------------------------------------------------------------------------------------- sigma <-> t


def test_sigma_to_t_round_trip_and_table_points():
    s = sd_schedule()
    t_int = torch.arange(1000, dtype=torch.float32)
    torch.testing.assert_close(s.sigma_to_t(s.sigmas), t_int, atol=1e-3, rtol=0)
    torch.testing.assert_close(s.t_to_sigma(t_int), s.sigmas, rtol=1e-6, atol=0)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(500, generator=g, dtype=torch.float64) * 999
    torch.testing.assert_close(s.sigma_to_t(s.t_to_sigma(t)).double(), t, atol=2e-3, rtol=0)
    # clamping outside the table
    assert float(s.sigma_to_t(100.0)) == 999.0 and float(s.sigma_to_t(0.0)) == 0.0


def test_sigma_to_t_matches_diffusers_euler_fractional_timesteps():
    sch = EulerDiscreteScheduler(**SD, use_karras_sigmas=True)
    sch.set_timesteps(20)
    ours = sd_schedule().sigma_to_t(sch.sigmas[:-1])
    torch.testing.assert_close(ours, sch.timesteps.float(), atol=2e-3, rtol=0)
    assert (ours != ours.round()).any()  # genuinely fractional


def test_quantize_matches_dpmsolver_karras_rounding():
    sch = DPMSolverMultistepScheduler(**SD, use_karras_sigmas=True)
    sch.set_timesteps(10)
    sig = karras(10, sd_schedule())
    q = sd_schedule(quantize=True)
    assert q.quantize and not sd_schedule().quantize
    torch.testing.assert_close(q.sigma_to_t(sig[:-1]), sch.timesteps.float(), atol=0, rtol=0)
    # quantized t is the nearest table entry in log sigma (ComfyUI's argmin rule)
    x = torch.tensor([0.5, 1.7, 9.0])
    nearest = (x.double().log()[:, None] - q.log_sigmas[None]).abs().argmin(1).float()
    torch.testing.assert_close(q.sigma_to_t(x), nearest, atol=0, rtol=0)
    assert sd_schedule().with_quantize(True).quantize


def test_flow_schedule_shift_and_timesteps():
    f = FlowSchedule(shift=3.0)
    u = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(f.time_to_sigma(u), 3 * u / (1 + 2 * u))
    torch.testing.assert_close(f.sigma_to_time(f.time_to_sigma(u)), u)
    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert f.sigma_min == pytest.approx(ref.sigma_min, rel=1e-6)
    ref.set_timesteps(10)
    torch.testing.assert_close(f.sigma_to_t(ref.sigmas[:-1]), ref.timesteps.float(), rtol=1e-6, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- denoisers


class FixedModel:
    """A raw model that returns a fixed output and records its inputs."""

    def __init__(self, out: torch.Tensor):
        self.out = out
        self.calls: list[tuple[torch.Tensor, torch.Tensor, dict]] = []

    def __call__(self, x, t, cond):
        self.calls.append((x.clone(), t.clone(), cond))
        return self.out[: x.shape[0]]


@pytest.mark.parametrize("prediction,dtype", [("eps", "epsilon"), ("v", "v_prediction"), ("x0", "sample")])
@pytest.mark.parametrize("step", [0, 4, 9])
def test_vp_denoiser_matches_diffusers_euler_conversion(prediction, dtype, step):
    g = torch.Generator().manual_seed(step)
    sample = torch.randn(2, 4, 8, 8, generator=g) * 3
    out = torch.randn(2, 4, 8, 8, generator=g)
    sch = EulerDiscreteScheduler(**SD, prediction_type=dtype)
    sch.set_timesteps(10)
    t = sch.timesteps[step]
    sigma = sch.sigmas[step]
    scaled = sch.scale_model_input(sample, t)
    ref_x0 = sch.step(out, t, sample).pred_original_sample

    model = FixedModel(out)
    den = VPDenoiser(model, sd_schedule(), prediction, cond={"c": torch.zeros(1, 3)})
    assert isinstance(den, Denoiser) and den.kind == "vp" and den.nfe == 0
    x0 = den(sample, sigma)
    assert den.nfe == 1
    torch.testing.assert_close(x0, ref_x0, rtol=1e-5, atol=1e-5)
    x_in, t_in, cond = model.calls[0]
    torch.testing.assert_close(x_in, scaled, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(t_in, torch.full((2,), float(t)), atol=2e-3, rtol=0)
    assert cond["c"].shape[0] == 2  # batch-1 conditioning expanded


def test_v_prediction_formula_from_first_principles():
    # x = x0 + sigma * eps, v = a * eps - s * x0 with a = 1/sqrt(sigma^2+1), s = sigma/sqrt(sigma^2+1)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    sigma = torch.tensor([0.1, 2.0, 14.0])
    sb = sigma.view(-1, 1, 1, 1)
    a, s = 1 / (sb**2 + 1).sqrt(), sb / (sb**2 + 1).sqrt()
    v = a * eps - s * x0
    p = VPParameterization(sd_schedule(), "v")
    torch.testing.assert_close(p.to_denoised(x0 + sb * eps, sigma, v), x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_to_prediction_inverts_to_denoised(prediction):
    g = torch.Generator().manual_seed(1)
    x, out = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 3, 5, 5, generator=g)
    sigma = torch.tensor([0.05, 7.0])
    p = VPParameterization(sd_schedule(), prediction)
    torch.testing.assert_close(p.to_prediction(x, sigma, p.to_denoised(x, sigma, out)), out, rtol=1e-4, atol=1e-5)
    fp = FlowParameterization(FlowSchedule(3.0))
    torch.testing.assert_close(fp.to_prediction(x, sigma / 10, fp.to_denoised(x, sigma / 10, out)), out,
                               rtol=1e-4, atol=1e-4)


def test_flow_denoiser_matches_diffusers_flow_euler_step():
    g = torch.Generator().manual_seed(5)
    sample, v = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    sch = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sch.set_timesteps(10)
    i = 3
    sigma, sigma_next = sch.sigmas[i], sch.sigmas[i + 1]
    ref_next = sch.step(v, sch.timesteps[i], sample).prev_sample
    model = FixedModel(v)
    den = FlowDenoiser(model, FlowSchedule(3.0))
    x0 = den(sample, sigma)
    torch.testing.assert_close(x0, sample - sigma * v)
    ours_next = sample + (sigma_next - sigma) * (sample - x0) / sigma  # Euler step in sigma
    torch.testing.assert_close(ours_next, ref_next, rtol=1e-5, atol=1e-5)
    assert den.kind == "flow" and den.prediction == "flow"
    torch.testing.assert_close(model.calls[0][1], sch.timesteps[i : i + 1].float(), rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(model.calls[0][0], sample)  # no input scaling


def test_denoiser_counts_each_call_and_checks_shapes():
    model = FixedModel(torch.zeros(4, 1, 2, 2))
    den = ModelDenoiser(model, VPParameterization(sd_schedule(), "eps"), {"c": torch.zeros(4, 2)})
    x = torch.ones(4, 1, 2, 2)
    for k in range(3):
        den(x, torch.full((4,), 1.0))
    assert den.nfe == 3
    with pytest.raises(ValueError, match="sigma must be"):
        den(x, torch.ones(3))
    bad = ModelDenoiser(model, VPParameterization(sd_schedule(), "eps"), {"c": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="batch 3"):
        bad(x, 1.0)
    with pytest.raises(ValueError):
        VPParameterization(sd_schedule(), "flow")  # type: ignore[arg-type]


def test_discrete_schedule_rejects_non_monotone_table():
    with pytest.raises(ScheduleConfigError):
        DiscreteVPSchedule(np.array([0.9, 0.95, 0.5]))
    with pytest.raises(ScheduleConfigError):
        DiscreteVPSchedule.from_betas(np.array([0.1, -0.1]))
