"""The registry declares what each sampler is, consistently with the functions themselves."""

from __future__ import annotations

import inspect

import pytest

from iga.sampling.base import SamplerSpec, SamplingError
from iga.sampling.samplers import SAMPLERS, get_sampler

REQUIRED = {
    "euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
    "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde", "ddpm",
    "ddim", "lcm", "ipndm", "ipndm_v", "deis", "uni_pc", "uni_pc_bh2", "res_multistep", "restart",
    "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
    # the rest of ComfyUI's KSAMPLER_NAMES (issue 12)
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde_gpu", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde_gpu",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
}


def test_required_samplers_are_registered() -> None:
    assert REQUIRED <= set(SAMPLERS)
    for name, spec in SAMPLERS.items():
        assert isinstance(spec, SamplerSpec) and spec.name == name


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_spec_is_consistent_with_function(name: str) -> None:
    spec = SAMPLERS[name]
    params = inspect.signature(spec.fn).parameters
    assert list(params)[:3] == ["model", "x", "sigmas"]
    assert params["noise"].kind is inspect.Parameter.KEYWORD_ONLY and params["noise"].default is None
    assert params["callback"].kind is inspect.Parameter.KEYWORD_ONLY
    declared = set(spec.options)
    accepted = {p for p in params if p not in ("model", "x", "sigmas", "noise", "callback")}
    assert declared == accepted, f"{name}: options {sorted(declared)} vs signature {sorted(accepted)}"
    assert spec.nfe_per_step in ((0,) if spec.adaptive else (1, 2, 3))  # 0: adaptive, not known per step
    assert spec.noise in ("none", "seeded", "brownian", "brownian_device")
    assert set(spec.parameterizations) <= {"eps", "v", "x0", "flow"} and spec.parameterizations
    assert spec.max_order is None or spec.max_order >= spec.order
    assert spec.doc and spec.fn.__doc__, f"{name} needs a one-line doc and a docstring with its update rule"
    if spec.stochastic:
        assert spec.noise != "none", f"{name} is stochastic but declares no noise source"
    if "eta" in spec.options and spec.stochastic:
        assert spec.noise != "none"


def test_declared_properties_follow_comfyui() -> None:
    assert {n for n, s in SAMPLERS.items() if s.discard_penultimate} == {"dpm_2", "dpm_2_ancestral", "uni_pc",
                                                                        "uni_pc_bh2"}
    assert {n for n, s in SAMPLERS.items() if s.noise == "brownian"} == {"dpmpp_sde", "dpmpp_2m_sde",
                                                                        "dpmpp_2m_sde_heun", "dpmpp_3m_sde"}
    # ComfyUI's *_gpu samplers: the same functions with the Brownian tree on the model's device
    gpu = {n for n, s in SAMPLERS.items() if s.noise == "brownian_device"}
    assert gpu == {"dpmpp_sde_gpu", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde_gpu"}
    for name in gpu:
        plain = SAMPLERS[name.removesuffix("_gpu")]
        assert SAMPLERS[name].fn is plain.fn and SAMPLERS[name].options == plain.options
    assert {n for n, s in SAMPLERS.items() if s.nfe_per_step == 2} == {
        "heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "restart",
        "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde_gpu", "seeds_2", "sa_solver_pece"}
    assert SAMPLERS["heunpp2"].nfe_per_step == 3 and SAMPLERS["seeds_3"].nfe_per_step == 3
    assert {n for n, s in SAMPLERS.items() if s.needs_uncond} == {
        "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "dpmpp_2s_ancestral_cfg_pp",
        "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp"}
    assert SAMPLERS["dpm_adaptive"].adaptive
    assert not SAMPLERS["ddim"].stochastic and not SAMPLERS["euler"].stochastic
    assert SAMPLERS["restart"].parameterizations == ("eps", "v", "x0")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(SamplingError, match="euler_ancestral"):
        get_sampler("euler_ancestrl")
    with pytest.raises(SamplingError, match="Known:"):
        get_sampler("zzz")
    assert get_sampler("lms") is SAMPLERS["lms"]


def test_every_sampler_property_comes_from_the_one_catalog() -> None:
    """The registry, the name table and provenance read the catalog; none states a sampler property itself."""
    from iga.catalog.samplers import SAMPLERS as CATALOG
    from iga.provenance import labels
    from iga.recipe import names

    assert set(SAMPLERS) == set(CATALOG) and names.SAMPLERS == tuple(CATALOG.values())
    for name, spec in SAMPLERS.items():
        info = CATALOG[name]
        assert (spec.order, spec.nfe_per_step, spec.stochastic, spec.noise, spec.options, spec.max_order,
                spec.parameterizations, spec.discard_penultimate, spec.needs_uncond, spec.adaptive, spec.doc) == (
            info.order, info.nfe_per_step, info.stochastic, info.noise, info.options, info.formula_order,
            info.parameterizations, info.discard_penultimate, info.needs_uncond, info.adaptive, info.doc)
        assert labels.sampler_label(name) == (info.a1111_label or name)
    assert not [k for k in vars(labels) if k.isupper() or k.startswith("_") and k.endswith("LABELS")]


def test_the_comfyui_names_are_comfyuis_42() -> None:
    """ComfyUI's KSampler names at the oracle's commit (comfy/samplers.py: KSAMPLER_NAMES + ddim, uni_pc, uni_pc_bh2)."""
    from iga.catalog.samplers import COMFYUI_SAMPLERS

    comfyui = {"euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
               "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
               "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
               "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
               "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
               "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
               "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"}
    assert len(comfyui) == 42 and set(COMFYUI_SAMPLERS) == comfyui
