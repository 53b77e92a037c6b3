"""The plan is the last word: random requests either fail at plan time, naming the field, or run to the end.

2,000 requests drawn from every sampler, schedule and guidance mode, with valid and invalid values of every knob,
in all three modes, against an eps and a v recipe. A request the guard accepts must then run through the real
render path (denoiser, guidance, noise, sampler, decode) on a tiny model without any error; one it refuses must
say which field is wrong.
"""

import math
import random

import pytest
import torch

from iga.catalog import CFG_VARIANTS
from iga.generate import render
from iga.guard import GuardRefused, Request, resolve
from iga.guard.defaults import architecture_default_recipe
from iga.guard.plan import OVERRIDABLE
from iga.recipe import names

N_REQUESTS = 2000


class TinyBackend:
    """A 4-channel latent model at 1/8 resolution whose network is a cheap smooth function of x and t."""

    architecture, latent_channels, vae_scale_factor = "sd1", 4, 8
    device, dtype = torch.device("cpu"), torch.float32
    identity = {"architecture": "sd1"}

    def __init__(self, prediction_type: str):
        self.prediction_type = prediction_type

    def encode_prompt(self, prompts, negatives, *, clip_skip=1, width, height):
        def enc(texts):
            return {"encoder_hidden_states": torch.full((len(texts), 2, 4), float(len(texts[0]) % 7))}

        return enc(prompts), enc(negatives)

    def raw_model(self, x, t, cond):
        scale = cond["encoder_hidden_states"].mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return torch.tanh(x) * 0.5 + 0.01 * scale + 1e-4 * t.view(-1, 1, 1, 1)

    def decode(self, latents):
        rgb = (latents[:, :3].float() / 2 + 0.5).clamp(0, 1)
        return rgb.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)

    def latent_shape(self, width, height):
        return (4, height // 8, width // 8)


# Each knob: values that can be valid, and values that are wrong on their own (drawn with probability BAD).
KNOBS = {
    "sampler": ([*names.SAMPLER_NAMES, "Euler a", "DPM++ 2M Karras", None], []),
    "schedule": ([*(s for s in names.SCHEDULE_NAMES if s != "explicit"), None], []),
    "steps": ([None, 1, 2, 3, 4, 6, 9, 15, 30], [0, -3]),
    "cfg": ([None, 0.0, 1.0, 3.5, 7.0, 12.0], [-1.0, math.nan, math.inf]),
    "cfg_variant": ([None, None, None, *CFG_VARIANTS], ["nonsense"]),
    "cfg_rescale": ([None, None, 0.0, 0.7], [1.5, -0.1]),
    "eta": ([None, None, 0.0, 0.5, 1.0], [-1.0, math.nan]),
    "size": ([None, "64x64", "72x64"], ["65x64", "0x64"]),
    "clip_skip": ([None, None, 1, 2], [0]),
    "sigmas": ([None] * 12 + [[14.6, 3.0, 0.5, 0.0]], [[1.0, 2.0, 0.0]]),
}
BAD = 0.05


def _draw(rng: random.Random) -> tuple[Request, str]:
    fields = {}
    for knob, (good, bad) in KNOBS.items():
        fields[knob] = rng.choice(bad) if bad and rng.random() < BAD else rng.choice(good)
    overrides = [o for o in OVERRIDABLE if rng.random() < 0.7]
    mode = rng.choices(["permissive", "guarded", "strict"], weights=[6, 3, 1])[0]
    return Request(**fields, seed=rng.randrange(2**32), prompt="a cat", overrides=overrides), mode


def _recipes():
    eps = architecture_default_recipe("sd1", "eps", None)
    v = architecture_default_recipe("sd1", "v", None).model_copy(update={"prediction_type": "v"})
    return [(eps, TinyBackend("eps")), (v, TinyBackend("v"))]


def test_every_accepted_plan_runs_and_every_refusal_names_its_field():
    rng = random.Random(12)
    recipes = _recipes()
    accepted = refused = errors = 0
    failures = []
    for k in range(N_REQUESTS):
        request, mode = _draw(rng)
        recipe, backend = recipes[k % len(recipes)]
        try:
            plan, _ = resolve(recipe, request, mode)
        except GuardRefused as e:
            refused += 1
            bad = [f for f in e.findings if f.outcome == "refused"]
            assert bad and all(f.field and f.reason for f in bad), (request, e.findings)
            continue
        except (ValueError, KeyError) as e:  # a name or value that cannot be read at all (size text, names)
            errors += 1
            assert str(e), request
            continue
        accepted += 1
        try:
            [px], _ = render(plan, backend)
        except Exception as e:  # noqa: BLE001 -- any engine refusal of an accepted plan is the bug we look for
            failures.append(f"{plan.sampler}/{plan.schedule}/{plan.steps}/{plan.cfg_variant}/"
                            f"{plan.sampler_options}: {type(e).__name__}: {e}")
            continue
        assert px.shape == (plan.height, plan.width, 3)
    assert not failures, f"{len(failures)} accepted plans failed in the engine:\n" + "\n".join(failures[:20])
    assert accepted >= 300 and refused >= 300, (accepted, refused, errors)  # both branches well exercised


@pytest.mark.parametrize("fields, field", [
    ({"sampler": "euler", "eta": 0.5}, "eta"),
    ({"sampler": "dpmpp_2m", "cfg_variant": "cfg_pp"}, "cfg_variant"),
    ({"sampler": "euler_cfg_pp", "cfg_variant": "apg"}, "cfg_variant"),
    ({"sampler": "euler_ancestral", "eta": -1.0}, "eta"),
    ({"cfg_variant": "nonsense"}, "cfg_variant"),
])
def test_what_the_engine_would_refuse_is_refused_at_plan_time_with_its_field(fields, field):
    recipe = architecture_default_recipe("sd1", "eps", None)
    with pytest.raises(GuardRefused) as e:
        resolve(recipe, Request(**fields), "permissive")
    assert field in [f.field for f in e.value.findings if f.outcome == "refused"]


def test_a_recipes_eta_does_not_follow_the_user_to_a_sampler_without_noise():
    recipe = architecture_default_recipe("sd1", "eps", None)
    data = recipe.to_dict()
    data["sampler"] = {"name": "euler_ancestral", "params": {"eta": 0.7}}
    from iga.recipe.schema import Recipe

    stochastic = Recipe.model_validate(data)
    plan, _ = resolve(stochastic, Request(sampler="euler"), "permissive")
    assert plan.eta is None and "eta" not in plan.sampler_options
    native, _ = resolve(stochastic, Request(), "permissive")
    assert native.eta == 0.7


@pytest.mark.parametrize("fields, field", [({"clip_skip": 2}, "clip_skip"), ({"vae": "other.safetensors"}, "vae")])
def test_a_component_the_model_does_not_have_is_refused_at_plan_time(fields, field):
    """The demo model samples pixels with a tiny text encoder: no VAE to swap, no CLIP layers to skip."""
    import iga

    with pytest.raises(GuardRefused) as e:
        iga.load().plan("a red circle on a blue background", mode="permissive", **fields)
    assert field in [f.field for f in e.value.findings if f.outcome == "refused"]
