"""Every registered sampler runs through run.sample() with the noise source it declares (seeded or Brownian)."""

from __future__ import annotations

import pytest
import torch

from iga.sampling.noise import initial_noise, make_noise_sampler
from iga.sampling.run import sample
from iga.sampling.samplers import SAMPLERS, expected_nfe
from iga.sampling.testing import GaussianDenoiser, GuidedGaussianDenoiser

GRIDS = {
    "vp": torch.cat([(14.6 ** (1 / 7) + torch.linspace(0, 1, 9) * (0.03 ** (1 / 7) - 14.6 ** (1 / 7))) ** 7,
                     torch.zeros(1)]),
    "flow": torch.linspace(1.0, 0.0, 10),
}


def model_for(name: str, kind: str):
    base = GaussianDenoiser(torch.tensor([0.3, -0.2, 0.5]), torch.tensor([0.7, 1.0, 1.3]), kind)
    if SAMPLERS[name].needs_uncond:
        return GuidedGaussianDenoiser(base, GaussianDenoiser(0.0, 1.0, kind), 2.0)
    return base


CASES = [(n, k) for n in SAMPLERS for k in GRIDS if k == "vp" or "flow" in SAMPLERS[n].parameterizations]


@pytest.mark.parametrize("name,kind", CASES)
def test_runs_through_sample_with_declared_noise(name: str, kind: str) -> None:
    spec, sig = SAMPLERS[name], GRIDS[kind]
    outs = []
    for _ in range(2):
        model = model_for(name, kind)
        init = initial_noise((3,), [5, 6])
        noise = make_noise_sampler(spec.noise, init, [5, 6], sig)
        outs.append(sample(spec, model, init, sig, noise_sampler=noise))
        assert outs[-1].shape == init.shape and torch.isfinite(outs[-1]).all()
        want = expected_nfe(name, sig, kind=kind)
        assert want is None or model.nfe == want
    assert torch.equal(outs[0], outs[1]), "same seeds must reproduce the image"
