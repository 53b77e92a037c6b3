"""Key conversion between the original SD3 / Flux single-file layouts and diffusers' transformer layouts.

Original layouts:

- Flux (Black Forest Labs' reference code, the released ``flux1-*.safetensors``): ``img_in``, ``txt_in``,
  ``time_in``, ``vector_in``, ``guidance_in`` (dev only), ``double_blocks.N.{img,txt}_{mod,attn,mlp}``,
  ``single_blocks.N.{linear1,linear2,norm,modulation}``, ``final_layer``; ComfyUI saves the same keys under
  ``model.diffusion_model.``.
- SD3 (Stability's MMDiT, the "sd3_medium" all-in-one files): ``model.diffusion_model.{pos_embed, x_embedder,
  t_embedder, y_embedder, context_embedder, joint_blocks.N.{x,context}_block, final_layer}``; the rest of an
  all-in-one file (VAE, three text encoders) is handled in ``iga.models.flow_files``.

Both directions run from one rule list per model, built from the block structure (how many blocks, which
optional modules a block has), so converting there and back is the identity by construction and any width or
depth converts. What diffusers does differently from the original code, and so what the rules undo:

- fused projections: the original computes q, k, v with one linear (``qkv``); Flux single blocks fuse q, k, v
  and the MLP input into ``linear1``. diffusers keeps separate linears; splitting is along the output rows.
- the *final* adaptive norm (``final_layer.adaLN_modulation.1``, and SD3's last, pre-only context block) emits
  (shift, scale) in the original code and (scale, shift) in diffusers' ``AdaLayerNormContinuous``; the other
  modulations keep their order.
- Flux's q/k RMS norms store ``scale``; diffusers' RMSNorm stores ``weight``.

Configs are read from shapes (``flux_config`` / ``sd3_config``, on diffusers keys, so a diffusers-layout file
gets the same inference). What shapes cannot tell comes from ``overrides`` (``iga.model_config`` metadata,
component ``transformer``), else from the released model: Flux ``patch_size`` 1 and rope axes in the
proportions of (16, 56, 56); SD3 ``sample_size`` 128 and a head size of 64 when the blocks have no q/k norm.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from iga.models.ldm import ConversionError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    StateDict = dict[str, torch.Tensor]

ORIGINAL_PREFIX = "model.diffusion_model."

# The released models' values for what tensor shapes cannot tell (see the module docstring).
FLUX_ROPE_AXES = (16, 56, 56)
FLUX_MLP_RATIO = 4  # diffusers' FluxTransformer2DModel has no mlp_ratio setting
SD3_SAMPLE_SIZE = 128
SD3_HEAD_DIM = 64
TRANSFORMER_OVERRIDABLE = {
    "flux": frozenset({"axes_dims_rope", "patch_size", "attention_head_dim", "num_attention_heads"}),
    "sd3": frozenset({"sample_size", "attention_head_dim", "num_attention_heads"}),
}


@dataclass(frozen=True)
class Rule:
    """One original module and the diffusers module(s) it becomes.

    ``op``: ``copy``; ``swap`` (shift/scale halves exchanged, its own inverse); ``split`` (rows cut into
    ``len(diffusers)`` parts: equal thirds for q/k/v, or ``sizes``). ``tails`` renames parameter names
    (original -> diffusers); parameters not listed keep their name.
    """

    original: str
    diffusers: tuple[str, ...]
    op: str = "copy"
    sizes: tuple[int, ...] | None = None
    tails: tuple[tuple[str, str], ...] = ()


def _r(original: str, *diffusers: str, op: str = "copy", **kw: Any) -> Rule:
    return Rule(original, tuple(diffusers), op, **kw)


_SCALE = (("scale", "weight"),)  # Flux RMSNorm parameter name


# ---------------------------------------------------------------- Flux rules


def _flux_rules(double: int, single: int, guidance: bool, inner: int, mlp: int) -> list[Rule]:
    """Every module of a Flux transformer with ``double``/``single`` blocks (``inner`` width, ``mlp`` hidden)."""
    rules = [
        _r("img_in", "x_embedder"), _r("txt_in", "context_embedder"),
        _r("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
        _r("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
        _r("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
        _r("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
        _r("final_layer.linear", "proj_out"),
        _r("final_layer.adaLN_modulation.1", "norm_out.linear", op="swap"),
    ]
    if guidance:
        rules += [_r("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                  _r("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")]
    for i in range(double):
        o, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        rules += [
            _r(o + "img_mod.lin", d + "norm1.linear"), _r(o + "txt_mod.lin", d + "norm1_context.linear"),
            _r(o + "img_attn.qkv", d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", op="split"),
            _r(o + "txt_attn.qkv", d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj", op="split"),
            _r(o + "img_attn.norm.query_norm", d + "attn.norm_q", tails=_SCALE),
            _r(o + "img_attn.norm.key_norm", d + "attn.norm_k", tails=_SCALE),
            _r(o + "txt_attn.norm.query_norm", d + "attn.norm_added_q", tails=_SCALE),
            _r(o + "txt_attn.norm.key_norm", d + "attn.norm_added_k", tails=_SCALE),
            _r(o + "img_attn.proj", d + "attn.to_out.0"), _r(o + "txt_attn.proj", d + "attn.to_add_out"),
            _r(o + "img_mlp.0", d + "ff.net.0.proj"), _r(o + "img_mlp.2", d + "ff.net.2"),
            _r(o + "txt_mlp.0", d + "ff_context.net.0.proj"), _r(o + "txt_mlp.2", d + "ff_context.net.2"),
        ]
    for i in range(single):
        o, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        rules += [
            _r(o + "modulation.lin", d + "norm.linear"),
            # linear1 = [q; k; v; mlp-in] stacked by rows: diffusers keeps four linears
            _r(o + "linear1", d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", d + "proj_mlp", op="split",
               sizes=(inner, inner, inner, mlp)),
            _r(o + "norm.query_norm", d + "attn.norm_q", tails=_SCALE),
            _r(o + "norm.key_norm", d + "attn.norm_k", tails=_SCALE),
            _r(o + "linear2", d + "proj_out"),
        ]
    return rules


def _strip_original_prefix(sd: "StateDict") -> "StateDict":
    if any(k.startswith(ORIGINAL_PREFIX) for k in sd):
        return {k.removeprefix(ORIGINAL_PREFIX): v for k, v in sd.items() if k.startswith(ORIGINAL_PREFIX)}
    return dict(sd)


def _flux_rules_from_original(sd: "StateDict") -> list[Rule]:
    double = _count(sd, r"double_blocks\.(\d+)\.")
    single = _count(sd, r"single_blocks\.(\d+)\.")
    inner = _shape(sd, "img_in.weight")[0]
    mlp = _shape(sd, "single_blocks.0.linear1.weight")[0] - 3 * inner if single else FLUX_MLP_RATIO * inner
    return _flux_rules(double, single, "guidance_in.in_layer.weight" in sd, inner, mlp)


def _flux_rules_from_diffusers(sd: "StateDict") -> list[Rule]:
    double = _count(sd, r"transformer_blocks\.(\d+)\.")
    single = _count(sd, r"single_transformer_blocks\.(\d+)\.")
    inner = _shape(sd, "x_embedder.weight")[0]
    mlp = _shape(sd, "single_transformer_blocks.0.proj_mlp.weight")[0] if single else FLUX_MLP_RATIO * inner
    guidance = "time_text_embed.guidance_embedder.linear_1.weight" in sd
    return _flux_rules(double, single, guidance, inner, mlp)


def flux_to_diffusers(state_dict: "StateDict", overrides: dict[str, Any] | None = None
                      ) -> tuple["StateDict", dict[str, Any]]:
    """Original (BFL, optionally ``model.diffusion_model.``-prefixed) Flux keys -> (diffusers keys, config)."""
    sd = _strip_original_prefix(state_dict)
    if "double_blocks.0.img_attn.qkv.weight" not in sd:
        raise ConversionError("no double_blocks.0.img_attn.qkv.weight: not a Flux transformer in the original layout")
    out = apply_rules(sd, _flux_rules_from_original(sd), to_diffusers=True)
    return out, flux_config(out, overrides)


def flux_from_diffusers(diffusers_state_dict: "StateDict", config: dict[str, Any] | None = None) -> "StateDict":
    """diffusers ``FluxTransformer2DModel`` keys -> original BFL keys (unprefixed, as the released files)."""
    sd = diffusers_state_dict
    if config is not None:  # a config that does not describe these weights would write a file nothing loads
        _check_config(flux_config(sd, {k: config[k] for k in TRANSFORMER_OVERRIDABLE["flux"] if k in config}),
                      config, "Flux")
    return apply_rules(sd, _flux_rules_from_diffusers(sd), to_diffusers=False)


def flux_config(sd: "StateDict", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``FluxTransformer2DModel`` config for diffusers-keyed weights (see the module docstring)."""
    _check_overrides(overrides, "flux")
    ov = dict(overrides or {})
    inner, in_channels = _shape(sd, "x_embedder.weight")
    norm_key = next((k for k in ("transformer_blocks.0.attn.norm_q.weight",
                                 "single_transformer_blocks.0.attn.norm_q.weight") if k in sd), None)
    head_dim = ov.get("attention_head_dim") or (_shape(sd, norm_key)[0] if norm_key else None)
    if head_dim is None or inner % head_dim:
        raise ConversionError(f"cannot tell the Flux head size for width {inner}; set transformer.attention_head_dim")
    patch = int(ov.get("patch_size", 1))
    out_rows = _shape(sd, "proj_out.weight")[0]
    out_channels = out_rows // (patch * patch)
    if "transformer_blocks.0.ff.net.0.proj.weight" in sd:
        hidden = _shape(sd, "transformer_blocks.0.ff.net.0.proj.weight")[0]
        if hidden != FLUX_MLP_RATIO * inner:
            raise ConversionError(f"Flux MLP width {hidden} is not {FLUX_MLP_RATIO} x {inner}: "
                                  "diffusers cannot build it")
    axes = tuple(ov.get("axes_dims_rope") or flux_rope_axes(head_dim))
    if sum(axes) != head_dim or any(a % 2 for a in axes):
        raise ConversionError(f"rope axes {axes} must be even and sum to the head size {head_dim}")
    return {
        "patch_size": patch,
        "in_channels": in_channels,
        "out_channels": None if out_channels == in_channels else out_channels,
        "num_layers": _count(sd, r"transformer_blocks\.(\d+)\."),
        "num_single_layers": _count(sd, r"single_transformer_blocks\.(\d+)\."),
        "attention_head_dim": head_dim,
        "num_attention_heads": int(ov.get("num_attention_heads", inner // head_dim)),
        "joint_attention_dim": _shape(sd, "context_embedder.weight")[1],
        "pooled_projection_dim": _shape(sd, "time_text_embed.text_embedder.linear_1.weight")[1],
        "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in sd,
        "axes_dims_rope": axes,
    }


def flux_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Rope axes for a head size, in the proportions of the released (16, 56, 56) for 128, each rounded down to
    an even size, the remainder going to the first (index) axis; exact for 128, a guess for other sizes."""
    rest = [2 * int(head_dim * a / sum(FLUX_ROPE_AXES) / 2) for a in FLUX_ROPE_AXES[1:]]
    return (head_dim - sum(rest), rest[0], rest[1])


# ---------------------------------------------------------------- SD3 rules


def _sd3_block_rules(i: int, pre_only: bool, attn2: bool, qk_norm: bool) -> list[Rule]:
    o, d = f"joint_blocks.{i}.", f"transformer_blocks.{i}."
    x, c = o + "x_block.", o + "context_block."
    rules = [
        _r(x + "attn.qkv", d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", op="split"),
        _r(c + "attn.qkv", d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj", op="split"),
        _r(x + "attn.proj", d + "attn.to_out.0"),
        _r(x + "adaLN_modulation.1", d + "norm1.linear"),
        # the pre-only context block ends in an AdaLayerNormContinuous: (shift, scale) -> (scale, shift)
        _r(c + "adaLN_modulation.1", d + "norm1_context.linear", op="swap" if pre_only else "copy"),
        _r(x + "mlp.fc1", d + "ff.net.0.proj"), _r(x + "mlp.fc2", d + "ff.net.2"),
    ]
    if not pre_only:
        rules += [_r(c + "attn.proj", d + "attn.to_add_out"),
                  _r(c + "mlp.fc1", d + "ff_context.net.0.proj"), _r(c + "mlp.fc2", d + "ff_context.net.2")]
    if qk_norm:
        rules += [_r(x + "attn.ln_q", d + "attn.norm_q"), _r(x + "attn.ln_k", d + "attn.norm_k"),
                  _r(c + "attn.ln_q", d + "attn.norm_added_q"), _r(c + "attn.ln_k", d + "attn.norm_added_k")]
    if attn2:  # SD3.5 "MMDiT-X": a second, image-only attention
        rules += [_r(x + "attn2.qkv", d + "attn2.to_q", d + "attn2.to_k", d + "attn2.to_v", op="split"),
                  _r(x + "attn2.proj", d + "attn2.to_out.0")]
        if qk_norm:
            rules += [_r(x + "attn2.ln_q", d + "attn2.norm_q"), _r(x + "attn2.ln_k", d + "attn2.norm_k")]
    return rules


def _sd3_rules(layers: int, attn2: Iterable[int], qk_norm: bool) -> list[Rule]:
    rules = [
        _r("x_embedder.proj", "pos_embed.proj"), _r("context_embedder", "context_embedder"),
        _r("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
        _r("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
        _r("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
        _r("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
        _r("final_layer.linear", "proj_out"),
        _r("final_layer.adaLN_modulation.1", "norm_out.linear", op="swap"),
    ]
    dual = set(attn2)
    for i in range(layers):
        # diffusers makes only the last block's context stream pre-only (no attention output, no MLP)
        rules += _sd3_block_rules(i, i == layers - 1, i in dual, qk_norm)
    return rules


def sd3_transformer_to_diffusers(state_dict: "StateDict", overrides: dict[str, Any] | None = None
                                 ) -> tuple["StateDict", dict[str, Any]]:
    """Original MMDiT keys (optionally ``model.diffusion_model.``-prefixed) -> (diffusers keys, config)."""
    sd = _strip_original_prefix(state_dict)
    if "joint_blocks.0.x_block.attn.qkv.weight" not in sd:
        raise ConversionError("no joint_blocks.0.x_block.attn.qkv.weight: not an SD3 transformer (original layout)")
    layers = _count(sd, r"joint_blocks\.(\d+)\.")
    attn2 = sorted(_indices(sd, r"joint_blocks\.(\d+)\.x_block\.attn2\."))
    qk_norm = "joint_blocks.0.x_block.attn.ln_q.weight" in sd
    pos = sd.pop("pos_embed", None)  # a bare tensor, not a module: outside the rules
    out = apply_rules(sd, _sd3_rules(layers, attn2, qk_norm), to_diffusers=True)
    if pos is not None:
        out["pos_embed.pos_embed"] = pos
    return out, sd3_transformer_config(out, overrides)


def sd3_transformer_from_diffusers(sd: "StateDict", config: dict[str, Any] | None = None) -> "StateDict":
    """diffusers ``SD3Transformer2DModel`` keys -> unprefixed original MMDiT keys."""
    if config is not None:
        _check_config(sd3_transformer_config(sd, {k: config[k] for k in TRANSFORMER_OVERRIDABLE["sd3"] if k in config}),
                      config, "SD3")
    sd = dict(sd)
    pos = sd.pop("pos_embed.pos_embed", None)
    layers = _count(sd, r"transformer_blocks\.(\d+)\.")
    attn2 = _indices(sd, r"transformer_blocks\.(\d+)\.attn2\.")
    out = apply_rules(sd, _sd3_rules(layers, attn2, "transformer_blocks.0.attn.norm_q.weight" in sd),
                      to_diffusers=False)
    if pos is not None:
        out["pos_embed"] = pos
    return out


def sd3_transformer_config(sd: "StateDict", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``SD3Transformer2DModel`` config for diffusers-keyed weights (see the module docstring)."""
    _check_overrides(overrides, "sd3")
    ov = dict(overrides or {})
    inner, in_channels, patch, _ = _shape(sd, "pos_embed.proj.weight")
    norm = "transformer_blocks.0.attn.norm_q.weight"
    head_dim = ov.get("attention_head_dim") or (_shape(sd, norm)[0] if norm in sd else SD3_HEAD_DIM)
    if inner % head_dim:
        raise ConversionError(f"SD3 width {inner} is not a multiple of the head size {head_dim}; "
                              "set transformer.attention_head_dim")
    qk_norm = None
    if norm in sd:  # RMSNorm has a weight only; a LayerNorm would also have a bias
        qk_norm = "layer_norm" if "transformer_blocks.0.attn.norm_q.bias" in sd else "rms_norm"
    pos_max = None
    if "pos_embed.pos_embed" in sd:
        side = math.isqrt(_shape(sd, "pos_embed.pos_embed")[1])
        pos_max = side
    return {
        "sample_size": int(ov.get("sample_size", SD3_SAMPLE_SIZE)),
        "patch_size": patch,
        "in_channels": in_channels,
        "num_layers": _count(sd, r"transformer_blocks\.(\d+)\."),
        "attention_head_dim": head_dim,
        "num_attention_heads": int(ov.get("num_attention_heads", inner // head_dim)),
        "joint_attention_dim": _shape(sd, "context_embedder.weight")[1],
        "caption_projection_dim": _shape(sd, "context_embedder.weight")[0],
        "pooled_projection_dim": _shape(sd, "time_text_embed.text_embedder.linear_1.weight")[1],
        "out_channels": _shape(sd, "proj_out.weight")[0] // (patch * patch),
        "pos_embed_max_size": pos_max,
        "dual_attention_layers": tuple(sorted(_indices(sd, r"transformer_blocks\.(\d+)\.attn2\."))),
        "qk_norm": qk_norm,
    }


# ---------------------------------------------------------------- the rule engine


def apply_rules(sd: "StateDict", rules: list[Rule], to_diffusers: bool) -> "StateDict":
    """Rename/split/join every tensor of ``sd`` by ``rules``; a tensor no rule covers is an error (a key
    silently dropped would make a file that loads as a different model)."""
    out: dict = {}
    used: set[str] = set()
    for rule in rules:
        tails = dict(rule.tails) if to_diffusers else {d: o for o, d in rule.tails}
        src = rule.original if to_diffusers else rule.diffusers[0]
        keys = [k for k in sd if k.startswith(src + ".")]
        if not any(k.endswith((".weight", ".scale")) for k in keys):
            # the structure read from the keys says this module exists: the file lost its weight
            raise ConversionError(f"no weight for {src} (the checkpoint is incomplete)")
        for key in keys:
            tail = key[len(src) + 1:]
            new_tail = tails.get(tail, tail)
            if to_diffusers:
                parts = _forward(rule, sd[key])
                for name, value in zip(rule.diffusers, parts):
                    out[f"{name}.{new_tail}"] = value
                used.add(key)
            else:
                names = [f"{name}.{tail}" for name in rule.diffusers]
                missing = [k for k in names if k not in sd]
                if missing:
                    raise ConversionError(f"{rule.original}.{new_tail}: missing {missing}")
                out[f"{rule.original}.{new_tail}"] = _backward(rule, [sd[k] for k in names])
                used.update(names)
    left = [k for k in sd if k not in used]
    if left:
        side = "original" if to_diffusers else "diffusers"
        raise ConversionError(f"{len(left)} {side} keys have no counterpart, e.g. {sorted(left)[:5]}")
    return out


def _forward(rule: Rule, t: "torch.Tensor") -> list["torch.Tensor"]:
    """Original tensor -> the diffusers tensors (copies, so no two saved tensors share memory)."""
    import torch

    if rule.op == "copy":
        return [t]
    if rule.op == "swap":
        return [_swap_halves(t)]
    if rule.sizes is not None:
        if sum(rule.sizes) != t.shape[0]:
            raise ConversionError(f"{rule.original}: {t.shape[0]} rows, expected {'+'.join(map(str, rule.sizes))}")
        return [p.clone() for p in torch.split(t, list(rule.sizes), dim=0)]
    if t.shape[0] % len(rule.diffusers):
        raise ConversionError(f"{rule.original}: {t.shape[0]} rows do not split into {len(rule.diffusers)}")
    return [p.clone() for p in torch.chunk(t, len(rule.diffusers), dim=0)]


def _backward(rule: Rule, parts: list["torch.Tensor"]) -> "torch.Tensor":
    import torch

    if rule.op == "copy":
        return parts[0]
    if rule.op == "swap":
        return _swap_halves(parts[0])
    return torch.cat(parts, dim=0)


def _swap_halves(t: "torch.Tensor") -> "torch.Tensor":
    import torch

    if t.shape[0] % 2:
        raise ConversionError(f"modulation with {t.shape[0]} rows cannot hold (shift, scale) halves")
    a, b = torch.chunk(t, 2, dim=0)
    return torch.cat([b, a], dim=0)


# ---------------------------------------------------------------- helpers


def _indices(keys: Iterable[str], pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in keys if (m := rx.match(k))}


def _count(keys: Iterable[str], pattern: str) -> int:
    found = _indices(keys, pattern)
    if found and found != set(range(max(found) + 1)):
        raise ConversionError(f"blocks {sorted(set(range(max(found) + 1)) - found)[:5]} missing ({pattern})")
    return len(found)


def _shape(sd: "StateDict", key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConversionError(f"tensor {key!r} missing: the checkpoint is incomplete or of another model")
    return tuple(sd[key].shape)


def _check_overrides(overrides: dict[str, Any] | None, kind: str) -> None:
    bad = set(overrides or {}) - TRANSFORMER_OVERRIDABLE[kind]
    if bad:
        raise ConversionError(f"transformer settings {sorted(bad)} cannot be set (they are read from the weights); "
                              f"allowed: {sorted(TRANSFORMER_OVERRIDABLE[kind])}")


def _check_config(inferred: dict[str, Any], given: dict[str, Any], what: str) -> None:
    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, (list, tuple)) else v

    given = dict(given)
    if given.get("out_channels") == given.get("in_channels") and "out_channels" in inferred:
        given["out_channels"] = inferred["out_channels"]  # Flux: None and in_channels mean the same
    if given.get("out_channels") is None and inferred.get("out_channels") == given.get("in_channels"):
        given["out_channels"] = inferred["out_channels"]
    differ = [k for k, v in inferred.items() if k in given and norm(given[k]) != norm(v)]
    if differ:
        raise ConversionError(f"{what} config does not describe these weights: " +
                              ", ".join(f"{k} {given[k]!r} vs weights {inferred[k]!r}" for k in differ))
