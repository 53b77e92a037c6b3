"""SD3 all-in-one files and Flux file sets: whole-file conversion, config inference and loading.

An SD3 "sd3_medium"-layout file holds five models: the MMDiT under ``model.diffusion_model.``, the VAE under
``first_stage_model.`` (LDM keys), CLIP-L under ``text_encoders.clip_l.transformer.``, OpenCLIP bigG under
``text_encoders.clip_g.transformer.`` (both already in transformers' CLIP names) and T5-XXL under
``text_encoders.t5xxl.transformer.`` (transformers' T5 names). A Flux transformer file holds the transformer
only; people keep CLIP-L, T5 and the VAE (``ae.safetensors``, LDM keys) beside it as separate files.

Component names follow diffusers' pipelines, so ``StableDiffusion3Pipeline(**components, ...)`` and
``FluxPipeline(**components, ...)`` take what the loaders return.

CLIP-L in SD3 is a ``CLIPTextModelWithProjection`` whose projection is the identity: the released file stores no
projection, so a missing one reads as the identity and an identity one is not written (diffusers does the same).

What weights cannot tell (attention heads of a narrow text encoder or transformer, rope axes, SD3's sample size)
comes from the ``iga.model_config`` metadata (``flow_model_config`` writes it), else from the released models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iga.models.configs import MODEL_CONFIG_KEY, infer_text_config, infer_vae_config
from iga.models.flow_convert import TRANSFORMER_OVERRIDABLE, flux_config, flux_to_diffusers, \
    sd3_transformer_from_diffusers, sd3_transformer_to_diffusers
from iga.models.ldm import ConversionError, canonical_text_keys, fit_text_keys, is_ldm_vae, \
    modernize_diffusers_vae, vae_from_ldm, vae_to_ldm

if TYPE_CHECKING:  # pragma: no cover
    import torch

    StateDict = dict[str, torch.Tensor]

SD3_PREFIXES = {
    "transformer": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "text_encoders.clip_l.transformer.",
    "text_encoder_2": "text_encoders.clip_g.transformer.",
    "text_encoder_3": "text_encoders.t5xxl.transformer.",
}
# The released models' settings; tensor shapes replace every value they determine.
_VAE_BASE = {
    "act_fn": "silu", "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "sample_size": 1024, "force_upcast": True,
    "use_quant_conv": False, "use_post_quant_conv": False, "mid_block_add_attention": True,
}
SD3_VAE = dict(_VAE_BASE, scaling_factor=1.5305, shift_factor=0.0609)
FLUX_VAE = dict(_VAE_BASE, scaling_factor=0.3611, shift_factor=0.1159)
CLIP_L = {"hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
          "num_hidden_layers": 12, "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-05,
          "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
          "attention_dropout": 0.0, "dropout": 0.0}
CLIP_G = dict(CLIP_L, hidden_act="gelu", hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
              num_hidden_layers=32, projection_dim=1280, pad_token_id=0)
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
          "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
          "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0, "pad_token_id": 0, "eos_token_id": 1,
          "decoder_start_token_id": 0, "tie_word_embeddings": False}
# what a file's iga.model_config may set, per kind of model (everything else is read from shapes)
KIND_KEYS = {
    "clip": frozenset({"num_attention_heads", "hidden_act", "layer_norm_eps", "bos_token_id", "eos_token_id",
                       "pad_token_id"}),
    "t5": frozenset({"num_heads", "d_kv", "relative_attention_max_distance", "layer_norm_epsilon"}),
    "vae": frozenset({"scaling_factor", "shift_factor", "norm_num_groups", "sample_size", "force_upcast"}),
    "flux": TRANSFORMER_OVERRIDABLE["flux"],
    "sd3": TRANSFORMER_OVERRIDABLE["sd3"],
}
_IGNORED_TEXT = ("position_ids", "logit_scale")


class FlowFilesError(ValueError):
    """A file set is incomplete or a file is not what its role needs."""


# ---------------------------------------------------------------- text encoders


def clip_to_diffusers(sd: "StateDict", base: dict[str, Any], overrides: dict[str, Any] | None = None,
                      identity_projection: bool = False) -> tuple["StateDict", dict[str, Any]]:
    """transformers CLIP text keys (any prefix style) -> (canonical ``text_model.*`` keys, CLIPTextConfig dict).

    ``identity_projection``: supply the identity ``text_projection`` when the file stores none (SD3's CLIP-L).
    """
    import torch

    canon = canonical_text_keys({k: v for k, v in sd.items() if not k.endswith(_IGNORED_TEXT)})
    width = canon["text_model.embeddings.token_embedding.weight"].shape[1] \
        if "text_model.embeddings.token_embedding.weight" in canon else None
    if identity_projection and "text_projection.weight" not in canon and width:
        emb = canon["text_model.embeddings.token_embedding.weight"]
        canon["text_projection.weight"] = torch.eye(width, dtype=emb.dtype)
    vocab = canon["text_model.embeddings.token_embedding.weight"].shape[0] if width else base["vocab_size"]
    if vocab != base["vocab_size"]:
        # CLIP's byte-level vocabularies end in <|startoftext|>, <|endoftext|> (49406, 49407 in the released one)
        base = dict(base, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                    pad_token_id=vocab - 1 if base["pad_token_id"] == base["eos_token_id"] else base["pad_token_id"])
    cfg = infer_text_config(canon, base, overrides=overrides)
    return canon, cfg


def clip_from_diffusers(canonical: "StateDict", drop_identity_projection: bool = False) -> "StateDict":
    """Canonical (or v5-flattened) CLIP keys -> the ``text_model.*`` keys single files store."""
    import torch

    out = canonical_text_keys(canonical)
    proj = out.get("text_projection.weight")
    if drop_identity_projection and proj is not None and proj.shape[0] == proj.shape[1] and \
            torch.equal(proj, torch.eye(proj.shape[0], dtype=proj.dtype)):
        del out["text_projection.weight"]
    return out


def t5_to_diffusers(sd: "StateDict", overrides: dict[str, Any] | None = None) -> tuple["StateDict", dict[str, Any]]:
    """transformers ``T5EncoderModel`` keys (embeddings under ``shared`` and/or ``encoder.embed_tokens``) ->
    (state dict with both tied names, T5Config dict read from shapes)."""
    sd = {k: v for k, v in sd.items() if not k.endswith(_IGNORED_TEXT)}
    emb = sd.get("shared.weight", sd.get("encoder.embed_tokens.weight"))
    if emb is None:
        raise ConversionError("T5: no shared.weight / encoder.embed_tokens.weight: not a T5 encoder")
    # the two names are one tied matrix; files keep one or both
    sd["shared.weight"] = emb
    sd["encoder.embed_tokens.weight"] = emb
    ov = dict(overrides or {})
    rel = sd.get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    heads = ov.get("num_heads") or (rel.shape[1] if rel is not None else T5_XXL["num_heads"])
    q_rows = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    ff = sd["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"].shape[0]
    cfg = dict(T5_XXL)
    cfg.update(vocab_size=emb.shape[0], d_model=emb.shape[1], num_layers=_blocks(sd, "encoder.block."),
               num_heads=heads, d_kv=q_rows // heads, d_ff=ff, feed_forward_proj="gated-gelu" if gated else "relu")
    if rel is not None:
        cfg["relative_attention_num_buckets"] = rel.shape[0]
    cfg.update({k: v for k, v in ov.items() if k not in ("num_heads",)})
    return sd, cfg


def t5_from_diffusers(sd: "StateDict") -> "StateDict":
    """T5 encoder keys as files store them: the tied embedding once, as ``shared.weight``."""
    out = dict(sd)
    emb = out.pop("encoder.embed_tokens.weight", None)
    out.setdefault("shared.weight", emb)
    return out


def _blocks(sd: "StateDict", prefix: str) -> int:
    return len({k[len(prefix):].split(".", 1)[0] for k in sd if k.startswith(prefix)})


# ---------------------------------------------------------------- SD3 all-in-one


def _vae_config(sd: "StateDict", base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``infer_vae_config``, refusing widths the group norms cannot split (the group count is not in the weights)."""
    cfg = infer_vae_config(sd, base, overrides)
    groups = cfg["norm_num_groups"]
    if any(c % groups for c in cfg["block_out_channels"]):
        raise ConversionError(f"VAE widths {cfg['block_out_channels']} do not split into {groups} norm groups; "
                              f"set vae.norm_num_groups in the {MODEL_CONFIG_KEY} metadata")
    return cfg


def sd3_to_diffusers(state_dict: "StateDict", overrides: dict[str, dict[str, Any]] | None = None,
                     ignored: list[str] | None = None) -> dict[str, tuple["StateDict", dict[str, Any]]]:
    """An SD3 all-in-one state dict -> ``{component: (diffusers state dict, config)}`` for the components present
    (transformer always; vae, text_encoder, text_encoder_2, text_encoder_3 when stored). Keys outside the five
    prefixes are appended to ``ignored`` when given."""
    ov = overrides or {}
    parts = _split(state_dict, ignored)
    if "transformer" not in parts:
        raise ConversionError("no model.diffusion_model.joint_blocks.*: not an SD3 checkpoint")
    out = {"transformer": sd3_transformer_to_diffusers(parts["transformer"], ov.get("transformer"))}
    if "vae" in parts:
        vae, left = vae_from_ldm(parts["vae"])
        if left:
            raise ConversionError(f"SD3 VAE keys with no diffusers counterpart: {left[:5]}")
        out["vae"] = (vae, _vae_config(vae, SD3_VAE, ov.get("vae")))
    if "text_encoder" in parts:
        out["text_encoder"] = clip_to_diffusers(parts["text_encoder"], CLIP_L, ov.get("text_encoder"), True)
    if "text_encoder_2" in parts:
        out["text_encoder_2"] = clip_to_diffusers(parts["text_encoder_2"], CLIP_G, ov.get("text_encoder_2"))
    if "text_encoder_3" in parts:
        out["text_encoder_3"] = t5_to_diffusers(parts["text_encoder_3"], ov.get("text_encoder_3"))
    return out


def _split(state_dict: "StateDict", ignored: list[str] | None) -> dict[str, "StateDict"]:
    parts: dict[str, dict] = {}
    for k, v in state_dict.items():
        for name, prefix in SD3_PREFIXES.items():
            if k.startswith(prefix):
                parts.setdefault(name, {})[k[len(prefix):]] = v
                break
        else:
            if ignored is not None:
                ignored.append(k)
    return parts


def sd3_from_diffusers(components: dict[str, Any]) -> "StateDict":
    """``{component: state dict or (state dict, config) or module}`` -> an SD3 all-in-one state dict."""
    out: dict = {}
    for name, value in components.items():
        if name not in SD3_PREFIXES:
            raise ConversionError(f"unknown SD3 component {name!r}; known: {', '.join(SD3_PREFIXES)}")
        sd, cfg = _state_and_config(value)
        if name == "transformer":
            part = sd3_transformer_from_diffusers(sd, cfg)
        elif name == "vae":
            part = vae_to_ldm(sd)
        elif name == "text_encoder_3":
            part = t5_from_diffusers(sd)
        else:
            part = clip_from_diffusers(sd, drop_identity_projection=name == "text_encoder")
        out.update({SD3_PREFIXES[name] + k: v for k, v in part.items()})
    return out


def _state_and_config(value: Any) -> tuple["StateDict", dict[str, Any] | None]:
    if isinstance(value, tuple):
        return dict(value[0]), value[1]
    if hasattr(value, "state_dict"):  # a module: diffusers models carry their config
        cfg = getattr(value, "config", None)
        return dict(value.state_dict()), dict(cfg) if cfg is not None and hasattr(cfg, "keys") else None
    return dict(value), None


def flow_model_config(components: dict[str, Any]) -> dict[str, str]:
    """``iga.model_config`` metadata holding what the weights cannot tell, for files written from ``components``
    (``{name: module or (state dict, config)}``), so the loaders rebuild the same models."""
    data: dict[str, dict[str, Any]] = {}
    for name, value in components.items():
        cfg = value[1] if isinstance(value, tuple) else getattr(value, "config", None)
        if cfg is None:
            continue
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        allowed = KIND_KEYS[_kind_of(cfg)]
        data[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()
                      if k in allowed and v is not None}
    return {MODEL_CONFIG_KEY: json.dumps(data, sort_keys=True)}


def _kind_of(cfg: dict[str, Any]) -> str:
    if "axes_dims_rope" in cfg:
        return "flux"
    if "joint_attention_dim" in cfg:
        return "sd3"
    if "latent_channels" in cfg:
        return "vae"
    return "t5" if "d_kv" in cfg else "clip"


def read_model_config(metadata: dict[str, str], names: tuple[str, ...], kind: str) -> dict[str, Any]:
    """The settings a file's ``iga.model_config`` gives the first of component ``names`` present, limited to
    what a model of ``kind`` may take from metadata (``KIND_KEYS``)."""
    raw = metadata.get(MODEL_CONFIG_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FlowFilesError(f"{MODEL_CONFIG_KEY} metadata is not valid JSON: {exc}") from exc
    for name in names:
        values = data.get(name) if isinstance(data, dict) else None
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if k in KIND_KEYS[kind]}
    return {}


def sd3_overrides(metadata: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per-component overrides of an SD3 all-in-one file."""
    kinds = {"transformer": "sd3", "vae": "vae", "text_encoder": "clip", "text_encoder_2": "clip",
             "text_encoder_3": "t5"}
    return {name: read_model_config(metadata, (name,), kind) for name, kind in kinds.items()}


# ---------------------------------------------------------------- loading


def _read(path: str | os.PathLike, dtype: "torch.dtype | None" = None) -> tuple["StateDict", dict[str, str]]:
    from safetensors import safe_open

    p = os.fspath(path)
    if not p.endswith(".safetensors"):
        raise FlowFilesError(f"{p!r}: only .safetensors files are read (pickle checkpoints can run code)")
    out = {}
    with safe_open(p, framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
        for k in f.keys():
            t = f.get_tensor(k)
            t = t.to(dtype) if dtype is not None and t.is_floating_point() else t
            # tensors inside the file's buffer sit at its 8-byte offsets; CPU kernels take other code paths on
            # unaligned memory and round differently, so a loaded model would not match bit for bit
            out[k] = t.clone() if t.data_ptr() % 64 else t
    return out, meta


def _build(factory: Any, sd: "StateDict", what: str, device: Any, dtype: Any) -> Any:
    """Construct without random init (meta weights), then load every tensor strictly."""
    try:
        from accelerate import init_empty_weights
        ctx = init_empty_weights(include_buffers=False)
    except ImportError:  # pragma: no cover
        import contextlib
        ctx = contextlib.nullcontext()
    with ctx:
        model = factory()
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise FlowFilesError(f"{what}: the weights do not fit the inferred model: {exc}") from exc
    if hasattr(model, "tie_weights"):  # T5's shared/embed_tokens are one matrix
        model.tie_weights()
    # cast/move only when needed: diffusers warns on every .to(dtype=...)
    if next(model.parameters()).dtype != dtype:
        model.to(dtype=dtype)
    if str(next(model.parameters()).device) != str(device):
        model.to(device=device)
    return model.eval().requires_grad_(False)


def _modules(converted: dict[str, tuple["StateDict", dict[str, Any]]], kind: str, device: Any, dtype: Any
             ) -> dict[str, Any]:
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    clip_cls = CLIPTextModelWithProjection if kind == "sd3" else CLIPTextModel
    t5_name = "text_encoder_3" if kind == "sd3" else "text_encoder_2"
    out = {}
    for name, (sd, cfg) in converted.items():
        if name == "transformer":
            cls = SD3Transformer2DModel if kind == "sd3" else FluxTransformer2DModel
            out[name] = _build(lambda: cls.from_config(cfg), sd, name, device, dtype)
        elif name == "vae":
            out[name] = _build(lambda: AutoencoderKL.from_config(cfg), sd, name, device, dtype)
        elif name == t5_name:
            out[name] = _build(lambda: T5EncoderModel(T5Config(**cfg)), sd, name, device, dtype)
        else:
            def make() -> Any:
                return clip_cls(CLIPTextConfig(**cfg))
            if kind == "flux":  # FluxPipeline's CLIP has no projection
                sd = {k: v for k, v in sd.items() if not k.startswith("text_projection.")}
            sd = fit_text_keys(sd, _meta_keys(make))  # transformers v5 flattened CLIPTextModel's keys
            out[name] = _build(make, sd, name, device, dtype)
    return out


def _meta_keys(factory: Any) -> list[str]:
    """The state-dict keys of a model built on the meta device (no memory, no init)."""
    import torch

    with torch.device("meta"):
        return list(factory().state_dict().keys())


def load_sd3_single_file(path: str | os.PathLike, device: Any = "cpu", dtype: Any = None) -> dict[str, Any]:
    """The diffusers modules of an SD3 all-in-one file: ``{transformer, vae, text_encoder, text_encoder_2,
    text_encoder_3}`` (those stored), each built from inferred configs and loaded strictly."""
    import torch

    dtype = dtype or torch.float32
    sd, meta = _read(path, dtype)
    try:
        converted = sd3_to_diffusers(sd, sd3_overrides(meta))
    except ConversionError as exc:
        raise FlowFilesError(f"{os.fspath(path)!r}: {exc}") from exc
    return _modules(converted, "sd3", device, dtype)


def flux_transformer_from_file(sd: "StateDict", overrides: dict[str, Any] | None
                               ) -> tuple["StateDict", dict[str, Any]]:
    """A Flux transformer state dict in either layout (BFL original, ComfyUI-prefixed, or diffusers) ->
    (diffusers keys, config)."""
    sd = {k.removeprefix("model.diffusion_model."): v for k, v in sd.items()}
    if "double_blocks.0.img_attn.qkv.weight" in sd:
        return flux_to_diffusers(sd, overrides)
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    if "x_embedder.weight" in sd and "context_embedder.weight" in sd:
        return sd, flux_config(sd, overrides)
    raise ConversionError("neither Flux original keys (double_blocks.*) nor diffusers keys (x_embedder, "
                          "transformer_blocks.*): not a Flux transformer")


_TEXT_PREFIXES = ("text_encoders.clip_l.transformer.", "text_encoders.t5xxl.transformer.",
                  "cond_stage_model.transformer.", "transformer.")


def _strip_any(sd: "StateDict", prefixes: tuple[str, ...]) -> "StateDict":
    for p in prefixes:
        if sd and all(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items()}
    return sd


def flux_vae_from_file(sd: "StateDict", overrides: dict[str, Any] | None) -> tuple["StateDict", dict[str, Any]]:
    """A Flux VAE (``ae.safetensors``: LDM keys; or diffusers keys; either maybe prefixed) -> (diffusers, config)."""
    sd = _strip_any(sd, ("first_stage_model.", "vae."))
    if is_ldm_vae(sd):
        sd, left = vae_from_ldm(sd)
        if left:
            raise ConversionError(f"VAE keys with no diffusers counterpart: {left[:5]}")
    else:
        sd = modernize_diffusers_vae(sd)
    return sd, _vae_config(sd, FLUX_VAE, overrides)


def load_flux_files(transformer_path: str | os.PathLike, *, clip_l: str | os.PathLike | None = None,
                    t5: str | os.PathLike | None = None, vae: str | os.PathLike | None = None,
                    device: Any = "cpu", dtype: Any = None) -> dict[str, Any]:
    """FluxPipeline's modules ``{transformer, vae, text_encoder (CLIP-L), text_encoder_2 (T5)}`` from a
    transformer file and its companions (found beside it by ``find_flux_companions`` when not given)."""
    import torch

    dtype = dtype or torch.float32
    given = {"clip_l": clip_l, "t5": t5, "vae": vae}
    if any(v is None for v in given.values()):
        found = find_flux_companions(transformer_path, need=[k for k, v in given.items() if v is None])
        given.update({k: v for k, v in found.items() if given[k] is None})
    converted: dict[str, tuple] = {}
    # (component, file, names its metadata may use, kind, converter)
    steps = [("transformer", transformer_path, ("transformer",), "flux", flux_transformer_from_file),
             ("vae", given["vae"], ("vae",), "vae", flux_vae_from_file),
             ("text_encoder", given["clip_l"], ("text_encoder", "clip_l"), "clip",
              lambda sd, ov: clip_to_diffusers(_strip_any(sd, _TEXT_PREFIXES), CLIP_L, ov)),
             ("text_encoder_2", given["t5"], ("text_encoder_2", "text_encoder_3", "t5"), "t5",
              lambda sd, ov: t5_to_diffusers(_strip_any(sd, _TEXT_PREFIXES), ov))]
    for name, path, names, kind, convert in steps:
        sd, meta = _read(path, dtype)
        try:
            converted[name] = convert(sd, read_model_config(meta, names, kind))
        except (ConversionError, KeyError, ValueError) as exc:
            raise FlowFilesError(f"{name} file {os.fspath(path)!r}: {exc}") from exc
    return _modules(converted, "flux", device, dtype)


# which files people (ComfyUI's models/ folders) keep beside a Flux transformer, most specific pattern first
COMPANION_PATTERNS = {
    "clip_l": ("clip_l*.safetensors",),
    "t5": ("t5xxl*.safetensors", "t5*.safetensors"),
    "vae": ("ae.safetensors", "*vae*.safetensors"),
}


def find_flux_companions(transformer_path: str | os.PathLike, need: list[str] | None = None) -> dict[str, Path]:
    """``{clip_l, t5, vae}`` files in the transformer's folder, by the names ComfyUI users give them. With several
    candidates the full-precision one wins over fp8/quantised copies (then the shortest name). Raises
    ``FlowFilesError`` naming every missing role and how to pass it."""
    tp = Path(transformer_path)
    folder = tp.parent
    out: dict[str, Path] = {}
    missing = []
    for role in need or list(COMPANION_PATTERNS):
        cands: list[Path] = []
        for pattern in COMPANION_PATTERNS[role]:
            cands = sorted({c for c in folder.glob(pattern) if c.is_file() and c.resolve() != tp.resolve()})
            if cands:
                break
        if not cands:
            missing.append(role)
            continue
        out[role] = min(cands, key=lambda c: (any(w in c.name.lower() for w in ("fp8", "e4m3", "e5m2", "q4", "q8",
                                                                                 "scaled")), len(c.name), c.name))
    if missing:
        how = "; ".join(f"{r} ({' or '.join(COMPANION_PATTERNS[r])}): pass {r}=PATH" for r in missing)
        raise FlowFilesError(f"Flux transformer {str(tp)!r} needs companion files not found in {str(folder)!r}: "
                             f"{how}, or put the file beside the transformer under one of those names")
    return out
