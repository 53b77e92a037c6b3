"""sample(): noise scaling, the watched callback (NaN/Inf, cancellation), spec checks, and an end-to-end
Euler run against diffusers' scheduler loop (VP and flow)."""

from __future__ import annotations

import math
import os
import threading

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler  # noqa: E402

from iga.sampling.base import Cancelled, NonFiniteError, SamplerSpec, SamplingError, StepInfo  # noqa: E402
from iga.sampling.noise import initial_noise  # noqa: E402
from iga.sampling.parameterization import FlowDenoiser, FlowSchedule, VPDenoiser, sd_schedule  # noqa: E402
from iga.sampling.run import sample  # noqa: E402
from iga.sampling.schedules import ddim_uniform, normal  # noqa: E402

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


def euler(model, x, sigmas, *, noise=None, callback=None, s_scale=1.0):
    """A test-local Euler sampler with the engine's sampler signature."""
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        d = model(x, sigmas[i] * ones)
        x = x + (x - d) / sigmas[i] * (sigmas[i + 1] - sigmas[i]) * s_scale
        if callback is not None:
            callback(StepInfo(i, float(sigmas[i]), float(sigmas[i + 1]), x, d))
    return x


class LinearEps:
    """eps = 0.2 * x_in + 0.1 * sin(t / 100): depends on input and timestep."""

    def __call__(self, x, t, cond):
        return 0.2 * x + 0.1 * torch.sin(t.view(-1, 1, 1, 1) / 100)


def test_euler_end_to_end_matches_diffusers_loop():
    noise = initial_noise((4, 8, 8), [3])
    model = LinearEps()
    sch = EulerDiscreteScheduler(**SD)
    sch.set_timesteps(10)
    lat = noise * sch.init_noise_sigma
    for t in sch.timesteps:
        lat = sch.step(model(sch.scale_model_input(lat, t), t.reshape(1), {}), t, lat).prev_sample
    den = VPDenoiser(model, sd_schedule(), "eps")
    ours = sample(euler, den, noise, normal(10, sd_schedule()))
    assert den.nfe == 10
    torch.testing.assert_close(ours, lat, rtol=1e-4, atol=1e-4)


def test_vp_max_noise_scaling_matches_diffusers_leading():
    noise = initial_noise((4, 8, 8), [4])
    model = LinearEps()
    sch = EulerDiscreteScheduler(**SD, timestep_spacing="leading", steps_offset=1)
    sch.set_timesteps(8)
    lat = noise * sch.init_noise_sigma
    for t in sch.timesteps:
        lat = sch.step(model(sch.scale_model_input(lat, t), t.reshape(1), {}), t, lat).prev_sample
    sig = ddim_uniform(8, sd_schedule())
    assert float(sch.init_noise_sigma) == pytest.approx(math.sqrt(float(sig[0]) ** 2 + 1), rel=1e-5)
    ours = sample(euler, VPDenoiser(model, sd_schedule(), "eps"), noise, sig, noise_scaling="vp_max")
    torch.testing.assert_close(ours, lat, rtol=1e-4, atol=1e-4)


def test_flow_euler_matches_diffusers_flow_match_loop():
    noise = initial_noise((4, 8, 8), [5])

    def vel(x, t, cond):
        return 0.3 * x - 0.2 + 0.05 * (t.view(-1, 1, 1, 1) / 1000)

    sch = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sch.set_timesteps(12)
    lat = noise.clone()
    for t in sch.timesteps:
        lat = sch.step(vel(lat, t.reshape(1), {}), t, lat).prev_sample
    sched = FlowSchedule(3.0)
    ours = sample(euler, FlowDenoiser(vel, sched), noise, normal(12, sched))
    torch.testing.assert_close(ours, lat, rtol=1e-4, atol=1e-4)


def test_initial_scaling_and_img2img_latent():
    seen = []

    def first_x(model, x, sigmas, *, noise=None, callback=None):
        seen.append(x.clone())
        return x

    noise = torch.ones(1, 1, 2, 2)
    sig = torch.tensor([2.0, 1.0, 0.0])
    vp = VPDenoiser(LinearEps(), sd_schedule(), "eps")
    sample(first_x, vp, noise, sig)
    sample(first_x, vp, noise, sig, noise_scaling="vp_max")
    sample(first_x, vp, noise, sig, latent=torch.full((1, 1, 2, 2), 10.0))
    fl = FlowDenoiser(LinearEps(), FlowSchedule())
    sample(first_x, fl, noise, torch.tensor([0.6, 0.3, 0.0]), latent=torch.full((1, 1, 2, 2), 10.0))
    assert [float(v[0, 0, 0, 0]) for v in seen] == pytest.approx([2.0, math.sqrt(5.0), 12.0, 0.6 + 0.4 * 10])
    with pytest.raises(SamplingError, match="VP models only"):
        sample(first_x, fl, noise, torch.tensor([0.6, 0.0]), noise_scaling="vp_max")


def test_nonfinite_denoised_is_reported_with_step():
    class Bad:
        calls = 0

        def __call__(self, x, t, cond):
            Bad.calls += 1
            return torch.full_like(x, float("nan")) if Bad.calls == 4 else 0.1 * x

    den = VPDenoiser(Bad(), sd_schedule(), "eps")
    with pytest.raises(NonFiniteError) as err:
        sample(euler, den, torch.randn(1, 1, 4, 4), normal(6, sd_schedule()))
    assert err.value.step == 3 and "denoised" in err.value.what
    assert err.value.sigma == pytest.approx(float(normal(6, sd_schedule())[3]))


def test_nonfinite_update_is_reported_as_x():
    den = VPDenoiser(LinearEps(), sd_schedule(), "eps")
    with pytest.raises(NonFiniteError) as err:
        sample(euler, den, torch.randn(1, 1, 4, 4), normal(4, sd_schedule()), options={"s_scale": float("inf")})
    assert err.value.step == 0 and err.value.what.startswith("x")


def test_cancellation_from_callback_and_event():
    den = VPDenoiser(LinearEps(), sd_schedule(), "eps")
    steps = []

    def cb(info):
        steps.append(info.i)
        if info.i == 2:
            raise Cancelled("user")

    with pytest.raises(Cancelled):
        sample(euler, den, torch.randn(1, 1, 4, 4), normal(10, sd_schedule()), callback=cb)
    assert steps == [0, 1, 2] and den.nfe == 3
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled, match="after step 0"):
        sample(euler, den, torch.randn(1, 1, 4, 4), normal(10, sd_schedule()), cancel=ev)


def test_sampler_spec_checks():
    spec = SamplerSpec(name="euler_test", fn=euler, nfe_per_step=1, order=1, stochastic=False,
                       parameterizations=("eps", "v", "x0"), noise="none", options=("s_noise",))
    den = VPDenoiser(LinearEps(), sd_schedule(), "eps")
    x = torch.randn(1, 1, 4, 4)
    sig = normal(5, sd_schedule())
    torch.testing.assert_close(sample(spec, den, x, sig), sample(euler, den, x, sig))
    with pytest.raises(SamplingError, match="injects no noise"):
        sample(spec, den, x, sig, options={"eta": 1.0})
    with pytest.raises(SamplingError, match="supports eps/v/x0"):
        sample(spec, FlowDenoiser(LinearEps(), FlowSchedule()), x, torch.tensor([1.0, 0.5, 0.0]))


@pytest.mark.parametrize("bad", [torch.tensor([1.0]), torch.tensor([1.0, 2.0, 0.0]), torch.tensor([1.0, float("nan")]),
                                 torch.tensor([1.0, -0.5]), torch.ones(2, 2)])
def test_bad_sigmas_refused(bad):
    with pytest.raises(SamplingError):
        sample(euler, VPDenoiser(LinearEps(), sd_schedule(), "eps"), torch.randn(1, 1, 2, 2), bad)


def test_sampler_returning_wrong_shape_is_an_error():
    def broken(model, x, sigmas, *, noise=None, callback=None):
        return x[:, :0]

    with pytest.raises(SamplingError, match="returned"):
        sample(broken, VPDenoiser(LinearEps(), sd_schedule(), "eps"), torch.randn(1, 1, 2, 2), torch.tensor([1.0, 0.0]))
