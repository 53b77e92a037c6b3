"""Key conversion between the original LDM/SGM single-file layout and diffusers/transformers layouts.

Single ``.safetensors`` checkpoints (A1111, ComfyUI, Civitai) keep the names of the original
latent-diffusion code: the UNet under ``model.diffusion_model.``, the VAE under ``first_stage_model.``,
the text encoders under ``cond_stage_model.`` (SD1/SD2) or ``conditioner.embedders.N.`` (SDXL).
diffusers folders use ``UNet2DConditionModel``/``AutoencoderKL`` names, and transformers' CLIP names.

Both directions are driven by one list of (ldm_prefix, diffusers_prefix, kind) pairs per model, derived
from the block layout (levels, layers per level, which levels have attention), so converting there and
back is the identity by construction. The layout is read from the keys themselves, so models of any
width/depth (including tiny test models) convert with the same code.

Text encoders map to a *canonical* transformers layout (``text_model.*`` plus ``text_projection.weight``);
``fit_text_keys`` adapts it to the key style of the installed transformers version (v5 ``CLIPTextModel``
drops the ``text_model.`` prefix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    import torch

    StateDict = dict[str, torch.Tensor]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIXES = ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model.")

_UNET_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_SUFFIX_MAPS = {"unet_resnet": _UNET_RESNET, "vae_resnet": _VAE_RESNET, "vae_attn": _VAE_ATTN}

_IGNORED_TEXT_KEYS = ("embeddings.position_ids", "logit_scale", "attn_mask")


class ConversionError(ValueError):
    """A state dict does not have the layout the converter expects."""


@dataclass(frozen=True)
class UNetLayout:
    """The block structure of a UNet: what the key conversion needs to know."""

    levels: int
    layers: int  # resnets per down level (up levels have one more)
    down_attn: tuple[bool, ...]
    up_attn: tuple[bool, ...]  # in diffusers up_blocks order (lowest resolution first)
    mid_attn: bool
    label_emb: bool  # SDXL's size/crop/pooled-text embedding

    @classmethod
    def from_ldm(cls, keys: Iterable[str]) -> "UNetLayout":
        """Read the layout from unprefixed LDM UNet keys (``input_blocks.N...``)."""
        keys = list(keys)
        inputs = _indices(keys, r"input_blocks\.(\d+)\.")
        if not inputs:
            raise ConversionError("no UNet input_blocks.* keys found (is this an LDM-layout UNet?)")
        total = max(inputs) + 1
        downs = sorted(n for n in inputs if f"input_blocks.{n}.0.op.weight" in keys)
        layers = downs[0] - 1 if downs else total - 1
        if layers < 1 or total % (layers + 1):
            raise ConversionError(f"irregular UNet: {total} input blocks, downsamplers at {downs}")
        levels = total // (layers + 1)
        down_attn = tuple(_has_prefix(keys, f"input_blocks.{1 + i * (layers + 1)}.1.") for i in range(levels))
        up_attn = tuple(_has_prefix(keys, f"output_blocks.{i * (layers + 1)}.1.") for i in range(levels))
        return cls(levels, layers, down_attn, up_attn, _has_prefix(keys, "middle_block.2."),
                   _has_prefix(keys, "label_emb."))

    @classmethod
    def from_diffusers(cls, keys: Iterable[str]) -> "UNetLayout":
        """Read the layout from diffusers ``UNet2DConditionModel`` keys."""
        keys = list(keys)
        levels = len(_indices(keys, r"down_blocks\.(\d+)\."))
        layers = len(_indices(keys, r"down_blocks\.0\.resnets\.(\d+)\."))
        if not levels or not layers:
            raise ConversionError("no down_blocks.*.resnets.* keys found (is this a diffusers UNet?)")
        down_attn = tuple(_has_prefix(keys, f"down_blocks.{i}.attentions.") for i in range(levels))
        up_attn = tuple(_has_prefix(keys, f"up_blocks.{i}.attentions.") for i in range(levels))
        return cls(levels, layers, down_attn, up_attn, _has_prefix(keys, "mid_block.attentions."),
                   _has_prefix(keys, "add_embedding."))

    def pairs(self) -> list[tuple[str, str, str]]:
        """(ldm_prefix, diffusers_prefix, kind) for every module of the UNet."""
        L = self.layers
        p: list[tuple[str, str, str]] = [
            ("time_embed.0", "time_embedding.linear_1", "plain"),
            ("time_embed.2", "time_embedding.linear_2", "plain"),
            ("input_blocks.0.0", "conv_in", "plain"),
            ("out.0", "conv_norm_out", "plain"),
            ("out.2", "conv_out", "plain"),
        ]
        if self.label_emb:
            p += [("label_emb.0.0", "add_embedding.linear_1", "plain"),
                  ("label_emb.0.2", "add_embedding.linear_2", "plain")]
        for i in range(self.levels):
            for j in range(L):
                n = 1 + i * (L + 1) + j
                p.append((f"input_blocks.{n}.0", f"down_blocks.{i}.resnets.{j}", "unet_resnet"))
                if self.down_attn[i]:
                    p.append((f"input_blocks.{n}.1", f"down_blocks.{i}.attentions.{j}", "plain"))
            if i < self.levels - 1:
                p.append((f"input_blocks.{(i + 1) * (L + 1)}.0.op", f"down_blocks.{i}.downsamplers.0.conv", "plain"))
        p.append(("middle_block.0", "mid_block.resnets.0", "unet_resnet"))
        if self.mid_attn:
            p += [("middle_block.1", "mid_block.attentions.0", "plain"),
                  ("middle_block.2", "mid_block.resnets.1", "unet_resnet")]
        else:
            p.append(("middle_block.1", "mid_block.resnets.1", "unet_resnet"))
        for i in range(self.levels):
            for j in range(L + 1):
                n = i * (L + 1) + j
                p.append((f"output_blocks.{n}.0", f"up_blocks.{i}.resnets.{j}", "unet_resnet"))
                if self.up_attn[i]:
                    p.append((f"output_blocks.{n}.1", f"up_blocks.{i}.attentions.{j}", "plain"))
            if i < self.levels - 1:
                slot = 2 if self.up_attn[i] else 1
                p.append((f"output_blocks.{i * (L + 1) + L}.{slot}.conv", f"up_blocks.{i}.upsamplers.0.conv", "plain"))
        return p


@dataclass(frozen=True)
class VAELayout:
    """The block structure of an ``AutoencoderKL``."""

    levels: int
    layers: int  # resnets per encoder level (decoder levels have one more)
    mid_attn: bool
    quant_conv: bool

    @classmethod
    def from_ldm(cls, keys: Iterable[str]) -> "VAELayout":
        """Read the layout from unprefixed LDM VAE keys (``encoder.down.N.block.M...``)."""
        keys = list(keys)
        levels = len(_indices(keys, r"encoder\.down\.(\d+)\."))
        layers = len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\."))
        if not levels or not layers:
            raise ConversionError("no encoder.down.*.block.* keys found (is this an LDM-layout VAE?)")
        return cls(levels, layers, _has_prefix(keys, "encoder.mid.attn_1."), _has_prefix(keys, "quant_conv."))

    @classmethod
    def from_diffusers(cls, keys: Iterable[str]) -> "VAELayout":
        """Read the layout from diffusers ``AutoencoderKL`` keys."""
        keys = list(keys)
        levels = len(_indices(keys, r"encoder\.down_blocks\.(\d+)\."))
        layers = len(_indices(keys, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."))
        if not levels or not layers:
            raise ConversionError("no encoder.down_blocks.*.resnets.* keys found (is this a diffusers VAE?)")
        return cls(levels, layers, _has_prefix(keys, "encoder.mid_block.attentions."), _has_prefix(keys, "quant_conv."))

    def pairs(self) -> list[tuple[str, str, str]]:
        """(ldm_prefix, diffusers_prefix, kind) for every module of the VAE."""
        n, L = self.levels, self.layers
        p: list[tuple[str, str, str]] = []
        for part in ("encoder", "decoder"):
            p += [(f"{part}.conv_in", f"{part}.conv_in", "plain"),
                  (f"{part}.norm_out", f"{part}.conv_norm_out", "plain"),
                  (f"{part}.conv_out", f"{part}.conv_out", "plain"),
                  (f"{part}.mid.block_1", f"{part}.mid_block.resnets.0", "vae_resnet"),
                  (f"{part}.mid.block_2", f"{part}.mid_block.resnets.1", "vae_resnet")]
            if self.mid_attn:
                p.append((f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0", "vae_attn"))
        for i in range(n):
            for j in range(L):
                p.append((f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}", "vae_resnet"))
            if i < n - 1:
                p.append((f"encoder.down.{i}.downsample.conv", f"encoder.down_blocks.{i}.downsamplers.0.conv", "plain"))
        for i in range(n):
            li = n - 1 - i  # LDM numbers decoder levels from the highest resolution, diffusers from the lowest
            for j in range(L + 1):
                p.append((f"decoder.up.{li}.block.{j}", f"decoder.up_blocks.{i}.resnets.{j}", "vae_resnet"))
            if i < n - 1:
                p.append((f"decoder.up.{li}.upsample.conv", f"decoder.up_blocks.{i}.upsamplers.0.conv", "plain"))
        if self.quant_conv:
            p += [("quant_conv", "quant_conv", "plain"), ("post_quant_conv", "post_quant_conv", "plain")]
        return p


def _indices(keys: Iterable[str], pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in keys if (m := rx.match(k))}


def _has_prefix(keys: Iterable[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _convert(sd: "StateDict", pairs: list[tuple[str, str, str]], to_diffusers: bool) -> tuple["StateDict", list[str]]:
    """Rename keys by prefix pairs; returns (converted, keys that matched no pair)."""
    table = {(a if to_diffusers else b): (b if to_diffusers else a, kind) for a, b, kind in pairs}
    out: dict = {}
    unmatched = []
    for key, value in sd.items():
        parts = key.split(".")
        for n in range(min(len(parts) - 1, 7), 0, -1):
            head = ".".join(parts[:n])
            if head in table:
                new_head, kind = table[head]
                rest = ".".join(parts[n:])
                if kind in _SUFFIX_MAPS:
                    rest = _rename_suffix(rest, _SUFFIX_MAPS[kind], to_diffusers, key)
                if kind == "vae_attn":
                    value = _reshape_vae_attn(rest, value, to_diffusers)
                out[f"{new_head}.{rest}"] = value
                break
        else:
            unmatched.append(key)
    return out, unmatched


def _rename_suffix(rest: str, mapping: dict[str, str], to_diffusers: bool, key: str) -> str:
    table = mapping if to_diffusers else {v: k for k, v in mapping.items()}
    for src, dst in table.items():
        if rest.startswith(src + "."):
            return dst + rest[len(src):]
    raise ConversionError(f"unexpected sub-module in {key!r}")


def _reshape_vae_attn(rest: str, value: "torch.Tensor", to_diffusers: bool) -> "torch.Tensor":
    """LDM's VAE attention uses 1x1 convolutions, diffusers linear layers: same numbers, other shape."""
    if not rest.endswith(".weight") or rest.startswith(("norm.", "group_norm.")):
        return value
    if to_diffusers and value.ndim == 4:
        return value[:, :, 0, 0]
    if not to_diffusers and value.ndim == 2:
        return value[:, :, None, None]
    return value


# ---------------------------------------------------------------- UNet / VAE


def unet_from_ldm(sd: "StateDict") -> tuple["StateDict", list[str]]:
    """Unprefixed LDM UNet keys -> diffusers keys; returns (converted, unmatched keys)."""
    return _convert(sd, UNetLayout.from_ldm(sd).pairs(), to_diffusers=True)


def unet_to_ldm(sd: "StateDict") -> "StateDict":
    """diffusers UNet keys -> unprefixed LDM keys (every key must map)."""
    out, unmatched = _convert(sd, UNetLayout.from_diffusers(sd).pairs(), to_diffusers=False)
    if unmatched:
        raise ConversionError(f"UNet keys with no LDM equivalent: {unmatched[:5]}")
    return out


def vae_from_ldm(sd: "StateDict") -> tuple["StateDict", list[str]]:
    """Unprefixed LDM VAE keys -> diffusers keys; returns (converted, unmatched keys)."""
    return _convert(sd, VAELayout.from_ldm(sd).pairs(), to_diffusers=True)


def vae_to_ldm(sd: "StateDict") -> "StateDict":
    """diffusers VAE keys -> unprefixed LDM keys (every key must map)."""
    out, unmatched = _convert(sd, VAELayout.from_diffusers(sd).pairs(), to_diffusers=False)
    if unmatched:
        raise ConversionError(f"VAE keys with no LDM equivalent: {unmatched[:5]}")
    return out


_LEGACY_VAE_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def modernize_diffusers_vae(sd: "StateDict") -> "StateDict":
    """Rename pre-0.14 diffusers VAE attention keys (query/key/value/proj_attn) to today's names."""
    out = {}
    rx = re.compile(r"(.*\.mid_block\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")
    for k, v in sd.items():
        m = rx.match(k)
        if m:
            k = f"{m.group(1)}{_LEGACY_VAE_ATTN[m.group(2)]}.{m.group(3)}"
            if v.ndim == 4:
                v = v[:, :, 0, 0]
        out[k] = v
    return out


def is_ldm_vae(keys: Iterable[str]) -> bool:
    """True for LDM VAE keys (``encoder.down.0...``), False for diffusers keys (``encoder.down_blocks.0...``)."""
    keys = list(keys)
    if _has_prefix(keys, "encoder.down_blocks."):
        return False
    if _has_prefix(keys, "encoder.down."):
        return True
    raise ConversionError("not a VAE state dict: no encoder.down.* or encoder.down_blocks.* keys")


# ---------------------------------------------------------------- text encoders


def canonical_text_keys(sd: "StateDict") -> "StateDict":
    """transformers CLIP keys in any version's style -> ``text_model.*`` / ``text_projection.weight``."""
    out = {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        out[k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}"] = v
    return out


def fit_text_keys(canonical: "StateDict", model_keys: Iterable[str]) -> "StateDict":
    """Adapt canonical CLIP keys to the key style a given transformers model expects."""
    if any(k.startswith("text_model.") for k in model_keys):
        return dict(canonical)
    return {k.removeprefix("text_model."): v for k, v in canonical.items()}


def clip_from_ldm(sd: "StateDict") -> tuple["StateDict", list[str]]:
    """Unprefixed LDM keys of a transformers CLIP text model (SD1, SDXL encoder 1) -> canonical keys."""
    out, ignored = {}, []
    for k, v in sd.items():
        if k.endswith(_IGNORED_TEXT_KEYS):
            ignored.append(k)
            continue
        # very old SD1 files were saved by transformers versions without the text_model. level
        out[k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}"] = v
    return out, ignored


def clip_to_ldm(canonical: "StateDict") -> "StateDict":
    """Canonical CLIP text keys -> unprefixed LDM keys (the same transformers names)."""
    return dict(canonical)


_OPENCLIP_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def openclip_from_ldm(sd: "StateDict", unused_final_blocks: int = 0) -> tuple["StateDict", list[str]]:
    """Unprefixed OpenCLIP text-tower keys (SD2, SDXL encoder 2) -> canonical transformers CLIP keys.

    ``unused_final_blocks`` drops the last residual blocks: SD2 conditions on the penultimate block of
    OpenCLIP ViT-H (then ``ln_final``), so its 24th block is stored but never run.
    """
    blocks = _indices(sd, r"transformer\.resblocks\.(\d+)\.")
    if not blocks:
        raise ConversionError("no transformer.resblocks.* keys found (is this an OpenCLIP text tower?)")
    used = max(blocks) + 1 - unused_final_blocks
    out, ignored = {}, []
    rx = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
    for k, v in sd.items():
        m = rx.match(k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            if i >= used:  # stored but never run by this family: not reported as ignored
                continue
            pre = f"text_model.encoder.layers.{i}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if rest.endswith("weight") else "bias"
                q, kk, vv = v.chunk(3, dim=0)
                out[f"{pre}self_attn.q_proj.{kind}"] = q
                out[f"{pre}self_attn.k_proj.{kind}"] = kk
                out[f"{pre}self_attn.v_proj.{kind}"] = vv
                continue
            head, _, tail = rest.rpartition(".")
            if head not in _OPENCLIP_BLOCK:
                raise ConversionError(f"unexpected OpenCLIP block key {k!r}")
            out[f"{pre}{_OPENCLIP_BLOCK[head]}.{tail}"] = v
        elif k == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = v
        elif k == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = v
        elif k.startswith("ln_final."):
            out["text_model.final_layer_norm." + k.removeprefix("ln_final.")] = v
        elif k == "text_projection":
            # OpenCLIP computes x @ P; a torch Linear computes x @ W.T, so W = P.T
            out["text_projection.weight"] = v.t().contiguous()
        elif k == "text_projection.weight":  # some converters store it already as a Linear weight
            out["text_projection.weight"] = v
        else:
            ignored.append(k)
    return out, ignored


def openclip_to_ldm(canonical: "StateDict", unused_final_blocks: int = 0) -> "StateDict":
    """Canonical CLIP text keys -> unprefixed OpenCLIP keys (inverse of ``openclip_from_ldm``).

    The ``unused_final_blocks`` placeholders (SD2's never-run 24th block) are written as zeros so that
    the file has the block count of the real layout; no inference path runs them.
    """
    import torch

    inverse = {v: k for k, v in _OPENCLIP_BLOCK.items()}
    out: dict = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    rx = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.+)")
    for k, v in canonical.items():
        m = rx.match(k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            head, _, tail = rest.rpartition(".")
            if head in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((i, tail), {})[head[10]] = v
                continue
            if head not in inverse:
                raise ConversionError(f"CLIP key {k!r} has no OpenCLIP equivalent")
            out[f"transformer.resblocks.{i}.{inverse[head]}.{tail}"] = v
        elif k == "text_model.embeddings.token_embedding.weight":
            out["token_embedding.weight"] = v
        elif k == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = v
        elif k.startswith("text_model.final_layer_norm."):
            out["ln_final." + k.removeprefix("text_model.final_layer_norm.")] = v
        elif k == "text_projection.weight":
            out["text_projection"] = v.t().contiguous()
        else:
            raise ConversionError(f"CLIP key {k!r} has no OpenCLIP equivalent")
    for (i, tail), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ConversionError(f"layer {i}: q/k/v {tail} incomplete")
        out[f"transformer.resblocks.{i}.attn.in_proj_{tail}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    n = len(_indices(out, r"transformer\.resblocks\.(\d+)\."))
    template = {k.split(".", 3)[3]: v for k, v in out.items() if k.startswith(f"transformer.resblocks.{n - 1}.")}
    for extra in range(n, n + unused_final_blocks):
        for rest, v in template.items():
            out[f"transformer.resblocks.{extra}.{rest}"] = torch.zeros_like(v)
    return out


def strip_prefix(sd: "StateDict", prefix: str) -> "StateDict":
    """The entries under ``prefix``, with it removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def add_prefix(sd: "StateDict", prefix: str) -> "StateDict":
    """Every key with ``prefix`` in front."""
    return {prefix + k: v for k, v in sd.items()}
