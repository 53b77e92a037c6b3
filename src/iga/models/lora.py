"""LoRA files: read one defensively, say what it was trained for, and apply several to a loaded SD backend.

Only ``.safetensors`` LoRAs are read (the header through ``iga.checkpoint.read_header``, with its size limits);
pickles (.pt/.ckpt/.bin) are refused, never opened. Key formats:

- kohya (sd-scripts, A1111, ComfyUI): ``lora_unet_<module>.lora_down.weight`` / ``lora_up.weight`` / ``.alpha``,
  ``lora_te_`` (SD1/SD2 text encoder), ``lora_te1_``/``lora_te2_`` (SDXL's two);
- diffusers: ``unet.<module>.lora_A.weight``/``lora_B.weight`` (or the older ``.lora.down``/``.lora.up``),
  ``text_encoder.``/``text_encoder_2.``;
- peft: ``base_model.model.<module>.lora_A.weight`` (a bare peft adapter, UNet only).

What it was trained for comes from its metadata, read by the same readers the recipe drafter uses (kohya
``ss_*``, ModelSpec), then from its ``iga.recipe`` (a partial recipe, see ``iga.recipe.compose``), then from the
tensors (SDXL's second text encoder; the cross-attention width). Applying goes through diffusers' LoRA loaders
(kohya keys converted by diffusers, peft layers with one adapter per LoRA and its weight as the adapter scale).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECIPE_KEY = "iga.recipe"
_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_KOHYA_TARGETS = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                  "lora_te2_": "text_encoder_2"}
# the training facts `iga inspect` shows (kohya writes many more: datasets, tag counts, optimiser...)
TRAINING_KEYS = ("ss_output_name", "ss_base_model_version", "ss_sd_model_name", "ss_new_sd_model_hash", "ss_v2",
                 "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args", "ss_resolution",
                 "ss_clip_skip", "ss_noise_offset", "ss_zero_terminal_snr", "ss_num_train_images", "ss_epoch",
                 "ss_steps", "ss_learning_rate", "ss_training_comment", "modelspec.architecture",
                 "modelspec.title", "modelspec.prediction_type", "modelspec.trigger_phrase")


class LoraError(ValueError):
    """A LoRA file iga will not read or apply; the message names the file and the fix."""


@dataclass
class LoraInfo:
    """What a LoRA file is and what it was trained for (header and hashes only; no tensors loaded)."""

    path: str
    name: str
    format: str  # kohya | diffusers | peft
    targets: list[str]  # unet, text_encoder, text_encoder_2
    architecture: str | None
    architecture_source: str | None
    prediction_type: str | None
    prediction_source: str | None
    zero_terminal_snr: bool | None
    base_model: str | None
    rank: int | None
    alpha: float | None
    file_sha256: str
    addnet_sha256: str  # SHA-256 of the tensor data: A1111's "Lora hashes" use its first 12 hex
    embedded_hash: str | None  # kohya's sshs_model_hash, as stored (verified against addnet_sha256)
    training: dict[str, str] = field(default_factory=dict)
    recipe: Any = None  # iga.recipe.compose.LoraRecipe
    recipe_problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def short_hash(self) -> str:
        """A1111's LoRA short hash (12 hex of the tensor-data SHA-256)."""
        return self.addnet_sha256[:12]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        d = asdict(self)
        d["recipe"] = self.recipe.model_dump(mode="json", exclude_none=True) if self.recipe is not None else None
        d["short_hash"] = self.short_hash
        return d


def read_lora(path: str | os.PathLike[str]) -> LoraInfo:
    """Describe a LoRA file; LoraError (one line: the file, what is wrong, the fix) for anything else."""
    from iga.checkpoint import CheckpointError, read_header
    from iga.checkpoint.hashing import compute_hashes

    p = os.fspath(path)
    try:
        header = read_header(p)
        hashes = compute_hashes(p)
    except CheckpointError as e:
        raise LoraError(f"LoRA {p}: {e.message}; only .safetensors LoRAs are accepted (iga never unpickles "
                        "files: convert it to .safetensors in an environment you trust)") from None
    names = [t.name for t in header.tensors]
    fmt, targets = lora_format(names)
    if fmt is None:
        raise LoraError(f"LoRA {p}: no LoRA tensors (expected kohya lora_unet_/lora_te_ keys or diffusers/peft "
                        "lora_A/lora_B keys); is it a checkpoint or an embedding?")
    md = dict(header.metadata or {})
    info = LoraInfo(path=p, name=Path(p).stem, format=fmt, targets=targets, architecture=None,
                    architecture_source=None, prediction_type=None, prediction_source=None,
                    zero_terminal_snr=None, base_model=md.get("ss_sd_model_name"), rank=None, alpha=None,
                    file_sha256=hashes.file_sha256 or "", addnet_sha256=hashes.weights_sha256 or "",
                    embedded_hash=md.get("sshs_model_hash"),
                    training={k: md[k] for k in TRAINING_KEYS if k in md})
    _read_recipe(info, md)
    _trained_for(info, md, header)
    info.rank, info.alpha = _rank_alpha(header, md)
    if info.embedded_hash and info.embedded_hash.lower() != info.addnet_sha256:
        info.notes.append(f"sshs_model_hash {info.embedded_hash[:12]}... does not match the tensor data "
                          f"({info.short_hash}...); iga records the computed hash")
    return info


def lora_format(names: list[str]) -> tuple[str | None, list[str]]:
    """(kohya | diffusers | peft | None, the model parts it targets) from the tensor names."""
    if names and all(n.startswith(_KOHYA_PREFIXES) for n in names):
        found = {t for pre, t in _KOHYA_TARGETS.items() for n in names if n.startswith(pre)}
        return "kohya", sorted(found)
    lora = [n for n in names if ".lora_A." in n or ".lora_B." in n or ".lora.down." in n or ".lora.up." in n]
    if not lora:
        return None, []
    if all(n.startswith("base_model.model.") for n in lora):
        return "peft", ["unet"]
    found = sorted({n.split(".", 1)[0] for n in lora})
    if not set(found) <= {"unet", "text_encoder", "text_encoder_2"}:
        return "peft", ["unet"]  # bare module names: a peft adapter saved for the UNet alone
    return "diffusers", found


def _read_recipe(info: LoraInfo, md: dict[str, str]) -> None:
    from iga.recipe import MAX_RECIPE_BYTES
    from iga.recipe.compose import parse_lora_recipe

    text = md.get(RECIPE_KEY)
    if text is None:
        return
    if len(text.encode("utf-8")) > MAX_RECIPE_BYTES:
        info.recipe_problem = f"its iga.recipe is larger than {MAX_RECIPE_BYTES} bytes"
        return
    try:
        info.recipe = parse_lora_recipe(json.loads(text))
    except ValueError as e:  # json.JSONDecodeError, an invalid field, an unknown sampler name
        info.recipe_problem = f"its iga.recipe cannot be used: {str(e).splitlines()[0]}"


def _trained_for(info: LoraInfo, md: dict[str, str], header: Any) -> None:
    """Architecture, prediction type and zero-terminal SNR: the LoRA's recipe, else its metadata (the drafter's
    readers), else its tensors; disagreements between sure sources become notes."""
    from iga.interop.draft import Evidence, choose, from_kohya, from_modelspec

    ev = from_modelspec(md, addon=True) + from_kohya(md) + _tensor_evidence(header, info.targets)
    lr = info.recipe
    if lr is not None:
        for fld in ("architecture", "prediction_type", "zero_terminal_snr"):
            if getattr(lr, fld) is not None:
                ev.append(Evidence(fld, getattr(lr, fld), "detected", f"iga.recipe {fld}", 1.0))
    chosen, conflicts = choose(ev)
    info.notes += conflicts
    if "architecture" in chosen:
        info.architecture, info.architecture_source = chosen["architecture"].value, chosen["architecture"].key
    if "prediction_type" in chosen:
        info.prediction_type, info.prediction_source = chosen["prediction_type"].value, chosen["prediction_type"].key
    if "zero_terminal_snr" in chosen:
        info.zero_terminal_snr = bool(chosen["zero_terminal_snr"].value)


def _tensor_evidence(header: Any, targets: list[str]) -> list[Any]:
    """SDXL's second text encoder, or the cross-attention width a key/value projection reads (768/1024/2048)."""
    from iga.checkpoint.architecture import CROSS_ATTENTION_WIDTHS
    from iga.interop.draft import Evidence

    if "text_encoder_2" in targets:
        return [Evidence("architecture", "sdxl", "detected", "LoRA tensors for a second text encoder", 0.7)]
    for t in header.tensors:
        n = t.name
        down = "lora_down" in n or "lora_A" in n or "lora.down" in n
        if down and "attn2" in n and ("to_k" in n or "to_v" in n) and len(t.shape) == 2:
            arch = CROSS_ATTENTION_WIDTHS.get(int(t.shape[1]))
            if arch:
                return [Evidence("architecture", arch, "detected", f"cross-attention width {t.shape[1]} ({n})", 0.7)]
    return []


def _rank_alpha(header: Any, md: dict[str, str]) -> tuple[int | None, float | None]:
    """The rank (the down projection's output width) and alpha (kohya's scale numerator; diffusers: = rank)."""
    rank = next((int(t.shape[0]) for t in header.tensors if t.shape and (
        "lora_down" in t.name or "lora_A" in t.name or "lora.down" in t.name)), None)
    try:
        alpha = float(md["ss_network_alpha"])
    except (KeyError, ValueError):
        alpha = _first_alpha(header)
    return rank, alpha


def _first_alpha(header: Any) -> float | None:
    from iga.checkpoint.architecture import read_scalar  # reads the few bytes of a scalar, no torch

    return next((read_scalar(header, t) for t in header.tensors if t.name.endswith(".alpha")), None)


def load_lora_tensors(path: str) -> dict[str, Any]:
    """The tensors of a LoRA file already accepted by ``read_lora`` (safetensors: no code runs)."""
    from safetensors.torch import load_file

    return load_file(path)


def with_loras(backend: Any, loras: list[tuple[str, float]]) -> Any:
    """A copy of a StableDiffusionBackend with LoRAs (path, weight) loaded into its UNet and text encoders, one
    peft adapter each, active together at their weights. A copy, because the loader's cache shares one backend
    between every user of a checkpoint; the VAE is shared (LoRAs do not touch it). Keep one per LoRA set
    (``iga.generate.Model.backend``)."""
    import copy
    import dataclasses

    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    if not loras:
        return backend
    if not hasattr(backend, "unet"):
        raise LoraError(f"LoRAs apply to SD1/SD2/SDXL models; this is a {getattr(backend, 'architecture', '?')} "
                        "model")
    backend = dataclasses.replace(backend, unet=copy.deepcopy(backend.unet), text_encoders=[
        dataclasses.replace(slot, model=copy.deepcopy(slot.model)) for slot in backend.text_encoders])
    mixin = StableDiffusionXLLoraLoaderMixin if backend.architecture == "sdxl" else StableDiffusionLoraLoaderMixin
    encoders = [(slot.model, "text_encoder" if i == 0 else f"text_encoder_{i + 1}")
                for i, slot in enumerate(backend.text_encoders)]
    names = [f"lora_{k}" for k in range(len(loras))]
    for name, (path, _weight) in zip(names, loras):
        state = _diffusers_keys(load_lora_tensors(path))
        state, alphas = mixin.lora_state_dict(state, unet_config=backend.unet.config)
        mixin.load_lora_into_unet(state, alphas, backend.unet, adapter_name=name)
        for model, prefix in encoders:
            if any(k.startswith(prefix + ".") for k in state):
                mixin.load_lora_into_text_encoder(state, alphas, model, prefix=prefix, adapter_name=name)
        if not any(name in _adapters(m) for m in [backend.unet] + [m for m, _ in encoders]):
            raise LoraError(f"LoRA {path}: none of its layers match this model's modules (a LoRA for another "
                            "architecture?)")
    _activate(backend, names, [w for _, w in loras], [m for m, _ in encoders])
    return backend


def _diffusers_keys(state: dict[str, Any]) -> dict[str, Any]:
    """A bare peft adapter targets the UNet: give its keys diffusers' ``unet.`` prefix."""
    if any(k.startswith(("unet.", "text_encoder")) or k.startswith(_KOHYA_PREFIXES) for k in state):
        return state
    return {"unet." + k.removeprefix("base_model.model."): v for k, v in state.items()}


def _adapters(model: Any) -> set[str]:
    return set(getattr(model, "peft_config", None) or {})


def _activate(backend: Any, names: list[str], weights: list[float], encoders: list[Any]) -> None:
    from diffusers.loaders.lora_base import set_adapters_for_text_encoder

    for model in [backend.unet] + encoders:
        here = [(n, w) for n, w in zip(names, weights) if n in _adapters(model)]
        if not here:
            continue
        if model is backend.unet:
            model.set_adapters([n for n, _ in here], [w for _, w in here])
        else:
            set_adapters_for_text_encoder([n for n, _ in here], model, [w for _, w in here])
