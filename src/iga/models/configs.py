"""Family configurations (data shipped with iga) and config inference from a checkpoint's tensor shapes.

A single-file checkpoint stores weights, not configs. iga ships the published diffusers/transformers
configs of each family under ``iga/data/configs/<family>/`` and fills in everything a tensor shape
tells (widths, depths, channels, context width, transformer depth, linear vs conv projections, ...),
so both the real models and smaller variants (pruned, tiny test models) load through the same code.

What shapes cannot tell, and where it comes from (in this order):
1. the ``iga.model_config`` metadata key of the file: JSON ``{"unet": {...}, "vae": {...},
   "text_encoder": {...}, "text_encoder_2": {...}}`` with only the keys in ``OVERRIDABLE``;
2. the family config, when the inferred widths equal the family's (every real checkpoint);
3. the family's rule: UNet heads = 8 per block (SD1) or width/64 (SD2, SDXL); text-encoder heads =
   width/64; group norms 32; activations, eps and the VAE scaling factor as in the family.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import TYPE_CHECKING, Any

from iga.models.ldm import UNetLayout, VAELayout

if TYPE_CHECKING:  # pragma: no cover
    import torch

FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl", "sdxl_refiner")
MODEL_CONFIG_KEY = "iga.model_config"
MAX_MODEL_CONFIG_BYTES = 65536

# Which config values a checkpoint may set through ``iga.model_config`` (everything else is inferred).
OVERRIDABLE: dict[str, frozenset[str]] = {
    "unet": frozenset({"attention_head_dim", "norm_num_groups", "norm_eps", "act_fn", "upcast_attention",
                       "addition_time_embed_dim", "flip_sin_to_cos", "freq_shift", "sample_size"}),
    "vae": frozenset({"norm_num_groups", "scaling_factor", "shift_factor", "act_fn", "force_upcast", "sample_size"}),
    "text_encoder": frozenset({"num_attention_heads", "hidden_act", "layer_norm_eps"}),
    "text_encoder_2": frozenset({"num_attention_heads", "hidden_act", "layer_norm_eps"}),
}


class ConfigError(ValueError):
    """A checkpoint's shapes or ``iga.model_config`` do not give a usable model config."""


@functools.cache
def family(name: str) -> dict[str, Any]:
    """The shipped configs of one family: ``{"family": ..., "unet": ..., "vae": ..., "scheduler": ..., "text": [...]}``."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    root = resources.files("iga").joinpath("data", "configs", name)

    def load(fn: str) -> dict[str, Any]:
        return json.loads(root.joinpath(fn).read_text(encoding="utf-8"))

    fam = load("family.json")
    return {
        "family": fam,
        "unet": load("unet.json"),
        "vae": load("vae.json"),
        "scheduler": load("scheduler.json"),
        "text": [dict(spec, config=load(spec["config"])) for spec in fam["text_encoders"]],
    }


def parse_model_config(raw: str | None) -> dict[str, dict[str, Any]]:
    """Validate the ``iga.model_config`` metadata value (JSON, allow-listed keys, scalar or list values)."""
    if not raw:
        return {}
    if len(raw.encode("utf-8")) > MAX_MODEL_CONFIG_BYTES:
        raise ConfigError(f"{MODEL_CONFIG_KEY} metadata is larger than {MAX_MODEL_CONFIG_BYTES} bytes")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{MODEL_CONFIG_KEY} metadata is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{MODEL_CONFIG_KEY} metadata must be a JSON object of components")
    out: dict[str, dict[str, Any]] = {}
    for comp, values in data.items():
        if comp not in OVERRIDABLE or not isinstance(values, dict):
            raise ConfigError(f"{MODEL_CONFIG_KEY}: unknown component {comp!r}; known: {sorted(OVERRIDABLE)}")
        bad = set(values) - OVERRIDABLE[comp]
        if bad:
            raise ConfigError(f"{MODEL_CONFIG_KEY}: {comp} keys {sorted(bad)} cannot be set; allowed: "
                              f"{sorted(OVERRIDABLE[comp])} (the rest is read from tensor shapes)")
        for k, v in values.items():
            ok = isinstance(v, (bool, int, float, str)) or (
                isinstance(v, list) and all(isinstance(x, (int, float)) for x in v))
            if not ok:
                raise ConfigError(f"{MODEL_CONFIG_KEY}: {comp}.{k} must be a number, string, bool or list of numbers")
        out[comp] = dict(values)
    return out


def _shape(sd: "dict[str, torch.Tensor]", key: str, what: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConfigError(f"{what}: tensor {key!r} missing; the checkpoint is incomplete or not of this family")
    return tuple(sd[key].shape)


def _count(keys: Any, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def infer_unet_config(sd: "dict[str, torch.Tensor]", base: dict[str, Any], rule: dict[str, int],
                      overrides: dict[str, Any] | None = None, pooled_dim: int | None = None,
                      time_ids: int = 6) -> dict[str, Any]:
    """A ``UNet2DConditionModel`` config for diffusers-keyed UNet weights ``sd`` (``time_ids``: how many size
    conditioning values the added embedding takes: 6 for SDXL base, 5 for the refiner)."""
    layout = UNetLayout.from_diffusers(sd)
    n, L = layout.levels, layout.layers
    boc = [_shape(sd, f"down_blocks.{i}.resnets.0.conv1.weight", "UNet")[0] for i in range(n)]
    attn_keys = [k for k in sd if k.endswith("attn2.to_k.weight")]
    if not attn_keys:
        raise ConfigError("UNet has no cross-attention layers; not a text-conditioned Stable Diffusion UNet")
    proj_in = next(k for k in sd if k.endswith("attentions.0.proj_in.weight"))
    depth = []
    for i in range(n):
        depth.append(_count(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")
                     if layout.down_attn[i] else 1)
    if layout.mid_attn and not layout.down_attn[-1]:
        # a last level without attention (the SDXL refiner's) has no depth of its own: the mid block's is the one
        # diffusers reads from transformer_layers_per_block[-1]
        depth[-1] = _count(sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    cfg = {k: v for k, v in base.items() if not k.startswith("_")}
    cfg.update(
        in_channels=_shape(sd, "conv_in.weight", "UNet")[1],
        out_channels=_shape(sd, "conv_out.weight", "UNet")[0],
        block_out_channels=boc,
        layers_per_block=L,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in layout.down_attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in layout.up_attn],
        mid_block_type="UNetMidBlock2DCrossAttn" if layout.mid_attn else "UNetMidBlock2D",
        cross_attention_dim=sd[attn_keys[0]].shape[1],
        use_linear_projection=sd[proj_in].ndim == 2,
        transformer_layers_per_block=depth[0] if len(set(depth)) == 1 else depth,
    )
    up_depth = [_count(sd, rf"up_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") if a else d
                for i, (a, d) in enumerate(zip(layout.up_attn, depth[::-1]))]  # no attention: nothing to count
    if up_depth != depth[::-1]:
        cfg["reverse_transformer_layers_per_block"] = [[d] * (L + 1) for d in up_depth]
    if layout.mid_attn:
        mid = _count(sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
        if mid != depth[-1]:
            raise ConfigError(f"UNet mid block has {mid} transformer layers, last down block {depth[-1]}: unsupported")
    temb = _shape(sd, "time_embedding.linear_1.weight", "UNet")[0]
    if temb != boc[0] * 4:
        cfg["time_embedding_dim"] = temb
    same_widths = boc == list(base["block_out_channels"])
    if layout.label_emb:
        proj = _shape(sd, "add_embedding.linear_1.weight", "UNet")[1]
        cfg["addition_embed_type"] = "text_time"
        cfg["projection_class_embeddings_input_dim"] = proj
        if not (same_widths and proj == base.get("projection_class_embeddings_input_dim")) and \
                "addition_time_embed_dim" not in (overrides or {}):
            if pooled_dim is None or (proj - pooled_dim) % time_ids:
                raise ConfigError(f"cannot infer the size-embedding width from add_embedding input {proj}")
            cfg["addition_time_embed_dim"] = (proj - pooled_dim) // time_ids
    else:
        for k in ("addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
                  "addition_embed_type_num_heads"):
            cfg.pop(k, None)
    overrides = overrides or {}
    if not same_widths and "attention_head_dim" not in overrides:
        if "fixed_heads" in rule:
            cfg["attention_head_dim"] = rule["fixed_heads"]
        else:
            hd = rule["head_dim"]
            if any(c % hd for c in boc):
                raise ConfigError(f"UNet widths {boc} are not multiples of the family head size {hd}; "
                                  f"set unet.attention_head_dim in the {MODEL_CONFIG_KEY} metadata")
            cfg["attention_head_dim"] = [c // hd for c in boc]
    cfg.update(overrides)
    return cfg


def infer_vae_config(sd: "dict[str, torch.Tensor]", base: dict[str, Any],
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``AutoencoderKL`` config for diffusers-keyed VAE weights ``sd``."""
    layout = VAELayout.from_diffusers(sd)
    boc = [_shape(sd, f"encoder.down_blocks.{i}.resnets.0.conv1.weight", "VAE")[0] for i in range(layout.levels)]
    cfg = {k: v for k, v in base.items() if not k.startswith("_")}
    cfg.update(
        in_channels=_shape(sd, "encoder.conv_in.weight", "VAE")[1],
        out_channels=_shape(sd, "decoder.conv_out.weight", "VAE")[0],
        latent_channels=_shape(sd, "decoder.conv_in.weight", "VAE")[1],
        block_out_channels=boc,
        layers_per_block=layout.layers,
        down_block_types=["DownEncoderBlock2D"] * layout.levels,
        up_block_types=["UpDecoderBlock2D"] * layout.levels,
        use_quant_conv="quant_conv.weight" in sd,
        use_post_quant_conv="post_quant_conv.weight" in sd,
        mid_block_add_attention=layout.mid_attn,
    )
    cfg.update(overrides or {})
    return cfg


def infer_text_config(sd: "dict[str, torch.Tensor]", base: dict[str, Any], head_dim: int = 64,
                      overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``CLIPTextConfig`` dict for canonical CLIP text weights ``sd`` (``text_model.*``)."""
    vocab, hidden = _shape(sd, "text_model.embeddings.token_embedding.weight", "text encoder")
    cfg = {k: v for k, v in base.items() if k not in ("architectures", "model_type")}
    cfg.update(
        vocab_size=vocab,
        hidden_size=hidden,
        max_position_embeddings=_shape(sd, "text_model.embeddings.position_embedding.weight", "text encoder")[0],
        num_hidden_layers=_count(sd, r"text_model\.encoder\.layers\.(\d+)\."),
        intermediate_size=_shape(sd, "text_model.encoder.layers.0.mlp.fc1.weight", "text encoder")[0],
    )
    if "text_projection.weight" in sd:
        cfg["projection_dim"] = sd["text_projection.weight"].shape[0]
    overrides = overrides or {}
    if hidden != base["hidden_size"] and "num_attention_heads" not in overrides:
        if hidden % head_dim:
            raise ConfigError(f"text encoder width {hidden} is not a multiple of {head_dim}; set "
                              f"text_encoder.num_attention_heads in the {MODEL_CONFIG_KEY} metadata")
        cfg["num_attention_heads"] = hidden // head_dim
    cfg.update(overrides)
    return cfg
