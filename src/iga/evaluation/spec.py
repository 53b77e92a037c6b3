"""An experiment spec: which model, prompts, seeds, base settings, the one varied axis, metrics and workers.

Written as YAML or JSON (or built from `iga eval` flags). Everything is checked before anything runs, and
every problem is a SpecError that says what, where and how to fix it.

    name: samplers
    prompts: demo:all:10          # a list, a file (one per line), or demo:{train,held_out,all}[:N]
    seeds: 4                      # a count (1000, 1001, ...) or a list
    base: {preset: Fast}          # request fields every point shares (default: the recipe's defaults)
    vary: {sampler: [euler, heun, dpmpp_2m, uni_pc]}    # or `recipe` / `knobs`
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iga.guard.plan import OVERRIDABLE, Mode

from .axes import SpecError, check_axis, parse_values

MAX_SPEC_BYTES = 1 << 20
MAX_PROMPTS = 10_000
MAX_PROMPT_CHARS = 2000
SEED_BASE = 1000
BASE_FIELDS = ("preset", "sampler", "schedule", "steps", "cfg", "cfg_variant", "cfg_rescale", "eta", "size", "vae",
               "clip_skip", "negative_prompt")
LEARNED = ("clip_model", "fid_weights", "lpips_weights")


class ExperimentSpec(BaseModel):
    """One experiment, as written by its author (``load_spec`` checks it and expands the shorthands)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sweep", "headline"] = "sweep"
    name: str = Field("experiment", min_length=1, max_length=100)
    model: str | None = Field(None, description="checkpoint path; default: the bundled demo model")
    prompts: list[str] | str | int = "demo:all:4"
    seeds: list[int] | int = 2
    base: dict[str, Any] = Field(default_factory=dict)
    mode: Mode = "guarded"
    overrides: list[str] = Field(default_factory=list, description="base fields that deviate from the recipe")
    vary: dict[str, Any] = Field(default_factory=dict)
    grid: bool = Field(False, description="allow two axes at once (an X/Y grid for people, not the protocol)")
    reference: bool = Field(True, description="render a reference per (prompt, seed) for SSIM, PSNR and the "
                            "colour shifts (off: per-image metrics only, half the work when scoring one setting)")
    reference_factor: int = Field(4, ge=1, le=16, description="reference: the recipe's sampler and schedule at "
                                  "this many times the canonical steps")
    repeat: bool = Field(True, description="re-run each (prompt, seed)'s first point to measure bit-identity")
    judge: str | None = Field("auto", description="demo judge: auto (demo models), none, or a judge file")
    clip_model: str | None = None
    fid_weights: str | None = None
    lpips_weights: str | None = None
    draws: int = Field(8, ge=1, le=1000, description="headline: settings drawn per arm")
    draw_seed: int = Field(0, ge=0, description="headline: seed of the setting draws")
    threads: int | None = Field(None, ge=1, le=256)
    workers: int = Field(1, ge=1, le=64)
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None


def read_spec_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The spec file as a dict (YAML or JSON by extension; bounded size)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise SpecError(f"spec {p} is not a file")
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"spec {p} is {size} bytes; a spec is at most {MAX_SPEC_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read spec {p}: {e}") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml and json raise many types; all mean the same to the user
        raise SpecError(f"spec {p} is not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: "
                        f"{str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec {p} must be a mapping of fields (name, prompts, seeds, vary, ...)")
    return data


def parse_spec(data: dict[str, Any], where: str = "spec") -> ExperimentSpec:
    """Validate a spec dict; check its axes, values, base fields and files."""
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise SpecError(f"{where}: {loc}: {err['msg']} (got {err.get('input')!r:.80})") from None
    if spec.kind == "sweep":
        _check_vary(spec, where)
    bad = [k for k in spec.base if k not in BASE_FIELDS]
    if bad:
        raise SpecError(f"{where}: base field {bad[0]!r} is not a request field; use {', '.join(BASE_FIELDS)}")
    bad = [o for o in spec.overrides if o not in OVERRIDABLE]
    if bad:
        raise SpecError(f"{where}: cannot override {bad[0]!r}; overridable: {', '.join(OVERRIDABLE)}")
    for name in LEARNED:
        value = getattr(spec, name)
        if value is not None and not Path(value).exists():
            raise SpecError(f"{where}: {name} {value} does not exist; learned metrics load weights you already "
                            "have on disk (nothing is downloaded): fix the path or drop the field")
    if spec.model is not None and not Path(spec.model).exists():
        raise SpecError(f"{where}: model {spec.model} not found")
    return spec


def _check_vary(spec: ExperimentSpec, where: str) -> None:
    for axis in spec.vary:
        try:
            check_axis(axis)
        except SpecError as e:
            raise SpecError(f"{where}: vary: {e}") from None
    if len(spec.vary) > 2 or len(spec.vary) == 2 and not spec.grid:
        raise SpecError(f"{where}: vary names {len(spec.vary)} axes ({', '.join(spec.vary)}); the protocol varies "
                        "exactly one at a time so each figure has one cause. Run one experiment per axis, or pass "
                        "--grid for an X/Y grid (two axes; no variance figures)")
    for axis, values in spec.vary.items():
        parse_values(axis, values)  # raises SpecError / UnknownNameError naming the bad value


def load_spec(path: str | os.PathLike[str]) -> ExperimentSpec:
    """Read and validate a spec file."""
    return parse_spec(read_spec_file(path), where=str(path))


def spec_prompts(spec: ExperimentSpec, is_demo: bool) -> list[str]:
    """The experiment's prompts: a list as given, a file's lines, or demo prompts spread over a group."""
    p = spec.prompts
    if isinstance(p, int) or isinstance(p, str) and p.startswith("demo:"):
        if not is_demo:
            raise SpecError("demo prompts need the demo model's prompt grammar; give a list or a file of prompts")
        group, count = ("all", p) if isinstance(p, int) else _demo_ref(p)
        prompts = demo_prompts(group, count)
    elif isinstance(p, str):
        prompts = _prompt_file(p)
    else:
        prompts = list(p)
    if not prompts:
        raise SpecError("the experiment has no prompts")
    if len(prompts) > MAX_PROMPTS or any(len(x) > MAX_PROMPT_CHARS for x in prompts):
        raise SpecError(f"at most {MAX_PROMPTS} prompts of at most {MAX_PROMPT_CHARS} characters each")
    return prompts


def _demo_ref(text: str) -> tuple[str, int | None]:
    parts = text.split(":")
    group = parts[1] if len(parts) > 1 else ""
    if group not in ("train", "held_out", "all") or len(parts) > 3:
        raise SpecError(f"prompts {text!r}: write demo:train, demo:held_out or demo:all, optionally :N")
    try:
        return group, int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise SpecError(f"prompts {text!r}: the count after the group must be a whole number") from None


def demo_prompts(group: str, count: int | None) -> list[str]:
    """``count`` prompts spread evenly over a demo prompt group (all of them when None)."""
    from iga.demo import data

    triples = {"train": data.train_triples, "held_out": data.held_out_triples, "all": data.all_triples}[group]()
    n = len(triples) if count is None else count
    if not 1 <= n <= len(triples):
        raise SpecError(f"demo:{group} has {len(triples)} prompts; ask for 1..{len(triples)}")
    return [triples[int(i * len(triples) / n)].prompt for i in range(n)]


def _prompt_file(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"prompts {path!r} is neither a file nor demo:GROUP[:N]")
    if p.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"prompt file {p} is larger than {MAX_SPEC_BYTES} bytes")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read prompt file {p}: {e}") from None
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def spec_seeds(spec: ExperimentSpec) -> list[int]:
    """The seeds: a count N gives SEED_BASE .. SEED_BASE+N-1."""
    if isinstance(spec.seeds, int):
        if not 1 <= spec.seeds <= 10_000:
            raise SpecError(f"seeds: a count of 1..10000, got {spec.seeds}")
        return [SEED_BASE + i for i in range(spec.seeds)]
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds) or min(spec.seeds) < 0:
        raise SpecError("seeds: a non-empty list of distinct non-negative integers")
    return list(spec.seeds)
