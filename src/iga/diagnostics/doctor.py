"""`iga doctor`: the troubleshooting routine as one command, ending in a ranked table of causes with evidence.

The routine is the one experienced users follow by hand, each step a measurement:
1. re-run the user's settings (permissive: deviations are what we examine) and the recipe's own settings for
   the same prompt and seed (the baseline every image is compared with);
2. for every setting where the user left the recipe, re-run with only that setting put back (one factor at a
   time, as in the evaluation protocol); a setting whose return removes the symptom is a cause, ranked by how
   much it helps;
3. instruments: x0 previews and the first non-finite component and step, the prediction-type probe (the plan
   run as eps and as v), the VAE round trip, half against full precision;
4. CFG, steps and sampler sweeps around the user's setting (grids for the report).
Steps 1-2 and 4 run on the one sweep runner; step 3 needs the model's insides (``probes``).

How bad an image is, in one number (``badness``): each failure a detector finds counts its weight (FAILURE_WEIGHT:
non-finite and errors most, then black/constant, then burnt/noisy), plus 4 x (1 - SSIM to the recipe's image),
plus 3 x (1 - the demo judge's adherence) on the demo model. A change that lowers it by at least MIN_IMPROVEMENT
(one detector failure's worth, or SSIM up by 0.25) is a cause.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from iga.evaluation.runner import Backend, Point, load_pixels, resolve_point, run_points
from iga.evaluation.worker import WorkerConfig, measure_image
from iga.guard import Plan, Request
from iga.guard.source import ModelSource, describe_model

from . import probes
from .case import Case

FAILURE_WEIGHT = {"non_finite": 10.0, "exception": 10.0, "black": 6.0, "constant": 6.0, "burnt": 4.0,
                  "residual_noise": 4.0, "judge_unreadable": 2.0}
SSIM_WEIGHT, ADHERENCE_WEIGHT = 4.0, 3.0
MIN_IMPROVEMENT = 1.0
SYMPTOM_SSIM = 0.5  # an image this far from the recipe's, with nothing else wrong, is still worth explaining
REFUSED_SCORE = 100.0  # what the model's facts refuse outright ranks above any measured cause
RECIPE_SAYS = 2.0  # a measured cause the recipe also warns about or forbids ranks above an equal one it does not
# The settings the doctor puts back one at a time: (request field, plan fields that show the deviation).
FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prediction_type", ("prediction_type",)), ("sampler", ("sampler",)), ("schedule", ("schedule",)),
    ("steps", ("steps",)), ("cfg", ("cfg",)), ("cfg_variant", ("cfg_variant",)), ("cfg_rescale", ("cfg_rescale",)),
    ("eta", ("eta",)), ("vae", ("vae",)), ("clip_skip", ("clip_skip",)),
)  # not the size: the baseline keeps the user's size, so images compare pixel for pixel


@dataclass
class Cause:
    """One row of the doctor's table."""

    symptom: str
    cause: str
    evidence: str
    fix: str
    score: float
    field: str = ""


@dataclass
class Check:
    """One measurement the routine made, whether or not it found anything."""

    name: str
    result: str
    image: str = ""  # relative to the doctor's folder


@dataclass
class Diagnosis:
    """What the doctor found: the symptom, ranked causes, every check, and the files of the report."""

    case: Case
    run_dir: Path
    symptom: str
    causes: list[Cause] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    grids: list[Path] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # label -> image path relative to run_dir

    @property
    def found(self) -> bool:
        """True when something is wrong (exit 1)."""
        return bool(self.causes) or bool(self.symptom)


def badness(m: dict[str, Any]) -> float:
    """How bad an image is (module doc): failure weights + SSIM distance to the recipe image + adherence gap."""
    b = sum(FAILURE_WEIGHT.get(f, 2.0) for f in str(m.get("failures") or "").split(";") if f)
    if m.get("ssim") is not None and m["ssim"] == m["ssim"]:
        b += SSIM_WEIGHT * (1.0 - float(m["ssim"]))
    if m.get("adherence_all") is not None and m["adherence_all"] == m["adherence_all"]:
        b += ADHERENCE_WEIGHT * (1.0 - float(m["adherence_all"]))
    return b


def _explain(m: dict[str, Any]) -> str:
    """'burnt, SSIM 0.41, adherence 0' — the figures behind a badness."""
    parts = [f.replace("_", " ") for f in str(m.get("failures") or "").split(";") if f]
    if m.get("ssim") is not None and m["ssim"] == m["ssim"]:
        parts.append(f"SSIM to the recipe image {m['ssim']:.2f}")
    if m.get("adherence_all") is not None and m["adherence_all"] == m["adherence_all"]:
        parts.append(f"prompt adherence {m['adherence_all']:.0%}")
    if m.get("clipped") is not None and "burnt" in str(m.get("failures")):
        parts.append(f"{m['clipped']:.0%} of pixels clipped")
    return ", ".join(parts) or "clean"


# ------------------------------------------------------------------ the user's plan, through the guard


def guard_opinion(case: Case, source: ModelSource, recipe: Any) -> dict[str, str]:
    """What the recipe says about each of the user's settings: field -> the guard's reason (refused or warned)."""
    from iga.guard import GuardRefused

    try:
        plan, _ = source.resolve(case.request, "permissive", recipe=recipe)
        findings = plan.findings
    except GuardRefused as e:
        findings = e.findings
    return {f.field: f.reason.removesuffix("; accepted (permissive mode)") for f in findings
            if f.outcome in ("refused", "warned")}


def user_request(case: Case, source: ModelSource, knobs: Any) -> tuple[Request, list[Cause]]:
    """The user's settings as a UI without a guard runs them (against the model's facts only, ``knobs``), minus
    what even the facts refuse (a prediction type the weights do not have, clip skip 0): each such is a Cause."""
    from iga.guard import GuardRefused

    req = case.request
    causes: list[Cause] = []
    for _ in range(len(FIELDS) + 1):
        try:
            source.resolve(req, "permissive", recipe=knobs)
            return req, causes
        except GuardRefused as e:
            refused = [f for f in e.findings if f.outcome == "refused"]
            droppable = [f for f in refused if f.field in Request.model_fields and getattr(req, f.field) is not None]
            for f in refused:
                causes.append(Cause("the settings cannot run on this model", f"{f.field} {f.requested_value} "
                                    f"(the model: {f.recipe_value})", f"the guard: {f.reason}",
                                    f.suggestion or f"use the model's {f.field}", REFUSED_SCORE, f.field))
            if not droppable or len(droppable) < len(refused):
                raise ValueError("; ".join(f"{f.field}: {f.reason}" for f in refused)) from None
            req = req.model_copy(update={f.field: None for f in droppable})
    raise ValueError("the user's settings cannot be resolved")


def deviations(user: Plan, baseline: Plan) -> list[str]:
    """The request fields where the user's plan differs from the recipe's."""
    out = []
    for name, plan_fields in FIELDS:
        if any(_plan_value(user, f) != _plan_value(baseline, f) for f in plan_fields):
            out.append(name)
    return out


def _plan_value(plan: Plan, name: str) -> Any:
    v = getattr(plan, name)
    return (v.path or v.id) if name == "vae" and v is not None else v


def doctor_points(case: Case, setup: "Setup") -> list[Point]:
    """The recipe baseline (the runner's reference), the user's settings as a UI runs them, and one point per
    setting put back to the recipe's."""
    req, prompt, seed = setup.req, setup.req.prompt, case.seed
    base_req = Request(prompt=prompt, negative_prompt=req.negative_prompt, seed=seed, size=req.size)
    points = [Point("reference", prompt, seed, base_req, "permissive", axis="doctor", value="recipe"),
              Point("point", prompt, seed, req, "permissive", axis="doctor", value="user", recipe=setup.knobs)]
    for name in deviations(setup.user_plan, setup.baseline):
        back = req.model_copy(update={name: None, "sigmas": None} if name == "schedule" else {name: None})
        points.append(Point("point", prompt, seed, back, "permissive", axis="doctor", value=f"revert {name}",
                            recipe=setup.knobs))
    return points


# ------------------------------------------------------------------ the routine


def _recipe_value(baseline: Plan, name: str) -> Any:
    if name == "vae":
        return _plan_value(baseline, "vae") or "the checkpoint's own"
    return getattr(baseline, name)


def fix_command(case: Case, req: Request, baseline: Plan, name: str, keep: list[str]) -> str:
    """`iga generate` with the user's settings except ``name``, which goes back to the recipe's value."""
    import shlex

    parts = ["iga generate", shlex.quote(req.prompt), "--model", shlex.quote(case.model_path), "--seed",
             str(case.seed)]
    flags = {"sampler": "--sampler", "schedule": "--schedule", "steps": "--steps", "cfg": "--cfg", "eta": "--eta",
             "vae": "--vae", "clip_skip": "--clip-skip"}
    overrides = []
    for other in keep:
        value = getattr(req, other)
        if other == name or other not in flags or value is None:
            continue
        parts += [flags[other], shlex.quote(format(value, "g") if isinstance(value, float) else str(value))]
        overrides.append(other)
    if req.size and req.size != f"{baseline.width}x{baseline.height}":
        parts += ["--size", req.size]
    parts += [f"--override {o}" for o in overrides if o in ("sampler", "schedule", "steps", "cfg", "vae",
                                                             "clip_skip")]
    value = _recipe_value(baseline, name)
    if name in flags and name != "vae" and value is not None:  # no --vae: the checkpoint's own (or recipe's)
        parts += [flags[name], shlex.quote(format(value, "g") if isinstance(value, float) else str(value))]
    return " ".join(parts)


def _row_of(rows: list[dict[str, Any]], value: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["value"] == value), None)


def revert_causes(case: Case, setup: Setup, rows: list[dict[str, Any]], symptom: str) -> list[Cause]:
    """A cause for every setting whose return to the recipe lowers the badness by MIN_IMPROVEMENT or more;
    the recipe's own verdict on the setting (forbidden, out of range) adds RECIPE_SAYS to its score."""
    user = _row_of(rows, "user")
    if user is None or user["refused"]:
        return []
    before = badness(user)
    changed = deviations(setup.user_plan, setup.baseline)
    causes = []
    for name in changed:
        row = _row_of(rows, f"revert {name}")
        if row is None or row["refused"]:
            continue
        gain = before - badness(row)
        if gain < MIN_IMPROVEMENT:
            continue
        was, back = _plan_value(setup.user_plan, name), _recipe_value(setup.baseline, name)
        evidence = f"{name} {was} -> {back} (the recipe's): {_explain(user)} -> {_explain(row)}"
        if user.get("error"):
            evidence += f"; your settings fail: {user['error']}"
        said = setup.opinion.get(name)
        if said:
            evidence += f"; the recipe: {said}"
        causes.append(Cause(symptom or f"differs from the recipe's image ({_explain(user)})",
                            _cause_text(name, was, back), evidence,
                            fix_command(case, setup.req, setup.baseline, name, changed),
                            gain + (RECIPE_SAYS if said else 0.0), name))
    return causes


def revert_checks(setup: Setup, rows: list[dict[str, Any]]) -> list[Check]:
    """Every setting put back and what it changed, causes or not (a small effect is still worth seeing)."""
    user = _row_of(rows, "user")
    if user is None or user["refused"]:
        return []
    checks = []
    for name in deviations(setup.user_plan, setup.baseline):
        row = _row_of(rows, f"revert {name}")
        if row is None:
            continue
        was, back = _plan_value(setup.user_plan, name), _recipe_value(setup.baseline, name)
        result = (f"refused: {row['refused']}" if row["refused"] else
                  f"{_explain(user)} -> {_explain(row)} (badness {badness(user):.2f} -> {badness(row):.2f}; a cause "
                  f"needs a drop of {MIN_IMPROVEMENT:g})")
        checks.append(Check(f"{name} {was} -> {back}", result, row.get("image") or ""))
    return checks


def _cause_text(name: str, was: Any, back: Any) -> str:
    what = {"cfg": "CFG scale", "steps": "step count", "sampler": "sampler", "schedule": "schedule",
            "vae": "VAE", "clip_skip": "clip skip", "prediction_type": "prediction type", "eta": "eta",
            "cfg_rescale": "CFG rescale", "cfg_variant": "CFG variant"}[name]
    return f"{what} {was} (the recipe: {back})"


def symptom_of(user: dict[str, Any] | None, image_metrics: dict[str, Any] | None) -> str:
    """What is wrong with the user's image in words ("" when nothing measurable is)."""
    if user is None:
        return ""
    if user["refused"]:
        return "the settings cannot run"
    found = [f for f in str(user.get("failures") or "").split(";") if f]
    if image_metrics:
        found += [f for f in str(image_metrics.get("failures") or "").split(";") if f and f not in found]
    if "non_finite" in found:
        return "NaN/Inf while sampling (no image)"
    if "exception" in found:
        return "the settings fail to run"
    if found:
        return ", ".join(f.replace("_", " ") for f in found) + " image"
    if user.get("ssim") is not None and user["ssim"] == user["ssim"] and user["ssim"] < SYMPTOM_SSIM:
        return f"far from the recipe's image (SSIM {user['ssim']:.2f})"
    if user.get("adherence_all") is not None and user["adherence_all"] == user["adherence_all"] \
            and user["adherence_all"] < 1.0:
        return "the image does not show the prompt"
    return ""


@dataclass
class Setup:
    """Everything resolved before anything renders."""

    source: ModelSource
    knobs: Any  # the model's facts without its choices: what a UI without a guard resolves against
    req: Request
    user_plan: Plan
    baseline: Plan
    guard_causes: list[Cause]
    opinion: dict[str, str]  # what the recipe says about the user's settings, per field


def prepare(case: Case) -> Setup:
    """Describe the model, resolve the user's settings as a UI would and the recipe's own for the same image."""
    from iga.evaluation.axes import knob_recipe
    from iga.evaluation.experiment import effective_recipe

    source = describe_model(case.model_path)
    recipe = effective_recipe(source)
    knobs = knob_recipe(recipe)
    req, guard_causes = user_request(case, source, knobs)
    user_plan = resolve_point(Point("point", req.prompt, case.seed, req, "permissive", recipe=knobs), source).plan
    base = Request(prompt=req.prompt, negative_prompt=req.negative_prompt, seed=case.seed, size=req.size)
    baseline = resolve_point(Point("reference", req.prompt, case.seed, base, "permissive"), source).plan
    if user_plan is None or baseline is None:
        raise ValueError("the guard refuses the recipe's own settings at this size; pass an image made at a size "
                         "the recipe allows")
    return Setup(source, knobs, req, user_plan, baseline, guard_causes, guard_opinion(case, source, source.recipe))


def run_doctor(case: Case, run_dir: Path, *, model: Any = None, sweeps: bool = True, half: bool | None = None,
               progress: Callable[[int, int], None] | None = None) -> Diagnosis:
    """The whole routine (module doc) into run_dir: images, grids, diagnosis.json and report.html.

    ``model``: an already loaded ``iga.generate.Model`` to probe (tests inject faults through it); ``half``:
    compare half precision with float32 (default: when the user's image was computed in half precision).
    """
    from iga.generate import Model

    from .doctor_report import write_report

    setup = prepare(case)
    judge = _judge_path(setup.source)
    config = WorkerConfig(setup.source.path, judge_path=judge)
    model = model or Model(setup.source.path)
    model.source = setup.source
    rows = run_points(doctor_points(case, setup), setup.source, config, run_dir, action="doctor",
                      progress=progress, backend=Backend(model=model))
    diag = Diagnosis(case, run_dir, "")
    diag.images = {r["value"]: r["image"] for r in rows if r.get("image")}
    judge_net = _load_judge(judge)  # once, for every probe (the runner's worker has its own)
    image_m = _user_image_metrics(case, run_dir, rows, judge_net)
    diag.symptom = symptom_of(_row_of(rows, "user"), image_m)
    diag.causes = list(setup.guard_causes)
    diag.causes += revert_causes(case, setup, rows, diag.symptom)
    diag.checks += revert_checks(setup, rows)
    tr = probes.trace(model, setup.user_plan)
    diag.checks += _trace_checks(tr, run_dir)
    diag.causes += _non_finite_causes(tr, rows, diag, case, setup)
    diag.causes += _prediction_probe(model, case, setup, rows, run_dir, diag, judge_net)
    diag.checks += _vae_checks(model, setup, rows, run_dir)
    if half if half is not None else case.dtype in ("float16", "bfloat16"):
        diag.causes += _precision_probe(setup, rows, run_dir, diag, judge_net)
    if sweeps:
        diag.grids = _sweeps(setup, run_dir, model)
    diag.causes.sort(key=lambda c: -c.score)
    if diag.causes and not diag.symptom:
        diag.symptom = diag.causes[0].symptom
    write_report(diag)
    return diag


def _judge_path(source: ModelSource) -> str | None:
    from iga.paths import DEMO_JUDGE

    from iga.demo.model import draws_shapes

    return str(DEMO_JUDGE) if draws_shapes(source) and Path(DEMO_JUDGE).is_file() else None


def _load_judge(judge: str | None) -> Any:
    if not judge:
        return None
    from iga.demo.judge import load_judge

    return load_judge(judge)


def _user_image_metrics(case: Case, run_dir: Path, rows: list[dict], judge: Any) -> dict[str, Any] | None:
    """The user's own file measured like every render (against the recipe image), when an image was given."""
    if case.image is None:
        return None
    from PIL import Image

    with Image.open(case.image) as im:
        px = np.asarray(im.convert("RGB"))
    ref = _row_of(rows, "recipe")
    ref_px = load_pixels(run_dir, ref["image"]) if ref and ref.get("image") else None
    return measure_image(px, case.request.prompt, ref_px, None, judge=judge)


def _trace_checks(tr: Any, run_dir: Path) -> list[Check]:
    from .preview import contact_sheet

    checks = []
    if tr.frames:
        from iga.checkpoint import write_bytes_atomic

        import io

        buf = io.BytesIO()
        contact_sheet(tr.frames).save(buf, "PNG")
        write_bytes_atomic(run_dir / "previews.png", buf.getvalue())
        checks.append(Check("x0 previews", f"{len(tr.frames)} steps of the user's settings", "previews.png"))
    if tr.non_finite:
        where = tr.non_finite.describe()
    else:
        where = f"not reached: {tr.error}" if tr.error else "none: every component stayed finite"
    checks.append(Check("first non-finite value", where))
    return checks


def _non_finite_causes(tr: Any, rows: list[dict], diag: Diagnosis, case: Case, setup: Setup) -> list[Cause]:
    """NaN/Inf that no setting put back removes is the model's (or its precision's) fault."""
    if tr.non_finite is None:
        return []
    fixed = [c for c in diag.causes if c.field]
    if fixed:
        for c in fixed:
            c.evidence += f"; the NaN first appears in {tr.non_finite.describe()}"
        return []
    ref = _row_of(rows, "recipe")
    also = " and at the recipe's own settings" if ref and ref.get("failure") == "non_finite" else ""
    fix = {"text encoder": "check the checkpoint's text encoder weights (iga verify MODEL)",
           "VAE decoder": "decode in float32 or use a VAE without fp16 overflow (--vae FILE)"}.get(
        tr.non_finite.component, f"iga verify {case.model_path}  # damaged weights; or run in float32")
    return [Cause("NaN/Inf while sampling", f"the model emits NaN/Inf: {tr.non_finite.component}",
                  f"{tr.non_finite.describe()}{also}; no setting put back removes it", fix, 50.0, "")]


def _prediction_probe(model: Any, case: Case, setup: Setup, rows: list[dict], run_dir: Path, diag: Diagnosis,
                      judge: Any) -> list[Cause]:
    """The user's plan run as eps and as v: the parameterization with the clean image is the model's."""
    from iga.recipe.schema import PREDICTION_ALIASES

    asked = PREDICTION_ALIASES.get(str(case.request.prediction_type or "").strip().lower(),
                                   setup.user_plan.prediction_type)
    if asked not in ("eps", "v"):
        return []
    other = "v" if asked == "eps" else "eps"
    ref = _row_of(rows, "recipe")
    ref_px = load_pixels(run_dir, ref["image"]) if ref and ref.get("image") else None
    measured = {}
    for pred in (asked, other):
        px, err = probes.render_as(model, setup.user_plan, prediction_type=pred)
        measured[pred] = ({"failures": "exception", "error": err} if px is None
                          else measure_image(px, setup.req.prompt, None, None, judge=judge))
        if px is not None and ref_px is not None:
            measured[pred].update(_ssim_only(px, ref_px))
    figures = f"as {asked}: {_explain(measured[asked])}; as {other}: {_explain(measured[other])}"
    diag.checks.append(Check("prediction type probe", f"{figures} (asked: {asked})"))
    gain = badness(measured[asked]) - badness(measured[other])
    refused = [c for c in diag.causes if c.field == "prediction_type"]
    for c in refused:  # the facts refused it; the probe measures what it would have done
        c.evidence += f"; measured: {figures}"
    if refused or gain < MIN_IMPROVEMENT or setup.source.detected_prediction == asked:
        return []
    return [Cause(diag.symptom or "noise, mush or colour drift", f"prediction type {asked} (the model behaves as "
                  f"{other})", figures, f"set prediction_type: {other} in the recipe and re-embed it (iga embed "
                  f"{setup.source.path} RECIPE)", gain, "prediction_type")]


def _badness_no_ref(m: dict[str, Any]) -> float:
    return badness({k: v for k, v in m.items() if k != "ssim"})


def _ssim_only(px: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    from iga.evaluation.metrics import reference_metrics

    return {"ssim": reference_metrics(px, ref)["ssim"]}


def _vae_checks(model: Any, setup: Setup, rows: list[dict], run_dir: Path) -> list[Check]:

    user = _row_of(rows, "user")
    px = load_pixels(run_dir, user["image"]) if user and user.get("image") else None
    if px is None:
        return [Check("VAE round trip", "skipped: the user's settings made no image")]
    psnr = probes.vae_round_trip(model, setup.user_plan, px)
    if psnr is None:
        return [Check("VAE round trip", "skipped: the model works in pixel space (no VAE)")]
    return [Check("VAE round trip", f"encode-decode PSNR of the user's image through its VAE: {psnr:.1f} dB")]


def _precision_probe(setup: Setup, rows: list[dict], run_dir: Path, diag: Diagnosis, judge: Any) -> list[Cause]:

    px, err = probes.precision(setup.source.path, setup.user_plan)
    user = _row_of(rows, "user")
    if px is None or user is None:
        diag.checks.append(Check("half precision", f"skipped: {err or 'no float32 image to compare'}"))
        return []
    m = measure_image(px, setup.req.prompt, load_pixels(run_dir, user["image"]), None, judge=judge)
    diag.checks.append(Check("half precision", f"bfloat16 against float32: PSNR {m.get('psnr', float('nan')):.1f} "
                             f"dB; {_explain(m)}"))
    gain = _badness_no_ref(m) - _badness_no_ref(user)
    if gain < MIN_IMPROVEMENT:
        return []
    return [Cause(diag.symptom or "broken image in half precision", "half precision (fp16/bf16)",
                  f"bfloat16: {_explain(m)}; float32: {_explain(user)}", "iga generate ... --dtype float32", gain,
                  "dtype")]


def _sweeps(setup: Setup, run_dir: Path, model: Any) -> list[Path]:
    """CFG, steps and sampler grids around the user's setting (one row each), on the grid runner."""
    from .grid import GridAxis, GridSpec, run_grid

    recipe = setup.source.recipe
    user, base = setup.user_plan, setup.baseline
    cfgs = sorted({round(v, 2) for v in (user.cfg, base.cfg, (user.cfg + base.cfg) / 2,
                                          *((recipe.cfg.min, recipe.cfg.max) if recipe else ()))})
    steps = sorted({user.steps, base.steps, max(1, user.steps // 2), user.steps * 2})
    samplers = list(dict.fromkeys([user.sampler, base.sampler, "euler", "dpmpp_2m"]))
    req = setup.req.model_copy(update={"cfg": user.cfg, "steps": user.steps, "sampler": user.sampler,
                                       "sigmas": None, "schedule": user.schedule if user.schedule != "explicit"
                                       else None})
    grids = []
    for name, values in (("cfg", cfgs), ("steps", steps), ("sampler", samplers)):
        spec = GridSpec(req.prompt, x=GridAxis(name, tuple(values)), base=req, mode="permissive",
                        seed=int(user.seed))
        grids += run_grid(spec, run_dir / f"sweep-{name}", source=setup.source, model=model).grids
    return grids


def write_json(diag: Diagnosis) -> Path:
    """diagnosis.json: the table and every check, atomically."""
    from iga.checkpoint import write_bytes_atomic

    data = {"schema": "iga.doctor/1", "source": diag.case.source, "where": diag.case.where,
            "model": diag.case.model_path, "symptom": diag.symptom, "found": diag.found,
            "causes": [c.__dict__ for c in diag.causes], "checks": [c.__dict__ for c in diag.checks],
            "grids": [str(p.relative_to(diag.run_dir)) for p in diag.grids], "images": diag.images,
            "notes": diag.case.notes}
    path = diag.run_dir / "diagnosis.json"
    write_bytes_atomic(path, json.dumps(data, indent=1, default=str).encode())
    return path
