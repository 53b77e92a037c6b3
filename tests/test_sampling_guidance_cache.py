"""CFGDenoiser builds the batched [uncond; cond] conditioning once, and rebuilds it whenever it must."""

from __future__ import annotations

import torch

from iga.sampling.guidance import CFGDenoiser
from iga.sampling.parameterization import VPParameterization, sd_schedule


class Recorder:
    """A raw model whose output depends on the conditioning; remembers the conditioning tensors it was given."""

    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def __call__(self, x, t, cond):
        c = cond["c"]
        self.seen.append(c)
        return x * 0.1 + c.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)


def make(cond, uncond, raw=None):
    return CFGDenoiser(raw or Recorder(), VPParameterization(sd_schedule(), "eps"), {"c": cond}, {"c": uncond}, 5.0)


def test_batched_conditioning_is_built_once_and_is_the_concatenation():
    gen = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(1, 3, 2, generator=gen), torch.randn(1, 3, 2, generator=gen)
    x, s = torch.randn(2, 4, 2, 2, generator=gen), torch.tensor([3.0, 3.0])
    raw = Recorder()
    den = make(cond, uncond, raw)
    first, second = den(x, s), den(x, s)
    assert raw.seen[0] is raw.seen[1]  # no new concatenation on the second call
    assert torch.equal(raw.seen[0], torch.cat([uncond.expand(2, 3, 2), cond.expand(2, 3, 2)]))
    assert torch.equal(first, second)


def test_new_conditioning_batch_size_or_run_rebuilds_it():
    gen = torch.Generator().manual_seed(1)
    cond, uncond, other = (torch.randn(1, 3, 2, generator=gen) for _ in range(3))
    x, s = torch.randn(1, 4, 2, 2, generator=gen), torch.tensor([2.0])
    raw = Recorder()
    den = make(cond, uncond, raw)
    den(x, s)
    den.cond = {"c": other}  # reassigned between calls: must be used at once
    got = den(x, s)
    assert torch.equal(got, make(other, uncond)(x, s))
    assert torch.equal(raw.seen[-1][1:], other)
    den(torch.cat([x, x]), torch.tensor([2.0, 2.0]))  # another batch size
    assert raw.seen[-1].shape[0] == 4
    before = raw.seen[-1]
    den.reset_run()
    den(torch.cat([x, x]), torch.tensor([2.0, 2.0]))
    assert raw.seen[-1] is not before  # a new run starts from a fresh concatenation (sees in-place edits)


def test_uncond_denoised_still_returned_when_asked():
    gen = torch.Generator().manual_seed(2)
    cond, uncond = torch.randn(1, 3, 2, generator=gen), torch.randn(1, 3, 2, generator=gen)
    x, s = torch.randn(1, 4, 2, 2, generator=gen), torch.tensor([1.5])
    guided, u = make(cond, uncond).denoise_with_uncond(x, s)
    plain_uncond = CFGDenoiser(Recorder(), VPParameterization(sd_schedule(), "eps"), {"c": uncond}, None, 1.0)(x, s)
    assert torch.allclose(u, plain_uncond) and torch.equal(guided, make(cond, uncond)(x, s))
