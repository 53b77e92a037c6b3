"""What `iga doctor` examines: the user's settings (from an image's provenance or a plan) and the model.

An iga image carries its whole plan; an A1111 or ComfyUI image carries the knobs a UI shows (sampler, schedule,
steps, CFG, seed, size, clip skip, prompts) and nothing about the model file, so --model is needed for them.
Every value is read from an untrusted file: the provenance readers bound and type-check it, and the request built
here goes through the guard like any other.
"""

from __future__ import annotations

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
    """The request that asks for exactly a stored plan's settings (the plan validated first)."""
    from iga.guard import Plan

    try:
        p = Plan.from_dict(plan)
    except Exception as e:  # pydantic's message names the bad field
        raise CaseError(f"the plan is not a valid iga plan: {str(e).splitlines()[0]}") from None
    return p.as_request()


def _model(model: str | Path | None, plan: dict[str, Any] | None, where: str, trust_path: bool) -> str:
    """The model to re-run on: --model, or the plan's weights found among known models (``iga.store.used``)."""
    from iga.store.used import ModelNotFound, locate_model

    recorded = plan.get("model") if plan and isinstance(plan.get("model"), dict) else {}
    try:
        return locate_model(str(recorded.get("name") or where), recorded.get("weights_sha256"),
                            recorded.get("path"), given=str(model) if model is not None else None,
                            trust_path=trust_path)
    except ModelNotFound as e:
        raise CaseError(str(e)) from None


def case_from_image(path: str | Path, model: str | Path | None = None, *, trust_path: bool = False) -> Case:
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
        runtime = prov.plan.get("runtime") if isinstance(prov.plan.get("runtime"), dict) else {}
        dtype = str(runtime.get("dtype") or "float32")
        request = request_from_plan(prov.plan)
        return Case("iga", str(path), _model(model, prov.plan, str(path), trust_path), request, path, dtype)
    if prov.source == "none" or prov.steps is None and prov.sampler is None:
        raise CaseError(f"{path} carries no generation settings (no iga plan, A1111 parameters or ComfyUI "
                        "workflow); pass a plan with --plan and --model instead")
    size = f"{prov.width}x{prov.height}" if prov.width and prov.height else None
    request = Request(sampler=prov.sampler, schedule=prov.schedule, steps=prov.steps, cfg=prov.cfg, seed=prov.seed,
                      size=size, clip_skip=prov.clip_skip, prompt=prov.prompt or "",
                      negative_prompt=prov.negative_prompt or "")
    notes = [f"settings read from {prov.source} metadata: the model, VAE, prediction type and precision it used "
             "are not recorded there"]
    if model is None:
        raise CaseError(f"{path} was made by {prov.source}, which does not record the model file; pass --model PATH")
    return Case(prov.source, str(path), _model(model, None, str(path), False), request, path,
                notes=notes + prov.warnings)


def case_from_plan(path: str | Path, model: str | Path | None = None, *, trust_path: bool = False) -> Case:
    """A case from a plan JSON file (`iga plan --json`, an image's iga_metadata, a grid cell)."""
    path = Path(path)
    if not path.is_file():
        raise CaseError(f"plan {path} not found")
    if path.stat().st_size > MAX_PLAN_FILE:
        raise CaseError(f"{path} is larger than {MAX_PLAN_FILE} bytes: not a plan")
    from iga.provenance.jsonutil import loads_bounded

    try:
        data = loads_bounded(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as e:
        raise CaseError(f"{path} is not JSON: {e}") from None
    except ValueError as e:  # ProvenanceError: invalid, too large or too deep
        raise CaseError(str(e)) from None
    if isinstance(data, dict) and isinstance(data.get("plan"), dict):
        data = data["plan"]  # `iga plan --json` wraps the plan
    if not isinstance(data, dict):
        raise CaseError(f"{path} does not hold a plan object")
    request = request_from_plan(data)  # a bad plan is named before a missing model
    return Case("plan", str(path), _model(model, data, str(path), trust_path), request)
