"""``load_backend``: a diffusers folder or a single LDM-layout ``.safetensors`` file -> a backend, offline.

- A folder with ``model_index.json`` loads with the diffusers/transformers classes from local files
  only (``local_files_only=True``), safetensors weights only.
- A single file is read with ``safetensors`` (never pickle), its family detected from tensor names
  (``iga.models.detect``), its keys converted (``iga.models.ldm``) and its configs built from the shipped
  family configs plus tensor shapes (``iga.models.configs``). The CLIP tokenizer is the vendored one.
- ``.ckpt``/``.pt``/``.pth``/``.bin`` files (Python pickles, which can run code when loaded) are refused
  without being opened by pickle.
Loaded backends are cached per process by (path, file sizes and mtimes, vae, device, dtype, prediction type).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import OrderedDict

from iga.checkpoint.architecture import INPAINT_CHANNELS
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iga.models import demo as _demo
from iga.models.base import (
    DIFFUSERS_PREDICTION,
    ModelLoadError,
    check_dtype_on_device,
    resolve_device,
    resolve_dtype,
)
from iga.models.configs import MODEL_CONFIG_KEY, ConfigError, family, infer_text_config, infer_unet_config, \
    infer_vae_config, parse_model_config
from iga.models.detect import Detection, UnsupportedCheckpoint, detect
from iga.models.ldm import UNET_PREFIX, VAE_PREFIX, ConversionError, clip_from_ldm, \
    fit_text_keys, is_ldm_vae, modernize_diffusers_vae, openclip_from_ldm, strip_prefix, unet_from_ldm, vae_from_ldm
from iga.models.stable_diffusion import SDXLRefinerBackend, StableDiffusionBackend
from iga.models.text import TextEncoderSlot

if TYPE_CHECKING:  # pragma: no cover
    import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_JSON_BYTES = 1 << 20
_CACHE_SIZE = 2
_cache: "OrderedDict[tuple, Any]" = OrderedDict()
# diffusers pipeline classes of the rectified-flow models (iga.models.flow_backends)
FLOW_PIPELINES = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}
_cache_lock = threading.Lock()
_tokenizer_cache: dict[tuple, Any] = {}


def clear_cache() -> None:
    """Forget every cached backend (the next ``load_backend`` reads from disk again)."""
    with _cache_lock:
        _cache.clear()


def load_backend(path: str | os.PathLike, *, vae: str | os.PathLike | None = None, device: str = "cpu",
                 dtype: str = "float32", prediction_type: str | None = None) -> Any:
    """Load an SD1/SD2/SDXL model from a diffusers folder or a single ``.safetensors`` file, or an SD3/Flux
    model from a diffusers folder (``iga.models.flow_backends``), offline.

    ``vae``: a separate VAE (``.safetensors`` with LDM or diffusers keys, or a diffusers VAE folder) that
    replaces the checkpoint's own. ``prediction_type`` ("eps" or "v"; "flow" for SD3/Flux) overrides what the file declares
    (e.g. from a recipe); without it the scheduler config (folders) or markers (single files) decide, see
    ``iga.models.detect``. ``device``: cpu, cuda, cuda:N, mps or auto; ``dtype``: float32, float16, bfloat16.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"model not found: {str(p)!r} (give a .safetensors file or a diffusers folder)")
    p = p.resolve()
    vae_path = Path(vae).expanduser().resolve() if vae is not None else None
    if vae_path is not None and not vae_path.exists():
        raise ModelLoadError(f"VAE not found: {str(vae)!r}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    check_dtype_on_device(dt, dev)
    pred = _normalize_prediction(prediction_type)
    key = (_signature(p), _signature(vae_path) if vae_path else None, str(dev), str(dt), pred)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if p.is_dir():
        backend = _load_folder(p, vae_path, dev, dt, pred)
    elif p.suffix == ".safetensors" and _demo.is_demo_file(p):
        backend = _demo.DemoBackend(p, dev, dt)
    elif (flow_arch := _flow_file_architecture(p)) is not None:
        from iga.models.flow_single import load_flow_single_file

        if pred not in (None, "flow"):
            raise ModelLoadError(f"{str(p)!r} is an {flow_arch} model (rectified flow); prediction_type {pred!r} is "
                                 "not possible for it")
        backend = load_flow_single_file(p, flow_arch, device=dev, dtype=dt, vae=vae_path)
    else:
        backend = _load_single_file(p, vae_path, dev, dt, pred)
    with _cache_lock:
        _cache[key] = backend
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return backend


# ---------------------------------------------------------------- helpers


def _normalize_prediction(value: str | None) -> str | None:
    if value is None:
        return None
    v = DIFFUSERS_PREDICTION.get(str(value).strip().lower(), str(value).strip().lower())
    if v not in ("eps", "v", "flow"):
        raise ModelLoadError(f"prediction_type {value!r} is not possible; use 'eps' or 'v' (SD1/SD2/SDXL) "
                             "or 'flow' (SD3/Flux)")
    return v


def _flow_file_architecture(p: Path) -> str | None:
    """"sd3" or "flux" when a single file holds such a model (the detector shared with the guard), else None."""
    from iga.checkpoint import CheckpointError, detect_architecture

    try:
        arch = detect_architecture(p).architecture
    except CheckpointError:
        return None  # the SD path below reports the file's problem with its own reasons
    return arch if arch in ("sd3", "flux") else None


def _signature(p: Path) -> tuple:
    """Path plus sizes and mtimes of the files that make up the model (cache key)."""
    if p.is_file():
        st = p.stat()
        return (str(p), st.st_size, st.st_mtime_ns)
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".json", ".safetensors", ".txt"))
    return (str(p), tuple((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def _refuse_pickle(p: Path, what: str) -> None:
    """Refuse pickle-based files by name or by content, without unpickling them."""
    looks_pickle = p.suffix.lower() in PICKLE_SUFFIXES
    if not looks_pickle and p.is_file():
        with open(p, "rb") as fh:
            head = fh.read(8)
        # torch.save writes a zip archive (PK..) or a raw pickle stream (protocol byte 0x80)
        looks_pickle = head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"
    if looks_pickle:
        raise ModelLoadError(
            f"{what} {str(p)!r} is a pickle-based file (.ckpt/.pt/.bin); iga never unpickles files because "
            "loading a pickle can run arbitrary code. Use a .safetensors version of the model (most are "
            "published as .safetensors), or convert it once with a tool you trust.")


def _read_json(p: Path, what: str) -> dict[str, Any]:
    if not p.is_file():
        raise ModelLoadError(f"{what}: {str(p)!r} is missing")
    if p.stat().st_size > MAX_JSON_BYTES:
        raise ModelLoadError(f"{what}: {str(p)!r} is larger than {MAX_JSON_BYTES} bytes")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{what}: {str(p)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{what}: {str(p)!r} must hold a JSON object")
    return data


class _Header:
    """Names, shapes and metadata of a safetensors file, and on-demand tensor reads."""

    def __init__(self, p: Path, what: str):
        from safetensors import safe_open

        _refuse_pickle(p, what)
        self.path = p
        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                self.keys = list(f.keys())
                self.metadata = dict(f.metadata() or {})
                self._shapes = {k: tuple(f.get_slice(k).get_shape()) for k in self.keys}
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise ModelLoadError(f"{what} {str(p)!r} is not a readable .safetensors file: {exc}") from exc

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of one tensor."""
        return self._shapes[key]

    def tensors(self, prefix: str, dtype: "torch.dtype") -> "dict[str, torch.Tensor]":
        """All tensors under ``prefix`` (prefix removed), floating ones cast to ``dtype``."""
        from safetensors import safe_open

        out = {}
        with safe_open(str(self.path), framework="pt", device="cpu") as f:
            for k in self.keys:
                if k.startswith(prefix):
                    t = f.get_tensor(k)
                    out[k[len(prefix):]] = t.to(dtype) if t.is_floating_point() else t
        return out


def _empty_init():
    """Build modules without initialising weights that are about to be overwritten (fast for big models)."""
    try:
        from accelerate import init_empty_weights
    except ImportError:  # pragma: no cover - accelerate is a dependency, but loading still works without it
        return contextlib.nullcontext()
    return init_empty_weights(include_buffers=False)


def _load_weights(model: Any, sd: "dict[str, torch.Tensor]", what: str, source: Path) -> None:
    """Load ``sd`` into ``model`` strictly, turning key mismatches into a readable error."""
    want = set(model.state_dict().keys())
    have = set(sd)
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        raise ModelLoadError(f"{what} weights in {str(source)!r} do not fit the model: {'; '.join(parts)}. "
                             "The file is damaged, pruned, or of a variant iga does not know.")
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{what} weights in {str(source)!r} have unexpected shapes: {exc}") from exc
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise ModelLoadError(f"{what}: tensors {leftovers[:3]} were not loaded from {str(source)!r}")


def _finish(model: Any, device: "torch.device", dtype: "torch.dtype") -> Any:
    # cast only when needed: diffusers warns on every .to(dtype=...) call
    if next(model.parameters()).dtype != dtype:
        model.to(dtype=dtype)
    if next(model.parameters()).device != device:
        model.to(device=device)
    model.eval()
    model.requires_grad_(False)
    return model


def _training_schedule(cfg: dict[str, Any], ztsnr: bool = False) -> dict[str, Any]:
    sched = {
        "kind": str(cfg.get("beta_schedule", "scaled_linear")),
        "beta_start": float(cfg.get("beta_start", 0.00085)),
        "beta_end": float(cfg.get("beta_end", 0.012)),
        "num_train_timesteps": int(cfg.get("num_train_timesteps", 1000)),
        "zero_terminal_snr": bool(cfg.get("rescale_betas_zero_snr", False)) or ztsnr,
    }
    if cfg.get("trained_betas") is not None:
        sched["kind"] = "trained_betas"
        sched["trained_betas"] = [float(b) for b in cfg["trained_betas"]]
    return sched


def _vae_dtype(force_upcast: bool, dtype: "torch.dtype") -> "torch.dtype":
    """fp16 VAEs flagged ``force_upcast`` (SDXL's) overflow to NaN; decode those in float32."""
    import torch

    return torch.float32 if dtype == torch.float16 and force_upcast else dtype


# ---------------------------------------------------------------- separate VAE


def _load_vae_override(vae_path: Path, base_cfg: dict[str, Any], device: "torch.device",
                       dtype: "torch.dtype") -> tuple[Any, dict[str, Any]]:
    """A VAE from a separate file or folder; the base model's family config supplies the scaling factor."""
    from diffusers import AutoencoderKL

    if vae_path.is_dir():
        _require_safetensors(vae_path, "VAE folder")
        try:
            model = AutoencoderKL.from_pretrained(str(vae_path), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelLoadError(f"cannot load the VAE folder {str(vae_path)!r}: {exc}") from exc
        return _finish(model, device, dtype), {"source": "folder", "path": str(vae_path), "format": "diffusers"}
    header = _Header(vae_path, "VAE file")
    sd = header.tensors("", dtype)
    if any(k.startswith(VAE_PREFIX) for k in sd):
        sd = strip_prefix(sd, VAE_PREFIX)
    try:
        ldm = is_ldm_vae(sd)
        if ldm:
            sd, _ignored = vae_from_ldm(sd)
        else:
            sd = modernize_diffusers_vae({k: v for k, v in sd.items()
                                          if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))})
        overrides = parse_model_config(header.metadata.get(MODEL_CONFIG_KEY)).get("vae")
        cfg = infer_vae_config(sd, base_cfg, overrides)
    except (ConversionError, ConfigError) as exc:
        raise ModelLoadError(f"VAE file {str(vae_path)!r}: {exc}") from exc
    with _empty_init():
        model = AutoencoderKL(**_known_kwargs(AutoencoderKL, cfg))
    _load_weights(model, sd, "VAE", vae_path)
    info = {"source": "file", "path": str(vae_path), "format": "ldm" if ldm else "diffusers"}
    return _finish(model, device, dtype), info


def _known_kwargs(cls: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Only the config keys the model class accepts (configs carry a few informational extras)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in cfg.items() if k in params}


# ---------------------------------------------------------------- single file


def _detect(p: Path, header: _Header) -> Detection:
    """Family and prediction type from this module's detector (which gives the refusal reasons), checked
    against ``iga.checkpoint.detect_architecture`` (shared with the guard) for UNet/text-encoder conflicts."""
    from iga.checkpoint import CheckpointError, detect_architecture

    mine = detect(header.keys, header.shape, header.metadata)  # raises UnsupportedCheckpoint with a reason
    try:
        info = detect_architecture(p)
    except (CheckpointError, OSError, ValueError):  # safetensors already read the header; keep our answer
        return mine
    if info.architecture in ("sd1", "sd2", "sdxl", "sdxl_refiner") and info.architecture != mine.architecture:
        raise UnsupportedCheckpoint(
            f"the UNet looks like {info.architecture} but the text encoder layout like {mine.architecture} "
            f"({'; '.join(info.conflicts) or 'conflicting evidence'}); the file is a broken merge or mislabelled")
    return mine


def _load_single_file(p: Path, vae_path: Path | None, device: "torch.device", dtype: "torch.dtype",
                      pred_override: str | None) -> StableDiffusionBackend:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from iga.models.tokenizer import clip_tokenizer

    header = _Header(p, "checkpoint")
    try:
        found = _detect(p, header)
        overrides = parse_model_config(header.metadata.get(MODEL_CONFIG_KEY))
    except (UnsupportedCheckpoint, ConfigError) as exc:
        raise ModelLoadError(f"{str(p)!r}: {exc}") from exc
    pred, pred_source = found.prediction_type, found.prediction_source
    if pred_override == "flow":
        raise ModelLoadError(f"{str(p)!r} is an {found.architecture} checkpoint (eps/v prediction); "
                             "prediction_type 'flow' is only possible for SD3 and Flux models; use 'eps' or 'v'")
    if pred_override is not None:
        pred, pred_source = pred_override, "explicit prediction_type argument"
    fam_name = found.architecture if found.architecture != "sd2" else ("sd2-v" if pred == "v" else "sd2")
    fam = family(fam_name)
    ignored: list[str] = []

    # text encoders first: SDXL's UNet config needs the pooled width of encoder 2
    slots: list[TextEncoderSlot] = []
    sources: dict[str, Any] = {}
    pooled_dim = None
    for i, spec in enumerate(fam["text"]):
        name = spec.get("folder") or ("text_encoder" if i == 0 else f"text_encoder_{i + 1}")
        raw = header.tensors(spec["ldm_prefix"], dtype)
        try:
            if spec["kind"] == "clip":
                sd, ign = clip_from_ldm(raw)
            else:
                sd, ign = openclip_from_ldm(raw, spec.get("ldm_unused_final_blocks", 0))
            ignored += [spec["ldm_prefix"] + k for k in ign]
            if not spec["pooled"]:
                ignored += [spec["ldm_prefix"] + k for k in sd if k.startswith("text_projection.")]
                sd = {k: v for k, v in sd.items() if not k.startswith("text_projection.")}
            cfg = infer_text_config(sd, spec["config"], fam["family"].get("text_attention_head_dim", 64),
                                    overrides.get(name))
        except (ConversionError, ConfigError) as exc:
            raise ModelLoadError(f"{str(p)!r}, {name}: {exc}") from exc
        cls = CLIPTextModelWithProjection if spec["pooled"] else CLIPTextModel
        with _empty_init():
            model = cls(CLIPTextConfig(**cfg))
        _load_weights(model, fit_text_keys(sd, model.state_dict().keys()), name, p)
        if spec["pooled"]:
            pooled_dim = cfg["projection_dim"]
        slots.append(TextEncoderSlot(_finish(model, device, dtype), clip_tokenizer(spec["pad"]),
                                     spec["layer"], spec["pooled"]))
        sources[name] = "checkpoint"

    try:
        unet_sd, ign = unet_from_ldm(header.tensors(UNET_PREFIX, dtype))
        ignored += [UNET_PREFIX + k for k in ign]
        unet_cfg = infer_unet_config(unet_sd, fam["unet"], fam["family"]["unet_attention_heads_rule"],
                                     overrides.get("unet"), pooled_dim, fam["family"].get("time_ids", 6))
    except (ConversionError, ConfigError) as exc:
        raise ModelLoadError(f"{str(p)!r}, UNet: {exc}") from exc
    with _empty_init():
        unet = UNet2DConditionModel(**_known_kwargs(UNet2DConditionModel, unet_cfg))
    _load_weights(unet, unet_sd, "UNet", p)
    sources["unet"] = "checkpoint"

    vae_base = dict(fam["vae"])
    if vae_path is not None:
        vae, vae_info = _load_vae_override(vae_path, vae_base, device, dtype)
    else:
        raw = header.tensors(VAE_PREFIX, dtype)
        if not raw:
            raise ModelLoadError(f"{str(p)!r} has no VAE (first_stage_model.*); pass a separate one with vae=PATH")
        try:
            vae_sd, ign = vae_from_ldm(raw)
            ignored += [VAE_PREFIX + k for k in ign]
            vae_cfg = infer_vae_config(vae_sd, vae_base, overrides.get("vae"))
        except (ConversionError, ConfigError) as exc:
            raise ModelLoadError(f"{str(p)!r}, VAE: {exc}") from exc
        from diffusers import AutoencoderKL

        with _empty_init():
            vae = AutoencoderKL(**_known_kwargs(AutoencoderKL, vae_cfg))
        _load_weights(vae, vae_sd, "VAE", p)
        vae_info = {"source": "checkpoint"}
    vdt = _vae_dtype(bool(getattr(vae.config, "force_upcast", True)), dtype)
    vae = _finish(vae, device, vdt)
    sources["vae"] = vae_info

    config_source = f"family {fam_name} + tensor shapes"
    if overrides:
        config_source += f" + {MODEL_CONFIG_KEY} metadata"
    identity = {
        "name": p.stem,
        "path": str(p),
        "format": "single_file",
        "architecture": found.architecture,
        "family": fam_name,
        "prediction_type": pred,
        "prediction_type_source": pred_source,
        "components": sources,
        "vae": vae_info,
        "config_source": config_source,
        "tokenizer": "vendored CLIP BPE (iga/data/clip)",
        "ignored_keys": len(ignored),
        "ignored_keys_sample": ignored[:5],
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "vae_dtype": str(vdt).removeprefix("torch."),
    }
    return (SDXLRefinerBackend if found.architecture == "sdxl_refiner" else StableDiffusionBackend)(
        architecture=found.architecture,
        prediction_type=pred,
        training_schedule=_training_schedule(fam["scheduler"], found.zero_terminal_snr),
        unet=_finish(unet, device, dtype),
        vae=vae,
        text_encoders=slots,
        device=device,
        dtype=dtype,
        vae_dtype=vdt,
        identity=identity,
    )


# ---------------------------------------------------------------- diffusers folder


def _require_safetensors(sub: Path, what: str) -> str | None:
    """Check ``sub`` has safetensors weights; returns the variant ("fp16", ...) to load, or None."""
    if not sub.is_dir():
        raise ModelLoadError(f"{what}: folder {str(sub)!r} is missing")
    files = [f.name for f in sub.iterdir() if f.is_file()]
    st = [f for f in files if f.endswith(".safetensors") or f.endswith(".safetensors.index.json")]
    if not st:
        if any(f.endswith(PICKLE_SUFFIXES) for f in files):
            raise ModelLoadError(
                f"{what}: {str(sub)!r} only has pickle weights (.bin/.ckpt); iga loads .safetensors only, "
                "because unpickling can run arbitrary code. Re-save the model with safe_serialization=True.")
        raise ModelLoadError(f"{what}: no .safetensors weights in {str(sub)!r}")
    plain = [f for f in st if f.split(".safetensors")[0].count(".") == 0]
    if plain:
        return None
    variants = sorted({f.split(".safetensors")[0].rsplit(".", 1)[1] for f in st})
    return "fp16" if "fp16" in variants else variants[0]


def _folder_tokenizer(sub: Path, fallback_pad: str) -> tuple[Any, str]:
    from transformers import CLIPTokenizer

    from iga.models.tokenizer import MAX_LENGTH, clip_tokenizer

    if not sub.is_dir():
        return clip_tokenizer(fallback_pad), "vendored CLIP BPE (iga/data/clip)"
    key = _signature(sub)
    if key not in _tokenizer_cache:  # building one takes ~0.4 s; tokenizers are immutable in use
        try:
            # model_max_length must be given: tokenizer folders often lack it, and padding then overflows
            tok = CLIPTokenizer.from_pretrained(str(sub), local_files_only=True, model_max_length=MAX_LENGTH)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the tokenizer in {str(sub)!r}: {exc}") from exc
        _tokenizer_cache[key] = tok
        while len(_tokenizer_cache) > 8:
            _tokenizer_cache.pop(next(iter(_tokenizer_cache)))
    return _tokenizer_cache[key], "folder"


@contextlib.contextmanager
def _quiet_progress():
    """Hide transformers' per-model "Loading weights" progress bar while loading a folder."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:  # pragma: no cover
        yield
        return
    was_on = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            tlog.enable_progress_bar()


def _load_folder(p: Path, vae_path: Path | None, device: "torch.device", dtype: "torch.dtype",
                 pred_override: str | None) -> Any:
    with _quiet_progress():
        return _load_folder_inner(p, vae_path, device, dtype, pred_override)


def _load_folder_inner(p: Path, vae_path: Path | None, device: "torch.device", dtype: "torch.dtype",
                       pred_override: str | None) -> Any:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    index = _read_json(p / "model_index.json", "diffusers folder")
    cls_name = str(index.get("_class_name", ""))
    if cls_name in FLOW_PIPELINES:
        return _load_flow_folder(p, index, vae_path, device, dtype, pred_override)
    if pred_override == "flow":
        raise ModelLoadError(f"{str(p)!r} is a {cls_name or 'diffusers'} folder (eps/v prediction); "
                             "prediction_type 'flow' is only possible for SD3 and Flux models; use 'eps' or 'v'")
    if any(word in cls_name for word in ("Inpaint", "Upscale", "InstructPix2Pix", "Depth2Img")):
        raise ModelLoadError(f"{str(p)!r} is a {cls_name}; only text-to-image SD1/SD2/SDXL models are supported")
    if not cls_name.startswith("StableDiffusion"):
        raise ModelLoadError(f"{str(p)!r}: pipeline {cls_name or '(none)'} is not supported; "
                             "iga loads StableDiffusionPipeline and StableDiffusionXLPipeline folders")
    is_xl = "text_encoder_2" in index and index.get("text_encoder_2") not in (None, [None, None])
    if "XL" in cls_name and not is_xl:
        raise ModelLoadError(f"{str(p)!r}: SDXL folder without its text_encoder_2 (OpenCLIP bigG) cannot run")
    has_te1 = index.get("text_encoder") not in (None, [None, None])  # the SDXL refiner has only text_encoder_2

    te_cfg = _read_json(p / "text_encoder" / "config.json", "text encoder config") if has_te1 else {}
    unet_cfg = _read_json(p / "unet" / "config.json", "UNet config")
    if is_xl:
        arch = "sdxl" if has_te1 else "sdxl_refiner"
        if not has_te1:
            _check_refiner_unet(p, unet_cfg, _read_json(p / "text_encoder_2" / "config.json", "text_encoder_2 config"))
    elif te_cfg.get("hidden_act") == "gelu" or unet_cfg.get("cross_attention_dim") == 1024:
        arch = "sd2"  # OpenCLIP text tower (exact GELU); OpenAI CLIP-L uses quick_gelu
    else:
        arch = "sd1"
    if int(unet_cfg.get("in_channels", 4)) not in (4, INPAINT_CHANNELS):
        raise ModelLoadError(f"{str(p)!r}: the UNet takes {unet_cfg.get('in_channels')} input channels "
                             "(instruct-pix2pix?); iga runs 4-channel models and 9-channel inpainting models")

    sched_cfg = _read_json(p / "scheduler" / "scheduler_config.json", "scheduler config")
    if pred_override is not None:
        pred, pred_source = pred_override, "explicit prediction_type argument"
    else:
        raw_pred = str(sched_cfg.get("prediction_type", "epsilon"))
        if raw_pred not in ("epsilon", "v_prediction"):
            raise ModelLoadError(f"{str(p)!r}: scheduler prediction_type {raw_pred!r} is not supported")
        pred, pred_source = DIFFUSERS_PREDICTION[raw_pred], "scheduler/scheduler_config.json"
    fam_name = "sd2-v" if arch == "sd2" and pred == "v" else arch
    fam = family(fam_name)

    def load_model(loader: Any, sub: str, **kw: Any) -> Any:
        variant = _require_safetensors(p / sub, sub)
        try:
            return loader(str(p / sub), local_files_only=True, use_safetensors=True, variant=variant, **kw)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelLoadError(f"cannot load {sub} from {str(p)!r}: {exc}") from exc

    slots: list[TextEncoderSlot] = []
    sources: dict[str, Any] = {}
    tokenizer_sources = []
    for i, spec in enumerate(fam["text"]):
        sub = spec.get("folder") or ("text_encoder" if i == 0 else f"text_encoder_{i + 1}")
        cfg = te_cfg if sub == "text_encoder" else _read_json(p / sub / "config.json", f"{sub} config")
        archs = cfg.get("architectures") or []
        cls = CLIPTextModelWithProjection if (spec["pooled"] or "CLIPTextModelWithProjection" in archs) \
            else CLIPTextModel
        model = load_model(cls.from_pretrained, sub, dtype=dtype)
        tok, tsrc = _folder_tokenizer(p / sub.replace("text_encoder", "tokenizer"), spec["pad"])
        tokenizer_sources.append(tsrc)
        slots.append(TextEncoderSlot(_finish(model, device, dtype), tok, spec["layer"], spec["pooled"]))
        sources[sub] = "folder"

    unet = _finish(load_model(UNet2DConditionModel.from_pretrained, "unet", torch_dtype=dtype), device, dtype)
    sources["unet"] = "folder"
    if vae_path is not None:
        vae, vae_info = _load_vae_override(vae_path, dict(fam["vae"]), device, dtype)
    else:
        vae_json = _read_json(p / "vae" / "config.json", "VAE config")
        vae = load_model(AutoencoderKL.from_pretrained, "vae",
                         torch_dtype=_vae_dtype(bool(vae_json.get("force_upcast", True)), dtype))
        vae_info = {"source": "checkpoint"}
    vdt = _vae_dtype(bool(getattr(vae.config, "force_upcast", True)), dtype)
    vae = _finish(vae, device, vdt)
    sources["vae"] = vae_info

    identity = {
        "name": p.name,
        "path": str(p),
        "format": "diffusers_folder",
        "architecture": arch,
        "family": fam_name,
        "prediction_type": pred,
        "prediction_type_source": pred_source,
        "components": sources,
        "vae": vae_info,
        "config_source": "folder configs",
        "tokenizer": ", ".join(tokenizer_sources),
        "ignored_keys": 0,
        "ignored_keys_sample": [],
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "vae_dtype": str(vdt).removeprefix("torch."),
    }
    return (SDXLRefinerBackend if arch == "sdxl_refiner" else StableDiffusionBackend)(
        architecture=arch,
        prediction_type=pred,
        training_schedule=_training_schedule(sched_cfg),
        unet=unet,
        vae=vae,
        text_encoders=slots,
        device=device,
        dtype=dtype,
        vae_dtype=vdt,
        identity=identity,
    )


def _check_refiner_unet(p: Path, unet_cfg: dict[str, Any], te_cfg: dict[str, Any]) -> None:
    """An SDXL refiner's UNet embeds 5 time ids (size, crop, aesthetic score) and the pooled text embedding; a UNet
    sized for SDXL base's 6 (``requires_aesthetics_score: false``) is not a refiner iga can condition."""
    need = 5 * int(unet_cfg.get("addition_time_embed_dim") or 0) + int(te_cfg.get("projection_dim") or 0)
    have = unet_cfg.get("projection_class_embeddings_input_dim")
    if unet_cfg.get("addition_embed_type") != "text_time" or have != need:
        raise ModelLoadError(f"{str(p)!r}: an SDXL folder with only text_encoder_2 must be the SDXL refiner, whose "
                             f"UNet embeds 5 time ids and the pooled text ({need} inputs); this UNet takes {have}")


# ---------------------------------------------------------------- SD3 / Flux diffusers folder


def _load_flow_folder(p: Path, index: dict[str, Any], vae_path: Path | None, device: "torch.device",
                      dtype: "torch.dtype", pred_override: str | None) -> Any:
    """An SD3 (StableDiffusion3Pipeline) or Flux (FluxPipeline) folder -> SD3Backend / FluxBackend."""
    from diffusers import AutoencoderKL

    arch = FLOW_PIPELINES[str(index["_class_name"])]
    if pred_override not in (None, "flow"):
        raise ModelLoadError(f"{str(p)!r} is an {arch} model (rectified flow); prediction_type "
                             f"{pred_override!r} is not possible for it")
    if vae_path is not None and not vae_path.is_dir():
        raise ModelLoadError(f"a separate VAE for {arch} must be a diffusers VAE folder (16 latent channels, "
                             f"with shift_factor); got {str(vae_path)!r}")
    vae_json = _read_json((vae_path or p / "vae") / "config.json", "VAE config")
    vdt = _vae_dtype(bool(vae_json.get("force_upcast", True)), dtype)
    parts = _FlowParts(p, index, device, dtype)
    if vae_path is not None:
        vae = _load_vae_override(vae_path, {}, device, vdt)[0]
        vae_info: dict[str, Any] = {"source": "folder", "path": str(vae_path), "format": "diffusers"}
    else:
        vae = parts.load(AutoencoderKL, "vae", vdt, torch_dtype=vdt)
        vae_info = {"source": "checkpoint"}
    from iga.guard.source import flow_training_schedule

    training = flow_training_schedule(str(p), arch, None)  # the scheduler config in recipe terms
    backend = _flow_backend(arch, parts, dict(vae=vae, device=device, dtype=dtype, vae_dtype=vdt,
                                              training_schedule=training))
    sources: dict[str, Any] = {c: "folder" for c in ("transformer", "text_encoder", "text_encoder_2",
                                                       "text_encoder_3") if parts.present(c)}
    sources["vae"] = vae_info
    backend.identity = {
        "name": p.name, "path": str(p), "format": "diffusers_folder", "architecture": arch, "family": arch,
        "prediction_type": "flow", "prediction_type_source": "architecture (rectified flow)",
        "components": sources, "vae": vae_info, "config_source": "folder configs", "tokenizer": "folder",
        "ignored_keys": 0, "ignored_keys_sample": [], "device": str(device),
        "dtype": str(dtype).removeprefix("torch."), "vae_dtype": str(vdt).removeprefix("torch."),
    }
    if arch == "flux":
        backend.identity["guidance_embeds"] = backend.guidance_embeds
    backend.identity["training_schedule"] = training
    return backend


class _FlowParts:
    """Loads the sub-models and tokenizers of one SD3/Flux diffusers folder (local files, safetensors only)."""

    def __init__(self, root: Path, index: dict[str, Any], device: "torch.device", dtype: "torch.dtype"):
        self.root, self.index, self.device, self.dtype = root, index, device, dtype

    def present(self, sub: str) -> bool:
        """The pipeline lists this component and the folder has it (SD3 may ship without T5)."""
        return self.index.get(sub) not in (None, [None, None]) and (self.root / sub).is_dir()

    def load(self, cls: Any, sub: str, dtype: "torch.dtype | None" = None, **kw: Any) -> Any:
        """One model from its sub-folder, on the device, in eval mode."""
        variant = _require_safetensors(self.root / sub, sub)
        try:
            model = cls.from_pretrained(str(self.root / sub), local_files_only=True, use_safetensors=True,
                                        variant=variant, **kw)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelLoadError(f"cannot load {sub} from {str(self.root)!r}: {exc}") from exc
        return _finish(model, self.device, dtype or self.dtype)

    def clip_tokenizer(self, sub: str, pad: str) -> Any:
        """The folder's CLIP tokenizer (the vendored one with ``pad`` if the folder has none)."""
        return _folder_tokenizer(self.root / sub, pad)[0]

    def t5_tokenizer(self, sub: str) -> Any:
        """The folder's T5 tokenizer (the vendored vocabulary if the folder has none)."""
        from iga.models.t5_tokenizer import load_t5_tokenizer

        try:
            return load_t5_tokenizer(self.root / sub if (self.root / sub).is_dir() else None)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the T5 tokenizer in {str(self.root / sub)!r}: {exc}") from exc


def _flow_backend(arch: str, parts: _FlowParts, common: dict[str, Any]) -> Any:
    """Build the SD3 or Flux backend from a folder's parts (``common``: VAE, device, dtypes, schedule)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    from iga.models.flow_backends import FluxBackend, SD3Backend

    dt = parts.dtype
    if arch == "sd3":
        with_t5 = parts.present("text_encoder_3")  # without it diffusers feeds zeros in T5's place
        return SD3Backend(
            transformer=parts.load(SD3Transformer2DModel, "transformer", torch_dtype=dt),
            clip_l=parts.load(CLIPTextModelWithProjection, "text_encoder", dtype=dt),
            clip_g=parts.load(CLIPTextModelWithProjection, "text_encoder_2", dtype=dt),
            t5=parts.load(T5EncoderModel, "text_encoder_3", dtype=dt) if with_t5 else None,
            tokenizer_l=parts.clip_tokenizer("tokenizer", "eos"),
            tokenizer_g=parts.clip_tokenizer("tokenizer_2", "!"),  # OpenCLIP bigG pads with "!"
            tokenizer_t5=parts.t5_tokenizer("tokenizer_3") if with_t5 else None, **common)
    return FluxBackend(
        transformer=parts.load(FluxTransformer2DModel, "transformer", torch_dtype=dt),
        clip=parts.load(CLIPTextModel, "text_encoder", dtype=dt),
        t5=parts.load(T5EncoderModel, "text_encoder_2", dtype=dt),
        tokenizer_clip=parts.clip_tokenizer("tokenizer", "eos"),
        tokenizer_t5=parts.t5_tokenizer("tokenizer_2"), **common)
