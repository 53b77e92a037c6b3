"""iga's ComfyUI-named samplers against ComfyUI's own sampler code (issue 12: ComfyUI's maths under ComfyUI's names).

The oracle is ComfyUI's ``comfy/k_diffusion/sampling.py``, ``deis.py`` and ``comfy/extra_samplers/uni_pc.py``, kept
unchanged in ``<repo>/../shared/third_party/comfyui-samplers`` (GPL-3.0; see its README). These tests import and run
it; the iga package never does, and none of its code is copied into ``src/``. The whole module is skipped when the
folder is absent (a user's clone).

Every test runs one sampler twice, through iga (``SAMPLERS[name].fn``) and through ComfyUI's function, on the same
float64 denoiser, initial state and sigma list, and (for stochastic samplers) on the same injected noise: a tape of
pre-drawn standard normals read in order, handed to iga as its ``noise`` NoiseSampler and to ComfyUI as its
``noise_sampler(sigma, sigma_next)`` (or, for the Karras churn, which ComfyUI draws with ``torch.randn_like``, put in
place of that function). Both sides must return the same state to 1e-10 relative (max abs difference / max abs
value), make the same number of model calls and ask for noise on the same intervals (ComfyUI also draws noise it
multiplies by 0, after the last noise it uses; iga does not draw it).

Two denoisers, both nonlinear in x and sigma: an eps predictor (``D = x - sigma eps(x / sqrt(1 + sigma^2), sigma)``)
and an x0 predictor (a sigma-dependent blend of x and a nonlinear pattern); sigma lists of SD's range (Karras, rho 7)
that end in 0 (``to_zero``) or at sigma_min (``to_sigma_min``), with 3, 6 and 11 steps.

What the oracle cannot show as is, and how the tests handle it:

* CFG++: ComfyUI reads the unconditional prediction through a ``sampler_post_cfg_function`` hook; the oracle's
  stand-in for ``comfy.model_patcher`` drops the hook, so the test puts back ComfyUI's own behaviour (append the
  hook to ``model_options``; the CFG call passes ``{"denoised", "uncond_denoised", ...}`` through it).
* DEIS: ComfyUI's coefficients are a 10000-point Riemann sum in float32 (``deis.get_deis_coeff_list``); iga
  integrates the same integrand exactly. The oracle's coefficients are therefore computed in float64 and its
  quadrature extrapolated to N -> infinity (Richardson on N, 2N, 4N of the oracle's own function), which is the
  value iga computes; ``test_deis_coefficients_are_the_limit_of_comfyuis_quadrature`` shows that ComfyUI's own
  N = 10000 sum converges to it at the rate of its 1/N bias.
* float32 by default: a few ComfyUI tensors are built in torch's default dtype (dpm_fast's lambda grid, dpm_adaptive's
  tolerances, DEIS's time grid, UniPC's rho weights), float32 in ComfyUI: that rounds dpm_fast by ~4e-7 relative and
  makes UniPC fail on float64 latents. The oracle runs with float64 as the default dtype: the same formulas without
  that rounding.
* dpm_fast / dpm_adaptive take (sigma_min, sigma_max, n) in ComfyUI; they are called as ComfyUI's KSampler calls
  them (sigma_min = the last nonzero sigma, sigma_max = sigmas[0], n = len(sigmas) - 1). After a rejected step
  ComfyUI's dpm_adaptive calls the model again at the same point, iga reuses that call: fewer calls, same result.
* ``ddim`` is ComfyUI's Euler; ``restart`` and iga's own variants (``lms_exact``, ``*_diffusers``) are not ComfyUI
  samplers. Every other registered sampler whose name ComfyUI has (``sample_<name>``) gets a case with its defaults.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import math
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from shared_support import SHARED

ORACLE = SHARED / "third_party" / "comfyui-samplers"
if not (ORACLE / "load.py").is_file():
    pytest.skip(f"ComfyUI oracle not present at {ORACLE}", allow_module_level=True)

from iga.sampling.samplers import SAMPLERS  # noqa: E402

DT = torch.float64
SHAPE = (2, 3, 4, 4)
TOL = 1e-10  # max abs difference / max abs value of ComfyUI's result
SIGMA_MIN, SIGMA_MAX = 0.0292, 14.6146  # SD 1.x's training range
STEPS = (3, 6, 11)


def _load_oracle() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType, Callable]:
    """ComfyUI's sampling, deis and uni_pc modules and the oracle's ``wrap``; torchsde is stubbed if missing.

    ComfyUI imports torchsde only for its Brownian tree, which these tests never build (noise is injected).
    """
    stub = None
    if importlib.util.find_spec("torchsde") is None:
        stub = sys.modules["torchsde"] = types.ModuleType("torchsde")
    sys.path.insert(0, str(ORACLE))
    try:
        from load import comfy_sampling, wrap
        ks = comfy_sampling()
        import comfy.extra_samplers.uni_pc as uni_pc
        import comfy.k_diffusion.deis as deis
    finally:
        sys.path.remove(str(ORACLE))
        if stub is not None:
            del sys.modules["torchsde"]
    return ks, deis, uni_pc, wrap


KS, DEIS, UNI_PC, WRAP = _load_oracle()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids contention on the shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- denoisers -------------------------------------------------------------------------------------------------

PATTERN = torch.linspace(-1.5, 1.5, math.prod(SHAPE[1:]), dtype=DT).reshape(SHAPE[1:])


def _col(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def eps_net(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """An eps predictor on the VP-scaled input: D = x - sigma eps(x / sqrt(1 + sigma^2), sigma)."""
    s = _col(sigma, x)
    u = x / torch.sqrt(1.0 + s * s)
    eps = torch.tanh(0.9 * u - 0.4 * PATTERN * torch.sin(s)) + 0.15 * u * torch.cos(0.5 * s)
    return x - s * eps


def x0_net(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """An x0 predictor: x and a nonlinear pattern blended by the posterior weight 1 / (1 + sigma^2)."""
    s = _col(sigma, x)
    keep = 1.0 / (1.0 + s * s)
    u = x * keep.sqrt()
    target = PATTERN * (1.0 + 0.3 * torch.tanh(u)) + 0.2 * torch.sin(2.0 * u) * torch.exp(-0.2 * s)
    return keep * x + (1.0 - keep) * target


DENOISERS = {"eps_net": eps_net, "x0_net": x0_net}
CFG_SCALE = 1.6


def guided_pair(name: str) -> tuple[Callable, Callable]:
    """(cond, uncond) for the CFG++ samplers: the named denoiser is the conditional one, the other the unconditional."""
    other = "x0_net" if name == "eps_net" else "eps_net"
    return DENOISERS[name], DENOISERS[other]


class IgaModel:
    """iga's Denoiser protocol around a plain function."""

    kind = "vp"

    def __init__(self, fn: Callable):
        self.fn, self.nfe = fn, 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.fn(x, sigma)


class IgaGuided(IgaModel):
    """iga's GuidedDenoiser: CFG over two functions, also returning the unconditional prediction."""

    def __init__(self, cond: Callable, uncond: Callable, scale: float):
        super().__init__(cond)
        self.cond, self.uncond, self.scale = cond, uncond, scale

    def denoise_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.nfe += 1
        c, u = self.cond(x, sigma), self.uncond(x, sigma)
        return u + self.scale * (c - u), u

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.denoise_with_uncond(x, sigma)[0]


class ComfyGuided:
    """ComfyUI's CFG call as its cfg_pp samplers see it (comfy/samplers.py ``cfg_function``): the guided x0, passed
    through every ``sampler_post_cfg_function`` hook in ``model_options`` with the unconditional prediction."""

    def __init__(self, cond: Callable, uncond: Callable, scale: float):
        self.inner_model = WRAP(cond).inner_model  # the model_sampling attributes ComfyUI's samplers read
        self.cond, self.uncond, self.scale, self.calls = cond, uncond, scale, 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict | None = None, **_: Any):
        self.calls += 1
        c, u = self.cond(x, sigma), self.uncond(x, sigma)
        out = u + self.scale * (c - u)
        for hook in (model_options or {}).get("sampler_post_cfg_function", []):
            out = hook({"denoised": out, "cond_denoised": c, "uncond_denoised": u, "cond_scale": self.scale,
                        "sigma": sigma, "input": x, "model_options": model_options})
        return out


def set_post_cfg_function(model_options: dict, post_cfg_function: Callable,
                          disable_cfg1_optimization: bool = False) -> dict:
    """ComfyUI's ``comfy.model_patcher.set_model_options_post_cfg_function`` (the oracle's stand-in drops the hook)."""
    out = dict(model_options)
    out["sampler_post_cfg_function"] = [*out.get("sampler_post_cfg_function", []), post_cfg_function]
    if disable_cfg1_optimization:
        out["disable_cfg1_optimization"] = True
    return out


# ---- injected noise ----------------------------------------------------------------------------------------------

class NoiseTape:
    """Pre-drawn standard normals read in order by one consumer; records the (sigma, sigma_next) of each request.

    The same object serves as iga's NoiseSampler, ComfyUI's ``noise_sampler`` and a stand-in for ``randn_like``.
    """

    def __init__(self, seed: int, n: int = 96):
        gen = torch.Generator().manual_seed(seed)
        self.values = [torch.randn(SHAPE, generator=gen, dtype=DT) for _ in range(n)]
        self.requests: list[tuple[float, float]] = []

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        interval = (math.nan, math.nan) if sigma is None else (float(sigma), float(sigma_next))
        self.requests.append(interval)
        return self.values[len(self.requests) - 1].clone()

    def randn_like(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        assert tuple(x.shape) == SHAPE
        return self()


# ---- sigma lists ---------------------------------------------------------------------------------------------------

def karras(n: int, rho: float = 7.0) -> torch.Tensor:
    """n Karras sigmas from SIGMA_MAX to SIGMA_MIN, in float64 (ComfyUI's own helper ramps in float32)."""
    ramp = torch.linspace(0.0, 1.0, n, dtype=DT)
    lo, hi = SIGMA_MIN ** (1.0 / rho), SIGMA_MAX ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


SIGMA_LISTS = {
    "to_zero": lambda steps: torch.cat([karras(steps), torch.zeros(1, dtype=DT)]),
    "to_sigma_min": lambda steps: karras(steps + 1),
}


# ---- the cases -------------------------------------------------------------------------------------------------

def _comfy_k(fn_name: str) -> Callable:
    """A ComfyUI k-diffusion sampler called as ComfyUI's KSAMPLER calls it."""
    def call(model, x, sigmas, noise_sampler, **options):
        fn = getattr(KS, fn_name)
        if noise_sampler is not None and "noise_sampler" in inspect.signature(fn).parameters:
            options["noise_sampler"] = noise_sampler
        return fn(model, x, sigmas, disable=True, **options)
    return call


def _comfy_dpm_solver(fn_name: str) -> Callable:
    """ComfyUI's dpm_fast / dpm_adaptive wrappers (comfy/samplers.py ``ksampler``): first and last nonzero sigma."""
    def call(model, x, sigmas, noise_sampler, **options):
        sigma_min = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]
        if noise_sampler is not None:
            options["noise_sampler"] = noise_sampler
        if fn_name == "sample_dpm_fast":
            return KS.sample_dpm_fast(model, x, sigma_min, sigmas[0], len(sigmas) - 1, disable=True, **options)
        return KS.sample_dpm_adaptive(model, x, sigma_min, sigmas[0], disable=True, **options)
    return call


def _comfy_unipc(variant: str) -> Callable:
    def call(model, x, sigmas, noise_sampler, **options):
        # sample_unipc writes 0.001 over a final 0 in place (it slices, not copies): give it its own list
        return UNI_PC.sample_unipc(model, x, sigmas.clone(), extra_args={}, disable=True, variant=variant)
    return call


@dataclass(frozen=True)
class Case:
    name: str  # iga's sampler
    comfy: Callable  # (model, x, sigmas, noise_sampler, **options) -> x
    options: dict = field(default_factory=dict)  # passed to both
    label: str = ""

    @property
    def id(self) -> str:
        return self.name + (f"[{self.label}]" if self.label else "")


def _k(name: str, comfy: str | None = None, label: str = "", **options) -> Case:
    return Case(name, _comfy_k("sample_" + (comfy or name)), options, label)


CHURN = {"s_churn": 0.8, "s_noise": 0.9}
CASES = [
    _k("euler"), _k("euler", label="churn", **CHURN),
    _k("heun"), _k("heun", label="churn", **CHURN),
    _k("heunpp2"), _k("heunpp2", label="churn", **CHURN),
    _k("dpm_2"), _k("dpm_2", label="churn", **CHURN),
    _k("euler_ancestral"), _k("euler_ancestral", label="eta0", eta=0.0),
    _k("euler_ancestral", label="eta0.6", eta=0.6, s_noise=0.9),
    _k("dpm_2_ancestral"), _k("dpm_2_ancestral", label="eta0", eta=0.0),
    _k("dpmpp_2s_ancestral"), _k("dpmpp_2s_ancestral", label="eta0", eta=0.0),
    _k("dpmpp_sde"), _k("dpmpp_sde", label="eta0", eta=0.0), _k("dpmpp_sde", label="r0.3", r=0.3, eta=0.7),
    _k("dpmpp_2m"),
    _k("dpmpp_2m_sde"), _k("dpmpp_2m_sde", label="eta0", eta=0.0), _k("dpmpp_2m_sde", label="heun", solver_type="heun"),
    _k("dpmpp_2m_sde_heun"), _k("dpmpp_2m_sde_heun", label="eta0", eta=0.0),
    _k("dpmpp_3m_sde"), _k("dpmpp_3m_sde", label="eta0", eta=0.0),
    _k("ddpm"),
    _k("ddim", comfy="euler"),  # ComfyUI's "ddim" is ksampler("euler", inpaint_options={"random": True})
    _k("lcm"),
    _k("lms"), _k("lms", label="order3", order=3),
    _k("ipndm"), _k("ipndm", label="order2", max_order=2),
    _k("ipndm_v"), _k("ipndm_v", label="order3", max_order=3),
    _k("deis"), _k("deis", label="order2", max_order=2), _k("deis", label="order4", max_order=4),
    _k("res_multistep"),
    Case("uni_pc", _comfy_unipc("bh1")), Case("uni_pc_bh2", _comfy_unipc("bh2")),
    Case("dpm_fast", _comfy_dpm_solver("sample_dpm_fast")),
    Case("dpm_fast", _comfy_dpm_solver("sample_dpm_fast"), {"eta": 0.5}, "eta0.5"),
    Case("dpm_adaptive", _comfy_dpm_solver("sample_dpm_adaptive")),
    Case("dpm_adaptive", _comfy_dpm_solver("sample_dpm_adaptive"), {"order": 2, "rtol": 0.01}, label="order2"),
    _k("euler_cfg_pp"),
    _k("euler_ancestral_cfg_pp"), _k("euler_ancestral_cfg_pp", label="eta0", eta=0.0),
    _k("dpmpp_2m_cfg_pp"),
]
NOT_COMFYUI = {"restart"}  # iga samplers without a ComfyUI k-sampler of that name
# Compared in tests/test_sampling_samplers_new.py against an adjusted oracle, for documented reasons: er_sde's
# quadrature nodes in float64 (ComfyUI builds them in float32), sa_solver's last sigma on lists without a final 0
# (ComfyUI returns the state one sigma earlier), and dpmpp_2s_ancestral_cfg_pp's midpoint (a ComfyUI bug at the
# oracle's commit, fixed by ComfyUI PR #11914).
ADJUSTED_ORACLE = {"er_sde", "sa_solver", "sa_solver_pece", "dpmpp_2s_ancestral_cfg_pp"}


def _is_iga_variant(name: str) -> bool:
    """iga's own variants of a ComfyUI method (another tool's form), which ComfyUI does not have."""
    return name.endswith("_diffusers") or name == "lms_exact"


# Any other registered sampler whose name ComfyUI has (``sample_<name>``) runs with its defaults.
CASES += [_k(n) for n in SAMPLERS if n not in {c.name for c in CASES} and n not in NOT_COMFYUI | ADJUSTED_ORACLE
          and not _is_iga_variant(n) and hasattr(KS, "sample_" + n)]


# ---- running both ------------------------------------------------------------------------------------------------

_DEIS_COEFFICIENTS = DEIS.get_deis_coeff_list


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Run the oracle with float64 as torch's default dtype.

    ComfyUI builds a few tensors in the default dtype (float32 in ComfyUI): dpm_fast's lambda grid
    (``torch.linspace``), dpm_adaptive's ``torch.tensor(atol)``, DEIS's time grid and constants. Those roundings are
    not part of the method; in float64 the oracle computes the same formulas without them.
    """
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@functools.lru_cache(maxsize=None)
def _deis_limit_coefficients(sig: tuple[float, ...], max_order: int, deis_mode: str = "tab") -> list:
    """ComfyUI's DEIS coefficients with its Riemann sum extrapolated to N -> inf, computed in float64.

    The oracle's sum over N points is an analytic function of 1/N (Euler-Maclaurin), so Richardson extrapolation
    on N, 2N, 4N removes the 1/N and 1/N^2 terms; the rest is O(1/N^3) ~ 1e-15 relative at N = 1e5.
    """
    with default_dtype(DT):
        t = torch.tensor(sig, dtype=DT)
        c1, c2, c4 = (_DEIS_COEFFICIENTS(t, max_order, N=n, deis_mode=deis_mode) for n in (100000, 200000, 400000))
    return [[(8 * d - 6 * b + a) / 3 for a, b, d in zip(r1, r2, r4)] for r1, r2, r4 in zip(c1, c2, c4)]


def start_state(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(5), dtype=DT) * float(sigmas[0])


def iga_model(name: str, denoiser: str) -> IgaModel:
    if SAMPLERS[name].needs_uncond:
        return IgaGuided(*guided_pair(denoiser), CFG_SCALE)
    return IgaModel(DENOISERS[denoiser])


def run_iga(name: str, denoiser: str, sigmas: torch.Tensor, tape: NoiseTape, **options) -> tuple[torch.Tensor, int]:
    """(x, model calls) of iga's sampler."""
    model = iga_model(name, denoiser)
    return SAMPLERS[name].fn(model, start_state(sigmas), sigmas.clone(), noise=tape, **options), model.nfe


def run_comfyui(case: Case, denoiser: str, sigmas: torch.Tensor, tape: NoiseTape,
                monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, int]:
    """(x, model calls) of ComfyUI's sampler, with the tape as its noise (noise_sampler and torch.randn_like)."""
    if SAMPLERS[case.name].needs_uncond:
        model = ComfyGuided(*guided_pair(denoiser), CFG_SCALE)
        monkeypatch.setattr(KS.comfy.model_patcher, "set_model_options_post_cfg_function", set_post_cfg_function)
    else:
        model = WRAP(DENOISERS[denoiser])
    monkeypatch.setattr(KS.torch, "randn_like", tape.randn_like)  # the churn's noise (never used otherwise)
    monkeypatch.setattr(DEIS, "get_deis_coeff_list", lambda t, o, N=None, deis_mode="tab":
                        _deis_limit_coefficients(tuple(float(v) for v in t), o, deis_mode))
    with default_dtype(DT):
        x = case.comfy(model, start_state(sigmas), sigmas.clone(), tape, **case.options)
    return x, model.calls if isinstance(model, ComfyGuided) else type(model).calls


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("sigma_list", list(SIGMA_LISTS))
@pytest.mark.parametrize("denoiser", list(DENOISERS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sampler_computes_what_comfyui_computes(case: Case, denoiser: str, sigma_list: str, steps: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sigmas = SIGMA_LISTS[sigma_list](steps)
    # Both always get a tape (with eta = 0 ComfyUI's SDE samplers would build a Brownian tree otherwise); the
    # recorded requests show what each draws.
    ours_tape, theirs_tape = NoiseTape(17), NoiseTape(17)
    ours, ours_calls = run_iga(case.name, denoiser, sigmas, ours_tape, **case.options)
    theirs, theirs_calls = run_comfyui(case, denoiser, sigmas, theirs_tape, monkeypatch)
    diff = relative_difference(ours, theirs)
    print(f"PARITY {case.id} {denoiser} {sigma_list} {steps}: {diff:.1e}")
    assert torch.isfinite(theirs).all()
    assert diff <= TOL, f"{case.id}: relative difference {diff:.3e} from ComfyUI"
    if SAMPLERS[case.name].adaptive:
        # ComfyUI re-evaluates the model at the step's start after a rejected attempt; iga reuses that call
        assert ours_calls <= theirs_calls
    else:
        assert ours_calls == theirs_calls, f"{case.id}: {ours_calls} model calls, ComfyUI makes {theirs_calls}"
    # ComfyUI also draws noise that it multiplies by 0 (eta = 0; dpm_fast's last step; heunpp2 without churn). Those
    # draws come after every used one (otherwise the tape would have shifted and the results differ), so iga's
    # requests are the start of ComfyUI's: the same intervals, hence the same Brownian-tree noise too.
    drawn, comfy_drawn = len(ours_tape.requests), len(theirs_tape.requests)
    assert drawn <= comfy_drawn, f"{case.id}: {drawn} noise draws, ComfyUI {comfy_drawn}"
    for (a, b), (c, d) in zip(ours_tape.requests, theirs_tape.requests):
        if not math.isnan(c):  # randn_like (churn) carries no interval
            assert math.isclose(a, c, rel_tol=1e-12) and math.isclose(b, d, rel_tol=1e-12), \
                f"{case.id}: noise asked for ({a}, {b}), ComfyUI asks for ({c}, {d})"


def test_every_comfyui_named_sampler_is_covered() -> None:
    """Each sampler iga registers under a ComfyUI name has a parity case (ComfyUI's ``sample_<name>`` gets one with
    its defaults; others, such as ddim or uni_pc, need an explicit one)."""
    from test_sampling_samplers_new import PARITY as ADJUSTED_CASES

    assert ADJUSTED_ORACLE <= set(ADJUSTED_CASES)
    covered = {c.name for c in CASES} | ADJUSTED_ORACLE
    missing = {n for n in SAMPLERS if n not in covered and n not in NOT_COMFYUI and not _is_iga_variant(n)}
    assert not missing, f"no ComfyUI parity case for {sorted(missing)}"


def _case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


@pytest.mark.parametrize("ours,theirs", [("lms_exact", "lms"), ("lms_exact", "ipndm_v"),
                                         ("ipndm_diffusers", "ipndm"), ("uni_pc_diffusers", "uni_pc"),
                                         ("uni_pc_bh2_diffusers", "uni_pc_bh2"), ("uni_pc", "uni_pc_bh2")])
def test_the_tolerance_separates_neighbouring_forms(ours: str, theirs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """1e-10 is meaningful: iga's other forms of these methods (the ones the ComfyUI names had before issue 12) are
    far further from ComfyUI on the same inputs."""
    sigmas = SIGMA_LISTS["to_zero"](6)
    x, _ = run_iga(ours, "eps_net", sigmas, NoiseTape(17))
    ref, _ = run_comfyui(_case(theirs), "eps_net", sigmas, NoiseTape(17), monkeypatch)
    assert relative_difference(x, ref) > 1e-5


def test_the_tolerance_separates_other_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    sigmas = SIGMA_LISTS["to_zero"](6)
    x, _ = run_iga("euler_ancestral", "eps_net", sigmas, NoiseTape(18))
    ref, _ = run_comfyui(_case("euler_ancestral"), "eps_net", sigmas, NoiseTape(17), monkeypatch)
    assert relative_difference(x, ref) > 1e-3


@pytest.mark.parametrize("sigma_list", list(SIGMA_LISTS))
def test_deis_coefficients_are_the_limit_of_comfyuis_quadrature(sigma_list: str) -> None:
    """iga's DEIS weights are the integrals ComfyUI's 10000-point Riemann sum approximates: equal to the oracle's sum
    extrapolated to N -> inf, and ComfyUI's own sum (N = 10000, 20000) approaches them at its 1/N rate."""
    from iga.sampling.samplers.multistep import deis_weights, vp_time

    sig = [float(v) for v in SIGMA_LISTS[sigma_list](11)]
    ts = [vp_time(s) for s in sig]
    limit = _deis_limit_coefficients(tuple(sig), 3)
    with default_dtype(DT):
        comfy = {n: _DEIS_COEFFICIENTS(torch.tensor(sig, dtype=DT), 3, N=n) for n in (10000, 20000)}
    for i in range(1, len(sig) - 1):
        if sig[i + 1] == 0:
            continue  # the step to 0 is Euler; its coefficients are unused
        ours = deis_weights([ts[i - j] for j in range(min(i + 1, 3))], sig[i], sig[i + 1])
        for j, c in enumerate(ours):
            assert abs(c - float(limit[i][j])) <= 1e-12 * max(1.0, abs(c)), (i, j)
            err = [abs(float(comfy[n][i][j]) - c) for n in (10000, 20000)]
            assert err[0] <= 1e-3 * max(1.0, abs(c)) and 1.6 < err[0] / err[1] < 2.4, (i, j, err)
