"""Every sampler iga knows, stated once: names in every tool, order, model calls, noise, options, description.

The engine's registry (``iga.sampling.samplers.registry``) maps these names to functions and reads everything else
from here; the name table (``iga.recipe.names``), the guard, provenance labels and ``iga samplers`` read it too.

Fields: ``order`` is the measured global order of a whole run (start-up and final steps included;
``tests/test_sampling_samplers_order.py``), ``formula_order`` the order of the repeating update when it is higher;
``nfe_per_step`` model calls per ordinary step (0: adaptive); ``noise`` the noise source the sampler draws from
("none", "seeded": per-step seeded normal noise, "brownian": a seeded Brownian tree, "brownian_device": the same
tree generated on the model's device, ComfyUI's ``*_gpu``); ``comfyui``: the name is one of ComfyUI's KSampler
names (its maths, checked by ``tests/test_sampling_comfyui_parity.py``); ``a1111_default_schedule``: what A1111's
"Automatic" schedule type means for it. Where tools disagree, ``variant`` says how.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iga.catalog.options import OptionSpec, sampler_options

PARAMETERIZATIONS: tuple[str, ...] = ("eps", "v", "x0", "flow")


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler's facts (see the module doc for the fields)."""

    name: str
    a1111_label: str | None
    order: int
    nfe_per_step: int
    noise: str
    stochastic: bool
    formula_order: int | None = None
    parameterizations: tuple[str, ...] = PARAMETERIZATIONS
    options: tuple[str, ...] = ()
    discard_penultimate: bool = False  # ComfyUI/A1111 compute steps+1 sigmas and drop the penultimate
    needs_uncond: bool = False  # CFG++: the sampler renoises with the unconditional prediction
    adaptive: bool = False  # chooses its own steps: the call count is not known in advance
    comfyui: bool = True
    a1111_default_schedule: str = "normal"
    aliases: tuple[str, ...] = ()
    diffusers: str | None = None  # scheduler class
    diffusers_flags: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    description: str = ""  # one sentence
    doc: str = ""  # the method, with its reference

    @property
    def option_specs(self) -> dict[str, OptionSpec]:
        """Each option's type and allowed values (shared meanings, narrowed where this sampler allows less)."""
        return sampler_options(self.name, self.options)


_S = SamplerInfo
_ENTRIES: tuple[SamplerInfo, ...] = (
    _S('euler', 'Euler', 1, 1, 'seeded', False,
       options=('s_churn', 's_tmin', 's_tmax', 's_noise'),
       aliases=('k_euler',),
       diffusers='EulerDiscreteScheduler',
       description="Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 2).",
       doc='Euler in sigma (Karras et al. 2022, arXiv 2206.00364, Alg. 2); noise only with s_churn > 0.'),
    _S('euler_ancestral', 'Euler a', 1, 1, 'seeded', True,
       options=('eta', 's_noise'),
       aliases=('k_euler_a', 'k_euler_ancestral', 'euler_a'),
       diffusers='EulerAncestralDiscreteScheduler',
       description='Euler step down to sigma_down, then fresh noise.',
       doc="Ancestral Euler (k-diffusion; DDIM's sigma_t(eta), Song et al. 2020, arXiv 2010.02502); "
            'rectified-flow renoising for flow models.'),
    _S('euler_cfg_pp', 'Euler CFG++', 1, 1, 'none', False,
       needs_uncond=True,
       description='Euler with CFG++ renoising (Chung et al. 2024).',
       doc='Euler CFG++ (Chung et al. 2024, arXiv 2406.08070): renoise with the unconditional eps.'),
    _S('euler_ancestral_cfg_pp', 'Euler a CFG++', 1, 1, 'seeded', True,
       options=('eta', 's_noise'),
       needs_uncond=True,
       description='Euler ancestral with CFG++ renoising.',
       doc='Ancestral Euler CFG++ (Chung et al. 2024, arXiv 2406.08070).'),
    _S('heun', 'Heun', 2, 2, 'seeded', False,
       options=('s_churn', 's_tmin', 's_tmax', 's_noise'),
       aliases=('k_heun',),
       diffusers='HeunDiscreteScheduler',
       description="Heun's 2nd-order method (Karras et al. 2022, Alg. 1); the last step is Euler.",
       doc="Heun's 2nd-order method in sigma (Karras et al. 2022, Alg. 1/2); Euler on the step to 0."),
    _S('heunpp2', 'Heun++ 2', 1, 3, 'seeded', False,
       options=('s_churn', 's_tmin', 's_tmax', 's_noise'),
       description='Heun++: three-stage Heun variant.',
       doc="Heun++ (Carzit's sd-webui-samplers-scheduler): three slopes weighted by sigma/(3 sigma_0); the "
            'weights miss the 2nd-order condition, so it is 1st order (3/2/1 calls per step).'),
    _S('dpm_2', 'DPM2', 2, 2, 'seeded', False,
       options=('s_churn', 's_tmin', 's_tmax', 's_noise'),
       discard_penultimate=True,
       a1111_default_schedule='karras',
       aliases=('k_dpm_2', 'kdpm_2'),
       diffusers='KDPM2DiscreteScheduler',
       description='DPM-Solver-2 midpoint in log-sigma (not DPM++ 2M); ComfyUI drops the penultimate sigma.',
       doc='DPM2: midpoint rule in log sigma (k-diffusion, after DPM-Solver-2, Lu et al. 2022, arXiv '
            '2206.00927).'),
    _S('dpm_2_ancestral', 'DPM2 a', 2, 2, 'seeded', True,
       options=('eta', 's_noise'),
       discard_penultimate=True,
       a1111_default_schedule='karras',
       aliases=('k_dpm_2_a', 'kdpm_2_a'),
       diffusers='KDPM2AncestralDiscreteScheduler',
       description='DPM2 with ancestral noise.',
       doc='Ancestral DPM2: DPM2 step to sigma_down, then renoise (eta = 0 is dpm_2).'),
    _S('lms', 'LMS', 2, 1, 'none', False,
       formula_order=4,
       options=('order',),
       aliases=('k_lms',),
       variant='canonical = ComfyUI (the step to sigma 0 is x = D); k-diffusion (A1111) and diffusers '
                'LMSDiscreteScheduler integrate the polynomial down to 0: that is `lms_exact`.',
       description='Linear multistep (order 4) on the ODE in sigma.',
       doc="Linear multistep (variable-step Adams-Bashforth, order 4) in sigma, ComfyUI's: x = D on the step to "
            '0; the Euler start-up step makes a whole run 2nd order.'),
    _S('lms_exact', None, 2, 1, 'none', False,
       formula_order=4,
       options=('order',),
       comfyui=False,
       aliases=('lms_a1111', 'lms_diffusers'),
       diffusers='LMSDiscreteScheduler',
       description='Linear multistep with the Adams-Bashforth step also on the step to sigma 0.',
       doc='lms integrating the Adams-Bashforth polynomial on the step to 0 too (k-diffusion/A1111, diffusers '
            'LMSDiscreteScheduler).'),
    _S('dpm_fast', 'DPM fast', 2, 1, 'seeded', False,
       formula_order=3,
       options=('eta', 's_noise'),
       aliases=('k_dpm_fast',),
       description='DPM-Solver-fast: a fixed NFE budget of `steps` split into 3rd/2nd/1st-order stages.',
       doc='DPM-Solver-fast (Lu et al. 2022, arXiv 2206.00927): steps-many calls spent as orders 3,..,3,2,1; 3rd'
            ' order only when steps % 3 == 2. Uses only the first/last nonzero sigma.'),
    _S('dpm_adaptive', 'DPM adaptive', 3, 0, 'seeded', False,
       options=('order', 'rtol', 'atol', 'h_init', 'pcoeff',
                'icoeff', 'dcoeff', 'accept_safety', 'eta', 's_noise', 'max_nfe'),
       adaptive=True,
       aliases=('k_dpm_ad', 'k_dpm_adaptive'),
       description="DPM-Solver-12/23 with adaptive step size; ignores the schedule's shape.",
       doc='DPM-Solver-23 with PID-controlled adaptive steps (Lu et al. 2022); NFE set by rtol/atol.'),
    _S('dpmpp_2s_ancestral', 'DPM++ 2S a', 2, 2, 'seeded', True,
       options=('eta', 's_noise'),
       a1111_default_schedule='karras',
       aliases=('k_dpmpp_2s_a',),
       description='DPM-Solver++(2S) single-step with ancestral noise.',
       doc="Ancestral DPM-Solver++(2S) (Lu et al. 2022b, arXiv 2211.01095; k-diffusion 'DPM++ 2S a')."),
    _S('dpmpp_sde', 'DPM++ SDE', 2, 2, 'brownian', True,
       options=('eta', 's_noise', 'r'),
       a1111_default_schedule='karras',
       aliases=('k_dpmpp_sde',),
       diffusers='DPMSolverSDEScheduler',
       description='DPM-Solver++ SDE (r=1/2) with Brownian-tree noise.',
       doc="DPM-Solver++ SDE, two stages with r = 1/2 and Brownian-tree noise (k-diffusion 'DPM++ SDE')."),
    _S('dpmpp_2m', 'DPM++ 2M', 2, 1, 'none', False,
       a1111_default_schedule='karras',
       aliases=('k_dpmpp_2m',),
       diffusers='DPMSolverMultistepScheduler',
       diffusers_flags={'algorithm_type': 'dpmsolver++', 'solver_order': 2},
       description='DPM-Solver++(2M) multistep (Lu et al. 2022).',
       doc='DPM-Solver++(2M), two-step exponential multistep on D (Lu et al. 2022b, arXiv 2211.01095).'),
    _S('dpmpp_2m_cfg_pp', 'DPM++ 2M CFG++', 2, 1, 'none', False,
       needs_uncond=True,
       a1111_default_schedule='karras',
       description='DPM++ 2M with CFG++ renoising.',
       doc="DPM-Solver++(2M) CFG++ (ComfyUI's form of Chung et al. 2024)."),
    _S('dpmpp_2m_sde', 'DPM++ 2M SDE', 2, 1, 'brownian', True,
       options=('eta', 's_noise', 'solver_type'),
       a1111_default_schedule='exponential',
       aliases=('k_dpmpp_2m_sde',),
       diffusers='DPMSolverMultistepScheduler',
       diffusers_flags={'algorithm_type': 'sde-dpmsolver++', 'solver_order': 2, 'solver_type': 'midpoint'},
       variant='diffusers draws plain randn noise, not a Brownian tree: not bit-comparable with ComfyUI/A1111.',
       description='DPM-Solver++(2M) SDE, midpoint form, Brownian-tree noise.',
       doc='SDE-DPM-Solver++(2M) (Lu et al. 2022b), midpoint correction, Brownian-tree noise.'),
    _S('dpmpp_2m_sde_heun', 'DPM++ 2M SDE Heun', 2, 1, 'brownian', True,
       options=('eta', 's_noise'),
       a1111_default_schedule='exponential',
       aliases=('k_dpmpp_2m_sde_heun',),
       diffusers='DPMSolverMultistepScheduler',
       diffusers_flags={'algorithm_type': 'sde-dpmsolver++', 'solver_order': 2, 'solver_type': 'heun'},
       description='DPM-Solver++(2M) SDE, Heun form, Brownian-tree noise.',
       doc="SDE-DPM-Solver++(2M) with the 'heun' (exact linear-interpolant) correction."),
    _S('dpmpp_3m_sde', 'DPM++ 3M SDE', 2, 1, 'brownian', True,
       formula_order=2,
       options=('eta', 's_noise'),
       a1111_default_schedule='exponential',
       aliases=('k_dpmpp_3m_sde',),
       diffusers='DPMSolverMultistepScheduler',
       diffusers_flags={'algorithm_type': 'sde-dpmsolver++', 'solver_order': 3},
       variant='canonical = ComfyUI (keeps the penultimate sigma); A1111 discards it; diffusers is only approximate.',
       description='DPM-Solver++(3M) SDE with Brownian-tree noise.',
       doc='SDE-DPM-Solver++(3M) (k-diffusion/ComfyUI): three-step multistep; with the published phi3 weight its'
            ' steady-state step is 2nd order (see the function docstring).'),
    _S('ddpm', 'DDPM', 1, 1, 'seeded', True,
       diffusers='DDPMScheduler',
       description='Ancestral DDPM posterior step.',
       doc='Ancestral DDPM posterior step in VP coordinates (Ho et al. 2020, arXiv 2006.11239).'),
    _S('ddim', 'DDIM', 1, 1, 'seeded', False,
       options=('eta', 's_noise'),
       a1111_default_schedule='ddim_uniform',
       diffusers='DDIMScheduler',
       description='DDIM (eta=0 is Euler in sigma space for eps models); eta > 0 adds noise.',
       doc='DDIM (Song et al. 2020, arXiv 2010.02502); eta = 0 (default) is Euler in sigma, eta > 0 the '
            'stochastic DDIM step (noise only then).'),
    _S('lcm', 'LCM', 0, 1, 'seeded', True,
       options=('s_noise',),
       diffusers='LCMScheduler',
       description='Latent consistency sampling: denoise, then renoise to the next sigma.',
       doc='Latent Consistency Model sampling (Luo et al. 2023, arXiv 2310.04378): x = D, then fresh noise; for '
            'distilled models, not a convergent solver (order 0).'),
    _S('ipndm', 'iPNDM', 2, 1, 'none', False,
       options=('max_order',),
       variant='canonical = ComfyUI (the step to sigma 0 is x = D); diffusers IPNDMScheduler takes the '
                'Adams-Bashforth step there too: that is `ipndm_diffusers`.',
       description='Improved pseudo-numerical (Adams-Bashforth, fixed coefficients).',
       doc='iPNDM (Zhang & Chen 2022, arXiv 2204.13902): equal-step Adams-Bashforth up to 4th order in sigma, x '
            '= D on the step to 0 (ComfyUI); 4th order only on uniform sigma grids, 2nd on others.'),
    _S('ipndm_diffusers', None, 2, 1, 'none', False,
       options=('max_order',),
       comfyui=False,
       diffusers='IPNDMScheduler',
       description='iPNDM with the Adams-Bashforth step also on the step to sigma 0 (diffusers).',
       doc='ipndm with the Adams-Bashforth step on the step to 0 too (diffusers IPNDMScheduler).'),
    _S('ipndm_v', 'iPNDM v', 2, 1, 'none', False,
       formula_order=3,
       options=('max_order',),
       variant="ComfyUI's = zju-pi/diff-sampler's weights, which are not the exact variable-step Adams-Bashforth "
                'ones beyond 2nd order; the exact form is `lms` / `lms_exact`.',
       description="iPNDM with step-size-aware Adams-Bashforth coefficients (diff-sampler's formula).",
       doc="Variable-step iPNDM, ComfyUI's (zju-pi/diff-sampler's weights): not the variable-step AB beyond AB2;"
            ' steady state 3rd order on uniform/geometric grids, 2nd on Karras (lms is the exact AB).'),
    _S('deis', 'DEIS', 2, 1, 'none', False,
       formula_order=3,
       options=('max_order',),
       diffusers='DEISMultistepScheduler',
       variant="canonical = ComfyUI (tAB: polynomial in the time of a VP-SDE fitted to EDM's range); diffusers' "
                'DEISMultistepScheduler is log-rho DEIS, equal only at order 1.',
       description='Diffusion exponential integrator sampler (Zhang & Chen 2022), order <= 3.',
       doc="DEIS tAB (Zhang & Chen 2022, arXiv 2204.13902), ComfyUI's: polynomial extrapolation in the time of a"
            " VP-SDE fitted to EDM's range, order <= 3 (<= 4 by option); Euler start: a run is 2nd order."),
    _S('uni_pc', 'UniPC', 2, 1, 'none', False,
       formula_order=4,
       options=('order', 'lower_order_final'),
       discard_penultimate=True,
       aliases=('unipc', 'uni_pc_bh1'),
       variant="canonical = ComfyUI/A1111 (original UniPC code: a final sigma 0 becomes 1e-3); diffusers' "
                'UniPCMultistepScheduler ends with x = D: that is `uni_pc_diffusers`.',
       description='UniPC predictor-corrector, B(h)=h (bh1).',
       doc='UniPC bh1 predictor-corrector (Zhao et al. 2023, arXiv 2302.04867), order min(3, steps-1), '
            "ComfyUI's: a final 0 becomes sigma 1e-3; the lower-order final step makes a run 2nd order."),
    _S('uni_pc_bh2', 'UniPC BH2', 2, 1, 'none', False,
       formula_order=4,
       options=('order', 'lower_order_final'),
       discard_penultimate=True,
       variant="canonical = ComfyUI (ends at sigma 1e-3); diffusers' form is `uni_pc_bh2_diffusers`.",
       description='UniPC predictor-corrector, B(h)=e^h-1 (bh2).',
       doc="UniPC bh2 (B(h) = e^-h - 1) predictor-corrector (Zhao et al. 2023), ComfyUI's (ends at 1e-3)."),
    _S('uni_pc_diffusers', None, 2, 1, 'none', False,
       formula_order=4,
       options=('order', 'lower_order_final'),
       comfyui=False,
       diffusers='UniPCMultistepScheduler',
       diffusers_flags={'solver_type': 'bh1'},
       description='UniPC bh1 as diffusers runs it: the step to sigma 0 is x = D.',
       doc="UniPC bh1 as diffusers' UniPCMultistepScheduler: as uni_pc, but x = D on the step to 0."),
    _S('uni_pc_bh2_diffusers', None, 2, 1, 'none', False,
       formula_order=4,
       options=('order', 'lower_order_final'),
       comfyui=False,
       diffusers='UniPCMultistepScheduler',
       diffusers_flags={'solver_type': 'bh2'},
       description='UniPC bh2 as diffusers runs it: the step to sigma 0 is x = D.',
       doc="UniPC bh2 as diffusers' UniPCMultistepScheduler: as uni_pc_bh2, but x = D on the step to 0."),
    _S('res_multistep', 'RES multistep', 2, 1, 'none', False,
       description='Refined exponential solver, multistep.',
       doc='RES 2nd-order exponential multistep (Zhang et al. 2023, arXiv 2308.02157).'),
    _S('restart', 'Restart', 2, 2, 'seeded', True,
       parameterizations=('eps', 'v', 'x0'),
       options=('s_noise', 'restart_list'),
       comfyui=False,
       a1111_default_schedule='karras',
       description='Restart sampling (Xu et al. 2023): Heun steps with forward-noised restart segments.',
       doc="Restart sampling (Xu et al. 2023, arXiv 2306.14878), A1111's defaults: Heun with restarts 0.1 -> 2 "
            'from 20 steps on (the base grid becomes Karras); plain Heun below 20 steps.'),
    _S('dpmpp_2s_ancestral_cfg_pp', None, 2, 2, 'seeded', True,
       options=('eta', 's_noise'),
       needs_uncond=True,
       aliases=('DPM++ 2S a CFG++',),
       description='DPM++ 2S a with CFG++ renoising (ComfyUI).',
       doc='Ancestral DPM-Solver++(2S) CFG++ (ComfyUI; Chung et al. 2024, arXiv 2406.08070).'),
    _S('dpmpp_sde_gpu', None, 2, 2, 'brownian_device', True,
       options=('eta', 's_noise', 'r'),
       aliases=('DPM++ SDE GPU',),
       variant="the Brownian tree is generated on the model's device: equal to dpmpp_sde on the CPU, not on a GPU.",
       description="DPM++ SDE with its Brownian-tree noise generated on the model's device.",
       doc="dpmpp_sde with its Brownian tree generated on the model's device (= dpmpp_sde on the CPU)."),
    _S('dpmpp_2m_sde_gpu', None, 2, 1, 'brownian_device', True,
       options=('eta', 's_noise', 'solver_type'),
       aliases=('DPM++ 2M SDE GPU',),
       variant="the Brownian tree is generated on the model's device: equal to dpmpp_2m_sde on the CPU.",
       description="DPM++ 2M SDE with its Brownian-tree noise generated on the model's device.",
       doc="dpmpp_2m_sde with its Brownian tree on the model's device (= dpmpp_2m_sde on the CPU)."),
    _S('dpmpp_2m_sde_heun_gpu', None, 2, 1, 'brownian_device', True,
       options=('eta', 's_noise'),
       aliases=('DPM++ 2M SDE Heun GPU',),
       variant="the Brownian tree is generated on the model's device: equal to dpmpp_2m_sde_heun on the CPU.",
       description="DPM++ 2M SDE Heun with its Brownian-tree noise generated on the model's device.",
       doc="dpmpp_2m_sde_heun with its Brownian tree on the model's device (= the CPU form on the CPU)."),
    _S('dpmpp_3m_sde_gpu', None, 2, 1, 'brownian_device', True,
       formula_order=2,
       options=('eta', 's_noise'),
       aliases=('DPM++ 3M SDE GPU',),
       variant="the Brownian tree is generated on the model's device: equal to dpmpp_3m_sde on the CPU.",
       description="DPM++ 3M SDE with its Brownian-tree noise generated on the model's device.",
       doc="dpmpp_3m_sde with its Brownian tree on the model's device (= dpmpp_3m_sde on the CPU)."),
    _S('res_multistep_cfg_pp', None, 2, 1, 'none', False,
       needs_uncond=True,
       aliases=('RES multistep CFG++',),
       description='RES multistep with CFG++ renoising (ComfyUI).',
       doc='RES multistep CFG++ (ComfyUI; Chung et al. 2024, arXiv 2406.08070).'),
    _S('res_multistep_ancestral', None, 2, 1, 'seeded', True,
       options=('eta', 's_noise'),
       description='RES multistep step to sigma_down, then fresh noise.',
       doc='Ancestral RES multistep (ComfyUI): the RES step to sigma_down, then fresh noise.'),
    _S('res_multistep_ancestral_cfg_pp', None, 2, 1, 'seeded', True,
       options=('eta', 's_noise'),
       needs_uncond=True,
       description='Ancestral RES multistep with CFG++.',
       doc='Ancestral RES multistep CFG++ (ComfyUI).'),
    _S('gradient_estimation', None, 1, 1, 'none', False,
       options=('ge_gamma',),
       description='Gradient estimation (Permenter & Yuan 2024): Euler plus a slope-change term (ge_gamma = 2).',
       doc='Gradient estimation (Permenter & Yuan 2024, arXiv 2306.04848): Euler plus (gamma - 1) times the '
            'slope change; first order.'),
    _S('gradient_estimation_cfg_pp', None, 1, 1, 'none', False,
       options=('ge_gamma',),
       needs_uncond=True,
       description='Gradient estimation with CFG++ renoising.',
       doc='Gradient estimation with CFG++ renoising (ComfyUI).'),
    _S('er_sde', None, 1, 1, 'seeded', True,
       options=('s_noise', 'max_stage'),
       aliases=('ER-SDE',),
       description='Extended reverse-time SDE solver, ER-SDE-Solver-3 (Cui et al. 2023).',
       doc="ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169), ComfyUI's VP data-prediction form; no "
            'deterministic member, declared first order.'),
    _S('seeds_2', None, 2, 2, 'seeded', True,
       options=('eta', 's_noise', 'r'),
       aliases=('SEEDS-2',),
       description='SEEDS-2 exponential SDE solver (Gonzalez et al. 2023), two stages.',
       doc='SEEDS-2 (Gonzalez et al. 2023, arXiv 2305.14267), two-stage exponential SDE solver.'),
    _S('seeds_3', None, 3, 3, 'seeded', True,
       options=('eta', 's_noise', 'r_1', 'r_2'),
       aliases=('SEEDS-3',),
       description='SEEDS-3 exponential SDE solver (Gonzalez et al. 2023), three stages.',
       doc='SEEDS-3 (Gonzalez et al. 2023, arXiv 2305.14267), three-stage exponential SDE solver.'),
    _S('sa_solver', None, 3, 1, 'seeded', True,
       formula_order=4,
       options=('eta', 's_noise', 'predictor_order', 'corrector_order',
                'sde_start_percent', 'sde_end_percent', 'simple_order_2'),
       aliases=('SA-Solver',),
       description='Stochastic Adams predictor-corrector (Xue et al. 2023), noise in a 20-80 % window.',
       doc='SA-Solver (Xue et al. 2023, arXiv 2309.05019): stochastic Adams predictor 3 / corrector 4; the '
            'order-2 corrector of its first step makes a run 3rd order (shows past ~500 steps).'),
    _S('sa_solver_pece', None, 3, 2, 'seeded', True,
       formula_order=4,
       options=('eta', 's_noise', 'predictor_order', 'corrector_order',
                'sde_start_percent', 'sde_end_percent', 'simple_order_2'),
       aliases=('SA-Solver PECE',),
       description='SA-Solver re-evaluating the model after each correction (PECE).',
       doc='SA-Solver in PECE mode (re-evaluates D after each correction; Xue et al. 2023), 3rd order.'),
)
SAMPLERS: dict[str, SamplerInfo] = {s.name: s for s in _ENTRIES}
COMFYUI_SAMPLERS: tuple[str, ...] = tuple(s.name for s in _ENTRIES if s.comfyui)

# InvokeAI scheduler ids (its SCHEDULER_MAP keys): a `_k` suffix means Karras sigmas.
INVOKEAI_IDS: dict[str, tuple[str, str | None]] = {'euler': ('euler', None),
 'euler_k': ('euler', 'karras'),
 'euler_a': ('euler_ancestral', None),
 'heun': ('heun', None),
 'heun_k': ('heun', 'karras'),
 'lms': ('lms', None),
 'lms_k': ('lms', 'karras'),
 'dpmpp_2m': ('dpmpp_2m', None),
 'dpmpp_2m_k': ('dpmpp_2m', 'karras'),
 'dpmpp_2m_sde': ('dpmpp_2m_sde', None),
 'dpmpp_2m_sde_k': ('dpmpp_2m_sde', 'karras'),
 'dpmpp_sde': ('dpmpp_sde', None),
 'dpmpp_sde_k': ('dpmpp_sde', 'karras'),
 'dpmpp_3m': ('dpmpp_3m_sde', None),
 'dpmpp_3m_k': ('dpmpp_3m_sde', 'karras'),
 'kdpm_2': ('dpm_2', None),
 'kdpm_2_k': ('dpm_2', 'karras'),
 'kdpm_2_a': ('dpm_2_ancestral', None),
 'kdpm_2_a_k': ('dpm_2_ancestral', 'karras'),
 'ddim': ('ddim', None),
 'ddpm': ('ddpm', None),
 'deis': ('deis', None),
 'deis_k': ('deis', 'karras'),
 'unipc': ('uni_pc', None),
 'unipc_k': ('uni_pc', 'karras'),
 'lcm': ('lcm', None)}
