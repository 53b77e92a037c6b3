"""The name table: canonical names, every foreign spelling, combined labels, diffusers mapping, suggestions."""

from __future__ import annotations

import pytest

from iga.recipe import names


@pytest.mark.parametrize(
    "label, expected",
    [
        ("Euler a", "euler_ancestral"), ("k_euler_a", "euler_ancestral"), ("euler_ancestral", "euler_ancestral"),
        ("DPM++ 2M", "dpmpp_2m"), ("k_dpmpp_2m", "dpmpp_2m"), ("dpmpp-2m", "dpmpp_2m"),
        ("DPM++ 2M SDE Heun", "dpmpp_2m_sde_heun"), ("DPM++ 3M SDE", "dpmpp_3m_sde"), ("DPM2", "dpm_2"),
        ("DPM2 a", "dpm_2_ancestral"), ("DPM++ 2S a", "dpmpp_2s_ancestral"), ("UniPC", "uni_pc"),
        ("DDIM", "ddim"), ("LCM", "lcm"), ("Heun", "heun"), ("LMS", "lms"), ("DPM adaptive", "dpm_adaptive"),
        ("k_dpm_ad", "dpm_adaptive"), ("Restart", "restart"), ("  euler  ", "euler"),
    ],
)
def test_sampler_spellings(label, expected):
    assert names.resolve_sampler(label) == expected


@pytest.mark.parametrize(
    "label, expected",
    [
        ("Karras", "karras"), ("SGM Uniform", "sgm_uniform"), ("SGMUniform", "sgm_uniform"), ("Uniform", "normal"),
        ("Align Your Steps", "ays"), ("AYS", "ays"), ("Turbo", "turbo"), ("KL Optimal", "kl_optimal"),
        ("DDIM", "ddim_uniform"), ("Beta", "beta"), ("trailing", "simple"),
    ],
)
def test_schedule_spellings(label, expected):
    assert names.resolve_schedule(label) == expected


@pytest.mark.parametrize(
    "label, expected",
    [
        ("DPM++ 2M Karras", ("dpmpp_2m", "karras")),
        ("DPM++ 2M SDE Heun Exponential", ("dpmpp_2m_sde_heun", "exponential")),
        ("DPM++ SDE Karras", ("dpmpp_sde", "karras")),
        ("DPM2 a Karras", ("dpm_2_ancestral", "karras")),
        ("Euler SGM Uniform", ("euler", "sgm_uniform")),
        ("Euler a Align Your Steps", ("euler_ancestral", "ays")),
        ("k_dpmpp_2m_ka", ("dpmpp_2m", "karras")),
        ("k_dpmpp_2m_sde_exp", ("dpmpp_2m_sde", "exponential")),
        ("dpmpp_2m_k", ("dpmpp_2m", "karras")),  # InvokeAI
        ("euler_a", ("euler_ancestral", None)),
        ("DPM++ 2M", ("dpmpp_2m", None)),
    ],
)
def test_combined_labels(label, expected):
    assert names.split_combined(label) == expected


def test_confusable_dpm2_is_not_dpmpp_2m():
    assert names.split_combined("DPM2 Karras") == ("dpm_2", "karras")


def test_unknown_names_list_close_matches():
    with pytest.raises(names.UnknownNameError) as e:
        names.resolve_sampler("dpmpp_2n")
    assert "dpmpp_2m" in e.value.suggestions and "dpmpp_2m" in str(e.value)
    with pytest.raises(names.UnknownNameError) as e:
        names.resolve_schedule("karas")
    assert e.value.suggestions[0] == "karras"
    with pytest.raises(names.UnknownNameError):
        names.split_combined("DPM++ 2M Whatever")


def test_every_spelling_is_unambiguous_and_round_trips():
    for s in names.SAMPLERS:
        for sp in (s.name, s.a1111_label, *s.aliases):
            if sp:
                assert names.resolve_sampler(sp) == s.name
    for h in names.SCHEDULES:
        for sp in (h.name, h.a1111_label, *h.aliases):
            if sp:
                assert names.resolve_schedule(sp) == h.name


def test_variants_are_recorded_where_tools_disagree():
    for n in ("beta", "kl_optimal", "ays"):
        assert "canonical = ComfyUI" in names.schedule_info(n).variant
    assert "A1111 discards" in names.sampler_info("dpmpp_3m_sde").variant


@pytest.mark.parametrize(
    "cls, cfg, expected",
    [
        ("EulerDiscreteScheduler", {}, ("euler", "normal")),
        ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, ("euler", "simple")),
        ("EulerAncestralDiscreteScheduler", {}, ("euler_ancestral", "normal")),
        ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, ("dpmpp_2m", "karras")),
        ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, ("dpmpp_2m_sde", "normal")),
        ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3,
                                         "use_exponential_sigmas": True}, ("dpmpp_3m_sde", "exponential")),
        ("DDIMScheduler", {"timestep_spacing": "leading", "steps_offset": 1}, ("ddim", "ddim_uniform")),
        ("UniPCMultistepScheduler", {}, ("uni_pc_bh2_diffusers", "normal")),
        ("KDPM2AncestralDiscreteScheduler", {"use_beta_sigmas": True}, ("dpm_2_ancestral", "beta_linear")),
    ],
)
def test_from_diffusers(cls, cfg, expected):
    assert names.from_diffusers(cls, cfg) == expected


def test_to_diffusers_round_trip_and_gaps():
    for s in names.SAMPLERS:
        for h in ("normal", "karras", "simple", "exponential"):
            mapped = names.to_diffusers(s.name, h)
            if mapped is None:
                continue
            cls, flags = mapped
            assert names.from_diffusers(cls, flags) == (s.name, h), (s.name, h, mapped)
    assert names.to_diffusers("dpmpp_2s_ancestral", "karras") is None  # diffusers has no DPM++ 2S a
    assert names.to_diffusers("euler", "kl_optimal") is None
    assert names.to_diffusers("euler_ancestral", "karras") is None


def test_a1111_labels():
    from iga.provenance.labels import a1111_labels  # the one home of the label look-up (tolerant of unknowns)

    assert a1111_labels("dpmpp_2m", "karras") == ("DPM++ 2M", "Karras")
    assert a1111_labels("euler_ancestral", "sgm_uniform") == ("Euler a", "SGM Uniform")


def test_name_table_agrees_with_the_sampling_registry():
    """The recipe layer cannot import the engine (it would pull torch into `iga --help`), so the declared
    properties live in both places; this keeps them equal."""
    from iga.sampling.samplers import SAMPLERS as REGISTRY

    assert set(REGISTRY) == set(names.SAMPLER_NAMES)
    for s in names.SAMPLERS:
        spec = REGISTRY[s.name]
        assert (s.order, s.stochastic) == (spec.order, spec.stochastic), s.name
        if not spec.adaptive:
            assert s.nfe_per_step == spec.nfe_per_step, s.name
        if s.formula_order is not None:
            assert s.formula_order == spec.max_order, s.name
