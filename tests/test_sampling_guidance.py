"""CFG wrapper: batching, NFE, cfg=1 skip, rescale, CFG-Zero* and APG hooks, VP and flow."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance  # noqa: E402
from diffusers.guiders.classifier_free_zero_star_guidance import cfg_zero_star_scale  # noqa: E402
from diffusers.guiders.guider_utils import rescale_noise_cfg  # noqa: E402

from iga.sampling.base import GuidedDenoiser  # noqa: E402
from iga.sampling.guidance import (  # noqa: E402
    APG,
    BaseGuidanceHook,
    CFGDenoiser,
    CFGZeroStar,
    GuidanceHook,
    rescale_guidance,
)
from iga.sampling.parameterization import (  # noqa: E402
    FlowParameterization,
    FlowSchedule,
    VPParameterization,
    sd_schedule,
)

C, H, W = 4, 6, 6


class CondModel:
    """out = 0.5 * x_in + emb[:, :, None, None] * (1 + t / 1000) + pooled[:, :1, None, None]; records calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond):
        self.calls.append({"x": x.clone(), "t": t.clone(), **{k: v.clone() for k, v in cond.items()}})
        emb = cond["emb"][:, :, None, None]
        return 0.5 * x + emb * (1 + t.view(-1, 1, 1, 1) / 1000) + cond["pooled"][:, :1, None, None]


def _conds(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cond = {"emb": torch.randn(b, C, generator=g), "pooled": torch.randn(b, 3, generator=g)}
    uncond = {"emb": torch.randn(b, C, generator=g), "pooled": torch.randn(b, 3, generator=g)}
    return cond, uncond


def _x(b: int = 2, seed: int = 1):
    return torch.randn(b, C, H, W, generator=torch.Generator().manual_seed(seed)) * 3


def _separate(param, x, sigma, cond, uncond):
    """Reference: the raw model run twice, separately, and mapped to predictions."""
    s = torch.full((x.shape[0],), float(sigma))
    x_in, t = param.model_inputs(x, s)
    m = CondModel()
    return m(x_in, t, cond), m(x_in, t, uncond), s


PARAMS = {
    "eps": lambda: VPParameterization(sd_schedule(), "eps"),
    "v": lambda: VPParameterization(sd_schedule(), "v"),
    "x0": lambda: VPParameterization(sd_schedule(), "x0"),
    "flow": lambda: FlowParameterization(FlowSchedule(3.0)),
}


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_cfg_one_batched_call_and_formula(kind):
    param = PARAMS[kind]()
    cond, uncond = _conds(2)
    model = CondModel()
    den = CFGDenoiser(model, param, cond, uncond, scale=5.5)
    assert isinstance(den, GuidedDenoiser) and den.kind == param.kind
    x, sigma = _x(), 0.7
    out = den(x, sigma)
    assert den.nfe == 1 and len(model.calls) == 1
    call = model.calls[0]
    assert call["x"].shape[0] == 4
    for k in ("emb", "pooled"):  # [uncond, cond] key by key
        assert torch.equal(call[k], torch.cat([uncond[k], cond[k]]))
    pc, pu, s = _separate(param, x, sigma, cond, uncond)
    expected = param.to_denoised(x, s, pu + 5.5 * (pc - pu))
    torch.testing.assert_close(out, expected)
    # same thing on denoised (CFG is affine-invariant)
    dc, du = param.to_denoised(x, s, pc), param.to_denoised(x, s, pu)
    torch.testing.assert_close(out, du + 5.5 * (dc - du), rtol=1e-4, atol=1e-4)


def test_cfg_scale_one_skips_uncond_unless_cfgpp_asks():
    param = PARAMS["eps"]()
    cond, uncond = _conds(3)
    model = CondModel()
    den = CFGDenoiser(model, param, cond, uncond, scale=1.0 + 1e-12)
    x = _x(3)
    out = den(x, 2.0)
    assert den.nfe == 1 and model.calls[0]["x"].shape[0] == 3  # half batch
    pc, pu, s = _separate(param, x, 2.0, cond, uncond)
    torch.testing.assert_close(out, param.to_denoised(x, s, pc))
    guided, und = den.denoise_with_uncond(x, 2.0)
    assert den.nfe == 2 and model.calls[1]["x"].shape[0] == 6  # still one call, full batch
    torch.testing.assert_close(guided, out)
    torch.testing.assert_close(und, param.to_denoised(x, s, pu))
    # scale 1 needs no uncond at all
    CFGDenoiser(CondModel(), param, cond, None, scale=1.0)(x, 2.0)
    with pytest.raises(ValueError, match="needs an unconditional"):
        CFGDenoiser(CondModel(), param, cond, None, scale=3.0)


def test_denoise_with_uncond_returns_model_uncond():
    param = PARAMS["v"]()
    cond, uncond = _conds(2)
    den = CFGDenoiser(CondModel(), param, cond, uncond, scale=4.0, hooks=[CFGZeroStar()])
    x = _x()
    guided, und = den.denoise_with_uncond(x, torch.tensor([0.5, 3.0]))
    assert den.nfe == 1
    m = CondModel()
    s = torch.tensor([0.5, 3.0])
    x_in, t = param.model_inputs(x, s)
    torch.testing.assert_close(und, param.to_denoised(x, s, m(x_in, t, uncond)))  # before the hook's s* scaling
    torch.testing.assert_close(guided, den(x, s))


def test_rescale_formula_and_diffusers_oracle():
    param = PARAMS["v"]()
    cond, uncond = _conds(2)
    den = CFGDenoiser(CondModel(), param, cond, uncond, scale=7.0, rescale=0.7)
    x, sigma = _x(), 1.3
    out = den(x, sigma)
    pc, pu, s = _separate(param, x, sigma, cond, uncond)
    cfg = pu + 7.0 * (pc - pu)
    std_c = pc.flatten(1).std(1).view(-1, 1, 1, 1)
    std_cfg = cfg.flatten(1).std(1).view(-1, 1, 1, 1)
    manual = 0.7 * cfg * std_c / std_cfg + 0.3 * cfg
    torch.testing.assert_close(out, param.to_denoised(x, s, manual))
    torch.testing.assert_close(rescale_guidance(cfg, pc, 0.7), rescale_noise_cfg(cfg, pc, 0.7))
    # phi = 1 gives exactly the cond's std
    r = rescale_guidance(cfg, pc, 1.0)
    torch.testing.assert_close(r.flatten(1).std(1), pc.flatten(1).std(1))
    with pytest.raises(ValueError, match="rescale"):
        CFGDenoiser(CondModel(), param, cond, uncond, scale=7.0, rescale=1.5)


def test_cfg_zero_star_hook_formula_and_zero_init():
    param = PARAMS["flow"]()
    cond, uncond = _conds(2)
    hook = CFGZeroStar(zero_init_steps=2)
    assert isinstance(hook, GuidanceHook)
    den = CFGDenoiser(CondModel(), param, cond, uncond, scale=4.0, hooks=[hook])
    x, sigma = _x(), 0.6
    pc, pu, s = _separate(param, x, sigma, cond, uncond)
    c, u = pc.flatten(1).double(), pu.flatten(1).double()
    s_star = ((c * u).sum(1) / (u * u).sum(1)).float().view(-1, 1, 1, 1)
    expected_v = s_star * pu + 4.0 * (pc - s_star * pu)
    # zero-init: the first two calls return a zero velocity, i.e. denoised == x
    torch.testing.assert_close(den(x, sigma), x)
    torch.testing.assert_close(den(x, sigma), x)
    torch.testing.assert_close(den(x, sigma), param.to_denoised(x, s, expected_v), rtol=1e-5, atol=1e-5)
    # diffusers' s* agrees
    torch.testing.assert_close(s_star.flatten(), cfg_zero_star_scale(pc.flatten(1), pu.flatten(1)).flatten(),
                               rtol=1e-5, atol=1e-6)
    den.reset_run()
    torch.testing.assert_close(den(x, sigma), x)  # zero-init again after a reset


def _apg_reference(c, u, w, eta, r, formulation):
    d = (c - u).double()
    n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    if r > 0:
        d = d * torch.minimum(torch.ones_like(n), r / n)
    cd = c.double()
    unit = cd / cd.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    par = (d * unit).flatten(1).sum(1).view(-1, 1, 1, 1) * unit
    upd = (d - par) + eta * par
    base = u.double() + w * upd if formulation == "cfg" else c.double() + (w - 1) * upd
    return base.float()


@pytest.mark.parametrize("formulation", ["cfg", "paper"])
@pytest.mark.parametrize("space", ["prediction", "denoised"])
def test_apg_hook_formula(formulation, space):
    param = PARAMS["eps"]()
    cond, uncond = _conds(2, seed=4)
    hook = APG(eta=0.3, norm_threshold=2.0, space=space, formulation=formulation)
    den = CFGDenoiser(CondModel(), param, cond, uncond, scale=6.0, hooks=[hook])
    x, sigma = _x(), 1.1
    pc, pu, s = _separate(param, x, sigma, cond, uncond)
    if space == "denoised":
        c, u = param.to_denoised(x, s, pc), param.to_denoised(x, s, pu)
        expected = _apg_reference(c, u, 6.0, 0.3, 2.0, formulation)
    else:
        expected = param.to_denoised(x, s, _apg_reference(pc, pu, 6.0, 0.3, 2.0, formulation))
    torch.testing.assert_close(den(x, sigma), expected, rtol=1e-4, atol=1e-4)


def test_apg_matches_diffusers_normalized_guidance_with_momentum():
    param = PARAMS["eps"]()
    cond, uncond = _conds(2, seed=8)
    hook = APG(eta=0.0, norm_threshold=15.0, momentum=-0.5, space="prediction")
    den = CFGDenoiser(CondModel(), param, cond, uncond, scale=5.0, hooks=[hook])
    buf = MomentumBuffer(-0.5)
    for sigma in (3.0, 1.5, 0.4):
        x = _x(seed=int(sigma * 10))
        pc, pu, s = _separate(param, x, sigma, cond, uncond)
        ref = normalized_guidance(pc, pu, 5.0, buf, eta=0.0, norm_threshold=15.0)
        torch.testing.assert_close(den(x, sigma), param.to_denoised(x, s, ref), rtol=1e-5, atol=1e-5)


def test_apg_with_eta_one_and_no_clip_is_plain_cfg():
    param = PARAMS["v"]()
    cond, uncond = _conds(2)
    x = _x()
    plain = CFGDenoiser(CondModel(), param, cond, uncond, scale=3.0)(x, 0.9)
    for formulation in ("cfg", "paper"):
        apg = CFGDenoiser(CondModel(), param, cond, uncond, scale=3.0,
                          hooks=[APG(eta=1.0, norm_threshold=0.0, formulation=formulation)])
        torch.testing.assert_close(apg(x, 0.9), plain, rtol=1e-4, atol=1e-4)


def test_custom_hook_sees_sigma_and_call_index_and_post_runs_when_skipped():
    seen = []

    class Spy(BaseGuidanceHook):
        def post(self, ctx, guided, cond, uncond):
            seen.append((ctx.call_index, ctx.sigma.tolist(), uncond is None))
            return guided * 2

    param = PARAMS["x0"]()
    cond, uncond = _conds(1)
    den = CFGDenoiser(CondModel(), param, cond, uncond, scale=1.0, hooks=[Spy()])
    x = _x(1)
    pc, _, s = _separate(param, x, 0.5, cond, uncond)
    torch.testing.assert_close(den(x, 0.5), 2 * pc)
    den(x, 0.25)
    assert seen == [(0, [0.5], True), (1, [0.25], True)]
    with pytest.raises(ValueError, match="space"):
        bad = BaseGuidanceHook()
        bad.space = "latent"  # type: ignore[assignment]
        CFGDenoiser(CondModel(), param, cond, uncond, scale=2.0, hooks=[bad])


def test_mismatched_cond_keys_refused():
    cond, uncond = _conds(1)
    del uncond["pooled"]
    with pytest.raises(ValueError, match="same keys"):
        CFGDenoiser(CondModel(), PARAMS["eps"](), cond, uncond, scale=2.0)
