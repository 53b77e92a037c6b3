"""What a model path offers the guard: its recipe (embedded or sidecar), identity, hashes, markers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from iga.recipe import Recipe, RecipeIssue, parse_recipe_dict
from iga.recipe.canonical import recipe_metadata_sha256

from .plan import ModelIdentity


@dataclass
class ModelSource:
    """A checkpoint as the guard sees it, before any weights are loaded."""

    path: str
    identity: ModelIdentity
    recipe: Recipe | None
    recipe_issues: list[RecipeIssue] = field(default_factory=list)
    detected_prediction: str | None = None
    notes: list[str] = field(default_factory=list)
    declared_schedule: dict | None = None  # the training schedule the file itself declares (demo models do)
    integrity: list[tuple[str, str]] = field(default_factory=list)  # (hash, problem): mismatched or missing hashes
    uncovered: list[str] = field(default_factory=list)  # what the recipe's hashes do not cover
    signature: str | None = None  # why the model fails a required signature (None: fine, or not required)
    own_vae: bool | None = None  # whether the checkpoint holds a VAE of its own (None: not known)

    def resolve(self, request: Any, mode: Any, *, recipe: Any = None, identity: ModelIdentity | None = None):
        """``iga.guard.resolve`` with every fact this source knows (detected prediction and schedule, integrity):
        the one way a request for this model is resolved. ``recipe``/``identity`` stand in for the model's own."""
        from iga.guard.resolve import resolve

        return resolve(self.recipe if recipe is None else recipe, request, mode,
                       model=identity or self.identity, detected_prediction=self.detected_prediction,
                       detected_schedule=self.declared_schedule, integrity=self.integrity,
                       signature=self.signature, own_vae=self.own_vae, model_path=self.path)

    def require_signature(self, trusted: list[str | os.PathLike[str]] | None = None) -> None:
        """Demand a valid signature by one of ``trusted`` (public keys; default $IGA_TRUSTED_KEYS): without one,
        every plan for this model is refused, in every mode."""
        from iga.checkpoint.signing import check_signature, read_key_file

        keys = list(trusted or []) or [p for p in os.environ.get(TRUSTED_KEYS_ENV, "").split(os.pathsep) if p]
        if not keys:
            self.signature = (f"a signature is required but no trusted key is given (--trust KEY.pub or "
                              f"{TRUSTED_KEYS_ENV})")
            return
        status = check_signature(self.path, [read_key_file(k) for k in keys])
        self.signature = None if status.ok else status.message


RECORD_PATH_ENV = "IGA_RECORD_MODEL_PATH"  # "1": plans (and so images) record the model's local path
REQUIRE_SIGNED_ENV = "IGA_REQUIRE_SIGNED"  # the config setting: "1" demands signed recipes everywhere
TRUSTED_KEYS_ENV = "IGA_TRUSTED_KEYS"  # publishers' public keys, separated like PATH


def signatures_required() -> bool:
    """Whether the user's configuration demands signed recipes ($IGA_REQUIRE_SIGNED=1)."""
    return os.environ.get(REQUIRE_SIGNED_ENV, "").strip().lower() in ("1", "true", "yes")


def describe_model(path: str | os.PathLike[str], *, file_hash: bool = True, rehash: bool = False) -> ModelSource:
    """Read a checkpoint's recipe, architecture and hashes (header and cached hashes only; no weights), and check
    the file against the hashes its recipe records (``rehash``: recompute the weights hash, not the cached one)."""
    from iga.checkpoint import detect_architecture, find_recipe, read_header
    from iga.checkpoint.hashing import file_sha256, folder_weights_sha256, weights_sha256

    p = os.fspath(path)
    header = read_header(p) if os.path.isfile(p) else None  # read once: architecture and integrity both use it
    arch = detect_architecture(header if header is not None else p)
    architecture, prediction, variant = arch.architecture, arch.prediction_type, arch.variant
    if os.path.isdir(p):  # a diffusers folder declares its family and prediction type in its config files
        folder_arch, folder_pred = folder_markers(p)
        architecture = architecture if architecture != "unknown" else folder_arch
        prediction = prediction or folder_pred
        variant = variant or folder_variant(p, architecture)
    src = find_recipe(p)
    recipe, issues, origin, rsha = None, [], "none", None
    notes = list(src.warnings) if src else []
    if src is not None:
        recipe, issues = parse_recipe_dict(src.recipe, source=f"{src.origin} recipe of {p}")
        origin, rsha = src.origin, recipe_metadata_sha256(recipe.to_dict())
    is_file = os.path.isfile(p)
    folder_hash, folder_files = (None, None) if is_file else folder_weights_sha256(p, use_cache=not rehash)
    ident = ModelIdentity(
        name=Path(p).stem if is_file else Path(p).name,
        path=str(Path(p).resolve()) if os.environ.get(RECORD_PATH_ENV) == "1" else None,
        architecture=architecture,
        variant=variant,
        weights_sha256=weights_sha256(p, use_cache=not rehash) if is_file else folder_hash,
        weights_files=folder_files,
        file_sha256=file_sha256(p) if is_file and file_hash else None,
        recipe_source=origin,
        recipe_sha256=rsha,
    )
    if ident.file_sha256:
        ident.autov2 = ident.file_sha256[:10]
    declared = flow_training_schedule(p, architecture, variant) or (declared_training_schedule(p) if is_file
                                                                      else None)
    out = ModelSource(p, ident, recipe, issues, prediction, notes + list(arch.notes), declared)
    out.own_vae = _own_vae(p, arch)
    if src is not None:
        from iga.checkpoint.integrity import check_integrity

        checked = check_integrity(p, src, weights=ident.weights_sha256 if is_file else None, header=header)
        out.integrity, out.uncovered = checked.problems, checked.uncovered
        if checked.unhashed:  # strict mode refuses it; the others say so (see resolve)
            out.integrity.append(("hashes", "the embedded recipe records no hashes: nothing proves it belongs to "
                                            "these weights (stripped, or embedded without `iga embed`)"))
    return out


def _own_vae(path: str, arch: Any) -> bool | None:
    """Whether a checkpoint holds its own VAE: a folder's vae/, an SD single file's first_stage_model.* tensors;
    None when that cannot be told from here (SD3/Flux single files find theirs in companion files)."""
    if os.path.isdir(path):
        return os.path.isdir(os.path.join(path, "vae"))
    if arch.architecture in ("sd1", "sd2", "sdxl") and "unet" in arch.components:
        return "vae" in arch.components
    return None


_MAX_CONFIG_TEXT = 64 << 10


def folder_variant(folder: str, architecture: str) -> str | None:
    """A folder's variant: Flux "dev" when its transformer takes a guidance input, else "schnell"; "inpaint" for an
    SD model whose UNet takes the mask and masked image as extra channels."""
    from iga.checkpoint.architecture import INPAINT_CHANNELS

    if architecture in ("sd1", "sd2", "sdxl"):
        unet = read_config(Path(folder) / "unet" / "config.json")
        return "inpaint" if unet.get("in_channels") == INPAINT_CHANNELS else None
    if architecture != "flux":
        return None
    cfg = read_config(Path(folder) / "transformer" / "config.json")
    return "dev" if cfg.get("guidance_embeds") else "schnell"


def flow_training_schedule(path: str, architecture: str, variant: str | None) -> dict | None:
    """An SD3/Flux model's training schedule in recipe terms: a folder's scheduler config (static or dynamic
    shift), else the released family's own; None for other models."""
    from iga.guard.defaults import FLOW_SCHEDULES, flow_family

    family = flow_family(architecture, variant)
    if family is None:
        return None
    cfg = read_config(Path(path) / "scheduler" / "scheduler_config.json") if os.path.isdir(path) else {}
    if not cfg:
        return dict(FLOW_SCHEDULES[family])
    if cfg.get("use_dynamic_shifting"):
        blocks = read_config(Path(path) / "vae" / "config.json").get("block_out_channels") or [0] * 4
        return {"kind": "flow", "dynamic_shift": {  # a token is a 2x2 patch of latents: VAE factor x 2 pixels
            "base_shift": float(cfg.get("base_shift", 0.5)), "max_shift": float(cfg.get("max_shift", 1.15)),
            "base_seq_len": int(cfg.get("base_image_seq_len", 256)),
            "max_seq_len": int(cfg.get("max_image_seq_len", 4096)),
            "pixels_per_token": 2 ** (len(blocks) - 1) * 2}}
    return {"kind": "flow", "shift": float(cfg.get("shift", 1.0))}


def declared_training_schedule(path: str) -> dict | None:
    """The training schedule a checkpoint declares in its own metadata (``iga.demo.config``), or None.

    A model without a recipe is then still resolved on the schedule it was trained with, not on SD's.
    """
    import json

    from iga.checkpoint import CheckpointError, read_header
    from iga.recipe.schema import TrainingSchedule

    try:
        text = (read_header(path).metadata or {}).get("iga.demo.config")
    except (CheckpointError, OSError):
        return None
    if not isinstance(text, str) or len(text) > _MAX_CONFIG_TEXT:
        return None
    try:
        sched = json.loads(text).get("training_schedule")
        return TrainingSchedule.model_validate(sched).model_dump(mode="json", exclude_none=True)
    except (ValueError, AttributeError, TypeError):
        return None


_MAX_CONFIG_BYTES = 1 << 20


def read_config(path: Path) -> dict:
    """A small JSON config file as a dict ({} when missing, oversized or not a JSON object)."""
    import json

    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def folder_markers(folder: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(architecture, prediction type) a diffusers folder declares in its JSON configs (no weights read).

    The same rules the folder loader applies: StableDiffusion3Pipeline -> sd3 and FluxPipeline -> flux (both
    "flow"); two text encoders -> sdxl, text_encoder_2 alone -> sdxl_refiner; an OpenCLIP text tower (exact GELU)
    or 1024-wide cross-attention -> sd2; else sd1. Prediction type from scheduler/scheduler_config.json.
    """
    root = Path(folder)
    index = read_config(root / "model_index.json")
    flow = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}.get(str(index.get("_class_name", "")))
    if flow is not None:  # rectified-flow models: the pipeline class names the family, prediction is always flow
        return flow, "flow"
    if not str(index.get("_class_name", "")).startswith("StableDiffusion"):
        return "unknown", None
    te = read_config(root / "text_encoder" / "config.json")
    unet = read_config(root / "unet" / "config.json")
    if index.get("text_encoder_2") not in (None, [None, None]):  # no CLIP-L beside bigG: the SDXL refiner
        arch = "sdxl" if index.get("text_encoder") not in (None, [None, None]) else "sdxl_refiner"
    elif te.get("hidden_act") == "gelu" or unet.get("cross_attention_dim") == 1024:
        arch = "sd2"
    else:
        arch = "sd1"
    raw = read_config(root / "scheduler" / "scheduler_config.json").get("prediction_type", "epsilon")
    return arch, {"epsilon": "eps", "v_prediction": "v"}.get(str(raw))
