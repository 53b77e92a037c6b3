"""What `iga doctor` examines: the user's settings (from an image's provenance or a plan) and the model.

An iga image carries its whole plan; an A1111 or ComfyUI image carries the knobs a UI shows (sampler, schedule,
steps, CFG, seed, size, clip skip, prompts) and nothing about the model file, so --model is needed for them.
Every value is read from an untrusted file: the provenance readers bound and type-check it, and the request built
here goes through the guard like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iga.guard import Request

MAX_PLAN_FILE = 4 * 1024 * 1024  # a plan is a few kilobytes; anything larger is not one


class CaseError(ValueError):
    """The input cannot be examined; the message says what, where and how to fix it."""


@dataclass
class Case:
    """The user's settings as a guard request, the model to re-run them on, and where they came from."""

    source: str  # "iga", "a1111", "comfyui", "invokeai" or "plan"
    where: str  # the image or plan file
    model_path: str
    request: Request
    image: Path | None = None  # the user's image, when there is one (its pixels are the symptom)
    dtype: str = "float32"  # what the image was computed in (iga plans record it)
    notes: list[str] = field(default_factory=list)

    @property
    def seed(self) -> int:
        """The seed every re-run uses."""
        return int(self.request.seed or 0)


def request_from_plan(plan: dict[str, Any]) -> Request:
    """The request that asks for exactly a plan's settings (its sigma list only when it was explicit)."""
    from iga.guard import Plan

    try:
        p = Plan.from_dict(plan)
    except Exception as e:  # pydantic's message names the bad field
        raise CaseError(f"the plan is not a valid iga plan: {str(e).splitlines()[0]}") from None
    vae = None
    if p.vae is not None and p.vae.source == "file":
        vae = p.vae.path
    elif p.vae is not None and p.vae.id:
        vae = p.vae.id
    return Request(sampler=p.sampler, schedule=p.schedule, steps=p.steps, cfg=p.cfg, cfg_variant=p.cfg_variant,
                   cfg_rescale=p.cfg_rescale, eta=p.eta, seed=p.seed, size=f"{p.width}x{p.height}", vae=vae,
                   clip_skip=p.clip_skip, prediction_type=p.prediction_type, prompt=p.prompt,
                   negative_prompt=p.negative_prompt,
                   sigmas=list(p.sigmas) if p.schedule == "explicit" else None)


def _model(model: str | Path | None, recorded: str | None, where: str) -> str:
    if model is not None:
        if not Path(model).exists():
            raise CaseError(f"model {model} not found; pass --model PATH (a .safetensors file or a diffusers folder)")
        return str(model)
    if recorded and Path(recorded).exists():
        return recorded
    said = f" (it names {recorded}, which is not here)" if recorded else ""
    raise CaseError(f"{where} does not say where its model is{said}; pass --model PATH")


def case_from_image(path: str | Path, model: str | Path | None = None) -> Case:
    """A case from an image with provenance (iga, A1111, ComfyUI or InvokeAI)."""
    from iga.provenance import read_provenance
    from iga.provenance.errors import ProvenanceError

    path = Path(path)
    if not path.is_file():
        raise CaseError(f"image {path} not found")
    try:
        prov = read_provenance(path)
    except ProvenanceError as e:
        raise CaseError(str(e)) from None
    if prov.plan:
        recorded = (prov.plan.get("model") or {}).get("path") if isinstance(prov.plan.get("model"), dict) else None
        dtype = str((prov.plan.get("runtime") or {}).get("dtype") or "float32")
        request = request_from_plan(prov.plan)
        return Case("iga", str(path), _model(model, recorded, str(path)), request, path, dtype)
    if prov.source == "none" or prov.steps is None and prov.sampler is None:
        raise CaseError(f"{path} carries no generation settings (no iga plan, A1111 parameters or ComfyUI "
                        "workflow); pass a plan with --plan and --model instead")
    size = f"{prov.width}x{prov.height}" if prov.width and prov.height else None
    request = Request(sampler=prov.sampler, schedule=prov.schedule, steps=prov.steps, cfg=prov.cfg, seed=prov.seed,
                      size=size, clip_skip=prov.clip_skip, prompt=prov.prompt or "",
                      negative_prompt=prov.negative_prompt or "")
    notes = [f"settings read from {prov.source} metadata: the model, VAE, prediction type and precision it used "
             "are not recorded there"]
    return Case(prov.source, str(path), _model(model, None, str(path)), request, path, notes=notes + prov.warnings)


def case_from_plan(path: str | Path, model: str | Path | None = None) -> Case:
    """A case from a plan JSON file (`iga plan --json`, an image's iga_metadata, a grid cell)."""
    path = Path(path)
    if not path.is_file():
        raise CaseError(f"plan {path} not found")
    if path.stat().st_size > MAX_PLAN_FILE:
        raise CaseError(f"{path} is larger than {MAX_PLAN_FILE} bytes: not a plan")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CaseError(f"{path} is not JSON: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("plan"), dict):
        data = data["plan"]  # `iga plan --json` wraps the plan
    if not isinstance(data, dict):
        raise CaseError(f"{path} does not hold a plan object")
    request = request_from_plan(data)  # a bad plan is named before a missing model
    recorded = (data.get("model") or {}).get("path") if isinstance(data.get("model"), dict) else None
    return Case("plan", str(path), _model(model, recorded, str(path)), request)
