"""`iga generate` (guarded generation with provenance in every image) and `iga replay` (regenerate from an image)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from iga.provenance.jsonutil import dumps_strict

from iga.commands.guard import (
    BatchOpt, CfgOpt, ClipSkipOpt, ConventionsOpt, EtaOpt, GuidanceOpt, JsonOpt, ModelOpt, ModeOpt, NegativeOpt, OverrideOpt, PredOpt,
    LoraOpt, PresetOpt, ReasonOpt, RehashOpt, RequireSignedOpt, SamplerOpt, ScheduleOpt, SeedOpt, ShiftOpt, SizeOpt,
    StepsOpt,
    TrustOpt,
    VaeOpt, build_request, stage_fields, RefinerOpt, RefinerSwitchOpt, refiner_fields,
    DenoiseOpt, DenoiseStepsOpt, HiresDenoiseOpt, HiresOpt, HiresStepsOpt, HiresUpscalerOpt, InitImageOpt,
    InpaintAreaOpt, InpaintPaddingOpt, MaskBlurOpt, MaskOpt,
    ControlEndOpt, ControlImageOpt, ControlNetOpt, ControlStartOpt, ControlStrengthOpt, control_requests,
    print_findings, resolve_for_cli,
)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output folder (created if missing)")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="png, jpg or webp (provenance in PNG text "
                                        "chunks or EXIF)")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or mps")]
DtypeOpt = Annotated[str, typer.Option(help="float32, float16 or bfloat16")]
PreviewOpt = Annotated[bool, typer.Option("--preview", help="also write the denoised estimate of every K-th step "
                                          "beside each image: <name>-preview.png (contact sheet) and .webp")]
PreviewEveryOpt = Annotated[int, typer.Option("--preview-every", metavar="K",
                                              help="preview every K-th step (and always the last)")]
PreviewDecoderOpt = Annotated[str, typer.Option("--preview-decoder", help="latents to RGB: auto, linear (published "
                                                "per-architecture factors), fit (fitted to the model's VAE) or vae")]
C2paOpt = Annotated[Optional[Path], typer.Option("--c2pa", metavar="CERT_AND_KEY", help="sign every image with a C2PA "
                                                 "manifest (generator, model, recipe and plan hashes): one PEM file "
                                                 "holding the certificate chain (signing certificate first) and its "
                                                 "unencrypted private key; needs pip install iga-diffusion[c2pa]")]


class _Progress:
    """A rich progress bar (step, sigma, it/s, ETA) on a terminal; silent when output is piped."""

    def __init__(self, total: int, enabled: bool):
        self.enabled, self.done = enabled, 0
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]sampling"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("sigma {task.fields[sigma]:.3g}"), TextColumn("{task.fields[rate]} it/s"),
                            TimeRemainingColumn(), transient=True)
        self.task = self.bar.add_task("sampling", total=total, sigma=0.0, rate="-")
        self.t0 = time.perf_counter()
        self.bar.start()

    def __call__(self, info) -> None:
        if self.enabled:  # counts steps over the whole batch (images are sampled one after another)
            self.done += 1
            rate = self.done / max(1e-9, time.perf_counter() - self.t0)
            self.bar.update(self.task, completed=self.done, sigma=info.sigma_next, rate=f"{rate:.2f}")

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


def _run(model_obj, plan, progress: bool, preview=None):
    from iga.generate import steps_run

    bar = _Progress(steps_run(plan) * len(plan.seeds), progress)

    def both(info) -> None:  # the bar first: a Ctrl-C raised there must not wait for a preview decode
        bar(info)
        preview(info)

    try:
        return model_obj.generate(plan=plan, callback=bar if preview is None else both)
    finally:
        bar.close()


def generate_cmd(
    prompt: Annotated[str, typer.Argument(help="what to draw, e.g. \"a red circle on a blue background\"")],
    model: ModelOpt = None, preset: PresetOpt = None, sampler: SamplerOpt = None, schedule: ScheduleOpt = None,
    steps: StepsOpt = None, cfg: CfgOpt = None, seed: SeedOpt = None, size: SizeOpt = None, vae: VaeOpt = None,
    clip_skip: ClipSkipOpt = None, eta: EtaOpt = None, guidance: GuidanceOpt = None, shift: ShiftOpt = None,
    lora: LoraOpt = None,
    override: OverrideOpt = None, reason: ReasonOpt = None, mode: ModeOpt = "guarded", negative: NegativeOpt = "",
    batch: BatchOpt = 1, prediction_type: PredOpt = None, conventions: ConventionsOpt = None,
    out: OutOpt = Path("outputs"), fmt: FormatOpt = "png", device: DeviceOpt = "cpu", dtype: DtypeOpt = "float32",
    require_signed: RequireSignedOpt = False, trust: TrustOpt = None, rehash: RehashOpt = False,
    as_json: JsonOpt = False, preview: PreviewOpt = False, preview_every: PreviewEveryOpt = 1,
    preview_decoder: PreviewDecoderOpt = "auto", c2pa: C2paOpt = None,
    init_image: InitImageOpt = None, denoise: DenoiseOpt = None, denoise_steps: DenoiseStepsOpt = None,
    mask: MaskOpt = None, mask_blur: MaskBlurOpt = None, inpaint_area: InpaintAreaOpt = None,
    inpaint_padding: InpaintPaddingOpt = None, hires: HiresOpt = None, hires_steps: HiresStepsOpt = None,
    hires_denoise: HiresDenoiseOpt = None, hires_upscaler: HiresUpscalerOpt = None,
    refiner: RefinerOpt = None, refiner_switch: RefinerSwitchOpt = None,
    controlnet: ControlNetOpt = None, control_image: ControlImageOpt = None,
    control_strength: ControlStrengthOpt = None, control_start: ControlStartOpt = None,
    control_end: ControlEndOpt = None,
) -> None:
    """Generate images with the model's native recipe; every image carries its full plan (and A1111 infotext).

    With no --model, the bundled demo model (32x32 shapes: circle, square, triangle, star, ring in red, green,
    blue, yellow, white ... on a coloured background) is used. Settings you leave out come from the recipe or
    --preset; deviations need --override FIELD. Ctrl-C stops cleanly and writes nothing partial.

    Exit codes: 0 ok, 2 bad input, 3 refused by the guard, 130 interrupted.

    Examples:
      iga generate "a red circle on a blue background"
      iga generate "a yellow star on a black background" --preset Fast -n 4 --seed 7
      iga generate "..." --model sd15.safetensors --sampler "DPM++ 2M Karras" --override sampler
      iga generate "a white ring on a red background" --preview --preview-every 2
      iga generate "a red star on a white background" --c2pa signer.pem   (C2PA Content Credentials)
      iga generate "a yellow star on a black background" --init-image photo.png --denoise 0.6
      iga generate "..." --init-image photo.png --mask mask.png --inpaint-area only_masked
      iga generate "a red circle on a blue background" --hires 2 --hires-steps 10
      iga generate "..." --model sd15.safetensors --lora style.safetensors:0.8
    """
    _check_output_options(fmt, preview_every, preview_decoder)
    credentials = _c2pa_credentials(c2pa) if c2pa is not None else None
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
    t0 = time.perf_counter()
    source, plan, log = resolve_for_cli(model, request, mode, as_json=as_json, action="generate",
                                        require_signed=require_signed, trust=trust, rehash=rehash)
    if not as_json:
        print_findings([f for f in plan.findings if f.outcome != "applied" or f.field in ("recipe", "seed")])
    from iga.generate import Model

    try:
        m = Model(source.path, device=device, dtype=dtype, source=source)
        t_load = time.perf_counter()
        backend = m.backend_for(plan)
        stream = None
        if preview:
            from iga.diagnostics.preview import PreviewStream
            from iga.generate import passes_per_image, steps_run

            stream = PreviewStream(backend, every=preview_every, decoder=preview_decoder, total=steps_run(plan),
                                   passes=passes_per_image(plan))
        t_sample = time.perf_counter()
        results = _run(m, plan, progress=sys.stderr.isatty() and not as_json, preview=stream)
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was written", err=True)
        raise typer.Exit(130) from None
    except Exception as e:  # a model that cannot load or sample: one clear line, not a traceback
        from iga.sampling.base import SamplingError

        if isinstance(e, (SamplingError, ValueError, RuntimeError, OSError)):
            raise _fail(str(e)) from None
        raise
    t_save = time.perf_counter()
    paths, previews = _save_all(results, out, fmt, stream, credentials)
    t_end = time.perf_counter()
    timing = {"resolve_s": round(t_load - t0, 3), "load_s": round(t_sample - t_load, 3),
              "sample_s": round(t_save - t_sample, 3), "save_s": round(t_end - t_save, 3)}
    _report(plan, results, paths, previews if preview else None, log, timing, as_json)


def _check_output_options(fmt: str, preview_every: int, preview_decoder: str) -> None:
    """Refuse output options that cannot work before anything is resolved or loaded (one line, exit 2)."""
    if fmt not in ("png", "jpg", "jpeg", "webp"):
        raise _fail(f"--format {fmt!r}: choose png, jpg or webp")
    if preview_every < 1:
        raise _fail(f"--preview-every {preview_every}: must be 1 or more")
    from iga.diagnostics.preview import DECODERS

    if preview_decoder not in DECODERS:
        raise _fail(f"--preview-decoder {preview_decoder!r}: choose {', '.join(DECODERS)}")


def _report(plan, results, paths, previews, log, timing: dict, as_json: bool) -> None:
    """The written files (and previews) with a summary line, or the iga.generate/1 JSON."""
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.generate/1", "images": [str(p) for p in paths],
                                 "plans": [r.plan.to_dict() for r in results], "nfe": results[0].nfe,
                                 "audit_log": str(log) if log else None, "timing": timing,
                                 **({"previews": [[str(a), str(b)] for a, b in previews]}
                                    if previews is not None else {})}, indent=2))
        return
    for k, p in enumerate(paths):
        typer.echo(str(p))
        for extra in previews[k] if previews else ():
            typer.echo(str(extra))
    typer.echo(f"{plan.sampler} + {plan.schedule}, {plan.steps} steps, {results[0].nfe} model calls, "
               f"cfg {plan.cfg:g}, seeds {', '.join(map(str, plan.seeds))}; sampled in {timing['sample_s']:.2f}s",
               err=True)


def _c2pa_credentials(path: Path):
    """The --c2pa signing credentials, checked before anything is generated (one line and exit 2 otherwise)."""
    from iga.provenance import ProvenanceError
    from iga.provenance import c2pa as c2pa_mod

    if not c2pa_mod.available():
        raise _fail(f"--c2pa: {c2pa_mod.INSTALL_HINT}")
    try:
        creds = c2pa_mod.load_credentials(path)
        c2pa_mod.check_credentials(creds)
    except ProvenanceError as e:
        raise _fail(f"--c2pa: {e}") from None
    return creds


def _save_all(results, out: Path, fmt: str, stream, credentials=None) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """Save every image (and its previews); Ctrl-C while saving lists what was written and exits 130."""
    from iga.provenance import save_image

    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    previews: list[tuple[Path, Path]] = []
    try:
        for k, r in enumerate(results):  # each file appears whole or not at all (a temp file, then a link/rename)
            paths.append(save_image(r.image, r.plan.to_dict(), out, fmt=fmt))
            if credentials is not None:  # signed in place: a temp file renamed over the image
                from iga.provenance import ProvenanceError
                from iga.provenance.c2pa import sign_image

                try:
                    sign_image(paths[-1], credentials, plan=r.plan.to_dict())
                except ProvenanceError as e:
                    raise _fail(f"{paths[-1]}: written but not C2PA-signed: {e}") from None
            if stream is not None:
                from iga.diagnostics.preview import save_previews

                previews.append(save_previews([f for f in stream.frames if f.image == k], paths[-1]))
    except KeyboardInterrupt:
        typer.echo(f"interrupted while saving: {len(paths)} of {len(results)} images written"
                   + "".join(f"\n  {p}" for p in paths), err=True)
        raise typer.Exit(130) from None
    return paths, previews


TrustPathOpt = Annotated[bool, typer.Option("--trust-path", help="open the model path the image records (it "
                                           "comes from the file: only for images you trust)")]


ForeignOutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="another tool's image: folder for the "
                                                      "regenerated image (default outputs/)")]
ForeignModeOpt = Annotated[Optional[str], typer.Option("--mode", help="another tool's image: strict, guarded "
                                                       "(default) or permissive, as in `iga generate`")]


def replay_cmd(
    image: Annotated[Path, typer.Argument(help="an image iga made, or one of A1111, Fooocus, SwarmUI or ComfyUI "
                                          "(PNG, JPEG or WebP)")],
    model: ModelOpt = None,
    force: Annotated[bool, typer.Option("--force", help="replay even if the model's weights differ")] = False,
    save: Annotated[Optional[Path], typer.Option("--save", help="also write the regenerated image here (never "
                                                 "over an existing file)")] = None,
    trust_path: TrustPathOpt = False,
    mode: ForeignModeOpt = None, override: OverrideOpt = None, reason: ReasonOpt = None, out: ForeignOutOpt = None,
    as_json: JsonOpt = False,
    inputs: Annotated[Optional[list[Path]], typer.Option("--input", help="an image the plan read (init image, "
                      "mask, control image) when it is no longer where it was made; found by its hash "
                      "(repeatable)")] = None,
) -> None:
    """Regenerate an image from the plan stored in it and report the pixel difference (max abs, PSNR).

    The stored plan is a request like any other: the guard resolves it with the same limits as `iga generate`
    (size, steps, sigma count) before anything runs. The model is found by the plan's weights hash among the
    bundled models and the models you have run with --model, or given with --model; the path the image records is
    opened only with --trust-path. It must have the same weights unless --force.
    Exit 0 when the pixels are identical, 1 when they differ, 2 on bad input (one line).

    An image of another tool (A1111, Fooocus, SwarmUI, ComfyUI) has no plan: name a model with --model and its
    settings (prompt, seed, steps, CFG, sampler, schedule, size, clip skip) are resolved by the guard like
    `iga generate` (--mode, --override FIELD, --reason), a new image is written to --out with its full plan, and
    every way it cannot match the original is listed (noise source, hires fix, LoRAs, styles, model hash ...).
    Exit 0 when regenerated, 2 on bad input, 3 when the guard refuses.
    """
    _offer_inputs(inputs or [])
    prov = _read_image(image)
    if not prov.plan:
        _replay_foreign(image, prov, model, mode=mode or "guarded", override=override, reason=reason,
                        out=out or Path("outputs"), as_json=as_json)
        return
    if mode is not None or override or reason is not None or out is not None:
        raise _fail(f"{image} was made by iga: it replays its stored plan exactly (--mode, --override, --reason "
                    "and --out are for images of other tools; use --save to keep the regenerated image)")
    _replay_own_plan(image, prov, model, force=force, save=save, trust_path=trust_path, as_json=as_json)


def _offer_inputs(paths: list[Path]) -> None:
    """Make the given input images findable by hash (a plan names its inputs by SHA-256, not by path)."""
    from iga.guard.images import InputImageError, open_input_image

    for p in paths:
        try:
            open_input_image(p, "input image")
        except InputImageError as e:
            raise _fail(str(e)) from None


def _replay_own_plan(image: Path, prov, model: Path | None, *, force: bool, save: Path | None, trust_path: bool,
                     as_json: bool) -> None:
    """Regenerate an iga image from its stored plan and compare pixels; exits 0 identical, 1 different."""
    from iga.generate import Model, pixel_difference

    plan = _stored_plan(image, prov)
    m = Model(_replay_model(plan, model, trust_path))
    if m.source.identity.weights_sha256 != plan.model.weights_sha256 and not force:
        raise _fail(f"{m.path} has weights {str(m.source.identity.weights_sha256)[:12]}..., the image was made with "
                    f"{str(plan.model.weights_sha256)[:12]}...: a different model (use --force to replay anyway)")
    _check_under_guard(plan, m)
    if save is not None and save.exists():
        raise _fail(f"--save {save}: the file exists; choose another name (replay never overwrites)")
    from iga.replay import recorded_threads

    try:
        with recorded_threads(plan):
            [result] = m.generate(plan=plan)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except (ValueError, RuntimeError, OSError) as e:  # a missing VAE, an unloadable model: one clear line
        raise _fail(f"cannot regenerate {image}: {e}") from None
    import numpy as np
    from PIL import Image

    from iga.generate import pixels_sha256

    with Image.open(image) as im:
        stored = np.asarray(im.convert("RGB"))
    lossy = image.suffix.lower() in (".jpg", ".jpeg", ".webp")
    diff = pixel_difference(result.pixels, stored)
    regenerated_sha = pixels_sha256(result.pixels)
    # a lossy file cannot hold the exact pixels; the plan's pixels_sha256 records them before encoding
    identical = (regenerated_sha == plan.pixels_sha256) if plan.pixels_sha256 else diff["max_abs"] == 0
    if save:
        _save_new(result, save)
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.replay/1", "identical": identical, "lossy_format": lossy,
                               "pixels_sha256_match": regenerated_sha == plan.pixels_sha256,
                               "file_max_abs": diff["max_abs"],
                               "file_psnr": None if diff["max_abs"] == 0 else diff["psnr"]}, indent=2))
    else:
        psnr = "inf" if diff["max_abs"] == 0 else f"{diff['psnr']:.2f} dB"
        typer.echo(f"against the file: max abs pixel difference {diff['max_abs']:.0f}/255, PSNR {psnr}"
                   + (" (lossy format)" if lossy else ""))
        if plan.pixels_sha256:
            typer.echo("pixels before encoding: " + ("identical (sha256 matches)" if identical else "differ"))
        typer.echo("identical" if identical else "differs")
    raise typer.Exit(0 if identical else 1)


def _save_new(result, save: Path) -> None:
    """Write the regenerated image (with its plan) to ``save``, whole, and never over an existing file."""
    import io
    import os

    from iga.provenance.save import encode_image, normalise_format

    try:
        fmt = normalise_format(save.suffix.lstrip(".") or "png")
    except ValueError as e:
        raise _fail(f"--save {save}: {e}") from None
    buf = io.BytesIO()
    encode_image(result.image, result.plan.to_dict(), fmt, buf)
    save.parent.mkdir(parents=True, exist_ok=True)
    tmp = save.with_name(f".{save.name}.{os.getpid()}.iga-tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, save)  # atomic, and fails instead of replacing a file that appeared meanwhile
    except FileExistsError:
        raise _fail(f"--save {save}: the file exists; choose another name (replay never overwrites)") from None
    finally:
        tmp.unlink(missing_ok=True)


def _read_image(image: Path):
    """The image's provenance (any read error is one line, exit 2)."""
    from iga.provenance import read_provenance

    try:
        return read_provenance(image)
    except Exception as e:  # ProvenanceError and OS errors: say what, never a traceback
        raise _fail(str(e)) from None


def _stored_plan(image: Path, prov):
    """The plan stored in an image, validated (any defect is one line, exit 2)."""
    from iga.guard import Plan

    try:
        return Plan.from_dict(prov.plan)
    except Exception as e:  # pydantic names the field
        raise _fail(f"{image}: the stored plan is not valid: {str(e).splitlines()[0]} "
                    f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else 'see iga show'})") from None


def _replay_foreign(image: Path, prov, model: Path | None, *, mode: str, override, reason, out: Path,
                    as_json: bool) -> None:
    """Regenerate another tool's image from its settings on the model the user names (see replay_cmd)."""
    from iga.provenance.replay_foreign import REPLAYABLE, foreign_caveats, foreign_request

    if prov.source not in REPLAYABLE:
        raise _fail(f"{image} has no iga plan and no generation settings (source: {prov.source}): nothing to replay")
    if model is None:
        raise _fail(f"{image} has no iga plan (source: {prov.source}); name a model with --model to regenerate "
                    "its settings")
    try:
        request, caveats = foreign_request(prov, overrides=override, reason=reason)
    except ValueError as e:  # pydantic: a value the request model rejects
        raise _fail(f"{image}: its settings do not make a request: {str(e).splitlines()[0]}") from None
    source, plan, log = resolve_for_cli(model, request, mode, as_json=as_json, action="replay")
    caveats += foreign_caveats(prov, source.identity, plan)
    path = _generate_one(source, plan, out)
    if as_json:
        typer.echo(dumps_strict({"schema": "iga.replay-foreign/1", "source": prov.source, "image": str(path),
                                 "plan": plan.to_dict(), "caveats": caveats}, indent=2))
        return
    print_findings([f for f in plan.findings if f.outcome != "applied" or f.field in ("recipe", "seed")])
    typer.echo(str(path))
    from iga.provenance.read import describe_source

    typer.echo(f"regenerated from the settings in its {describe_source(prov.source)}: {plan.sampler} + "
               f"{plan.schedule}, {plan.steps} steps, cfg {plan.cfg:g}, seed {plan.seed}"
               + (f"; overrides recorded in {log}" if log else ""))
    if caveats:
        typer.echo("cannot reproduce exactly:")
        for line in caveats:
            typer.echo(f"  - {line}")


def _generate_one(source, plan, out: Path) -> Path:
    """Generate the plan's image on ``source`` and save it with its plan; one line and exit 2 on failure."""
    from iga.generate import Model

    try:
        [result] = Model(source.path, source=source).generate(plan=plan)
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was written", err=True)
        raise typer.Exit(130) from None
    except (ValueError, RuntimeError, OSError) as e:  # a missing VAE, an unloadable model: one clear line
        raise _fail(f"cannot generate: {e}") from None
    paths, _ = _save_all([result], out, "png", None)
    return paths[0]


def _replay_model(plan, model: Path | None, trust_path: bool) -> str:
    from iga.store.used import ModelNotFound, locate_model

    try:
        return locate_model(plan.model.name, plan.model.weights_sha256, plan.model.path,
                            given=str(model) if model else None, trust_path=trust_path)
    except ModelNotFound as e:
        raise _fail(str(e)) from None


def _check_under_guard(plan, m) -> None:
    """Refuse a stored plan the guard would refuse as a request, or whose sigma list is not a runnable one."""
    from iga.replay import stored_plan_problem

    problem = stored_plan_problem(plan, m.source)
    if problem:
        raise _fail(problem)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add `iga generate` and `iga replay` to the CLI."""
    app.command("generate")(generate_cmd)
    app.command("replay")(replay_cmd)
