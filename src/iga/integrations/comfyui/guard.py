"""The node pack's logic that needs no ComfyUI: recipes of the checkpoints, verification, the guard's request and
plan, the prompt text behind a conditioning, and what ComfyUI's KSampler can run. ``nodes`` wires it to ComfyUI.

A node's request goes through exactly the path `iga plan` takes (``describe_model`` then ``ModelSource.resolve``),
so the same request gives the same findings in both; what differs is only how a refusal is shown (ComfyUI's error
box instead of a table) and the audit action ("comfyui").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from iga.guard import GuardRefused, Plan, Request, record_plan_overrides
from iga.guard.plan import Mode
from iga.guard.source import ModelSource, describe_model

MODES: tuple[Mode, ...] = ("guarded", "strict", "permissive")
RECIPE_DEFAULT = "recipe default"  # the loader's preset choice: the recipe's default preset, else its defaults
FROM_LOADER = "from loader"  # the KSampler's preset choice: whatever the loader chose
FROM_RECIPE = "from recipe"  # a KSampler knob left to the plan (0 for steps and cfg)
AUDIT_ACTION = "comfyui"
_COMFY_HINT = ("in ComfyUI: name the field in the IGA KSampler's overrides (e.g. 'sampler, steps') and fill in "
               "override_reason")


class NodeError(Exception):
    """A node cannot run: the message is what ComfyUI shows (what, why, how to fix); ``findings``: the guard's, when
    it was the guard that refused."""

    def __init__(self, message: str, findings: list[Any] | None = None):
        super().__init__(message)
        self.findings = findings or []


@dataclass
class RecipeHandle:
    """What IGA_RECIPE carries from the loader to the KSampler: the checkpoint as the guard sees it, the mode and
    the loader's preset choice."""

    source: ModelSource
    mode: Mode
    preset: str | None = None

    def resolve(self, request: Request, *, record: bool = True) -> Plan:
        """The guard's plan for this request (as `iga plan`), overrides written to the audit log unless not
        ``record``; NodeError on a refusal, whose message is the guard's findings with their suggestions."""
        from iga.guard import AuditLogError

        try:
            plan, _findings = self.source.resolve(request, self.mode)
        except GuardRefused as e:
            raise NodeError(refusal_message(e, self.source), e.findings) from None
        except (KeyError, ValueError) as e:  # unknown names, presets, override fields: the message lists the choices
            raise NodeError(str(e.args[0]) if e.args else str(e)) from None
        try:  # an override that cannot be recorded is not accepted, as in the CLI
            if record:
                record_plan_overrides(plan, action=AUDIT_ACTION)
        except AuditLogError as e:
            raise NodeError(str(e)) from None
        return plan


def refusal_message(e: GuardRefused, source: ModelSource) -> str:
    """The guard's refusal as ComfyUI shows it: the model, then each refused field with reason and suggestion."""
    text = str(e).replace("(CLI: --override", f"({_COMFY_HINT}; CLI: --override")
    return f"iga guard, model {source.identity.name}: {text}"


def load_source(path: str | os.PathLike[str], mode: str, preset: str = RECIPE_DEFAULT, *,
                rehash: bool = False) -> RecipeHandle:
    """Describe a checkpoint and check it against the hashes its recipe records (``rehash``: recompute the weights
    hash as `iga verify --rehash`, instead of trusting the hash cache). A file that no longer matches its recipe
    stops here, before its weights are loaded, unless the mode is permissive (the guard then records it)."""
    if mode not in MODES:
        raise NodeError(f"unknown mode {mode!r}; choose {', '.join(MODES)}")
    from iga.checkpoint import CheckpointError
    from iga.recipe import RecipeError

    try:
        source = describe_model(path, rehash=rehash)
    except (CheckpointError, RecipeError) as e:
        raise NodeError(str(e)) from None
    failed = [problem for name, problem in source.integrity if name != "hashes" or mode == "strict"]
    if failed and mode != "permissive":
        raise NodeError(f"iga verify failed for {path}: " + "; ".join(failed) + ". Run `iga verify` on the file, "
                        "re-embed the recipe if the change is yours, or choose mode 'permissive' to run it anyway "
                        "(recorded in every image)")
    return RecipeHandle(source, mode, None if preset in ("", RECIPE_DEFAULT) else preset)


def loader_settings(handle: RecipeHandle) -> Plan:
    """The plan of the recipe (or of the loader's preset) with nothing else asked: its sampler, schedule, steps and
    CFG are what the loader outputs for a stock KSampler. Nothing is recorded: the KSampler's plan is."""
    return handle.resolve(Request(preset=handle.preset), record=False)


def parse_overrides(text: str) -> list[str]:
    """'sampler, steps' (commas or spaces) -> ["sampler", "steps"]; the guard checks the names."""
    return [part for part in text.replace(",", " ").split() if part]


def ksampler_request(handle: RecipeHandle, *, seed: int, preset: str, sampler: str = FROM_RECIPE,
                     scheduler: str = FROM_RECIPE, steps: int = 0, cfg: float = 0.0, overrides: str = "",
                     override_reason: str = "", width: int | None = None, height: int | None = None,
                     prompt: str = "", negative_prompt: str = "", clip_skip: int | None = None) -> Request:
    """The IGA KSampler's inputs as a guard Request: knobs left at "from recipe" (0 for steps and cfg) are not
    asked for, so the preset, else the recipe, decides them; named overrides need a reason. ``clip_skip``: what the
    graph's text encoding used (``graph_clip_skip``), judged by the guard like any requested value."""
    fields = parse_overrides(overrides)
    reason = override_reason.strip()
    if fields and not reason:
        raise NodeError(f"overrides {', '.join(fields)} need a reason: fill in override_reason (it is written to "
                        "iga's audit log and into every image)")
    chosen = handle.preset if preset in ("", FROM_LOADER) else None if preset == RECIPE_DEFAULT else preset
    return Request(preset=chosen, seed=seed,
                   sampler=None if sampler in ("", FROM_RECIPE) else sampler,
                   schedule=None if scheduler in ("", FROM_RECIPE) else scheduler,
                   steps=steps or None, cfg=cfg or None,
                   size=f"{width}x{height}" if width and height else None, clip_skip=clip_skip,
                   prompt=prompt, negative_prompt=negative_prompt, overrides=fields, reason=reason or None)


def recipe_presets(paths: list[str]) -> list[str]:
    """Every preset name the recipes of these checkpoints declare (sorted, each once); unreadable files skipped,
    since a dropdown must still open when one file in the folder is damaged."""
    from iga.checkpoint import CheckpointError, find_recipe

    names: set[str] = set()
    for p in paths:
        try:
            src = find_recipe(p)
        except (CheckpointError, OSError, ValueError):
            continue
        presets = src.recipe.get("presets") if src is not None else None
        for item in presets if isinstance(presets, list) else ():
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                names.add(item["name"])
    return sorted(names)


def _linked_inputs(prompt: dict[str, Any] | None, link: Any) -> tuple[str, dict[str, Any]]:
    """(class_type, inputs) of the node an input link of ComfyUI's API graph comes from; ("", {}) when unknown."""
    if not isinstance(prompt, dict) or not (isinstance(link, list) and len(link) == 2):
        return "", {}
    node = prompt.get(str(link[0]))
    inputs = node.get("inputs") if isinstance(node, dict) else None
    return (str(node.get("class_type", "")), inputs) if isinstance(inputs, dict) else ("", {})


def conditioning_text(prompt: dict[str, Any] | None, link: Any) -> str:
    """The prompt text behind a conditioning input, read from ComfyUI's API graph: the ``text`` of the node the link
    comes from (CLIPTextEncode and its kin); "" when that is not a plain text (combined or computed conditioning)."""
    text = _linked_inputs(prompt, link)[1].get("text")
    return text if isinstance(text, str) else ""


CHECKPOINT_LOADERS = ("IgaCheckpointLoader", "CheckpointLoaderSimple", "CheckpointLoader")


def graph_clip_skip(prompt: dict[str, Any] | None, link: Any) -> int | None:
    """iga's clip skip of the text encoding behind a conditioning input: 1 when the encode node's CLIP comes straight
    from a checkpoint loader, -stop_at_clip_layer through a CLIPSetLastLayer; None when the graph does not say."""
    kind, inputs = _linked_inputs(prompt, _linked_inputs(prompt, link)[1].get("clip"))
    if kind in CHECKPOINT_LOADERS:
        return 1
    stop = inputs.get("stop_at_clip_layer") if kind == "CLIPSetLastLayer" else None
    return -stop if isinstance(stop, int) and not isinstance(stop, bool) and stop < 0 else None


def comfyui_problems(plan: Plan, samplers: list[str], schedulers: list[str], clip_skip: int | None = 1) -> list[str]:
    """What ComfyUI's KSampler cannot run as the plan says (iga's own samplers and schedules, settings its KSampler
    has no input for, a clip skip the graph's text encoding did not use): each a sentence; empty when ComfyUI runs
    the plan as planned. ``clip_skip``: the graph's (``graph_clip_skip``)."""
    out = []
    if plan.clip_skip != clip_skip:
        out.append(f"the plan uses clip skip {plan.clip_skip} but the graph's text encoding "
                   + (f"uses {clip_skip}" if clip_skip else "cannot be read (CLIPTextEncode fed by the loader or a "
                      "CLIPSetLastLayer)")
                   + f"; feed the text encoders through CLIPSetLastLayer at {-plan.clip_skip}")
    if plan.sampler not in samplers:
        out.append(f"the plan's sampler {plan.sampler} is not one of ComfyUI's ({', '.join(samplers)})")
    if plan.schedule not in schedulers:
        out.append(f"the plan's schedule {plan.schedule} is not one of ComfyUI's ({', '.join(schedulers)})")
    for what, unsupported in (("a CFG variant", plan.cfg_variant != "cfg"), ("CFG rescale", plan.cfg_rescale),
                              ("sampler options", plan.sampler_options),
                              ("a separate VAE", plan.vae is not None and plan.vae.source == "file"),
                              ("LoRAs", plan.loras), ("ControlNets", plan.controls), ("a hires pass", plan.hires),
                              ("a refiner", plan.refiner)):
        if unsupported:
            out.append(f"the plan uses {what}, which the IGA KSampler does not apply")
    return out


def sigma_mismatch(planned: list[float], comfy: list[float], tolerance: float = 1e-3) -> str | None:
    """Why ComfyUI's sigmas are not the plan's (another count, or a relative difference above ``tolerance``), or
    None: the recipe's training schedule or schedule parameters are then something ComfyUI's names cannot say."""
    if len(planned) != len(comfy):
        return f"ComfyUI would run {len(comfy) - 1} steps where the plan has {len(planned) - 1}"
    for k, (a, b) in enumerate(zip(planned, comfy)):
        if abs(a - b) > tolerance * max(abs(a), abs(b), 1e-3):
            return f"sigma {k} is {b:.6g} in ComfyUI but {a:.6g} in the plan"
    return None
