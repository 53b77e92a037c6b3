"""DiscreteVPSchedule.sigma_to_t (precomputed lookup tables) equals the plain interpolation formula bit for bit."""

from __future__ import annotations

import pytest
import torch

from iga.sampling.parameterization import schedule_from_config


def reference(schedule, sigma: torch.Tensor, quantize: bool) -> torch.Tensor:
    """Log-sigma linear interpolation over the whole table, written the straightforward way."""
    ls = schedule.log_sigmas.to(torch.float64)
    log_s = sigma.to(torch.float64).clamp_min(torch.finfo(torch.float64).tiny).log()
    low = (torch.searchsorted(ls, log_s, right=True) - 1).clamp(0, schedule.num_train_timesteps - 2)
    w = ((ls[low] - log_s) / (ls[low] - ls[low + 1])).clamp(0.0, 1.0)
    t = low.to(torch.float64) + w
    return (t.round() if quantize else t).to(torch.float32)


@pytest.mark.parametrize("config", [{"kind": "scaled_linear"}, {"kind": "linear"}, {"kind": "squaredcos_cap_v2"},
                                    {"kind": "scaled_linear", "zero_terminal_snr": True},
                                    {"kind": "scaled_linear", "num_train_timesteps": 2}])
@pytest.mark.parametrize("quantize", [False, True])
def test_sigma_to_t_is_bit_identical_to_the_formula(config, quantize):
    schedule = schedule_from_config(config)
    sigmas = torch.cat([torch.logspace(-7, 7, 20001, dtype=torch.float64).float(), schedule.sigmas,
                        torch.tensor([0.0, -1.0, float("inf"), 1e-45])])
    assert torch.equal(schedule.sigma_to_t(sigmas, quantize=quantize), reference(schedule, sigmas, quantize))
    one = sigmas[12345:12346]
    assert torch.equal(schedule.with_quantize(quantize).sigma_to_t(one), reference(schedule, one, quantize))
