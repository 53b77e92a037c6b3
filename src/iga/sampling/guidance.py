"""Classifier-free guidance as a denoiser wrapper, with guidance rescale and pluggable hooks (CFG-Zero*, APG).

:class:`CFGDenoiser` wraps a raw network and a parameterization (``VPParameterization`` or
``FlowParameterization``), so the same class serves eps, v, x0 and flow models. Per evaluation it makes
ONE raw-model call on the batch ``[uncond, cond]`` (concatenated key by key along dim 0), which counts as
one NFE; at ``scale == 1`` (``math.isclose``) the uncond half is skipped unless a CFG++ sampler asks for it
through :meth:`CFGDenoiser.denoise_with_uncond`.

Spaces. Guidance is combined on the network's raw **prediction** (eps, v or flow velocity), as diffusers
does. Plain CFG is the same in any space (the map prediction -> denoised is affine with shared
coefficients), but guidance rescale is not: we compute it on the prediction, with the standard deviation
over all non-batch dims, exactly like diffusers' ``rescale_noise_cfg`` -- for v-prediction models that is
the paper's v-space, for eps models it is what diffusers' SD pipelines do. (ComfyUI's RescaleCFG instead
converts eps models to v-space and works in x0 space for flow, so its results differ for eps/flow models.)
Hooks declare the space they want (``"prediction"`` or ``"denoised"``) and get converted tensors.

Order per call: pre hooks -> combine (first hook whose ``combine`` returns a tensor, else
``u + w (c - u)``) -> guidance rescale -> post hooks -> denoised. At scale 1 the guided prediction is the
cond prediction (pre/combine hooks and rescale are not applied, whether or not uncond was evaluated, so a
CFG++ call and a plain call agree); post hooks always run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

from iga.sampling.base import Conditioning, ModelKind, RawModel
from iga.sampling.parameterization import ModelParameterization, _check_cond, _sigma_batch

Space = Literal["prediction", "denoised"]


@dataclass(frozen=True)
class GuidanceContext:
    """What a hook knows about the current evaluation."""

    x: torch.Tensor  # sigma-space state being denoised
    sigma: torch.Tensor  # per-image sigma [B]
    scale: float  # the CFG scale w
    call_index: int  # guided evaluations so far in this run (0 for the first)


@runtime_checkable
class GuidanceHook(Protocol):
    """A guidance variant. All tensors are in the hook's ``space``; ``uncond`` is None when it was skipped."""

    space: Space

    def reset(self) -> None:
        """Forget per-run state (called at the start of every sampling run)."""
        ...

    def pre(self, ctx: GuidanceContext, cond: torch.Tensor, uncond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Modify (cond, uncond) before they are combined."""
        ...

    def combine(self, ctx: GuidanceContext, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor | None:
        """Return a replacement for the CFG combination, or None to keep ``u + w (c - u)``."""
        ...

    def post(self, ctx: GuidanceContext, guided: torch.Tensor, cond: torch.Tensor,
             uncond: torch.Tensor | None) -> torch.Tensor:
        """Modify the guided result (also called when the uncond pass was skipped)."""
        ...


class BaseGuidanceHook:
    """No-op defaults for every GuidanceHook method; subclass and override what you need."""

    space: Space = "prediction"
    needs_uncond_at_scale_one: bool = False  # force the uncond pass even at scale 1

    def reset(self) -> None:
        """No state by default."""

    def pre(self, ctx: GuidanceContext, cond: torch.Tensor, uncond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity."""
        return cond, uncond

    def combine(self, ctx: GuidanceContext, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor | None:
        """Keep standard CFG."""
        return None

    def post(self, ctx: GuidanceContext, guided: torch.Tensor, cond: torch.Tensor,
             uncond: torch.Tensor | None) -> torch.Tensor:
        """Identity."""
        return guided


def _flat_dims(t: torch.Tensor) -> list[int]:
    return list(range(1, t.ndim))


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Lin et al. 2024 s3.4: ``phi * guided * std(cond) / std(guided) + (1 - phi) * guided`` (std per image)."""
    dims = _flat_dims(guided)
    std_c = cond.std(dim=dims, keepdim=True)
    std_g = guided.std(dim=dims, keepdim=True).clamp_min(torch.finfo(guided.dtype).tiny)
    return phi * (guided * (std_c / std_g)) + (1.0 - phi) * guided


class CFGZeroStar(BaseGuidanceHook):
    """CFG-Zero* (Fan et al. 2025, arXiv 2503.18886) in prediction space.

    ``s* = <c, u> / (||u||^2 + 1e-8)`` per image; the uncond prediction becomes ``s* u`` before CFG, giving
    ``s* u + w (c - s* u)``. ``zero_init_steps = K`` makes the first K guided evaluations return a zero
    prediction (diffusers ``ClassifierFreeZeroStarGuidance`` default K=1; ComfyUI's node has no zero-init,
    i.e. K=0). K counts denoiser *calls*, which equals steps for 1-NFE samplers such as Euler.
    """

    space: Space = "prediction"

    def __init__(self, zero_init_steps: int = 0, eps: float = 1e-8):
        if zero_init_steps < 0:
            raise ValueError(f"zero_init_steps must be >= 0, got {zero_init_steps}")
        self.zero_init_steps = int(zero_init_steps)
        self.eps = float(eps)

    def pre(self, ctx: GuidanceContext, cond: torch.Tensor, uncond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale uncond by the optimized s*."""
        c, u = cond.flatten(1).float(), uncond.flatten(1).float()
        s_star = (c * u).sum(1) / ((u * u).sum(1) + self.eps)
        return cond, uncond * s_star.to(uncond.dtype).reshape(-1, *([1] * (uncond.ndim - 1)))

    def post(self, ctx: GuidanceContext, guided: torch.Tensor, cond: torch.Tensor,
             uncond: torch.Tensor | None) -> torch.Tensor:
        """Zero prediction for the first ``zero_init_steps`` calls."""
        if ctx.call_index < self.zero_init_steps:
            return torch.zeros_like(guided)
        return guided


class APG(BaseGuidanceHook):
    """Adaptive Projected Guidance (Sadat et al. 2024, arXiv 2410.02416).

    With ``d = c - u`` (optionally momentum-averaged: ``avg = d + momentum * avg``), clipped to L2 norm
    ``norm_threshold`` per image (0 disables), split into the part parallel to ``c`` and the orthogonal rest
    (float64), the update is ``M = d_orth + eta * d_par`` and the result

    * ``formulation="cfg"`` (default; ComfyUI's APG node and diffusers ``AdaptiveProjectedGuidance``):
      ``u + w M``
    * ``formulation="paper"`` (the paper's reference): ``c + (w - 1) M``

    Both equal plain CFG when eta = 1 and nothing is clipped. The default space is ``denoised`` with
    ``norm_threshold=5`` (ComfyUI's defaults); diffusers works on the prediction with threshold 15.
    """

    def __init__(self, eta: float = 1.0, norm_threshold: float = 5.0, momentum: float = 0.0,
                 space: Space = "denoised", formulation: Literal["cfg", "paper"] = "cfg"):
        if space not in ("prediction", "denoised"):
            raise ValueError(f"space must be 'prediction' or 'denoised', got {space!r}")
        if formulation not in ("cfg", "paper"):
            raise ValueError(f"formulation must be 'cfg' or 'paper', got {formulation!r}")
        if norm_threshold < 0:
            raise ValueError(f"norm_threshold must be >= 0, got {norm_threshold}")
        self.eta, self.norm_threshold, self.momentum = float(eta), float(norm_threshold), float(momentum)
        self.space = space
        self.formulation = formulation
        self._avg: torch.Tensor | None = None

    def reset(self) -> None:
        """Clear the momentum buffer."""
        self._avg = None

    def combine(self, ctx: GuidanceContext, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor | None:
        """The projected update."""
        diff = cond - uncond
        if self.momentum != 0.0:
            self._avg = diff if self._avg is None else diff + self.momentum * self._avg
            diff = self._avg
        dims = _flat_dims(diff)
        if self.norm_threshold > 0:
            norm = diff.norm(p=2, dim=dims, keepdim=True)
            diff = diff * torch.clamp(self.norm_threshold / norm, max=1.0)
        d64, c64 = diff.double(), cond.double()
        unit = c64 / c64.norm(p=2, dim=dims, keepdim=True).clamp_min(1e-12)
        par = (d64 * unit).sum(dim=dims, keepdim=True) * unit
        update = ((d64 - par) + self.eta * par).to(diff.dtype)
        if self.formulation == "paper":
            return cond + (ctx.scale - 1.0) * update
        return uncond + ctx.scale * update


def _same_items(a: list, b: list) -> bool:
    """Same keys in the same order, bound to the identical objects."""
    return len(a) == len(b) and all(ka == kb and va is vb for (ka, va), (kb, vb) in zip(a, b))


class CFGDenoiser:
    """Classifier-free guidance around a raw model: ``D = D_u + w (D_c - D_u)`` from one batched call.

    ``raw`` gets ``[uncond; cond]`` (x, t and every conditioning key concatenated along dim 0).
    ``nfe`` counts batched calls. ``rescale`` is the guidance-rescale phi (0 = off; 0.7 in the paper).
    ``denoise_with_uncond`` returns ``(guided, uncond)`` denoised for CFG++ samplers; the uncond returned is
    the model's own (before any hook), as ComfyUI's CFG++ samplers capture it.
    """

    def __init__(self, raw: RawModel, param: ModelParameterization, cond: Conditioning,
                 uncond: Conditioning | None, scale: float, rescale: float = 0.0,
                 hooks: list[GuidanceHook] | tuple[GuidanceHook, ...] = ()):
        if not math.isfinite(scale):
            raise ValueError(f"CFG scale must be finite, got {scale}")
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"guidance rescale must be in [0, 1], got {rescale}")
        self.raw, self.param = raw, param
        self.cond: Conditioning = dict(cond)
        self.uncond: Conditioning | None = None if uncond is None else dict(uncond)
        if self.uncond is not None and set(self.uncond) != set(self.cond):
            raise ValueError(
                f"cond and uncond must have the same keys, got {sorted(self.cond)} vs {sorted(self.uncond)}"
            )
        self.scale, self.rescale = float(scale), float(rescale)
        self.hooks = list(hooks)
        for h in self.hooks:
            if getattr(h, "space", None) not in ("prediction", "denoised"):
                raise ValueError(f"guidance hook {h!r} must declare space 'prediction' or 'denoised'")
        self.kind: ModelKind = param.kind
        self.prediction: str = param.prediction
        self.nfe = 0
        self.calls = 0  # guided evaluations in the current run (hooks see it as call_index)
        # the last [uncond; cond] concatenation and what it was built from: built once, not on every model call
        self._batched: tuple | None = None
        if self.uncond is None and not self.skips_uncond:
            raise ValueError(f"CFG scale {self.scale} needs an unconditional conditioning (uncond=None given)")

    @property
    def skips_uncond(self) -> bool:
        """True when a plain call evaluates only the cond half (scale == 1, no hook insists)."""
        return math.isclose(self.scale, 1.0) and not any(
            getattr(h, "needs_uncond_at_scale_one", False) for h in self.hooks)

    def reset_run(self) -> None:
        """Start a new sampling run: reset hook state and the call index (not ``nfe``)."""
        self.calls = 0
        self._batched = None
        for h in self.hooks:
            h.reset()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Guided denoised estimate."""
        return self._evaluate(x, sigma, want_uncond=False)[0]

    def denoise_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(guided_denoised, uncond_denoised)`` from one batched call (for CFG++ samplers)."""
        guided, uncond = self._evaluate(x, sigma, want_uncond=True)
        assert uncond is not None
        return guided, uncond

    # ------------------------------------------------------------------------------------------------------
    def _run_model(self, x: torch.Tensor, s: torch.Tensor, with_uncond: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = x.shape[0]
        x_in, t = self.param.model_inputs(x, s)
        cond = _check_cond(self.cond, b, "cond")
        if not with_uncond:
            out = self.raw(x_in, t, cond)
            self.nfe += 1
            return out, None
        if self.uncond is None:
            raise ValueError("the unconditional prediction was requested, but uncond=None was given")
        # reused while the batch size and the very same tensors (held here, compared with `is`) are in place;
        # an in-place edit of a conditioning tensor is seen after reset_run (every sample() call)
        sources = (b, list(self.cond.items()), list(self.uncond.items()))
        cached = self._batched
        if cached is not None and cached[0] == b and _same_items(cached[1], sources[1]) \
                and _same_items(cached[2], sources[2]):
            batch_cond = cached[3]
        else:
            uncond = _check_cond(self.uncond, b, "uncond")
            batch_cond = {k: torch.cat([uncond[k], cond[k]], 0) for k in cond}
            self._batched = (*sources, batch_cond)
        out = self.raw(torch.cat([x_in, x_in], 0), torch.cat([t, t], 0), batch_cond)
        self.nfe += 1
        if out.shape[0] != 2 * b:
            raise ValueError(f"raw model returned batch {out.shape[0]} for an input batch of {2 * b}")
        return out[b:], out[:b]

    def _to_space(self, space: Space, x: torch.Tensor, s: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return self.param.to_denoised(x, s, pred) if space == "denoised" else pred

    def _from_space(self, space: Space, x: torch.Tensor, s: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
        return self.param.to_prediction(x, s, val) if space == "denoised" else val

    def _evaluate(self, x: torch.Tensor, sigma: torch.Tensor | float, want_uncond: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = _sigma_batch(sigma, x)
        skip = self.skips_uncond and not want_uncond
        cond_p, uncond_p = self._run_model(x, s, with_uncond=not skip)
        ctx = GuidanceContext(x=x, sigma=s, scale=self.scale, call_index=self.calls)
        self.calls += 1
        raw_uncond = uncond_p
        c, u = cond_p, uncond_p
        unit_scale = math.isclose(self.scale, 1.0)
        if u is None or unit_scale:
            guided = c  # scale 1 means the cond prediction, with or without hooks (as when uncond is skipped)
        else:
            for h in self.hooks:
                hc, hu = h.pre(ctx, self._to_space(h.space, x, s, c), self._to_space(h.space, x, s, u))
                c, u = self._from_space(h.space, x, s, hc), self._from_space(h.space, x, s, hu)
            guided = None
            for h in self.hooks:
                out = h.combine(ctx, self._to_space(h.space, x, s, c), self._to_space(h.space, x, s, u))
                if out is not None:
                    guided = self._from_space(h.space, x, s, out)
                    break
            if guided is None:
                guided = u + self.scale * (c - u)
        if self.rescale > 0.0 and not unit_scale:
            guided = rescale_guidance(guided, c, self.rescale)
        for h in self.hooks:
            hu = None if u is None else self._to_space(h.space, x, s, u)
            out = h.post(ctx, self._to_space(h.space, x, s, guided), self._to_space(h.space, x, s, c), hu)
            guided = self._from_space(h.space, x, s, out)
        denoised = self.param.to_denoised(x, s, guided)
        uncond_d = None if raw_uncond is None or not want_uncond else self.param.to_denoised(x, s, raw_uncond)
        return denoised, uncond_d
