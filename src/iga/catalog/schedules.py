"""Every schedule (sigma spacing) iga knows, stated once: names in every tool, diffusers flags, description.

``diffusers_flags`` are the scheduler-config flags that give the same spacing in diffusers (None: diffusers has no
equivalent). Where tools disagree, the canonical name means ComfyUI's spacing and ``variant`` says how others differ.
The formulas live in ``iga.sampling.schedules``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScheduleInfo:
    """One schedule: canonical id, other tools' names, the diffusers flags that match it."""

    name: str
    a1111_label: str | None
    aliases: tuple[str, ...] = ()
    diffusers_flags: dict[str, Any] | None = None
    variant: str = ""
    description: str = ""
    comfyui: bool = True  # the name is one of ComfyUI's KSampler schedulers (others are separate nodes there)


_H = ScheduleInfo
_ENTRIES: tuple[ScheduleInfo, ...] = (
    _H('normal', 'Normal',
       aliases=('uniform', 'Uniform', 'linspace'),
       diffusers_flags={'timestep_spacing': 'linspace'},
       variant="A1111 'Uniform' is the same spacing; diffusers 'linspace' interpolates sigma linearly in t (ComfyUI "
                'interpolates log sigma): close, not identical.',
       description='Timesteps evenly spaced from t(sigma_max) to t(sigma_min), then 0.'),
    _H('karras', 'Karras',
       diffusers_flags={'use_karras_sigmas': True},
       description='Karras et al. 2022 rho-spacing (rho=7) between sigma_max and sigma_min, then 0.'),
    _H('exponential', 'Exponential',
       diffusers_flags={'use_exponential_sigmas': True},
       description='Evenly spaced in log sigma, then 0.'),
    _H('polyexponential', 'Polyexponential',
       description='exp(r^rho (ln smax - ln smin) + ln smin), rho=1.',
       comfyui=False),
    _H('sgm_uniform', 'SGM Uniform',
       aliases=('SGMUniform',),
       diffusers_flags={'timestep_spacing': 'trailing'},
       variant="diffusers 'trailing' equals 'simple' exactly and is only close to sgm_uniform.",
       description='Evenly spaced timesteps over n+1 points, last dropped, then 0 (SDXL-Lightning/Hyper).'),
    _H('simple', 'Simple',
       aliases=('trailing',),
       diffusers_flags={'timestep_spacing': 'trailing'},
       description="Every (1000/n)-th training sigma from the top, then 0 (= diffusers 'trailing')."),
    _H('ddim_uniform', 'DDIM',
       aliases=('ddim_schedule', 'leading'),
       diffusers_flags={'timestep_spacing': 'leading', 'steps_offset': 1},
       description="Stride 1000//n from t=1 upwards (= diffusers 'leading' with steps_offset=1), then 0."),
    _H('beta', 'Beta',
       variant='canonical = ComfyUI (Beta(0.6,0.6) quantiles index the training sigma table); A1111 and diffusers '
                'use_beta_sigmas place sigmas linearly between sigma_min and sigma_max: that is `beta_linear`.',
       description='Beta-distribution spacing, alpha=beta=0.6 (Lee et al. 2024).'),
    _H('beta_linear', None,
       aliases=('beta_a1111', 'beta_diffusers'),
       diffusers_flags={'use_beta_sigmas': True},
       description='A1111/diffusers beta schedule: sigma_min + Beta^-1 quantile x (sigma_max - sigma_min).',
       comfyui=False),
    _H('linear_quadratic', 'Linear Quadratic',
       description='Linear then quadratic in (1 - sigma); meant for flow models (Mochi).'),
    _H('kl_optimal', 'KL Optimal',
       variant='canonical = ComfyUI (n values then 0); A1111 returns n+1 values ending at sigma_min with no 0.',
       description='tan-spaced between atan(sigma_max) and atan(sigma_min) (Sabour et al. 2024).'),
    _H('ays', 'Align Your Steps',
       aliases=('align_your_steps', 'AYS'),
       variant='canonical = ComfyUI (interpolate the 11-value table log-linearly to n+1, last set to 0); A1111 '
                'interpolates to n and appends 0, so at 10 steps it does not use the table.',
       description='NVIDIA Align-Your-Steps tables for SD1 and SDXL, log-linear interpolation.',
       comfyui=False),
    _H('turbo', 'Turbo',
       aliases=('sd_turbo', 'SDTurbo', 'sdturbo'),
       description='ComfyUI SDTurboScheduler: timesteps 999, 899, ... (first n of 10), then 0.',
       comfyui=False),
    _H('time_uniform', None,
       aliases=('flux', 'flow_uniform'),
       variant="ComfyUI's `simple` picks these points from its 1000-entry table: equal when n divides 1000.",
       description='Flow models: sigma = shift(1 - k/n), uniform flow time (the Flux reference, diffusers).',
       comfyui=False),
    _H('explicit', 'Explicit grid',
       aliases=('grid', 'custom'),
       description="The recipe's own sigma grid, monotonically subsampled for other step counts.",
       comfyui=False),
)
SCHEDULES: dict[str, ScheduleInfo] = {s.name: s for s in _ENTRIES}
COMFYUI_SCHEDULES: tuple[str, ...] = tuple(s.name for s in _ENTRIES if s.comfyui)
