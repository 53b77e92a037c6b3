"""iga's recipe and guard around a diffusers pipeline, for people who already write diffusers code.

    from iga.integrations.diffusers import apply_recipe, guard
    kwargs = apply_recipe(pipe, recipe)            # the recipe's scheduler on the pipe; the call's arguments
    image = pipe("a castle", **kwargs).images[0]

    guarded = guard(pipe, recipe=recipe)           # or a pipe loaded from a folder carrying iga.json
    out = guarded("a castle", generator=torch.Generator().manual_seed(7))
    out.images[0].info["parameters"]              # A1111 infotext; out.plans[0] is the full plan
    out.save("outputs")                            # PNGs with full provenance

A call's arguments become a guard Request exactly as `iga generate`'s flags do: a refusal raises
``GuardRefusedError`` with the findings, an accepted deviation is written to the audit log the same way, and the
pipe runs with the scheduler of the plan (its sampler and schedule, where diffusers has them; where it has none,
the call is refused with the reason). Only diffusers' own sampling loop runs here; iga's engine is not involved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from iga.guard import GuardRefused, Plan, Request


class GuardRefusedError(RuntimeError):
    """The guard refused a pipeline call; ``findings`` say why and how to fix it."""

    def __init__(self, findings: list[Any], message: str | None = None):
        refused = [f for f in findings if f.outcome == "refused"]
        super().__init__(message or "refused by the guard: " + "; ".join(
            f"{f.field}: {f.reason}" + (f" (fix: {f.suggestion})" if f.suggestion else "") for f in refused))
        self.findings = findings


def _scheduler_for(pipe: Any, sampler: str, schedule: str, recipe: Any) -> Any:
    """A diffusers scheduler for (sampler, schedule) on the recipe's training schedule, or GuardRefusedError."""
    import diffusers

    from iga.interop.export import to_diffusers

    exported = to_diffusers(recipe.model_copy(update={"sampler": recipe.sampler.model_copy(update={"name": sampler}),
                                                      "scheduler": recipe.scheduler.model_copy(
                                                          update={"name": schedule, "grid": None})}))
    config = exported.files["scheduler_config.json"]
    cls = getattr(diffusers, config["_class_name"])
    return cls.from_config({**dict(pipe.scheduler.config), **config})


def apply_recipe(pipe: Any, recipe: Any) -> dict[str, Any]:
    """Put the recipe's sampler and schedule on ``pipe.scheduler`` (on its training schedule) and return the
    pipeline call's keyword arguments (steps, CFG, size, clip skip). ValueError, naming the reason, when
    diffusers has no equivalent of the recipe's sampler or schedule."""
    from iga.interop.export import to_diffusers

    exported = to_diffusers(recipe)
    pipe.scheduler = _scheduler_for(pipe, recipe.sampler.name, recipe.scheduler.name, recipe)
    return dict(exported.files["pipeline_call.json"])


@dataclass
class GuardedOutput:
    """The images of a guarded call, each with its plan (also in ``image.info``: iga_metadata and parameters)."""

    images: list[Any]
    plans: list[Plan]

    def save(self, folder: str | os.PathLike[str], fmt: str = "png") -> list[Any]:
        """Save every image with its full provenance (never overwriting); return the paths."""
        from iga.provenance import save_image

        return [save_image(img, plan.to_dict(), folder, fmt=fmt) for img, plan in zip(self.images, self.plans)]


class GuardedPipeline:
    """A diffusers pipeline whose every call goes through iga's guard first."""

    def __init__(self, pipe: Any, recipe: Any, *, mode: str = "guarded", source: Any = None,
                 audit_log: str | os.PathLike[str] | None = None):
        self.pipe, self.recipe, self.mode, self.source, self.audit_log = pipe, recipe, mode, source, audit_log

    def plan(self, prompt: str = "", **call: Any) -> Plan:
        """The plan a call would run (a dry run: nothing generated, nothing logged)."""
        return self._resolve(self._request(prompt, call))

    def __call__(self, prompt: str = "", **call: Any) -> GuardedOutput:
        from iga.guard import record_plan_overrides

        request = self._request(prompt, call)
        plan = self._resolve(request)
        record_plan_overrides(plan, self.audit_log, action="generate")
        return self._run(plan, call)

    def _request(self, prompt: str, call: dict[str, Any]) -> Request:
        generator = call.get("generator")
        seed = call.get("seed")
        if seed is None and generator is not None and hasattr(generator, "initial_seed"):
            seed = int(generator.initial_seed())  # the seed the caller set with manual_seed: the plan records it
        w, h = call.get("width"), call.get("height")
        skip = call.get("clip_skip")
        return Request(prompt=prompt or "", negative_prompt=call.get("negative_prompt") or "",
                       steps=call.get("num_inference_steps"), cfg=call.get("guidance_scale"),
                       size=f"{w}x{h}" if w and h else None, seed=seed, sampler=call.get("sampler"),
                       schedule=call.get("schedule"), clip_skip=None if skip is None else skip + 1,
                       preset=call.get("preset"), overrides=list(call.get("overrides") or []),
                       reason=call.get("reason"), batch=call.get("num_images_per_prompt") or 1)

    def _resolve(self, request: Request) -> Plan:
        from iga.guard import resolve
        from iga.guard.plan import ModelIdentity

        try:
            if self.source is not None:
                plan, _ = self.source.resolve(request, self.mode, recipe=self.recipe)
            else:
                pred = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}.get(
                    str(self.pipe.scheduler.config.get("prediction_type")))
                ident = ModelIdentity(name=str(getattr(self.pipe, "name_or_path", "") or "diffusers pipeline"),
                                      architecture=self.recipe.architecture or "unknown")
                plan, _ = resolve(self.recipe, request, self.mode, model=ident, detected_prediction=pred)
        except GuardRefused as e:
            raise GuardRefusedError(e.findings) from None
        return plan

    def _run(self, plan: Plan, call: dict[str, Any]) -> GuardedOutput:
        import torch

        from iga.provenance.infotext import format_infotext
        from iga.provenance.jsonutil import dumps_strict

        try:
            self.pipe.scheduler = _scheduler_for(self.pipe, plan.sampler, plan.schedule, self.recipe)
        except ValueError as e:
            raise GuardRefusedError(plan.findings, f"the plan cannot run in diffusers: {e}") from None
        passthrough = {k: v for k, v in call.items() if k not in _GUARDED_KEYS}
        images, plans = [], []
        for k, seed in enumerate(plan.seeds):  # one seed per image, as iga records and replays them
            generator = torch.Generator("cpu").manual_seed(seed)
            out = self.pipe(plan.prompt, negative_prompt=plan.negative_prompt or None, num_inference_steps=plan.steps,
                            guidance_scale=plan.cfg, width=plan.width, height=plan.height, generator=generator,
                            clip_skip=plan.clip_skip - 1 or None, output_type="pil", **passthrough)
            image = out.images[0]
            p = plan.for_image(k) if len(plan.seeds) > 1 else plan
            p = p.model_copy(update={"runtime": {"diffusers": _diffusers_version(), "torch": torch.__version__}})
            image.info["iga_metadata"] = dumps_strict(p.to_dict())
            image.info["parameters"] = format_infotext(p.to_dict())
            images.append(image)
            plans.append(p)
        return GuardedOutput(images, plans)


_GUARDED_KEYS = frozenset({"negative_prompt", "num_inference_steps", "guidance_scale", "width", "height", "seed",
                           "generator", "sampler", "schedule", "clip_skip", "preset", "overrides", "reason",
                           "num_images_per_prompt", "output_type"})


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def guard(pipe: Any, *, recipe: Any = None, mode: str = "guarded", model: str | os.PathLike[str] | None = None,
          audit_log: str | os.PathLike[str] | None = None) -> GuardedPipeline:
    """Wrap a diffusers pipeline so that each call goes through iga's guard.

    The recipe is ``recipe``, else the one the model carries (``model``, default the folder the pipe was loaded
    from: its iga.json sidecar); without either, ValueError says how to give one.
    """
    from iga.guard.source import describe_model

    if mode not in ("strict", "guarded", "permissive"):
        raise ValueError(f"mode {mode!r}: choose strict, guarded or permissive")
    path = model or getattr(pipe, "name_or_path", None)
    source = describe_model(path, file_hash=False) if path and os.path.exists(path) else None
    recipe = recipe if recipe is not None else (source.recipe if source else None)
    if recipe is None:
        raise ValueError("no recipe: pass recipe=..., or load the pipeline from a folder that carries one "
                         "(iga.json inside it, written by `iga embed` or `iga calibrate --sidecar`)")
    return GuardedPipeline(pipe, recipe, mode=mode, source=source, audit_log=audit_log)
