"""--conventions comfyui: the plan records ComfyUI's way of feeding timesteps and scaling the first noise, only where
ComfyUI does it (VP models, full-denoise passes), and a stored plan asks for it again."""

from __future__ import annotations

import math

import numpy as np
import pytest

import iga
from iga.sampling.parameterization import schedule_from_config
from test_generate_support import cli, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("offline_audit")
PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def demo():
    return iga.load()


def test_comfyui_conventions_round_timesteps_and_start_from_sqrt_one_plus_sigma_squared(demo):
    plain = demo.plan(PROMPT, seed=1)
    comfy = demo.plan(PROMPT, seed=1, conventions="comfyui")
    assert plain.noise_scaling == "sigma" and not plain.training_schedule.get("quantize")
    assert comfy.noise_scaling == "vp_max" and comfy.training_schedule["quantize"] is True
    assert comfy.sigmas[0] == pytest.approx(schedule_from_config(comfy.training_schedule).sigma_max, rel=1e-5)
    sched = schedule_from_config(comfy.training_schedule)
    t = sched.sigma_to_t(comfy.sigmas[3])
    assert float(t) == round(float(t))
    a, b = demo.generate(plan=plain)[0].pixels, demo.generate(plan=comfy)[0].pixels
    assert not np.array_equal(a, b)


def test_a_partial_pass_keeps_sigma_scaling_as_comfyui_does_below_full_denoise(demo, tmp_path):
    init = tmp_path / "init.png"
    demo.generate(PROMPT, seed=2)[0].image.save(init)
    plan = demo.plan(PROMPT, seed=2, conventions="comfyui", init_image=str(init), denoise=0.5)
    assert plan.noise_scaling == "sigma" and plan.training_schedule["quantize"] is True


def test_a_comfyui_plan_asks_for_comfyui_conventions_again_and_replays(demo, tmp_path):
    r = cli(["generate", PROMPT, "--seed", "3", "--conventions", "comfyui", "-o", tmp_path])
    assert r.exit_code == 0, r.output
    [png] = tmp_path.glob("*.png")
    from iga.guard import Plan
    from iga.provenance import read_provenance

    plan = Plan.from_dict(read_provenance(png).plan)
    assert plan.as_request().conventions == "comfyui" and plan.noise_scaling == "vp_max"
    r = cli(["replay", png])
    assert r.exit_code == 0 and "identical" in r.output


def test_vp_max_is_the_sqrt_one_plus_sigma_squared_scale():
    import torch

    from iga.sampling.run import sample

    class Identity:
        kind, prediction = "vp", "eps"

        def __call__(self, x, sigma):
            return x

    seen = []

    def first(model, x, sigmas, noise=None, callback=None):
        seen.append(x.clone())
        return x

    noise = torch.ones(1, 1, 2, 2)
    sample(first, Identity(), noise, torch.tensor([3.0, 0.0]), noise_scaling="vp_max")
    assert float(seen[0][0, 0, 0, 0]) == pytest.approx(math.sqrt(1 + 9.0))
