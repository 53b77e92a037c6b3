"""The samplers of the sampling engine (k-diffusion convention), one function each, and their registry.

Every sampler is ``fn(model, x, sigmas, *, noise=None, callback=None, **options) -> Tensor``: ``x`` is the
initial state at sigmas[0], ``sigmas`` a strictly decreasing 1-D tensor (normally ending in 0), ``model(x,
sigma_batch) -> denoised`` with ``model.kind`` "vp" or "flow", ``noise`` a NoiseSampler (required by stochastic
samplers), and ``callback(StepInfo)`` is called after every step. See ``registry.SAMPLERS`` for what each declares.
"""

from iga.sampling.samplers.registry import SAMPLERS, expected_nfe, get_sampler, sample_with
from iga.sampling.samplers.restart import restart_segments

__all__ = ["SAMPLERS", "expected_nfe", "get_sampler", "restart_segments", "sample_with"]
