"""`iga plan`: resolve a request against a model's recipe and show the effective settings and every finding.

The request flags defined here are shared with `iga generate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from iga.provenance.jsonutil import dumps_strict



def model_named(value: Optional[Path]) -> Optional[Path]:
    """Typer callback: a model path as given, or a store id / bundled name (``iga-demo-latent-v1``) as its path."""
    from iga.store import ModelNotFound, StoreConfigError, model_path

    if value is None:
        return None
    try:
        return model_path(value)
    except (ModelNotFound, StoreConfigError) as e:
        raise typer.BadParameter(str(e)) from None


ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", callback=model_named,
                                                  help="checkpoint (.safetensors or diffusers folder) or a model id "
                                                  "(iga-demo-latent-v1, `iga models`); default: the bundled demo "
                                                  "model")]
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
LoraOpt = Annotated[Optional[list[str]], typer.Option("--lora", metavar="FILE[:WEIGHT]", help="apply a LoRA "
                    "(.safetensors; repeatable), weight 1.0 unless given: --lora style.safetensors:0.8")]
InitImageOpt = Annotated[Optional[Path], typer.Option("--init-image", help="img2img: start from this image (its "
                         "size is the default size)", rich_help_panel="img2img, inpainting and hires fix")]
DenoiseOpt = Annotated[Optional[float], typer.Option(help="img2img: how much to repaint, 0..1 (A1111's Denoising "
                       "strength; default 0.75)", rich_help_panel="img2img, inpainting and hires fix")]
DenoiseStepsOpt = Annotated[Optional[str], typer.Option("--denoise-steps", help="how steps and denoise pick the "
                            "sigmas: diffusers (default: the last int(steps*denoise) of a steps grid), a1111 (one "
                            "more), comfyui (exactly steps, from a steps/denoise grid)",
                            rich_help_panel="img2img, inpainting and hires fix")]
MaskOpt = Annotated[Optional[Path], typer.Option(help="inpaint: white (or transparent) = repaint; the init image's "
                    "size", rich_help_panel="img2img, inpainting and hires fix")]
MaskBlurOpt = Annotated[Optional[int], typer.Option("--mask-blur", help="inpaint: blur the mask edge by this many "
                        "pixels (default 4)", rich_help_panel="img2img, inpainting and hires fix")]
InpaintAreaOpt = Annotated[Optional[str], typer.Option("--inpaint-area", help="inpaint: whole (default) or "
                           "only_masked (render the padded masked region at full size, paste it back)",
                           rich_help_panel="img2img, inpainting and hires fix")]
InpaintPaddingOpt = Annotated[Optional[int], typer.Option("--inpaint-padding", help="inpaint only_masked: pixels "
                              "of context around the mask (default 32)",
                              rich_help_panel="img2img, inpainting and hires fix")]
HiresOpt = Annotated[Optional[float], typer.Option(metavar="SCALE", help="hires fix: render, upscale by SCALE, "
                     "repaint at the larger size", rich_help_panel="img2img, inpainting and hires fix")]
HiresStepsOpt = Annotated[Optional[int], typer.Option("--hires-steps", help="hires fix: second-pass steps (default: "
                          "the first pass's)", rich_help_panel="img2img, inpainting and hires fix")]
HiresDenoiseOpt = Annotated[Optional[float], typer.Option("--hires-denoise", help="hires fix: second-pass denoise "
                            "(default 0.7)", rich_help_panel="img2img, inpainting and hires fix")]
HiresUpscalerOpt = Annotated[Optional[str], typer.Option("--hires-upscaler", help="hires fix: latent (default), "
                             "latent-bicubic, latent-nearest, lanczos, nearest, bicubic",
                             rich_help_panel="img2img, inpainting and hires fix")]
_CN = "ControlNet"
ControlNetOpt = Annotated[Optional[list[Path]], typer.Option("--controlnet", metavar="FILE", help="a ControlNet "
                          "(diffusers folder, or .safetensors with its config.json beside it; repeatable, one "
                          "--control-image each)", rich_help_panel=_CN)]
ControlImageOpt = Annotated[Optional[list[Path]], typer.Option("--control-image", metavar="IMG", help="its "
                            "conditioning image, already preprocessed (edges, depth, pose...)", rich_help_panel=_CN)]
ControlStrengthOpt = Annotated[Optional[list[float]], typer.Option("--control-strength", metavar="S", help="its "
                               "strength (default: the recipe's for it, else 1.0)", rich_help_panel=_CN)]
ControlStartOpt = Annotated[Optional[list[float]], typer.Option("--control-start", metavar="F", help="fraction of the steps "
                            "where it starts acting (default 0)", rich_help_panel=_CN)]
ControlEndOpt = Annotated[Optional[list[float]], typer.Option("--control-end", metavar="F", help="fraction of the steps where "
                          "it stops (default 1)", rich_help_panel=_CN)]
OverrideOpt = Annotated[Optional[list[str]], typer.Option("--override", help="accept a deviation from the recipe "
                        "for this field (repeatable): sampler, schedule, steps, cfg, vae, clip_skip, size, guidance, "
                        "shift, lora, control, hires, refiner")]
RefinerOpt = Annotated[Optional[str], typer.Option(metavar="MODEL", help="SDXL refiner (a file, diffusers folder or "
                       "store id) that finishes the image; 'none': without the recipe's refiner",
                       rich_help_panel="SDXL refiner")]
RefinerSwitchOpt = Annotated[Optional[float], typer.Option("--refiner-switch", metavar="F", help="fraction of the "
                             "steps the base model runs before the refiner takes over (default: the recipe's, else "
                             "0.8; diffusers' denoising_end rule)", rich_help_panel="SDXL refiner")]
ReasonOpt = Annotated[Optional[str], typer.Option(help="why you override (kept in the plan and the audit log)")]
ModeOpt = Annotated[str, typer.Option(help="strict: no deviations; guarded: deviations only as --override; "
                                      "permissive: deviations warned and logged")]
NegativeOpt = Annotated[str, typer.Option("--negative", help="negative prompt")]
BatchOpt = Annotated[int, typer.Option("--n", "--batch", "-n", help="images to make (one seed each)")]
PredOpt = Annotated[Optional[str], typer.Option("--prediction-type", hidden=True,
                                                help="advanced: treat the model as eps/v/x0/flow")]
ConventionsOpt = Annotated[Optional[str], typer.Option("--conventions", help="advanced: follow another tool's "
                           "sampling conventions to reproduce its images: k-diffusion (A1111, diffusers Euler; "
                           "default) or comfyui (timesteps rounded to a training step, first noise x "
                           "sqrt(1 + sigma^2) at full denoise)")]
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
                  guidance: float | None = None, shift: float | None = None, lora: list[str] | None = None,
                  stages: dict | None = None, controls: list | None = None, conventions: str | None = None):
    """Turn CLI flag values into a guard Request (``stages``: the img2img/inpaint/hires fields, see
    ``stage_fields``; ``controls``: ControlRequests, see ``control_requests``)."""
    from iga.guard import Request

    if conventions is not None and conventions not in ("k-diffusion", "comfyui"):
        raise _fail(f"--conventions {conventions!r}: choose k-diffusion or comfyui")
    return Request(
        **(stages or {}), controls=list(controls or []), conventions=conventions,
        loras=[parse_lora_option(text) for text in lora or ()],
        preset=preset, sampler=sampler, schedule=schedule, steps=steps, cfg=cfg, seed=seed, size=size, vae=vae,
        clip_skip=clip_skip, eta=eta, prediction_type=prediction_type, prompt=prompt or "", guidance=guidance,
        shift=shift,
        negative_prompt=negative or "", batch=batch or 1, overrides=list(override or []), reason=reason,
    )


def parse_lora_option(text: str):
    """``FILE[:WEIGHT]`` -> LoraRequest. Split at the last colon only when a number follows, so a Windows path
    (``C:\\loras\\x.safetensors``) or a file name with a colon keeps its colons."""
    from iga.guard.plan import LoraRequest

    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return LoraRequest(path=path, weight=float(tail))
        except ValueError:
            pass
    return LoraRequest(path=text)


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
        from iga.store.used import remember

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
    rows[-3:-3] = _stage_rows(plan)
    for u in plan.loras:
        narrowed = f"; {'; '.join(u.narrowed)}" if u.narrowed else ""
        rows.append((f"lora {u.name}", f"weight {u.weight:g} ({u.format}, {u.architecture or '?'}/"
                     f"{u.prediction_type or '?'}, hash {(u.addnet_sha256 or '')[:12]}){narrowed}"))
    for c in plan.controls:
        rows.append((f"controlnet {c.name}", f"strength {c.strength:g}, steps {c.start:g}..{c.end:g} of the pass, "
                     f"image {c.image.width}x{c.image.height} ({c.image.sha256[:12]}), hash {c.file_sha256[:10]}"))
    if plan.refiner is not None:
        ref = plan.refiner
        rows.append(("refiner", f"{ref.model.name} ({ref.model.architecture}, weights "
                     f"{(ref.model.weights_sha256 or '?')[:12]}): the last {len(plan.sigmas) - 1 - ref.switch_index} of "
                     f"{len(plan.sigmas) - 1} steps (switch at {ref.switch:g}; aesthetic score {ref.aesthetic_score:g}/"
                     f"{ref.negative_aesthetic_score:g})"))
    for o in plan.overrides:
        rows.append((f"override {o.field}", f"{o.recipe_value} -> {o.requested_value} ({o.reason or 'no reason'})"))
    if log_path:
        rows.append(("audit log", str(log_path)))
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)


def _stage_rows(plan) -> list[tuple[str, str]]:
    """The img2img/inpaint and hires-fix passes as plan rows."""
    rows = []
    img = plan.img2img
    if img is not None:
        rows.append(("img2img", f"init {img.init_image.width}x{img.init_image.height} "
                     f"(sha256 {img.init_image.sha256[:12]}), denoise {img.denoise:g}: {len(plan.sigmas) - 1} of "
                     f"{img.grid_steps} steps ({img.denoise_steps} convention)"))
        if img.mask is not None:
            area = f"only masked, padding {img.inpaint_padding}" if img.inpaint_area == "only_masked" else "whole"
            how = "inpainting UNet" if img.inpaint_method == "model" else "masked sampling"
            rows.append(("inpaint", f"mask sha256 {img.mask.sha256[:12]}, blur {img.mask_blur}, {area}, {how}"))
    h = plan.hires
    if h is not None:
        rows.append(("hires fix", f"x{h.scale:g} to {h.width}x{h.height} ({h.upscaler}), {len(h.sigmas) - 1} steps "
                     f"of a {h.grid_steps}-step grid at denoise {h.denoise:g}, {h.nfe} model calls"))
        rows.append(("hires sigmas", ", ".join(f"{s:.4g}" for s in h.sigmas)))
    return rows


def _vae_text(plan) -> str:
    if plan.model.architecture == "demo":
        return "none (pixel-space model)"
    if plan.vae is None or plan.vae.source == "checkpoint":
        return f"the checkpoint's own{' (' + plan.vae.id + ')' if plan.vae and plan.vae.id else ''}"
    return f"{plan.vae.id} ({plan.vae.path or 'file ' + str(plan.vae.autov2)})"


def control_requests(controlnet: list[Path] | None, image: list[Path] | None, strength: list[float] | None,
                     start: list[float] | None, end: list[float] | None) -> list:
    """The ControlNet flags as ControlRequests: the k-th --controlnet takes the k-th --control-image (and the k-th
    strength, start and end when given; one value given applies to every adapter)."""
    from iga.guard.plan import ControlRequest

    nets, images = list(controlnet or []), list(image or [])
    if len(images) != len(nets):
        raise _fail(f"{len(nets)} --controlnet but {len(images)} --control-image: give one conditioning image per "
                    "ControlNet, in the same order")
    out = []
    for k, (net, img) in enumerate(zip(nets, images)):
        picked = {}
        for flag, values in (("strength", strength), ("start", start), ("end", end)):
            values = list(values or [])
            if len(values) not in (0, 1, len(nets)):
                raise _fail(f"{len(values)} --control-{flag} for {len(nets)} --controlnet: give one, or one per "
                            "ControlNet")
            if values:
                picked[flag] = values[k if len(values) > 1 else 0]
        out.append(ControlRequest(path=str(net), image=str(img), **picked))
    if not nets and any((strength, start, end)):
        raise _fail("--control-strength/--control-start/--control-end need a --controlnet")
    return out


def refiner_fields(refiner: str | None, refiner_switch: float | None) -> dict:
    """The SDXL refiner flags as Request fields (``iga plan`` and ``iga generate`` share them)."""
    return {"refiner": refiner, "refiner_switch": refiner_switch}


def stage_fields(init_image: Path | None, denoise: float | None, denoise_steps: str | None, mask: Path | None,
                 mask_blur: int | None, inpaint_area: str | None, inpaint_padding: int | None, hires: float | None,
                 hires_steps: int | None, hires_denoise: float | None, hires_upscaler: str | None) -> dict:
    """The img2img, inpainting and hires-fix flags as Request fields (``iga plan`` and ``iga generate`` share them)."""
    for flag, value, choices in (("--denoise-steps", denoise_steps, ("diffusers", "a1111", "comfyui")),
                                 ("--inpaint-area", inpaint_area, ("whole", "only_masked"))):
        if value is not None and value not in choices:
            raise _fail(f"{flag} {value!r}: choose {' or '.join(choices)}")
    return {"init_image": str(init_image) if init_image else None, "denoise": denoise, "denoise_steps": denoise_steps,
            "mask": str(mask) if mask else None, "mask_blur": mask_blur, "inpaint_area": inpaint_area,
            "inpaint_padding": inpaint_padding, "hires": hires, "hires_steps": hires_steps,
            "hires_denoise": hires_denoise, "hires_upscaler": hires_upscaler}


def plan_cmd(
    prompt: Annotated[str, typer.Argument(help="prompt (optional for planning)")] = "",
    model: ModelOpt = None, preset: PresetOpt = None, sampler: SamplerOpt = None, schedule: ScheduleOpt = None,
    steps: StepsOpt = None, cfg: CfgOpt = None, seed: SeedOpt = None, size: SizeOpt = None, vae: VaeOpt = None,
    clip_skip: ClipSkipOpt = None, eta: EtaOpt = None, guidance: GuidanceOpt = None, shift: ShiftOpt = None,
    lora: LoraOpt = None,
    override: OverrideOpt = None, reason: ReasonOpt = None, mode: ModeOpt = "guarded", negative: NegativeOpt = "",
    batch: BatchOpt = 1, prediction_type: PredOpt = None, conventions: ConventionsOpt = None,
    require_signed: RequireSignedOpt = False, trust: TrustOpt = None, rehash: RehashOpt = False,
    as_json: JsonOpt = False,
    init_image: InitImageOpt = None, denoise: DenoiseOpt = None, denoise_steps: DenoiseStepsOpt = None,
    mask: MaskOpt = None, mask_blur: MaskBlurOpt = None, inpaint_area: InpaintAreaOpt = None,
    inpaint_padding: InpaintPaddingOpt = None, hires: HiresOpt = None, hires_steps: HiresStepsOpt = None,
    hires_denoise: HiresDenoiseOpt = None, hires_upscaler: HiresUpscalerOpt = None,
    refiner: RefinerOpt = None, refiner_switch: RefinerSwitchOpt = None,
    controlnet: ControlNetOpt = None, control_image: ControlImageOpt = None,
    control_strength: ControlStrengthOpt = None, control_start: ControlStartOpt = None,
    control_end: ControlEndOpt = None,
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
                            prediction_type=prediction_type, conventions=conventions, negative=negative,
                            batch=batch, override=override,
                            reason=reason, guidance=guidance, shift=shift, lora=lora,
                            stages=stage_fields(init_image, denoise, denoise_steps, mask, mask_blur, inpaint_area,
                                                inpaint_padding, hires, hires_steps, hires_denoise, hires_upscaler)
                            | refiner_fields(refiner, refiner_switch),
                            controls=control_requests(controlnet, control_image, control_strength, control_start,
                                                      control_end))
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
