"""`iga plan`: resolve a request against a model's recipe and show the effective settings and every finding.

The request flags defined here are shared with `iga generate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from iga.provenance.jsonutil import dumps_strict

ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="checkpoint (.safetensors or diffusers "
                                                  "folder); default: the bundled demo model")]
PresetOpt = Annotated[Optional[str], typer.Option(help="a preset from the model's recipe, e.g. Quality or Fast")]
SamplerOpt = Annotated[Optional[str], typer.Option(help="any spelling: dpmpp_2m, 'DPM++ 2M', 'DPM++ 2M Karras' "
                                                   "(also sets the schedule)")]
ScheduleOpt = Annotated[Optional[str], typer.Option(help="karras, exponential, normal, 'SGM Uniform', ...")]
StepsOpt = Annotated[Optional[int], typer.Option(help="sampling steps")]
CfgOpt = Annotated[Optional[float], typer.Option(help="classifier-free guidance scale")]
SeedOpt = Annotated[Optional[int], typer.Option(help="seed of the first image (batch images use seed+1, ...)")]
SizeOpt = Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT, multiples of 8")]
VaeOpt = Annotated[Optional[str], typer.Option(help="a VAE file or id (checked against the recipe)")]
ClipSkipOpt = Annotated[Optional[int], typer.Option("--clip-skip", help="text-encoder layers to skip (1 = none)")]
EtaOpt = Annotated[Optional[float], typer.Option(help="noise scale of ancestral/SDE samplers")]
GuidanceOpt = Annotated[Optional[float], typer.Option(help="distilled guidance of guidance-distilled models (Flux "
                                                      "dev; Forge's Distilled CFG Scale); not --cfg")]
ShiftOpt = Annotated[Optional[float], typer.Option(help="advanced: the flow timestep shift (SD3, Flux); default: the "
                                                   "recipe's, or its dynamic rule at this size")]
OverrideOpt = Annotated[Optional[list[str]], typer.Option("--override", help="accept a deviation from the recipe "
                        "for this field (repeatable): sampler, schedule, steps, cfg, vae, clip_skip, size, guidance, shift")]
ReasonOpt = Annotated[Optional[str], typer.Option(help="why you override (kept in the plan and the audit log)")]
ModeOpt = Annotated[str, typer.Option(help="strict: no deviations; guarded: deviations only as --override; "
                                      "permissive: deviations warned and logged")]
NegativeOpt = Annotated[str, typer.Option("--negative", help="negative prompt")]
BatchOpt = Annotated[int, typer.Option("--n", "--batch", "-n", help="images to make (one seed each)")]
PredOpt = Annotated[Optional[str], typer.Option("--prediction-type", hidden=True,
                                                help="advanced: treat the model as eps/v/x0/flow")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
RequireSignedOpt = Annotated[bool, typer.Option("--require-signed", help="refuse a model whose recipe is not signed "
                                                "by a trusted key (also: IGA_REQUIRE_SIGNED=1)")]
TrustOpt = Annotated[Optional[list[Path]], typer.Option("--trust", help="a publisher's public key (.pub) to accept "
                                                        "signatures from (repeatable; also: IGA_TRUSTED_KEYS)")]
RehashOpt = Annotated[bool, typer.Option("--rehash", help="recompute the weights hash instead of trusting the "
                                         "hash cache")]


def build_request(*, prompt: str = "", preset: str | None = None, sampler: str | None = None,
                  schedule: str | None = None, steps: int | None = None, cfg: float | None = None,
                  seed: int | None = None, size: str | None = None, vae: str | None = None,
                  clip_skip: int | None = None, eta: float | None = None, prediction_type: str | None = None,
                  negative: str = "", batch: int = 1, override: list[str] | None = None, reason: str | None = None,
                  guidance: float | None = None, shift: float | None = None):
    """Turn CLI flag values into a guard Request."""
    from iga.guard import Request

    return Request(
        preset=preset, sampler=sampler, schedule=schedule, steps=steps, cfg=cfg, seed=seed, size=size, vae=vae,
        clip_skip=clip_skip, eta=eta, prediction_type=prediction_type, prompt=prompt or "", guidance=guidance,
        shift=shift,
        negative_prompt=negative or "", batch=batch or 1, overrides=list(override or []), reason=reason,
    )


def resolve_for_cli(model: Path | None, request, mode: str, *, as_json: bool, action: str,
                    require_signed: bool = False, trust: list[Path] | None = None, rehash: bool = False):
    """Describe the model, resolve the request, record overrides; exit 2/3 with a clear message on failure."""
    from iga.checkpoint import CheckpointError
    from iga.guard import AuditLogError, GuardRefused, record_plan_overrides
    from iga.guard.source import describe_model
    from iga.paths import default_model_path
    from iga.recipe import RecipeError
    from iga.recipe.names import UnknownNameError

    path = model or default_model_path()
    if not Path(path).exists():
        raise _fail(f"model {path} not found" + ("" if model else " (the bundled demo model is missing: "
                                                 "reinstall iga or pass --model)"))
    from iga.guard.source import signatures_required

    try:
        source = describe_model(path, rehash=rehash)
        if require_signed or signatures_required():
            source.require_signature(trust)
    except (CheckpointError, RecipeError) as e:
        raise _fail(str(e)) from None
    if model:  # a model the user chose: replay and the doctor may find it again by its weights hash
        from iga.guard.store import remember

        remember(source.identity.weights_sha256, source.path, source.identity.name)
    if mode not in ("strict", "guarded", "permissive"):
        raise _fail(f"--mode {mode!r}: choose strict, guarded or permissive")
    try:
        plan, findings = source.resolve(request, mode)
    except UnknownNameError as e:
        raise _fail(str(e)) from None
    except (KeyError, ValueError) as e:
        raise _fail(str(e.args[0]) if e.args else str(e)) from None
    except GuardRefused as e:
        if as_json:
            typer.echo(dumps_strict({"schema": "iga.plan-result/1", "ok": False, "model": source.identity.model_dump(),
                                   "findings": [f.model_dump(mode="json") for f in e.findings]}, indent=2))
        else:
            print_findings(e.findings)
            typer.echo("refused by the guard: nothing was generated", err=True)
        raise typer.Exit(3) from None
    try:  # an override that cannot be recorded is not accepted: nothing runs
        log = record_plan_overrides(plan, action=action)
    except AuditLogError as e:
        raise _fail(str(e)) from None
    return source, plan, log


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def print_findings(findings) -> None:
    """Print findings, most severe first, coloured by outcome."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    style = {"refused": "bold red", "overridden": "yellow", "warned": "yellow", "applied": "dim"}
    order = {"refused": 0, "overridden": 1, "warned": 1, "applied": 2}
    for f in sorted(findings, key=lambda f: order[f.outcome]):
        if f.outcome == "applied" and f.field not in ("recipe", "seed", "preset"):
            continue  # defaults are shown in the settings table
        tag = f"{f.outcome} ({f.severity})" if f.severity != "info" else "info"
        line = f"[{style[f.outcome]}]{tag}[/] {f.field}: {f.reason}"
        if f.suggestion:
            line += f"\n    -> {f.suggestion}"
        console.print(line, soft_wrap=True)


def print_plan(plan, log_path) -> None:
    """Print the effective settings of a plan as a table."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"plan for {plan.model.name} ({plan.model.architecture}, recipe: {plan.model.recipe_source})",
              show_header=False)
    t.add_column("setting", style="bold")
    t.add_column("value", overflow="fold")
    sig = ", ".join(f"{s:.4g}" for s in plan.sigmas)
    rows = [("preset", plan.preset or "-"), ("sampler", plan.sampler), ("schedule", plan.schedule),
            ("steps", str(plan.steps)), ("model calls (NFE)", str(plan.nfe)), ("cfg", f"{plan.cfg:g} "
            f"({plan.cfg_variant}{', rescale %g' % plan.cfg_rescale if plan.cfg_rescale else ''})"),
            ("size", f"{plan.width}x{plan.height}"), ("seeds", ", ".join(map(str, plan.seeds))),
            ("prediction", plan.prediction_type), ("clip skip", str(plan.clip_skip)),
            ("vae", _vae_text(plan)), ("sigmas", sig),
            ("mode", plan.mode)]
    if plan.sampler_options:
        rows.insert(3, ("sampler options", json.dumps(plan.sampler_options)))
    ts = plan.training_schedule or {}
    if ts.get("kind") == "flow":  # the flow trajectory: what ComfyUI's ModelSamplingSD3/Flux node would set
        rows.insert(-3, ("shift", f"{ts.get('shift', 1.0):.4g}"))
    if plan.guidance is not None:
        rows.insert(-3, ("distilled guidance", f"{plan.guidance:g}"))
    for o in plan.overrides:
        rows.append((f"override {o.field}", f"{o.recipe_value} -> {o.requested_value} ({o.reason or 'no reason'})"))
    if log_path:
        rows.append(("audit log", str(log_path)))
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)


def _vae_text(plan) -> str:
    if plan.model.architecture == "demo":
        return "none (pixel-space model)"
    if plan.vae is None or plan.vae.source == "checkpoint":
        return f"the checkpoint's own{' (' + plan.vae.id + ')' if plan.vae and plan.vae.id else ''}"
    return f"{plan.vae.id} ({plan.vae.path})"


def plan_cmd(
    prompt: Annotated[str, typer.Argument(help="prompt (optional for planning)")] = "",
    model: ModelOpt = None, preset: PresetOpt = None, sampler: SamplerOpt = None, schedule: ScheduleOpt = None,
    steps: StepsOpt = None, cfg: CfgOpt = None, seed: SeedOpt = None, size: SizeOpt = None, vae: VaeOpt = None,
    clip_skip: ClipSkipOpt = None, eta: EtaOpt = None, guidance: GuidanceOpt = None, shift: ShiftOpt = None,
    override: OverrideOpt = None, reason: ReasonOpt = None, mode: ModeOpt = "guarded", negative: NegativeOpt = "", batch: BatchOpt = 1, prediction_type: PredOpt = None,
    require_signed: RequireSignedOpt = False, trust: TrustOpt = None, rehash: RehashOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Resolve settings against the model's recipe and print the plan and every finding, without generating.

    Fields you leave out come from --preset, else the recipe. Deviations from the recipe are refused unless named
    with --override FIELD (then recorded, with --reason, in the plan and the audit log). Forbidden samplers or
    schedules and settings that cannot work are always refused.

    Exit codes: 0 plan accepted, 2 bad input (unknown names list the closest matches), 3 refused by the guard.

    Examples:
      iga plan --preset Fast
      iga plan --sampler "DPM++ 2M Karras" --steps 30 --override sampler --override steps --reason "A/B test"
    """
    request = build_request(prompt=prompt, preset=preset, sampler=sampler, schedule=schedule, steps=steps, cfg=cfg,
                            seed=seed, size=size, vae=vae, clip_skip=clip_skip, eta=eta,
                            prediction_type=prediction_type, negative=negative, batch=batch, override=override,
                            reason=reason, guidance=guidance, shift=shift)
    source, plan, log = resolve_for_cli(model, request, mode, as_json=as_json, action="plan",
                                        require_signed=require_signed, trust=trust, rehash=rehash)
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.plan-result/1", "ok": True, "plan": plan.to_dict(),
                               "audit_log": str(log) if log else None}, indent=2))
        return
    print_findings(plan.findings)
    print_plan(plan, log)


def register(app: typer.Typer) -> None:
    """Add `iga plan` to the CLI."""
    app.command("plan")(plan_cmd)
