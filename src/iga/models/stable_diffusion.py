"""The Stable Diffusion 1.x / 2.x / XL backend: diffusers UNet + VAE, transformers CLIP text encoders.

Conditioning dicts (batch-first):
- SD1/SD2: ``{"encoder_hidden_states": [B, 77*chunks, D]}``;
- SDXL: ``{"encoder_hidden_states": [B, 77*chunks, 768+1280], "text_embeds": [B, 1280], "time_ids": [B, 6]}``
  with ``time_ids = (orig_h, orig_w, crop_top, crop_left, target_h, target_w) = (h, w, 0, 0, h, w)``;
- SDXL refiner: ``{"encoder_hidden_states": [B, 77*chunks, 1280], "text_embeds": [B, 1280], "time_ids": [B, 5]}``
  with ``time_ids = (h, w, 0, 0, aesthetic_score)`` (``SDXLRefinerBackend``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iga.models.base import VaeLatents, pair_texts, vae_decode, vae_encode
from iga.models.text import TextEncoderSlot, chunk_count

SDXL_UNETS = ("sdxl", "sdxl_refiner")  # UNets that take the pooled text embedding and time ids
DEFAULT_AESTHETIC_SCORE, DEFAULT_NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5  # the refiner's (diffusers' defaults)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from iga.sampling.base import Conditioning


@dataclass(eq=False)
class StableDiffusionBackend(VaeLatents):
    """A loaded SD1/SD2/SDXL model (see ``iga.models.load_backend``)."""

    architecture: str
    prediction_type: str
    training_schedule: dict[str, Any]
    unet: Any
    vae: Any
    text_encoders: list[TextEncoderSlot]
    device: "torch.device"
    dtype: "torch.dtype"
    vae_dtype: "torch.dtype"
    identity: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ properties

    @property
    def latent_channels(self) -> int:
        """Channels of the latent space (4 for SD1/SD2/SDXL): the VAE's, since an inpainting UNet takes 5 more."""
        return int(self.vae.config.latent_channels)

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """The (C, h, w) latent shape for an image of ``width`` x ``height`` pixels."""
        f = self.vae_scale_factor
        for name, v in (("width", width), ("height", height)):
            if not isinstance(v, int) or v <= 0 or v % f:
                lower = max(f, (int(v) // f) * f) if isinstance(v, (int, float)) and v > 0 else f
                raise ValueError(f"{name} must be a positive multiple of {f} for this model, got {v!r} "
                                 f"(try {lower} or {lower + f})")
        return (self.latent_channels, height // f, width // f)

    # ------------------------------------------------------------ text

    def encode_prompt(self, prompts: list[str], negatives: list[str], *, clip_skip: int = 1,
                      width: int, height: int) -> tuple["Conditioning", "Conditioning"]:
        """Encode prompts and negative prompts into ``(cond, uncond)`` conditioning dicts.

        ``negatives`` may have one entry (used for every prompt) or one per prompt; an empty list means
        empty negative prompts (encoded, as A1111 and ComfyUI do; diffusers' SDXL pipeline uses zeros
        instead when no negative prompt is given). Prompts longer than 75 tokens are split into
        75-token chunks, each wrapped in BOS/EOS and encoded separately, and the chunks are concatenated
        (A1111 convention); see ``iga.models.text`` for chunking and clip-skip per family.
        """
        import torch

        prompts, negatives = pair_texts(prompts, negatives)
        for slot in self.text_encoders:
            slot.check_clip_skip(clip_skip)
        self.latent_shape(width, height)  # validates the size before any work

        texts = prompts + negatives
        unique = list(dict.fromkeys(texts))  # a batch usually repeats one prompt: encode each text once
        where = torch.tensor([unique.index(t) for t in texts], device=self.device)
        n_chunks, tokens = chunk_count(self.text_encoders, unique)
        U = len(unique)
        states, pooled = [], None
        with torch.no_grad():
            for i, slot in enumerate(self.text_encoders):
                rows = [r for ids in tokens[i] for r in slot.rows(ids, n_chunks)]
                ids_t = torch.tensor(rows, dtype=torch.long, device=self.device)
                hidden, pool = slot.encode(ids_t, clip_skip)
                states.append(hidden.reshape(U, n_chunks * hidden.shape[1], hidden.shape[2]))
                if pool is not None:
                    pooled = pool.reshape(U, n_chunks, -1)[:, 0]
        context = torch.cat(states, dim=-1).to(self.dtype)[where]
        if pooled is not None:
            pooled = pooled[where]
        B = len(texts)
        both: dict[str, torch.Tensor] = {"encoder_hidden_states": context}
        if self.architecture in SDXL_UNETS:
            if pooled is None:
                raise RuntimeError("SDXL backend without a pooled text encoder")
            both["text_embeds"] = pooled.to(self.dtype)
            both["time_ids"] = self.time_ids(width, height, len(prompts), B)
        n = len(prompts)
        cond = {k: v[:n].contiguous() for k, v in both.items()}
        uncond = {k: v[n:].contiguous() for k, v in both.items()}
        return cond, uncond

    def time_ids(self, width: int, height: int, n_cond: int, rows: int) -> "torch.Tensor":
        """SDXL's size conditioning, one row per text (conditional first): (h, w, 0, 0, h, w)."""
        import torch

        ids = torch.tensor([height, width, 0, 0, height, width], dtype=self.dtype, device=self.device)
        return ids.expand(rows, 6).clone()

    # ------------------------------------------------------------ network

    def raw_model(self, x: "torch.Tensor", t: "torch.Tensor", cond: "Conditioning",
                  residuals: tuple[list["torch.Tensor"], "torch.Tensor"] | None = None) -> "torch.Tensor":
        """Run the UNet on scaled input ``x`` at (possibly fractional) timesteps ``t`` [B].

        Returns the raw prediction (eps or v, see ``prediction_type``) in ``x``'s dtype and device.
        Conditioning with batch 1 is broadcast to the batch of ``x``. ``residuals``: (down, mid) residuals a
        ControlNet adds to the skip connections and the middle block (``iga.models.control``).
        """
        import torch

        B = x.shape[0]
        sample = x.to(self.device, self.dtype)
        t = torch.as_tensor(t, device=self.device)
        t = t.to(torch.float32) if t.is_floating_point() else t
        if t.ndim == 0:
            t = t.expand(B)

        def fit(v: torch.Tensor) -> torch.Tensor:
            v = v.to(self.device, self.dtype)
            if v.shape[0] == B:
                return v
            if v.shape[0] == 1:
                return v.expand(B, *v.shape[1:])
            raise ValueError(f"conditioning batch {v.shape[0]} does not match the input batch {B}")

        kwargs: dict[str, Any] = {"encoder_hidden_states": fit(cond["encoder_hidden_states"])}
        if self.architecture in SDXL_UNETS:
            missing = {"text_embeds", "time_ids"} - set(cond)
            if missing:
                raise ValueError(f"SDXL conditioning lacks {sorted(missing)}; use encode_prompt to build it")
            kwargs["added_cond_kwargs"] = {"text_embeds": fit(cond["text_embeds"]), "time_ids": fit(cond["time_ids"])}
        if "concat" in cond:  # an inpainting UNet: mask and masked-image latent as extra input channels
            sample = torch.cat([sample, fit(cond["concat"])], dim=1)
        if residuals is not None:
            kwargs["down_block_additional_residuals"], kwargs["mid_block_additional_residual"] = residuals
        with torch.no_grad():
            out = self.unet(sample, t, return_dict=False, **kwargs)[0]
        return out.to(device=x.device, dtype=x.dtype)

    # ------------------------------------------------------------ VAE

    def decode(self, latents: "torch.Tensor") -> "torch.Tensor":
        """Decode latents (the UNet's scaled latent space) to images (B, 3, H, W) in [0, 1], float32 on the CPU."""
        return vae_decode(self.vae, latents, self.device, self.vae_dtype)

    def encode_image(self, images: "torch.Tensor") -> "torch.Tensor":
        """Encode images (B, 3, H, W) in [0, 1] to scaled latents (the posterior mean, deterministic)."""
        return vae_encode(self.vae, images, self.device, self.vae_dtype)

    def __repr__(self) -> str:
        return (f"StableDiffusionBackend({self.architecture}, {self.prediction_type}, "
                f"{self.identity.get('path')!r}, {self.device}, {self.dtype})")


@dataclass(eq=False, repr=False)
class SDXLRefinerBackend(StableDiffusionBackend):
    """The SDXL refiner: one OpenCLIP bigG text encoder (penultimate hidden state + pooled projection, as for SDXL
    base's second encoder) and 5 time ids ``(orig_h, orig_w, crop_top, crop_left, aesthetic_score)``; the negative
    prompt's row carries ``negative_aesthetic_score`` (diffusers' ``requires_aesthetics_score`` convention)."""

    aesthetic_score: float = DEFAULT_AESTHETIC_SCORE
    negative_aesthetic_score: float = DEFAULT_NEGATIVE_AESTHETIC_SCORE

    def scored(self, aesthetic_score: float, negative_aesthetic_score: float) -> "SDXLRefinerBackend":
        """The same weights with other aesthetic scores (a plan's), sharing every module."""
        from dataclasses import replace

        return replace(self, aesthetic_score=float(aesthetic_score),
                       negative_aesthetic_score=float(negative_aesthetic_score))

    def time_ids(self, width: int, height: int, n_cond: int, rows: int) -> "torch.Tensor":
        import torch

        scores = [self.aesthetic_score] * n_cond + [self.negative_aesthetic_score] * (rows - n_cond)
        return torch.tensor([[height, width, 0, 0, s] for s in scores], dtype=self.dtype, device=self.device)
