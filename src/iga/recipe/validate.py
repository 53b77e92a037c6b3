"""Load and validate recipes: every problem at once, each with its field path, the bad value and the fix."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from . import names
from .schema import Recipe, parse_size
from .versions import CURRENT, RecipeVersionError, migrate

MAX_RECIPE_BYTES = 1 << 20  # 1 MiB: recipes live in safetensors headers, which other tools read whole


@dataclass(frozen=True)
class RecipeIssue:
    """One finding about a recipe: where, what value, what is wrong, how to fix it."""

    path: str
    value: Any
    message: str
    fix: str = ""
    severity: Literal["error", "warning", "info"] = "error"

    def __str__(self) -> str:
        val = json.dumps(self.value, ensure_ascii=False, default=str)
        if len(val) > 80:
            val = val[:77] + "..."
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.path or '<recipe>'} = {val}: {self.message}.{fix}"


class RecipeError(ValueError):
    """A recipe that cannot be used; ``issues`` lists every error found."""

    def __init__(self, issues: list[RecipeIssue], source: str = "recipe"):
        self.issues = issues
        lines = "\n".join(f"  - {i}" for i in issues)
        super().__init__(f"{source} is not a valid iga recipe ({len(issues)} problem(s)):\n{lines}")


def _pydantic_issues(err: ValidationError) -> list[RecipeIssue]:
    out = []
    for e in err.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        msg = e["msg"]
        fix = ""
        if e["type"] == "missing":
            fix = f"add the field `{path}`; see `iga schema`"
        elif e["type"] == "literal_error":
            fix = f"use one of the allowed values ({msg.split('Input should be ', 1)[-1]})"
        elif e["type"] == "string_pattern_mismatch":
            fix = "write a SHA-256 as 64 lowercase hex digits"
        else:
            fix = f"give `{path}` a value of the expected type; `iga schema` shows the format"
        out.append(RecipeIssue(path, e.get("input"), msg[0].lower() + msg[1:], fix))
    return out


def _canon_sampler(raw: Any, path: str, issues: list[RecipeIssue]) -> tuple[Any, str | None]:
    """Canonical sampler (and the schedule a combined label implies) for one spelling; record the outcome."""
    if not isinstance(raw, str):
        return raw, None
    try:
        sampler, sched = names.split_combined(raw)
    except names.UnknownNameError as e:
        issues.append(RecipeIssue(path, raw, "unknown sampler",
                                  f"use one of: {', '.join(e.suggestions) or 'see `iga samplers`'}"))
        return raw, None
    if sampler != raw:
        issues.append(RecipeIssue(path, raw, f"normalised to {sampler!r}"
                                  + (f" with schedule {sched!r}" if sched else ""), severity="info"))
    return sampler, sched


def _canon_schedule(raw: Any, path: str, issues: list[RecipeIssue]) -> Any:
    """Canonical schedule for one spelling; record the outcome."""
    if not isinstance(raw, str):
        return raw
    try:
        canon = names.resolve_schedule(raw)
    except names.UnknownNameError as e:
        issues.append(RecipeIssue(path, raw, "unknown schedule",
                                  f"use one of: {', '.join(e.suggestions) or 'see `iga schedules`'}"))
        return raw
    if canon != raw:
        issues.append(RecipeIssue(path, raw, f"normalised to {canon!r}", severity="info"))
    return canon


def _normalise_names(d: dict[str, Any], issues: list[RecipeIssue]) -> None:
    """Rewrite every sampler/schedule spelling to its canonical name, in place; record unknown names."""

    def pair(container: dict, skey: str, hkey: str, path: str, hpath: str, hcontainer: dict) -> None:
        # a legacy label such as "DPM++ 2M Karras" sets the schedule too, unless one is given explicitly
        if hkey in hcontainer:
            hcontainer[hkey] = _canon_schedule(hcontainer[hkey], hpath, issues)
        if skey in container:
            container[skey], implied = _canon_sampler(container[skey], path, issues)
            current = hcontainer.get(hkey)
            if implied and current is None:
                hcontainer[hkey] = implied
            elif implied and current != implied:
                issues.append(RecipeIssue(path, container[skey], f"the sampler label implies schedule {implied!r} "
                                          f"but {hpath} is {current!r}", "make them agree"))

    sampler, scheduler = d.get("sampler"), d.get("scheduler")
    if isinstance(sampler, dict) and isinstance(scheduler, dict):
        pair(sampler, "name", "name", "sampler.name", "scheduler.name", scheduler)
    elif isinstance(scheduler, dict) and "name" in scheduler:
        scheduler["name"] = _canon_schedule(scheduler["name"], "scheduler.name", issues)
    cons = d.get("constraints")
    if isinstance(cons, dict):
        for key in ("forbid_samplers", "allow_samplers"):
            if isinstance(cons.get(key), list):
                cons[key] = [_canon_sampler(v, f"constraints.{key}[{i}]", issues)[0] for i, v in enumerate(cons[key])]
        for key in ("forbid_schedules", "allow_schedules"):
            if isinstance(cons.get(key), list):
                cons[key] = [_canon_schedule(v, f"constraints.{key}[{i}]", issues) for i, v in enumerate(cons[key])]
    for i, p in enumerate(d.get("presets") or []):
        if isinstance(p, dict):
            pair(p, "sampler", "schedule", f"presets[{i}].sampler", f"presets[{i}].schedule", p)


def _unknown_fields(model: BaseModel, path: str, newer_minor: bool, issues: list[RecipeIssue]) -> None:
    """Report fields the schema does not define (kept on round trip either way)."""
    for key in (model.model_extra or {}):
        where = f"{path}.{key}".lstrip(".")
        if newer_minor:
            issues.append(RecipeIssue(where, model.model_extra[key],
                                      "field from a newer recipe minor version; kept unchanged", severity="info"))
        else:
            close = difflib.get_close_matches(key, list(type(model).model_fields), n=1)
            fix = f"did you mean `{close[0]}`?" if close else "remove it, or check the spelling against `iga schema`"
            issues.append(RecipeIssue(where, model.model_extra[key], "unknown field (kept, but iga ignores it)",
                                      fix, severity="warning"))
    for fname in type(model).model_fields:
        value = getattr(model, fname)
        if isinstance(value, BaseModel):
            _unknown_fields(value, f"{path}.{fname}", newer_minor, issues)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    _unknown_fields(item, f"{path}.{fname}[{i}]", newer_minor, issues)


def _check_rules(r: Recipe) -> list[RecipeIssue]:
    """Cross-field rules that a recipe author could get wrong."""
    out: list[RecipeIssue] = []
    err = out.append
    s, c = r.steps, r.cfg
    if s.min < 1:
        err(RecipeIssue("steps.min", s.min, "must be at least 1", "set steps.min >= 1"))
    if not s.min <= s.default <= s.max:
        err(RecipeIssue("steps", {"min": s.min, "default": s.default, "max": s.max},
                        "min <= default <= max does not hold", "order the values so min <= default <= max"))
    for key in ("default", "min", "max"):
        v = getattr(c, key)
        if not math.isfinite(v) or v < 0:
            err(RecipeIssue(f"cfg.{key}", v, "must be a finite number >= 0", "use a CFG scale such as 7.0"))
    if not c.min <= c.default <= c.max:
        err(RecipeIssue("cfg", {"min": c.min, "default": c.default, "max": c.max},
                        "min <= default <= max does not hold", "order the values so min <= default <= max"))

    out += _check_flow(r)

    sch = r.scheduler
    if sch.subsample is not None:
        for i, n in enumerate(sch.subsample):
            if not s.min <= n <= s.max:
                err(RecipeIssue(f"scheduler.subsample[{i}]", n, f"outside the steps range {s.min}..{s.max}",
                                "keep subsample step counts inside steps.min..steps.max"))
        if sorted(set(sch.subsample)) != list(sch.subsample):
            err(RecipeIssue("scheduler.subsample", sch.subsample, "must be strictly increasing without repeats",
                            f"write it as {sorted(set(sch.subsample))}"))
    if sch.canonical_steps is not None and not s.min <= sch.canonical_steps <= s.max:
        err(RecipeIssue("scheduler.canonical_steps", sch.canonical_steps,
                        f"outside the steps range {s.min}..{s.max}", "make canonical_steps a valid step count"))
    allowed = r.allowed_steps()
    if allowed is not None and s.default not in allowed:
        err(RecipeIssue("steps.default", s.default, f"not an allowed step count {allowed}",
                        "add it to scheduler.subsample or pick one of the allowed counts"))
    if sch.grid is not None:
        out += _check_grid(sch.grid, r.prediction_type == "flow")
        if sch.canonical_steps is not None and len(sch.grid) - 1 != sch.canonical_steps:
            err(RecipeIssue("scheduler.grid", f"{len(sch.grid)} values", f"a grid for canonical_steps="
                            f"{sch.canonical_steps} has {sch.canonical_steps + 1} values (the last one 0)",
                            "make len(grid) == canonical_steps + 1"))
        if sch.grid and len(sch.grid) - 1 < s.max:
            err(RecipeIssue("steps.max", s.max, f"the explicit grid has only {len(sch.grid) - 1} steps and can only "
                            "be subsampled, not refined", f"set steps.max <= {len(sch.grid) - 1}"))
    elif sch.name == "explicit":
        err(RecipeIssue("scheduler.grid", None, "schedule 'explicit' needs a grid", "add scheduler.grid"))

    cons = r.constraints
    if r.sampler.name in cons.forbid_samplers:
        err(RecipeIssue("sampler.name", r.sampler.name, "the recipe's own sampler is in constraints.forbid_samplers",
                        "remove it from forbid_samplers or choose another sampler"))
    if r.scheduler.name in cons.forbid_schedules:
        err(RecipeIssue("scheduler.name", r.scheduler.name, "the recipe's own schedule is in "
                        "constraints.forbid_schedules", "remove it from forbid_schedules or choose another schedule"))
    if cons.allow_samplers is not None and r.sampler.name not in cons.allow_samplers:
        err(RecipeIssue("sampler.name", r.sampler.name, "not in constraints.allow_samplers",
                        "add it to allow_samplers"))
    if cons.allow_schedules is not None and r.scheduler.name not in cons.allow_schedules:
        err(RecipeIssue("scheduler.name", r.scheduler.name, "not in constraints.allow_schedules",
                        "add it to allow_schedules"))

    seen: set[str] = set()
    for i, p in enumerate(r.presets):
        where = f"presets[{i}]"
        if p.name.lower() in seen:
            err(RecipeIssue(f"{where}.name", p.name, "duplicate preset name", "give each preset its own name"))
        seen.add(p.name.lower())
        if p.steps is not None:
            if not s.min <= p.steps <= s.max:
                err(RecipeIssue(f"{where}.steps", p.steps, f"outside the steps range {s.min}..{s.max}",
                                "keep presets inside the recipe's ranges"))
            elif allowed is not None and p.steps not in allowed:
                err(RecipeIssue(f"{where}.steps", p.steps, f"not an allowed step count {allowed}",
                                "use one of the allowed step counts"))
        if p.cfg is not None and not c.min <= p.cfg <= c.max:
            err(RecipeIssue(f"{where}.cfg", p.cfg, f"outside the CFG range {c.min}..{c.max}",
                            "keep presets inside the recipe's ranges"))
        if p.sampler is not None and p.sampler in cons.forbid_samplers:
            err(RecipeIssue(f"{where}.sampler", p.sampler, "forbidden by constraints.forbid_samplers",
                            "a preset must not use a forbidden sampler"))
        if p.schedule is not None and p.schedule in cons.forbid_schedules:
            err(RecipeIssue(f"{where}.schedule", p.schedule, "forbidden by constraints.forbid_schedules",
                            "a preset must not use a forbidden schedule"))
    if r.default_preset is not None and r.default_preset.lower() not in seen:
        err(RecipeIssue("default_preset", r.default_preset, "no preset has this name",
                        f"use one of: {', '.join(p.name for p in r.presets) or '(define presets first)'}"))

    if r.resolution is not None:
        sizes: list[tuple[str, tuple[int, int]]] = []
        for i, text in enumerate(r.resolution.preferred):
            sizes.append((f"resolution.preferred[{i}]", _size_or_issue(text, f"resolution.preferred[{i}]", out)))
        if r.resolution.max is not None:
            mx = _size_or_issue(r.resolution.max, "resolution.max", out)
            for where, (w, h) in sizes:
                if mx != (0, 0) and (w, h) != (0, 0) and (w > mx[0] or h > mx[1]):
                    err(RecipeIssue(where, f"{w}x{h}", f"larger than resolution.max {mx[0]}x{mx[1]}",
                                    "raise resolution.max or drop the size"))

    out += _sampler_warnings(r)
    return out


def _check_flow(r: Recipe) -> list[RecipeIssue]:
    """Flow-trajectory rules: a shift (static or dynamic) only on flow schedules, not both; distilled guidance
    ordered, and such a model's CFG range must allow 1 (it runs without classifier-free guidance)."""
    out: list[RecipeIssue] = []
    ts = r.training_schedule
    if ts is not None and ts.dynamic_shift is not None:
        if ts.kind != "flow":
            out.append(RecipeIssue("training_schedule.dynamic_shift", ts.kind, "a dynamic shift applies to flow "
                                   "schedules only", "set training_schedule.kind to flow, or drop dynamic_shift"))
        if ts.shift is not None:
            out.append(RecipeIssue("training_schedule.shift", ts.shift, "a static shift and a dynamic shift "
                                   "contradict each other", "keep one: shift (SD3) or dynamic_shift (Flux)"))
        d = ts.dynamic_shift
        if d.max_seq_len <= d.base_seq_len:
            out.append(RecipeIssue("training_schedule.dynamic_shift.max_seq_len", d.max_seq_len,
                                   "must be larger than base_seq_len", f"use more than {d.base_seq_len}"))
    g = r.guidance
    if g is not None:
        if not (math.isfinite(g.min) and math.isfinite(g.max) and 0 <= g.min <= g.default <= g.max):
            out.append(RecipeIssue("guidance", {"min": g.min, "default": g.default, "max": g.max},
                                   "0 <= min <= default <= max does not hold", "order the values"))
        if not r.cfg.min <= 1.0 <= r.cfg.max:
            out.append(RecipeIssue("cfg", {"min": r.cfg.min, "max": r.cfg.max}, "a guidance-distilled model runs "
                                   "at CFG 1, so the CFG range must include 1", "set cfg to default 1, min 1, max 1"))
    return out


def _size_or_issue(text: str, where: str, out: list[RecipeIssue]) -> tuple[int, int]:
    try:
        w, h = parse_size(text)
    except ValueError as e:
        out.append(RecipeIssue(where, text, str(e).split(";")[0], "write sizes as WIDTHxHEIGHT, e.g. 1024x1024"))
        return (0, 0)
    if w <= 0 or h <= 0 or w % 8 or h % 8:
        out.append(RecipeIssue(where, text, "width and height must be positive multiples of 8",
                               f"use {max(8, w // 8 * 8)}x{max(8, h // 8 * 8)}"))
    return w, h


def _check_grid(grid: list[float], flow: bool) -> list[RecipeIssue]:
    """An explicit sigma grid must be finite, strictly decreasing, positive, and end in exactly 0."""
    out = []
    if len(grid) < 2:
        return [RecipeIssue("scheduler.grid", grid, "needs at least two values (one step)", "add sigmas")]
    for i, v in enumerate(grid):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            out.append(RecipeIssue(f"scheduler.grid[{i}]", v, "is not a finite number", "use finite sigmas"))
            return out
    if grid[-1] != 0:
        out.append(RecipeIssue(f"scheduler.grid[{len(grid) - 1}]", grid[-1], "the grid must end in 0",
                               "append 0 as the final sigma"))
    for i in range(len(grid) - 1):
        if grid[i] <= 0:
            out.append(RecipeIssue(f"scheduler.grid[{i}]", grid[i], "sigmas before the terminal 0 must be > 0",
                                   "remove non-positive sigmas before the end"))
            break
        if grid[i + 1] >= grid[i]:
            out.append(RecipeIssue(f"scheduler.grid[{i + 1}]", grid[i + 1],
                                   f"not smaller than the previous sigma {grid[i]}: the grid must strictly decrease",
                                   "sort the grid in descending order without repeats"))
            break
    if flow and grid[0] > 1:
        out.append(RecipeIssue("scheduler.grid[0]", grid[0], "flow models use sigma in [0, 1]",
                               "rescale the grid to [0, 1]"))
    return out


def _sampler_warnings(r: Recipe) -> list[RecipeIssue]:
    """Odd but usable: the things a careful reader would point out."""
    out = []
    try:
        info = names.sampler_info(r.sampler.name)
    except names.UnknownNameError:
        return out
    declared = r.sampler.params.get("order")
    if declared is not None and declared != info.order:
        out.append(RecipeIssue("sampler.params.order", declared,
                               f"{info.name} is an order-{info.order} sampler; the order is a property of the "
                               "sampler, not a setting, and iga ignores this value",
                               "remove params.order", severity="warning"))
    mode = r.sampler.mode
    if mode == "ode" and info.stochastic:
        out.append(RecipeIssue("sampler.mode", mode, f"{info.name} injects noise (it is not an ODE solver)",
                               "use mode 'ancestral' or 'sde', or an ODE sampler", severity="warning"))
    if mode in ("ancestral", "sde") and not info.stochastic:
        out.append(RecipeIssue("sampler.mode", mode, f"{info.name} is deterministic", "use mode 'ode'",
                               severity="warning"))
    if "eta" in r.sampler.params and not info.stochastic and info.name != "ddim":
        out.append(RecipeIssue("sampler.params.eta", r.sampler.params["eta"],
                               f"{info.name} takes no eta (it adds no noise)", "remove eta", severity="warning"))
    if r.scheduler.canonical_steps and r.scheduler.canonical_steps != r.steps.default:
        out.append(RecipeIssue("scheduler.canonical_steps", r.scheduler.canonical_steps,
                               f"differs from steps.default {r.steps.default}", severity="info"))
    if r.cfg.variant == "cfg_pp" and r.cfg.max > 3:
        out.append(RecipeIssue("cfg.max", r.cfg.max, "CFG++ uses scales around 0.5-2; large values overshoot",
                               severity="warning"))
    return out


def parse_recipe_dict(data: Any, *, source: str = "recipe") -> tuple[Recipe, list[RecipeIssue]]:
    """Validate a raw recipe (any supported version); return (Recipe, warnings and notes) or raise RecipeError."""
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue("", type(data).__name__, "a recipe must be a JSON/YAML object",
                                       "wrap the fields in { ... }")], source)
    try:
        d, version, notes = migrate(data)
    except RecipeVersionError as e:
        raise RecipeError([RecipeIssue("iga_version", data.get("iga_version"), str(e))], source) from None
    issues: list[RecipeIssue] = [RecipeIssue("iga_version", str(version), n, severity="info") for n in notes]
    newer_minor = version.major == CURRENT.major and version.minor > CURRENT.minor
    _normalise_names(d, issues)
    try:
        recipe = Recipe.model_validate(d)
    except ValidationError as e:
        raise RecipeError([i for i in issues if i.severity == "error"] + _pydantic_issues(e), source) from None
    _unknown_fields(recipe, "", newer_minor, issues)
    issues += _check_rules(recipe)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise RecipeError(errors, source)
    return recipe, issues


def parse_recipe_text(text: str | bytes, *, source: str = "recipe") -> tuple[Recipe, list[RecipeIssue]]:
    """Parse JSON or YAML recipe text (at most 1 MiB) and validate it."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError([RecipeIssue("", f"{len(raw)} bytes", f"a recipe may be at most {MAX_RECIPE_BYTES} bytes",
                                       "remove large fields (thumbnails, long descriptions)")], source)
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError([RecipeIssue("", f"byte {e.start}", "not UTF-8 text", "save the file as UTF-8")],
                          source) from None
    stripped = body.lstrip()
    try:
        if stripped.startswith("{"):
            data = json.loads(body)
        else:
            import yaml  # only YAML recipes pay for the import

            data = yaml.safe_load(body)
    except (json.JSONDecodeError, Exception) as e:  # yaml.YAMLError has no common base worth importing eagerly
        raise RecipeError([RecipeIssue("", source, f"cannot parse: {e}", "check the JSON/YAML syntax")],
                          source) from None
    return parse_recipe_dict(data, source=source)


def load_recipe_file(path: str | Path) -> tuple[Recipe, list[RecipeIssue]]:
    """Read and validate a recipe file (.json, .yaml, .yml), refusing files over 1 MiB."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError([RecipeIssue("", f"{size} bytes", f"a recipe may be at most {MAX_RECIPE_BYTES} bytes",
                                           "remove large fields")], str(p))
        raw = p.read_bytes()
    except OSError as e:
        raise RecipeError([RecipeIssue("", str(p), f"cannot read the file: {e.strerror}",
                                       "check the path")], str(p)) from None
    return parse_recipe_text(raw, source=str(p))
