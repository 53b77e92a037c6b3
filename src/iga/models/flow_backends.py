"""Rectified-flow backends: Stable Diffusion 3 (MMDiT) and Flux, on diffusers transformers + VAE.

Both predict a velocity ``v`` with ``x = (1 - sigma) x0 + sigma eps`` (``prediction_type = "flow"``); the
engine calls ``raw_model(x, t, cond)`` with ``t = sigma * 1000`` and reads ``x0 = x - sigma * v``.

Conditioning dicts (batch-first), encoded as diffusers' pipelines do:
- SD3: ``{"encoder_hidden_states": [B, 77 + L, D_t5], "pooled_projections": [B, P_l + P_g]}``: CLIP-L and
  CLIP-G penultimate hidden states (77 tokens, no final norm) side by side, zero-padded to T5's width, then
  T5's L = 256 tokens after them; pooled = both CLIPs' projected embeddings side by side.
- Flux: ``{"encoder_hidden_states": [B, L, D_t5], "pooled_projections": [B, D_clip], "txt_ids": [B, L, 3],
  "img_ids": [B, h/2 * w/2, 3]}`` (T5 with L = 512 tokens, CLIP-L's pooled output) and, from
  ``iga.generate.encode`` for guidance-distilled ("dev") models, ``"guidance": [B]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iga.models.base import VaeLatents, pair_texts, vae_decode, vae_encode

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from iga.sampling.base import Conditioning

CLIP_MAX_LENGTH = 77


def _fit_batch(v: "torch.Tensor", B: int, device: "torch.device", dtype: "torch.dtype") -> "torch.Tensor":
    """Conditioning of batch B (or 1, broadcast) on the model's device and dtype."""
    v = v.to(device, dtype)
    if v.shape[0] == B:
        return v
    if v.shape[0] == 1:
        return v.expand(B, *v.shape[1:])
    raise ValueError(f"conditioning batch {v.shape[0]} does not match the input batch {B}")


def _clip_ids(tokenizer: Any, texts: list[str], device: "torch.device") -> "torch.Tensor":
    """77 CLIP ids per text: BOS, tokens (truncated), EOS, the tokenizer's own pad token (diffusers' padding)."""
    enc = tokenizer(texts, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True, return_tensors="pt")
    return enc.input_ids.to(device)


def _t5_states(model: Any, tokenizer: Any, texts: list[str], length: int, device: "torch.device") -> "torch.Tensor":
    """T5 encoder states [N, length, D]: ids padded with <pad> / truncated to ``length``, ``</s>`` appended."""
    enc = tokenizer(texts, padding="max_length", max_length=length, truncation=True, add_special_tokens=True,
                    return_tensors="pt")
    return model(enc.input_ids.to(device))[0]



@dataclass(eq=False)
class FlowBackend(VaeLatents):
    """What SD3 and Flux share: the VAE side, sizes, dtype/device and identity."""

    transformer: Any
    vae: Any
    device: "torch.device"
    dtype: "torch.dtype"
    vae_dtype: "torch.dtype"
    training_schedule: dict[str, Any]  # in recipe terms (a static shift or a dynamic_shift rule), for reference:
    identity: dict[str, Any] = field(default_factory=dict)  # plans carry the shift that runs (iga.guard.resolve)

    architecture = "flow"
    prediction_type = "flow"

    @property
    def pixel_multiple(self) -> int:
        """Image sizes must be multiples of this (VAE factor x transformer patch)."""
        return self.vae_scale_factor * 2

    @property
    def latent_channels(self) -> int:
        raise NotImplementedError

    def check_size(self, width: int, height: int) -> None:
        """Raise ValueError for sizes the model cannot take, naming the nearest ones it can."""
        f = self.pixel_multiple
        for name, v in (("width", width), ("height", height)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v % f:
                lower = max(f, (int(v) // f) * f) if isinstance(v, (int, float)) and v > 0 else f
                raise ValueError(f"{name} must be a positive multiple of {f} for this {self.architecture} model "
                                 f"(VAE factor {self.vae_scale_factor} x patch 2), got {v!r} "
                                 f"(try {lower} or {lower + f})")

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """The (C, h, w) latent shape for an image of ``width`` x ``height`` pixels."""
        self.check_size(width, height)
        f = self.vae_scale_factor
        return (self.latent_channels, height // f, width // f)

    def decode(self, latents: "torch.Tensor") -> "torch.Tensor":
        """Latents (B, C, h, w) -> images (B, 3, H, W) float32 in [0, 1] on the CPU (diffusers' pre-processor)."""
        return vae_decode(self.vae, latents, self.device, self.vae_dtype)

    def encode_image(self, images: "torch.Tensor") -> "torch.Tensor":
        """Images (B, 3, H, W) in [0, 1] -> model latents (posterior mean, shifted and scaled)."""
        return vae_encode(self.vae, images, self.device, self.vae_dtype)

    def _timesteps(self, t: "torch.Tensor", B: int) -> "torch.Tensor":
        import torch

        t = torch.as_tensor(t, device=self.device).to(torch.float32)
        return t.expand(B) if t.ndim == 0 else t

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.architecture}, {self.identity.get('path')!r}, "
                f"{self.device}, {self.dtype})")


@dataclass(eq=False)
class SD3Backend(FlowBackend):
    """A loaded Stable Diffusion 3 / 3.5 model: MMDiT transformer, CLIP-L + CLIP-G (+ T5, optional)."""

    clip_l: Any = None
    clip_g: Any = None
    t5: Any = None  # None: diffusers feeds zeros in T5's place (SD3 without its T5 encoder)
    tokenizer_l: Any = None
    tokenizer_g: Any = None
    tokenizer_t5: Any = None
    max_sequence_length: int = 256  # diffusers' StableDiffusion3Pipeline default

    architecture = "sd3"

    @property
    def latent_channels(self) -> int:
        """16 for SD3."""
        return int(self.transformer.config.in_channels)

    @property
    def pixel_multiple(self) -> int:
        return self.vae_scale_factor * int(self.transformer.config.patch_size)

    def check_size(self, width: int, height: int) -> None:
        """Multiples of VAE factor x patch, and no larger than the learned position-embedding grid."""
        super().check_size(width, height)
        limit = self.transformer.config.pos_embed_max_size
        if limit:
            most = int(limit) * self.pixel_multiple
            if max(width, height) > most:
                raise ValueError(f"this SD3 model takes images up to {most} pixels a side "
                                 f"(pos_embed_max_size {limit}); got {width}x{height}")

    def check_clip_skip(self, clip_skip: int) -> None:
        """clip_skip k (1 = no skip) uses CLIP hidden state -(k+1); both CLIPs must have that layer."""
        limit = min(int(m.config.num_hidden_layers) for m in (self.clip_l, self.clip_g)) - 1
        if not isinstance(clip_skip, int) or isinstance(clip_skip, bool) or not 1 <= clip_skip <= limit:
            raise ValueError(f"clip_skip must be an integer from 1 (no skip) to {limit} for this SD3 model; "
                             f"got {clip_skip!r}")

    def encode_prompt(self, prompts: list[str], negatives: list[str], *, clip_skip: int = 1,
                      width: int, height: int) -> tuple["Conditioning", "Conditioning"]:
        """Encode prompts and negatives into ``(cond, uncond)`` as StableDiffusion3Pipeline does.

        clip_skip follows iga's numbering (1 = none = diffusers' ``clip_skip=None``, k = diffusers' k-1) and
        applies to prompts and negatives alike (diffusers applies it to prompts only). Prompts longer than
        77 CLIP / 256 T5 tokens are truncated, as in diffusers.
        """
        import torch

        prompts, negatives = pair_texts(prompts, negatives)
        self.check_clip_skip(clip_skip)
        self.check_size(width, height)
        texts = prompts + negatives
        unique = list(dict.fromkeys(texts))  # the negative is often "" for every prompt: encode each text once
        where = torch.tensor([unique.index(t) for t in texts], device=self.device)
        with torch.no_grad():
            states, pooled = [], []
            for model, tok in ((self.clip_l, self.tokenizer_l), (self.clip_g, self.tokenizer_g)):
                out = model(_clip_ids(tok, unique, self.device), output_hidden_states=True)
                pooled.append(out[0])  # the projected text embedding
                states.append(out.hidden_states[-(clip_skip + 1)])
            clip = torch.cat(states, dim=-1)
            if self.t5 is not None:
                t5 = _t5_states(self.t5, self.tokenizer_t5, unique, self.max_sequence_length, self.device)
            else:
                t5 = clip.new_zeros(len(unique), self.max_sequence_length, self.transformer.config.joint_attention_dim)
            # zero-pad (or cut, as diffusers does) the CLIP features to T5's width, then stack along the sequence
            clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
            context = torch.cat([clip, t5.to(clip.dtype)], dim=-2)
        both = {"encoder_hidden_states": context.to(self.dtype)[where],
                "pooled_projections": torch.cat(pooled, dim=-1).to(self.dtype)[where]}
        n = len(prompts)
        return ({k: v[:n].contiguous() for k, v in both.items()}, {k: v[n:].contiguous() for k, v in both.items()})

    def raw_model(self, x: "torch.Tensor", t: "torch.Tensor", cond: "Conditioning") -> "torch.Tensor":
        """The velocity for latents ``x`` (B, 16, h, w) at timesteps ``t = sigma * 1000`` [B] (diffusers' input)."""
        import torch

        missing = {"encoder_hidden_states", "pooled_projections"} - set(cond)
        if missing:
            raise ValueError(f"SD3 conditioning lacks {sorted(missing)}; use encode_prompt to build it")
        B = x.shape[0]
        with torch.no_grad():
            out = self.transformer(
                hidden_states=x.to(self.device, self.dtype),
                timestep=self._timesteps(t, B),
                encoder_hidden_states=_fit_batch(cond["encoder_hidden_states"], B, self.device, self.dtype),
                pooled_projections=_fit_batch(cond["pooled_projections"], B, self.device, self.dtype),
                return_dict=False,
            )[0]
        return out.to(device=x.device, dtype=x.dtype)


@dataclass(eq=False)
class FluxBackend(FlowBackend):
    """A loaded Flux model: transformer on 2x2-packed latents, CLIP-L (pooled only) + T5."""

    clip: Any = None
    t5: Any = None
    tokenizer_clip: Any = None
    tokenizer_t5: Any = None
    max_sequence_length: int = 512  # diffusers' FluxPipeline default (dev and schnell alike)

    architecture = "flux"

    @property
    def guidance_embeds(self) -> bool:
        """True for guidance-distilled ("dev"-like) models, which take the guidance value as an input."""
        return bool(self.transformer.config.guidance_embeds)

    @property
    def latent_channels(self) -> int:
        """16 for Flux: the transformer sees 2x2 patches of them (in_channels = 4 x 16)."""
        return int(self.transformer.config.in_channels) // 4

    def encode_prompt(self, prompts: list[str], negatives: list[str], *, clip_skip: int = 1,
                      width: int, height: int) -> tuple["Conditioning", "Conditioning"]:
        """Encode prompts and negatives into ``(cond, uncond)`` as FluxPipeline does (no clip_skip there:
        Flux reads only CLIP's pooled output, so any clip_skip other than 1 is refused)."""
        import torch

        prompts, negatives = pair_texts(prompts, negatives)
        if clip_skip != 1:
            raise ValueError(f"clip_skip does not apply to Flux (it uses only CLIP's pooled output); got {clip_skip!r}")
        _, h, w = self.latent_shape(width, height)
        texts = prompts + negatives
        unique = list(dict.fromkeys(texts))
        where = torch.tensor([unique.index(t) for t in texts], device=self.device)
        with torch.no_grad():
            pooled = self.clip(_clip_ids(self.tokenizer_clip, unique, self.device)).pooler_output
            context = _t5_states(self.t5, self.tokenizer_t5, unique, self.max_sequence_length, self.device)
        B = len(texts)
        text_ids = torch.zeros(B, context.shape[1], 3, device=self.device, dtype=self.dtype)
        both = {"encoder_hidden_states": context.to(self.dtype)[where], "pooled_projections": pooled.to(self.dtype)[where],
                "txt_ids": text_ids, "img_ids": self.image_ids(h, w).expand(B, -1, -1)}
        n = len(prompts)
        return ({k: v[:n].contiguous() for k, v in both.items()}, {k: v[n:].contiguous() for k, v in both.items()})

    def image_ids(self, h: int, w: int) -> "torch.Tensor":
        """[1, h/2 * w/2, 3] positions (0, row, column) of the 2x2 patches, row-major (the rope inputs)."""
        import torch

        rows = torch.arange(h // 2, dtype=torch.float32)[:, None].expand(h // 2, w // 2)
        cols = torch.arange(w // 2, dtype=torch.float32)[None, :].expand(h // 2, w // 2)
        ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(1, -1, 3)
        return ids.to(self.device, self.dtype)

    @staticmethod
    def pack(x: "torch.Tensor") -> "torch.Tensor":
        """(B, C, h, w) -> (B, h/2 * w/2, C*4): each token is one 2x2 patch, channel-major within it."""
        B, C, h, w = x.shape
        return x.reshape(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (h // 2) * (w // 2), C * 4)

    @staticmethod
    def unpack(tokens: "torch.Tensor", h: int, w: int) -> "torch.Tensor":
        """The inverse of ``pack``."""
        B, _, D = tokens.shape
        C = D // 4
        return tokens.reshape(B, h // 2, w // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, C, h, w)

    def _guidance(self, cond: "Conditioning", B: int) -> "torch.Tensor | None":
        import torch

        if not self.guidance_embeds:
            return None  # schnell-like models have no guidance input; diffusers ignores the value too
        if cond.get("guidance") is None:
            raise ValueError("this Flux model is guidance-distilled (dev-like) and needs a guidance value "
                             "(e.g. 3.5) in the plan; it is an input to the model, not CFG")
        return _fit_batch(torch.as_tensor(cond["guidance"]).reshape(-1), B, self.device, torch.float32)

    def raw_model(self, x: "torch.Tensor", t: "torch.Tensor", cond: "Conditioning") -> "torch.Tensor":
        """The velocity for latents ``x`` (B, C, h, w) at ``t = sigma * 1000`` [B]; Flux itself takes sigma."""
        import torch

        missing = {"encoder_hidden_states", "pooled_projections", "txt_ids", "img_ids"} - set(cond)
        if missing:
            raise ValueError(f"Flux conditioning lacks {sorted(missing)}; use encode_prompt to build it")
        B, _, h, w = x.shape
        img_ids = cond["img_ids"][0]
        if img_ids.shape[0] != (h // 2) * (w // 2):  # conditioning encoded for another size
            img_ids = self.image_ids(h, w)[0]
        with torch.no_grad():
            out = self.transformer(
                hidden_states=self.pack(x.to(self.device, self.dtype)),
                timestep=self._timesteps(t, B).to(self.dtype) / 1000,
                guidance=self._guidance(cond, B),
                pooled_projections=_fit_batch(cond["pooled_projections"], B, self.device, self.dtype),
                encoder_hidden_states=_fit_batch(cond["encoder_hidden_states"], B, self.device, self.dtype),
                txt_ids=cond["txt_ids"][0].to(self.device, self.dtype),  # ids are shared by the batch: 2-D
                img_ids=img_ids.to(self.device, self.dtype),
                return_dict=False,
            )[0]
        return self.unpack(out, h, w).to(device=x.device, dtype=x.dtype)
