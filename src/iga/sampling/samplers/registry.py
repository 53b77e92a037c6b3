"""The sampler registry: canonical (ComfyUI) names -> SamplerSpec, exact NFE counts, and look-up with suggestions.

``order`` is the honest *global* convergence order of a whole run as the sampler is called (start-up and final
steps included), measured in ``tests/test_sampling_samplers_order.py``; ``max_order`` is the order of the
steady-state update formula when that is higher (it shows when start-up errors are small, and is measured
separately on a problem whose start and end are exactly solvable). Stochastic samplers declare the order of
their eta = 0 (deterministic) member.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch

from iga.sampling.base import SamplerSpec, SamplingError
from iga.sampling.samplers import cfgpp, ddim, dpm, dpmpp, euler, gradient, multistep, restart, sa_solver, sde, unipc
from iga.sampling.samplers._common import check_sigmas

_ALL = ("eps", "v", "x0", "flow")
_VP = ("eps", "v", "x0")
_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
_ANC = ("eta", "s_noise")
_SA = ("eta", "s_noise", "predictor_order", "corrector_order", "sde_start_percent", "sde_end_percent",
       "simple_order_2")

_SPECS = [
    SamplerSpec("euler", euler.sample_euler, 1, 1, False, _ALL, "seeded", options=_CHURN,
                nfe_fn=euler.nfe_one_per_step,
                doc="Euler in sigma (Karras et al. 2022, arXiv 2206.00364, Alg. 2); noise only with s_churn > 0."),
    SamplerSpec("euler_ancestral", euler.sample_euler_ancestral, 1, 1, True, _ALL, "seeded", options=_ANC,
                nfe_fn=euler.nfe_one_per_step,
                doc="Ancestral Euler (k-diffusion; DDIM's sigma_t(eta), Song et al. 2020, arXiv 2010.02502); "
                    "rectified-flow renoising for flow models."),
    SamplerSpec("heun", euler.sample_heun, 2, 2, False, _ALL, "seeded", options=_CHURN,
                nfe_fn=euler.nfe_two_unless_last,
                doc="Heun's 2nd-order method in sigma (Karras et al. 2022, Alg. 1/2); Euler on the step to 0."),
    SamplerSpec("heunpp2", euler.sample_heunpp2, 3, 1, False, _ALL, "seeded", options=_CHURN,
                nfe_fn=euler.nfe_heunpp2,
                doc="Heun++ (Carzit's sd-webui-samplers-scheduler): three slopes weighted by sigma/(3 sigma_0); "
                    "the weights miss the 2nd-order condition, so it is 1st order (3/2/1 calls per step)."),
    SamplerSpec("dpm_2", euler.sample_dpm_2, 2, 2, False, _ALL, "seeded", discard_penultimate=True,
                options=_CHURN, nfe_fn=euler.nfe_two_unless_last,
                doc="DPM2: midpoint rule in log sigma (k-diffusion, after DPM-Solver-2, Lu et al. 2022, "
                    "arXiv 2206.00927)."),
    SamplerSpec("dpm_2_ancestral", euler.sample_dpm_2_ancestral, 2, 2, True, _ALL, "seeded",
                discard_penultimate=True, options=_ANC, nfe_fn=euler.nfe_dpm_2_ancestral,
                doc="Ancestral DPM2: DPM2 step to sigma_down, then renoise (eta = 0 is dpm_2)."),
    SamplerSpec("lms", multistep.sample_lms, 1, 2, False, _ALL, "none", options=("order",), max_order=4,
                nfe_fn=euler.nfe_one_per_step,
                doc="Linear multistep (variable-step Adams-Bashforth, order 4) in sigma, ComfyUI's: x = D on the "
                    "step to 0; the Euler start-up step makes a whole run 2nd order."),
    SamplerSpec("lms_exact", multistep.sample_lms_exact, 1, 2, False, _ALL, "none", options=("order",), max_order=4,
                nfe_fn=euler.nfe_one_per_step,
                doc="lms integrating the Adams-Bashforth polynomial on the step to 0 too (k-diffusion/A1111, "
                    "diffusers LMSDiscreteScheduler)."),
    SamplerSpec("dpm_fast", dpm.sample_dpm_fast, 1, 2, False, _ALL, "seeded", options=_ANC, max_order=3,
                nfe_fn=dpm.nfe_dpm_fast,
                doc="DPM-Solver-fast (Lu et al. 2022, arXiv 2206.00927): steps-many calls spent as orders "
                    "3,..,3,2,1; 3rd order only when steps % 3 == 2. Uses only the first/last nonzero sigma."),
    SamplerSpec("dpm_adaptive", dpm.sample_dpm_adaptive, 3, 3, False, _ALL, "seeded",
                options=("order", "rtol", "atol", "h_init", "pcoeff", "icoeff", "dcoeff", "accept_safety",
                         "eta", "s_noise", "max_nfe"),
                adaptive=True, nfe_fn=dpm.nfe_adaptive,
                doc="DPM-Solver-23 with PID-controlled adaptive steps (Lu et al. 2022); NFE set by rtol/atol."),
    SamplerSpec("dpmpp_2s_ancestral", dpmpp.sample_dpmpp_2s_ancestral, 2, 2, True, _ALL, "seeded", options=_ANC,
                nfe_fn=dpmpp.nfe_2s_ancestral,
                doc="Ancestral DPM-Solver++(2S) (Lu et al. 2022b, arXiv 2211.01095; k-diffusion 'DPM++ 2S a')."),
    SamplerSpec("dpmpp_sde", dpmpp.sample_dpmpp_sde, 2, 2, True, _ALL, "brownian", options=("eta", "s_noise", "r"),
                nfe_fn=dpmpp.nfe_two_stage,
                doc="DPM-Solver++ SDE, two stages with r = 1/2 and Brownian-tree noise (k-diffusion 'DPM++ SDE')."),
    SamplerSpec("dpmpp_2m", dpmpp.sample_dpmpp_2m, 1, 2, False, _ALL, "none", nfe_fn=euler.nfe_one_per_step,
                doc="DPM-Solver++(2M), two-step exponential multistep on D (Lu et al. 2022b, arXiv 2211.01095)."),
    SamplerSpec("dpmpp_2m_sde", dpmpp.sample_dpmpp_2m_sde, 1, 2, True, _ALL, "brownian",
                options=("eta", "s_noise", "solver_type"), nfe_fn=euler.nfe_one_per_step,
                doc="SDE-DPM-Solver++(2M) (Lu et al. 2022b), midpoint correction, Brownian-tree noise."),
    SamplerSpec("dpmpp_2m_sde_heun", dpmpp.sample_dpmpp_2m_sde_heun, 1, 2, True, _ALL, "brownian", options=_ANC,
                nfe_fn=euler.nfe_one_per_step,
                doc="SDE-DPM-Solver++(2M) with the 'heun' (exact linear-interpolant) correction."),
    SamplerSpec("dpmpp_3m_sde", dpmpp.sample_dpmpp_3m_sde, 1, 2, True, _ALL, "brownian", options=_ANC,
                max_order=2, nfe_fn=euler.nfe_one_per_step,
                doc="SDE-DPM-Solver++(3M) (k-diffusion/ComfyUI): three-step multistep; with the published "
                    "phi3 weight its steady-state step is 2nd order (see the function docstring)."),
    SamplerSpec("ddpm", ddim.sample_ddpm, 1, 1, True, _ALL, "seeded", nfe_fn=euler.nfe_one_per_step,
                doc="Ancestral DDPM posterior step in VP coordinates (Ho et al. 2020, arXiv 2006.11239)."),
    SamplerSpec("ddim", ddim.sample_ddim, 1, 1, False, _ALL, "seeded", options=_ANC, nfe_fn=euler.nfe_one_per_step,
                doc="DDIM (Song et al. 2020, arXiv 2010.02502); eta = 0 (default) is Euler in sigma, "
                    "eta > 0 the stochastic DDIM step (noise only then)."),
    SamplerSpec("lcm", ddim.sample_lcm, 1, 0, True, _ALL, "seeded", options=("s_noise",),
                nfe_fn=euler.nfe_one_per_step,
                doc="Latent Consistency Model sampling (Luo et al. 2023, arXiv 2310.04378): x = D, then fresh "
                    "noise; for distilled models, not a convergent solver (order 0)."),
    SamplerSpec("ipndm", multistep.sample_ipndm, 1, 2, False, _ALL, "none", options=("max_order",),
                nfe_fn=euler.nfe_one_per_step,
                doc="iPNDM (Zhang & Chen 2022, arXiv 2204.13902): equal-step Adams-Bashforth up to 4th order in "
                    "sigma, x = D on the step to 0 (ComfyUI); 4th order only on uniform sigma grids, 2nd on others."),
    SamplerSpec("ipndm_diffusers", multistep.sample_ipndm_diffusers, 1, 2, False, _ALL, "none",
                options=("max_order",), nfe_fn=euler.nfe_one_per_step,
                doc="ipndm with the Adams-Bashforth step on the step to 0 too (diffusers IPNDMScheduler)."),
    SamplerSpec("ipndm_v", multistep.sample_ipndm_v, 1, 2, False, _ALL, "none", options=("max_order",),
                max_order=3, nfe_fn=euler.nfe_one_per_step,
                doc="Variable-step iPNDM, ComfyUI's (zju-pi/diff-sampler's weights): not the variable-step AB beyond "
                    "AB2; steady state 3rd order on uniform/geometric grids, 2nd on Karras (lms is the exact AB)."),
    SamplerSpec("deis", multistep.sample_deis, 1, 2, False, _ALL, "none", options=("max_order",), max_order=3,
                nfe_fn=multistep.nfe_deis,
                doc="DEIS tAB (Zhang & Chen 2022, arXiv 2204.13902), ComfyUI's: polynomial extrapolation in the time "
                    "of a VP-SDE fitted to EDM's range, order <= 3 (<= 4 by option); Euler start: a run is 2nd order."),
    SamplerSpec("uni_pc", unipc.sample_uni_pc, 1, 2, False, _ALL, "none", discard_penultimate=True,
                options=("order", "lower_order_final"), max_order=4, nfe_fn=unipc.nfe_unipc,
                doc="UniPC bh1 predictor-corrector (Zhao et al. 2023, arXiv 2302.04867), order min(3, steps-1), "
                    "ComfyUI's: a final 0 becomes sigma 1e-3; the lower-order final step makes a run 2nd order."),
    SamplerSpec("uni_pc_bh2", unipc.sample_uni_pc_bh2, 1, 2, False, _ALL, "none", discard_penultimate=True,
                options=("order", "lower_order_final"), max_order=4, nfe_fn=unipc.nfe_unipc,
                doc="UniPC bh2 (B(h) = e^-h - 1) predictor-corrector (Zhao et al. 2023), ComfyUI's (ends at 1e-3)."),
    SamplerSpec("uni_pc_diffusers", unipc.sample_uni_pc_diffusers, 1, 2, False, _ALL, "none",
                options=("order", "lower_order_final"), max_order=4, nfe_fn=unipc.nfe_unipc,
                doc="UniPC bh1 as diffusers' UniPCMultistepScheduler: as uni_pc, but x = D on the step to 0."),
    SamplerSpec("uni_pc_bh2_diffusers", unipc.sample_uni_pc_bh2_diffusers, 1, 2, False, _ALL, "none",
                options=("order", "lower_order_final"), max_order=4, nfe_fn=unipc.nfe_unipc,
                doc="UniPC bh2 as diffusers' UniPCMultistepScheduler: as uni_pc_bh2, but x = D on the step to 0."),
    SamplerSpec("res_multistep", multistep.sample_res_multistep, 1, 2, False, _ALL, "none",
                nfe_fn=euler.nfe_one_per_step,
                doc="RES 2nd-order exponential multistep (Zhang et al. 2023, arXiv 2308.02157)."),
    SamplerSpec("restart", restart.sample_restart, 2, 2, True, _VP, "seeded", options=("s_noise", "restart_list"),
                nfe_fn=restart.nfe_restart,
                doc="Restart sampling (Xu et al. 2023, arXiv 2306.14878), A1111's defaults: Heun with restarts "
                    "0.1 -> 2 from 20 steps on (the base grid becomes Karras); plain Heun below 20 steps."),
    SamplerSpec("euler_cfg_pp", cfgpp.sample_euler_cfg_pp, 1, 1, False, _ALL, "none", needs_uncond=True,
                nfe_fn=euler.nfe_one_per_step,
                doc="Euler CFG++ (Chung et al. 2024, arXiv 2406.08070): renoise with the unconditional eps."),
    SamplerSpec("euler_ancestral_cfg_pp", cfgpp.sample_euler_ancestral_cfg_pp, 1, 1, True, _ALL, "seeded",
                options=_ANC, needs_uncond=True, nfe_fn=euler.nfe_one_per_step,
                doc="Ancestral Euler CFG++ (Chung et al. 2024, arXiv 2406.08070)."),
    SamplerSpec("dpmpp_2m_cfg_pp", cfgpp.sample_dpmpp_2m_cfg_pp, 1, 2, False, _ALL, "none", needs_uncond=True,
                nfe_fn=euler.nfe_one_per_step,
                doc="DPM-Solver++(2M) CFG++ (ComfyUI's form of Chung et al. 2024)."),
    SamplerSpec("dpmpp_2s_ancestral_cfg_pp", cfgpp.sample_dpmpp_2s_ancestral_cfg_pp, 2, 2, True, _ALL, "seeded",
                options=_ANC, needs_uncond=True, nfe_fn=dpmpp.nfe_2s_ancestral,
                doc="Ancestral DPM-Solver++(2S) CFG++ (ComfyUI; Chung et al. 2024, arXiv 2406.08070)."),
    SamplerSpec("dpmpp_sde_gpu", dpmpp.sample_dpmpp_sde, 2, 2, True, _ALL, "brownian_device",
                options=("eta", "s_noise", "r"), nfe_fn=dpmpp.nfe_two_stage,
                doc="dpmpp_sde with its Brownian tree generated on the model's device (= dpmpp_sde on the CPU)."),
    SamplerSpec("dpmpp_2m_sde_gpu", dpmpp.sample_dpmpp_2m_sde, 1, 2, True, _ALL, "brownian_device",
                options=("eta", "s_noise", "solver_type"), nfe_fn=euler.nfe_one_per_step,
                doc="dpmpp_2m_sde with its Brownian tree on the model's device (= dpmpp_2m_sde on the CPU)."),
    SamplerSpec("dpmpp_2m_sde_heun_gpu", dpmpp.sample_dpmpp_2m_sde_heun, 1, 2, True, _ALL, "brownian_device",
                options=_ANC, nfe_fn=euler.nfe_one_per_step,
                doc="dpmpp_2m_sde_heun with its Brownian tree on the model's device (= the CPU form on the CPU)."),
    SamplerSpec("dpmpp_3m_sde_gpu", dpmpp.sample_dpmpp_3m_sde, 1, 2, True, _ALL, "brownian_device", options=_ANC,
                max_order=2, nfe_fn=euler.nfe_one_per_step,
                doc="dpmpp_3m_sde with its Brownian tree on the model's device (= dpmpp_3m_sde on the CPU)."),
    SamplerSpec("res_multistep_cfg_pp", multistep.sample_res_multistep_cfg_pp, 1, 2, False, _ALL, "none",
                needs_uncond=True, nfe_fn=euler.nfe_one_per_step,
                doc="RES multistep CFG++ (ComfyUI; Chung et al. 2024, arXiv 2406.08070)."),
    SamplerSpec("res_multistep_ancestral", multistep.sample_res_multistep_ancestral, 1, 2, True, _ALL, "seeded",
                options=_ANC, nfe_fn=euler.nfe_one_per_step,
                doc="Ancestral RES multistep (ComfyUI): the RES step to sigma_down, then fresh noise."),
    SamplerSpec("res_multistep_ancestral_cfg_pp", multistep.sample_res_multistep_ancestral_cfg_pp, 1, 2, True,
                _ALL, "seeded", options=_ANC, needs_uncond=True, nfe_fn=euler.nfe_one_per_step,
                doc="Ancestral RES multistep CFG++ (ComfyUI)."),
    SamplerSpec("gradient_estimation", gradient.sample_gradient_estimation, 1, 1, False, _ALL, "none",
                options=("ge_gamma",), nfe_fn=euler.nfe_one_per_step,
                doc="Gradient estimation (Permenter & Yuan 2024, arXiv 2306.04848): Euler plus (gamma - 1) times "
                    "the slope change; first order."),
    SamplerSpec("gradient_estimation_cfg_pp", gradient.sample_gradient_estimation_cfg_pp, 1, 1, False, _ALL,
                "none", options=("ge_gamma",), needs_uncond=True, nfe_fn=euler.nfe_one_per_step,
                doc="Gradient estimation with CFG++ renoising (ComfyUI)."),
    SamplerSpec("er_sde", sde.sample_er_sde, 1, 1, True, _ALL, "seeded", options=("s_noise", "max_stage"),
                nfe_fn=euler.nfe_one_per_step,
                doc="ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169), ComfyUI's VP data-prediction form; "
                    "no deterministic member, declared first order."),
    SamplerSpec("seeds_2", sde.sample_seeds_2, 2, 2, True, _ALL, "seeded", options=("eta", "s_noise", "r"),
                nfe_fn=sde.nfe_stages(2),
                doc="SEEDS-2 (Gonzalez et al. 2023, arXiv 2305.14267), two-stage exponential SDE solver."),
    SamplerSpec("seeds_3", sde.sample_seeds_3, 3, 3, True, _ALL, "seeded", options=("eta", "s_noise", "r_1", "r_2"),
                nfe_fn=sde.nfe_stages(3),
                doc="SEEDS-3 (Gonzalez et al. 2023, arXiv 2305.14267), three-stage exponential SDE solver."),
    SamplerSpec("sa_solver", sa_solver.sample_sa_solver, 1, 3, True, _ALL, "seeded", options=_SA, max_order=4,
                nfe_fn=sa_solver.nfe_sa_solver,
                doc="SA-Solver (Xue et al. 2023, arXiv 2309.05019): stochastic Adams predictor 3 / corrector 4; "
                    "the order-2 corrector of its first step makes a run 3rd order (shows past ~500 steps)."),
    SamplerSpec("sa_solver_pece", sa_solver.sample_sa_solver_pece, 2, 3, True, _ALL, "seeded", options=_SA,
                max_order=4, nfe_fn=sa_solver.nfe_sa_solver_pece,
                doc="SA-Solver in PECE mode (re-evaluates D after each correction; Xue et al. 2023), 3rd order."),
]

SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in _SPECS}


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
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise SamplingError(f"sampler {name!r} does not take option(s) {unknown}; it takes "
                            f"{sorted(spec.options) or 'none'}")
    return spec.fn(model, x, sigmas, noise=noise, callback=callback, **options)
