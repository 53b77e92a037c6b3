"""The samplers that complete ComfyUI's KSAMPLER_NAMES (issue 12), checked against ComfyUI itself.

* Each agrees with ComfyUI's own implementation (the GPL oracle in ``../shared/third_party/comfyui-samplers``,
  read-only test data) to 1e-10 relative, on two nonlinear float64 denoisers, Karras sigmas with and without a
  final 0, the same injected noise for the stochastic ones, and (CFG++ samplers) the unconditional prediction
  handed over through a stand-in of ComfyUI's post-CFG hook. Those tests skip when the folder is absent.
* The ``*_gpu`` samplers equal their plain forms bit for bit on the CPU (their Brownian tree is generated on the
  model's device, which here is the CPU).
* CFG++ at guidance scale 1 is the plain sampler; SA-Solver's late-showing global order and its default noise
  window's final distribution.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
import types

import numpy as np
import pytest
import torch

from iga.sampling.noise import BrownianTreeNoiseSampler, initial_noise, make_noise_sampler
from iga.sampling.run import sample
from iga.sampling.samplers import SAMPLERS
from iga.sampling.testing import GaussianDenoiser, GuidedGaussianDenoiser, TorchNoise
from test_sampling_samplers_distribution import exact_final_stats, final_target
from test_sampling_samplers_distribution import karras as dist_karras
from shared_support import SHARED

ORACLE = SHARED / "third_party" / "comfyui-samplers"

SMAX, SMIN, STEPS = 14.6146, 0.0292, 12
GUIDANCE = 2.5
GPU = ("dpmpp_sde_gpu", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde_gpu")


def karras(n: int, zero: bool) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (SMAX ** (1 / 7) + ramp * (SMIN ** (1 / 7) - SMAX ** (1 / 7))) ** 7
    return torch.cat([s, s.new_zeros(1)]) if zero else s


def _col(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return s.to(x).view(-1, *([1] * (x.ndim - 1)))


# Two nonlinear denoisers (float64 in, float64 out), as functions of x and the per-image sigma.
def d_tanh(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = _col(sigma, x)
    return torch.tanh(x) / (1.0 + s * s) + 0.3 * torch.sin(1.7 * x) * s / (1.0 + s)


def d_rational(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = _col(sigma, x)
    return x / (1.0 + s * s) + 0.2 * x ** 3 / (1.0 + x * x) / (1.0 + s) - 0.1 * torch.cos(x) / (1.0 + s * s)


DENOISERS = {"tanh": d_tanh, "rational": d_rational}
OTHER = {"tanh": d_rational, "rational": d_tanh}  # the unconditional partner of each, for CFG++


class Fn:
    """An iga denoiser over a plain function (kind vp), counting calls."""

    kind = "vp"

    def __init__(self, fn):
        self.fn, self.nfe = fn, 0

    def __call__(self, x, sigma):
        self.nfe += 1
        return self.fn(x, sigma)


class GuidedFn(Fn):
    """CFG over two functions: ``(uncond + scale (cond - uncond), uncond)`` from one counted call."""

    def __init__(self, cond, uncond, scale):
        super().__init__(cond)
        self.uncond, self.scale = uncond, scale

    def denoise_with_uncond(self, x, sigma):
        self.nfe += 1
        c, u = self.fn(x, sigma), self.uncond(x, sigma)
        return u + self.scale * (c - u), u

    def __call__(self, x, sigma):
        return self.denoise_with_uncond(x, sigma)[0]


class SeqNoise:
    """Call k returns the k-th standard normal of one seeded generator (the same for iga and the oracle)."""

    def __init__(self, like: torch.Tensor, seed: int):
        self.shape, self.calls = like.shape, 0
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, sigma, sigma_next):
        self.calls += 1
        return torch.randn(self.shape, generator=self.gen, dtype=torch.float64)


# ---- the oracle ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def oracle():
    """(ComfyUI's k_diffusion.sampling module, its ``wrap``) or skip when the oracle folder is absent."""
    if not (ORACLE / "load.py").is_file():
        pytest.skip(f"ComfyUI oracle not present at {ORACLE}")
    sys.path.insert(0, str(ORACLE))
    stub = importlib.util.find_spec("torchsde") is None
    if stub:  # only its BrownianTree needs torchsde; these tests inject their noise
        sys.modules["torchsde"] = types.ModuleType("torchsde")
    try:
        from load import comfy_sampling, wrap
        ks = comfy_sampling()
    finally:
        sys.path.remove(str(ORACLE))
        if stub:
            del sys.modules["torchsde"]
    return ks, wrap


def _post_cfg_stand_in(model_options, post_cfg_function, disable_cfg1_optimization=False):
    """ComfyUI's set_model_options_post_cfg_function: queue a hook that sees each CFG result (and the uncond)."""
    model_options["sampler_post_cfg_function"] = [*model_options.get("sampler_post_cfg_function", []),
                                                  post_cfg_function]
    return model_options


class OracleGuided:
    """A ComfyUI-style model that does CFG itself and runs the post-CFG hooks, as comfy.samplers.cfg_function.

    ``two_stage``: run the hooks only on each step's first call (calls 1, 3, 5, ...). For dpmpp_2s_ancestral_cfg_pp:
    ComfyUI (at the oracle's commit) lets the midpoint call overwrite the stored unconditional estimate before its
    final update uses it, which makes that sampler inconsistent (O(1) error at guidance 1); ComfyUI PR #11914
    keeps the first call's estimate, and so does iga. Skipping the midpoint's hook gives exactly that fix.
    """

    def __init__(self, wrapped, cond, uncond, scale, two_stage=False):
        self.inner_model = wrapped.inner_model
        self.cond, self.uncond, self.scale, self.calls = cond, uncond, scale, 0
        self.two_stage = two_stage

    def __call__(self, x, sigma, model_options=None, **extra):
        self.calls += 1
        c, u = self.cond(x, sigma), self.uncond(x, sigma)
        out = u + self.scale * (c - u)
        if self.two_stage and self.calls % 2 == 0:
            return out
        for hook in (model_options or {}).get("sampler_post_cfg_function", []):
            out = hook({"denoised": out, "cond_denoised": c, "uncond_denoised": u, "sigma": sigma, "input": x})
        return out


class _Float64Arange:
    """``torch`` for the oracle, with arange's float32 made float64 (er_sde's quadrature nodes)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def arange(*args, dtype=None, **kwargs):
        return torch.arange(*args, dtype=torch.float64 if dtype is torch.float32 else dtype, **kwargs)


# iga name -> ComfyUI function (all new names; the _gpu ones pass an injected noise sampler straight through)
PARITY = {
    "dpmpp_2s_ancestral_cfg_pp": "sample_dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde_gpu": "sample_dpmpp_sde_gpu",
    "dpmpp_2m_sde_gpu": "sample_dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun_gpu": "sample_dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde_gpu": "sample_dpmpp_3m_sde_gpu",
    "res_multistep_cfg_pp": "sample_res_multistep_cfg_pp",
    "res_multistep_ancestral": "sample_res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp": "sample_res_multistep_ancestral_cfg_pp",
    "gradient_estimation": "sample_gradient_estimation",
    "gradient_estimation_cfg_pp": "sample_gradient_estimation_cfg_pp",
    "er_sde": "sample_er_sde",
    "seeds_2": "sample_seeds_2",
    "seeds_3": "sample_seeds_3",
    "sa_solver": "sample_sa_solver",
    "sa_solver_pece": "sample_sa_solver_pece",
}


def run_both(oracle, monkeypatch, name: str, den: str, zero: bool):
    """(iga's result, ComfyUI's result, iga calls, ComfyUI calls, iga noise draws, ComfyUI noise draws)."""
    ks, wrap = oracle
    monkeypatch.setattr(sys.modules["comfy.model_patcher"], "set_model_options_post_cfg_function",
                        _post_cfg_stand_in)
    if name == "er_sde":  # ComfyUI builds its Riemann-sum nodes in float32; compare the float64 maths
        monkeypatch.setattr(ks, "torch", _Float64Arange())
    sig = karras(STEPS, zero)
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * SMAX
    fn, spec = DENOISERS[den], SAMPLERS[name]
    if spec.needs_uncond:
        two_stage = name == "dpmpp_2s_ancestral_cfg_pp"
        mine = GuidedFn(fn, OTHER[den], GUIDANCE)
        theirs = OracleGuided(wrap(fn), fn, OTHER[den], GUIDANCE, two_stage)
    else:
        mine, theirs = Fn(fn), wrap(fn)
    n_mine, n_theirs = SeqNoise(x, 5), SeqNoise(x, 5)
    out = spec.fn(mine, x.clone(), sig, noise=n_mine)
    oracle_fn = getattr(ks, PARITY[name])
    noise_kw = {"noise_sampler": n_theirs} if "noise_sampler" in inspect.signature(oracle_fn).parameters else {}
    if name.startswith("sa_solver") and not zero:
        # ComfyUI returns the corrected state at sigma[-2] here; its prediction at sigma[-1] (what iga returns)
        # is the state it reports at that sigma when the list goes one sigma further
        seen = {}
        oracle_fn(theirs, x.clone(), torch.cat([sig, sig[-1:] / 2]), disable=True, **noise_kw,
                  callback=lambda d: seen.__setitem__(d["i"], d["x"]))
        ref = seen[len(sig) - 1]
    else:
        ref = oracle_fn(theirs, x.clone(), sig, disable=True, **noise_kw)
    calls = theirs.calls if isinstance(theirs, OracleGuided) else type(theirs).calls
    return out, ref, mine.nfe, calls, n_mine.calls, n_theirs.calls


@pytest.mark.parametrize("zero", [True, False], ids=["to_zero", "no_zero"])
@pytest.mark.parametrize("den", sorted(DENOISERS))
@pytest.mark.parametrize("name", sorted(PARITY))
def test_agrees_with_comfyui_to_1e_10(oracle, monkeypatch, name: str, den: str, zero: bool) -> None:
    out, ref, nfe, ref_calls, draws, ref_draws = run_both(oracle, monkeypatch, name, den, zero)
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert rel < 1e-10, f"{name}/{den}/{'zero' if zero else 'no zero'}: relative difference {rel:.2e}"
    if not (name.startswith("sa_solver") and not zero):
        assert nfe == ref_calls, f"{name}: {nfe} model calls, ComfyUI {ref_calls}"
    if SAMPLERS[name].stochastic and not (name.startswith("sa_solver") and not zero):
        assert draws == ref_draws and draws > 0, f"{name}: {draws} noise draws, ComfyUI {ref_draws}"


def test_er_sde_differs_from_comfyui_only_by_its_float32_quadrature(oracle) -> None:
    """ComfyUI's er_sde sums its 200 quadrature nodes in float32; iga in float64. The difference stays tiny."""
    ks, wrap = oracle
    sig = karras(STEPS, True)
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * SMAX
    out = SAMPLERS["er_sde"].fn(Fn(d_tanh), x.clone(), sig, noise=SeqNoise(x, 5))
    ref = ks.sample_er_sde(wrap(d_tanh), x.clone(), sig, disable=True, noise_sampler=SeqNoise(x, 5))
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-6


def test_comfyui_2s_cfg_pp_as_released_is_why_iga_follows_its_fix(oracle, monkeypatch) -> None:
    """With guidance that changes nothing (cond = uncond), CFG++ must be the plain sampler. ComfyUI's released
    dpmpp_2s_ancestral_cfg_pp misses dpmpp_2s_ancestral by O(1) (its final update uses the midpoint call's
    unconditional estimate); iga's, which keeps the step's own estimate (ComfyUI PR #11914), equals it."""
    ks, wrap = oracle
    monkeypatch.setattr(sys.modules["comfy.model_patcher"], "set_model_options_post_cfg_function",
                        _post_cfg_stand_in)
    sig = karras(STEPS, True)
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * SMAX
    plain = ks.sample_dpmpp_2s_ancestral(wrap(d_tanh), x.clone(), sig, disable=True, eta=0.0)
    released = ks.sample_dpmpp_2s_ancestral_cfg_pp(OracleGuided(wrap(d_tanh), d_tanh, d_tanh, 1.0), x.clone(), sig,
                                                   disable=True, eta=0.0)
    mine = SAMPLERS["dpmpp_2s_ancestral_cfg_pp"].fn(GuidedFn(d_tanh, d_tanh, 1.0), x.clone(), sig, eta=0.0)
    scale = float(plain.abs().max())
    assert float((mine - plain).abs().max()) < 1e-10 * scale
    assert float((released - plain).abs().max()) > 1e-2 * scale


# ---- *_gpu = plain on the CPU ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GPU)
def test_gpu_variant_equals_plain_sampler_on_cpu_bit_for_bit(name: str) -> None:
    plain = name.removesuffix("_gpu")
    assert SAMPLERS[name].fn is SAMPLERS[plain].fn
    sig = karras(10, True).to(torch.float32)
    init = initial_noise((4, 6, 6), [3, 4])
    outs = []
    for n in (name, plain):
        spec = SAMPLERS[n]
        noise = make_noise_sampler(spec.noise, init, [3, 4], sig)
        assert isinstance(noise, BrownianTreeNoiseSampler)
        assert all(p.device == init.device for p in noise.paths)
        model = GaussianDenoiser(torch.linspace(-1, 1, 6).repeat(4, 6, 1), 0.7)
        outs.append(sample(spec, model, init, sig, noise_sampler=noise))
    assert torch.equal(outs[0], outs[1])


def test_device_brownian_tree_is_the_cpu_tree_on_the_cpu() -> None:
    x = initial_noise((3, 5), [9, 10])
    sig = torch.tensor([14.6, 3.0, 0.5, 0.0])
    cpu, dev = make_noise_sampler("brownian", x, [9, 10], sig), make_noise_sampler("brownian_device", x, [9, 10], sig)
    for a, b in ((14.6, 3.0), (3.0, 1.1), (1.1, 0.5), (0.5, 0.0)):
        assert torch.equal(cpu(a, b), dev(a, b))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_brownian_tree_is_generated_on_the_gpu() -> None:
    x = initial_noise((64, 64), [1], device="cuda")
    sampler = BrownianTreeNoiseSampler(x, [1], sigma_hi=20.0, device=x.device)
    z = sampler(14.0, 2.0)
    assert z.device.type == "cuda" and all(p._w1.device.type == "cuda" for p in sampler.paths)
    assert abs(float(z.std()) - 1.0) < 0.05


# ---- CFG++ at scale 1, SA-Solver's order and noise window ------------------------------------------------------

CFGPP_PAIRS = [("dpmpp_2s_ancestral_cfg_pp", "dpmpp_2s_ancestral"), ("res_multistep_cfg_pp", "res_multistep"),
               ("res_multistep_ancestral_cfg_pp", "res_multistep_ancestral"),
               ("gradient_estimation_cfg_pp", "gradient_estimation")]


@pytest.mark.parametrize("kind", ["vp", "flow"])
@pytest.mark.parametrize("cfgpp,plain", CFGPP_PAIRS)
def test_cfg_pp_at_guidance_1_is_the_plain_sampler(cfgpp: str, plain: str, kind: str) -> None:
    sig = karras(10, True) if kind == "vp" else torch.linspace(1.0, 0.0, 11, dtype=torch.float64) ** 1.5
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * float(sig[0])
    base = GaussianDenoiser(torch.tensor([0.4, -0.8, 1.2, 0.0]), torch.tensor([0.5, 1.0, 1.5, 0.7]), kind)
    # guidance that changes nothing: the guided and the unconditional estimates are the same model
    guided = GuidedGaussianDenoiser(base, GaussianDenoiser(base.mu, base.std, kind), 1.0)
    a = SAMPLERS[cfgpp].fn(guided, x.clone(), sig, noise=TorchNoise(x, 4))
    b = SAMPLERS[plain].fn(base, x.clone(), sig, noise=TorchNoise(x, 4))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _exp_grid(n: int) -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(5.0), math.log(0.3), n + 1, dtype=torch.float64))


def _flow_lambda_grid(n: int) -> torch.Tensor:
    lam = torch.linspace(math.log(0.15 / 0.85), math.log(0.75 / 0.25), n + 1, dtype=torch.float64)
    return torch.sigmoid(-lam)


@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
def test_sa_solver_global_order_is_3_past_500_steps(name: str) -> None:
    """The order-2 corrector of the first step sets the global order (3); its small constant lets the 4th-order
    steady-state error dominate up to ~500 steps (~4000 on Karras grids), so the order is fitted at 512..2048."""
    mu, std = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64), torch.linspace(0.5, 1.5, 8, dtype=torch.float64)
    for kind, grid in (("vp", _exp_grid), ("flow", _flow_lambda_grid)):
        ns, errs = (512, 1024, 2048), []
        for n in ns:
            sig, base = grid(n), GaussianDenoiser(mu, std, kind)
            mean, sd = base.marginal(float(sig[0]))
            x = mean + sd * torch.randn(4, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            out = SAMPLERS[name].fn(base, x.clone(), sig, eta=0.0)
            errs.append(float((out - base.ode_solution(x, float(sig[0]), float(sig[-1]))).abs().max()))
        order = -float(np.polyfit(np.log(ns), np.log(errs), 1)[0])
        assert abs(order - SAMPLERS[name].order) <= 0.35, f"{name}/{kind}: order {order:.2f}"


@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
def test_sa_solver_default_noise_window_ends_with_the_data_distribution(name: str) -> None:
    """VP, default window (SD's 20 %..80 %): ODE outside, SDE inside; the exact final variance converges."""
    errs = []
    for n in (100, 800):
        sig = dist_karras(n)
        mean_t, var_t = final_target("vp", sig)
        mean, var = exact_final_stats(name, "vp", sig)
        assert mean == pytest.approx(mean_t, abs=1e-6)
        errs.append(abs(var / var_t - 1.0))
    assert errs[1] < 0.02 and errs[1] < errs[0] / 3
