"""The sampler registry: canonical (ComfyUI) names -> SamplerSpec, exact NFE counts, and look-up with suggestions.

A SamplerSpec is the catalog's entry (``iga.catalog.samplers``: order, calls, noise, options, ...) joined with the
function that computes it; nothing about a sampler is stated here but which function it is.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from iga.catalog.samplers import SAMPLERS as CATALOG
from iga.catalog.options import option_problems
from iga.catalog.samplers import SamplerInfo
from iga.sampling.base import SamplerSpec, SamplingError
from iga.sampling.samplers import cfgpp, ddim, dpm, dpmpp, euler, gradient, multistep, restart, sa_solver, sde, unipc
from iga.sampling.samplers._common import check_sigmas

# name -> (function, exact model-call count for a sigma list); every other property is the catalog's.
_FUNCTIONS: dict[str, tuple[Callable[..., torch.Tensor], Callable[[list[float], str, dict], int | None]]] = {
    "euler": (euler.sample_euler, euler.nfe_one_per_step),
    "euler_ancestral": (euler.sample_euler_ancestral, euler.nfe_one_per_step),
    "heun": (euler.sample_heun, euler.nfe_two_unless_last),
    "heunpp2": (euler.sample_heunpp2, euler.nfe_heunpp2),
    "dpm_2": (euler.sample_dpm_2, euler.nfe_two_unless_last),
    "dpm_2_ancestral": (euler.sample_dpm_2_ancestral, euler.nfe_dpm_2_ancestral),
    "lms": (multistep.sample_lms, euler.nfe_one_per_step),
    "lms_exact": (multistep.sample_lms_exact, euler.nfe_one_per_step),
    "dpm_fast": (dpm.sample_dpm_fast, dpm.nfe_dpm_fast),
    "dpm_adaptive": (dpm.sample_dpm_adaptive, dpm.nfe_adaptive),
    "dpmpp_2s_ancestral": (dpmpp.sample_dpmpp_2s_ancestral, dpmpp.nfe_2s_ancestral),
    "dpmpp_sde": (dpmpp.sample_dpmpp_sde, dpmpp.nfe_two_stage),
    "dpmpp_2m": (dpmpp.sample_dpmpp_2m, euler.nfe_one_per_step),
    "dpmpp_2m_sde": (dpmpp.sample_dpmpp_2m_sde, euler.nfe_one_per_step),
    "dpmpp_2m_sde_heun": (dpmpp.sample_dpmpp_2m_sde_heun, euler.nfe_one_per_step),
    "dpmpp_3m_sde": (dpmpp.sample_dpmpp_3m_sde, euler.nfe_one_per_step),
    "ddpm": (ddim.sample_ddpm, euler.nfe_one_per_step),
    "ddim": (ddim.sample_ddim, euler.nfe_one_per_step),
    "lcm": (ddim.sample_lcm, euler.nfe_one_per_step),
    "ipndm": (multistep.sample_ipndm, euler.nfe_one_per_step),
    "ipndm_diffusers": (multistep.sample_ipndm_diffusers, euler.nfe_one_per_step),
    "ipndm_v": (multistep.sample_ipndm_v, euler.nfe_one_per_step),
    "deis": (multistep.sample_deis, multistep.nfe_deis),
    "uni_pc": (unipc.sample_uni_pc, unipc.nfe_unipc),
    "uni_pc_bh2": (unipc.sample_uni_pc_bh2, unipc.nfe_unipc),
    "uni_pc_diffusers": (unipc.sample_uni_pc_diffusers, unipc.nfe_unipc),
    "uni_pc_bh2_diffusers": (unipc.sample_uni_pc_bh2_diffusers, unipc.nfe_unipc),
    "res_multistep": (multistep.sample_res_multistep, euler.nfe_one_per_step),
    "restart": (restart.sample_restart, restart.nfe_restart),
    "euler_cfg_pp": (cfgpp.sample_euler_cfg_pp, euler.nfe_one_per_step),
    "euler_ancestral_cfg_pp": (cfgpp.sample_euler_ancestral_cfg_pp, euler.nfe_one_per_step),
    "dpmpp_2m_cfg_pp": (cfgpp.sample_dpmpp_2m_cfg_pp, euler.nfe_one_per_step),
    "dpmpp_2s_ancestral_cfg_pp": (cfgpp.sample_dpmpp_2s_ancestral_cfg_pp, dpmpp.nfe_2s_ancestral),
    "dpmpp_sde_gpu": (dpmpp.sample_dpmpp_sde, dpmpp.nfe_two_stage),
    "dpmpp_2m_sde_gpu": (dpmpp.sample_dpmpp_2m_sde, euler.nfe_one_per_step),
    "dpmpp_2m_sde_heun_gpu": (dpmpp.sample_dpmpp_2m_sde_heun, euler.nfe_one_per_step),
    "dpmpp_3m_sde_gpu": (dpmpp.sample_dpmpp_3m_sde, euler.nfe_one_per_step),
    "res_multistep_cfg_pp": (multistep.sample_res_multistep_cfg_pp, euler.nfe_one_per_step),
    "res_multistep_ancestral": (multistep.sample_res_multistep_ancestral, euler.nfe_one_per_step),
    "res_multistep_ancestral_cfg_pp": (multistep.sample_res_multistep_ancestral_cfg_pp, euler.nfe_one_per_step),
    "gradient_estimation": (gradient.sample_gradient_estimation, euler.nfe_one_per_step),
    "gradient_estimation_cfg_pp": (gradient.sample_gradient_estimation_cfg_pp, euler.nfe_one_per_step),
    "er_sde": (sde.sample_er_sde, euler.nfe_one_per_step),
    "seeds_2": (sde.sample_seeds_2, sde.nfe_stages(2)),
    "seeds_3": (sde.sample_seeds_3, sde.nfe_stages(3)),
    "sa_solver": (sa_solver.sample_sa_solver, sa_solver.nfe_sa_solver),
    "sa_solver_pece": (sa_solver.sample_sa_solver_pece, sa_solver.nfe_sa_solver_pece),
}


def _spec(info: SamplerInfo) -> SamplerSpec:
    fn, nfe_fn = _FUNCTIONS[info.name]
    return SamplerSpec(info.name, fn, info.nfe_per_step, info.order, info.stochastic, info.parameterizations,
                       info.noise, discard_penultimate=info.discard_penultimate, options=info.options, doc=info.doc,
                       max_order=info.formula_order, adaptive=info.adaptive, needs_uncond=info.needs_uncond,
                       nfe_fn=nfe_fn)


SAMPLERS: dict[str, SamplerSpec] = {name: _spec(info) for name, info in CATALOG.items()}


def get_sampler(name: str) -> SamplerSpec:
    """The SamplerSpec of a canonical sampler name; an unknown name raises with the closest matches."""
    spec = SAMPLERS.get(name)
    if spec is None:
        close = difflib.get_close_matches(str(name).lower(), list(SAMPLERS), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SamplingError(f"unknown sampler {name!r}{hint} Known: {', '.join(sorted(SAMPLERS))}")
    return spec


def expected_nfe(name: str, sigmas: torch.Tensor | Sequence[float], *, kind: str = "vp",
                 **options: Any) -> int | None:
    """Exact number of model calls ``name`` makes on ``sigmas`` (None for adaptive samplers).

    ``kind`` ("vp"/"flow") and the options matter only where they change the step structure (e.g. eta for
    dpm_2_ancestral, restart_list for restart).
    """
    spec = get_sampler(name)
    sig = check_sigmas(sigmas, kind, name)
    if spec.nfe_fn is None:
        return spec.nfe_per_step * (len(sig) - 1)
    return spec.nfe_fn(sig, kind, dict(options))


def sample_with(name: str, model, x: torch.Tensor, sigmas: torch.Tensor, *, noise=None, callback=None,
                **options: Any) -> torch.Tensor:
    """Run a sampler by name after checking its options (a thin convenience over ``SAMPLERS[name].fn``)."""
    spec = get_sampler(name)
    problems = option_problems(name, CATALOG[name].option_specs, options)
    if problems:
        raise SamplingError("; ".join(problems.values()))
    return spec.fn(model, x, sigmas, noise=noise, callback=callback, **options)
