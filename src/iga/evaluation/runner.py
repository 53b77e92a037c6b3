"""The one sweep runner: points -> guard -> plans -> workers -> images, rows, tables. Every sweep in iga runs here.

The parent process resolves every point through the guard first (refusals become rows with the guard's reason),
skips points whose key is already in the run's journal, groups the rest by (prompt, seed) so each group carries
its reference and reuses one prompt encoding, and hands the groups to a backend: in-process (default), local
worker processes, or Ray actors. Workers only compute; the parent saves each image with its provenance and
appends its row to the journal as it arrives, so Ctrl-C or a crash loses at most the images in flight.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from iga.guard import GuardRefused, ModelIdentity, Plan, Request, record_plan_overrides
from iga.guard.plan import Mode
from iga.guard.source import ModelSource
from iga.recipe.schema import Recipe

from .table import Journal, write_tables
from .worker import Group, Item, Result, SweepWorker, WorkerConfig

IMAGES = "images"


@dataclass
class Point:
    """One image an experiment asks for, before the guard has seen it."""

    role: str  # "point", "reference" or "repeat"
    prompt: str
    seed: int
    request: Request
    mode: Mode
    arm: str = ""
    draw: int = -1
    axis: str = ""
    value: str = ""
    value_order: int = 0
    grid_value: str = ""
    recipe: Recipe | None = None  # None: the model's own recipe; else resolved against this one (recorded)


@dataclass
class Planned:
    """A point with the guard's verdict: its plan, or the reason it was refused."""

    point: Point
    key: str
    plan: Plan | None
    refused: str = ""


def plan_sha256(plan: Plan) -> str:
    """SHA-256 of a plan's settings: its JSON without the creation time, runtime and pixel hash."""
    d = plan.to_dict()
    for k in ("created", "runtime", "pixels_sha256"):
        d.pop(k, None)
    for o in d.get("overrides", []):
        o.pop("time", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _key(p: Point, what: str) -> str:
    text = f"{p.role}|{p.arm}|{p.draw}|{p.axis}|{p.value}|{p.grid_value}|{what}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _identity(p: Point, source: ModelSource, given: dict[int, ModelIdentity]) -> ModelIdentity:
    """The model identity a point's plan records: the source's, or (a given recipe) marked as resolved against
    that recipe, whose hash is computed once per recipe, not once per point."""
    if p.recipe is None:
        return source.identity
    if id(p.recipe) not in given:
        from iga.recipe.canonical import recipe_metadata_sha256

        given[id(p.recipe)] = source.identity.model_copy(update={
            "recipe_source": "given", "recipe_sha256": recipe_metadata_sha256(p.recipe.to_dict())})
    return given[id(p.recipe)]


def resolve_point(p: Point, source: ModelSource, given: dict[int, ModelIdentity] | None = None) -> Planned:
    """Resolve one point against the model's recipe (or the point's own) in the point's mode.

    ``given`` memoises identities of given recipes across the points of one run (the recipes must stay alive).
    """
    recipe = p.recipe if p.recipe is not None else source.recipe
    ident = _identity(p, source, {} if given is None else given)
    req = p.request.model_copy(update={"prompt": p.prompt, "seeds": [p.seed], "seed": p.seed, "batch": 1})
    try:
        plan, _ = source.resolve(req, p.mode, recipe=recipe, identity=ident)
    except GuardRefused as e:
        reason = "; ".join(f"{f.field}: {f.reason}" for f in e.findings if f.outcome == "refused")
        asked = json.dumps(req.model_dump(mode="json", exclude_defaults=True), sort_keys=True)
        return Planned(p, _key(p, asked), None, reason)
    return Planned(p, _key(p, plan_sha256(plan)), plan)


def _fixed_row(pl: Planned) -> dict[str, Any]:
    p, plan = pl.point, pl.plan
    row = {"key": pl.key, "role": p.role, "arm": p.arm, "draw": p.draw, "axis": p.axis, "value": p.value,
           "value_order": p.value_order, "grid_value": p.grid_value, "prompt": p.prompt, "seed": p.seed,
           "refused": pl.refused}
    if plan is None:
        r = p.request
        return {**row, "sampler": r.sampler, "schedule": r.schedule, "steps": r.steps, "cfg": r.cfg}
    return {**row, "sampler": plan.sampler, "schedule": plan.schedule, "steps": plan.steps, "cfg": plan.cfg,
            "cfg_variant": plan.cfg_variant, "eta": plan.eta, "vae": plan.vae.id if plan.vae else "",
            "clip_skip": plan.clip_skip, "prediction_type": plan.prediction_type, "nfe": plan.nfe,
            "sigmas": json.dumps([round(s, 6) for s in plan.sigmas]), "plan_sha256": plan_sha256(plan),
            "overrides": ";".join(o.field for o in plan.overrides)}


def _groups(planned: list[Planned], journal: Journal, run_dir: Path) -> tuple[list[Group], dict[str, dict]]:
    """Groups of what is left to render (reference first), and the fixed row fields of every item."""
    fixed: dict[str, dict] = {}
    by_ps: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
    for pl in planned:
        if pl.plan is None or pl.key in journal.rows:
            continue
        fixed[pl.key] = _fixed_row(pl)
        g = by_ps.setdefault((pl.point.prompt, pl.point.seed), {"ref": None, "items": []})
        item = Item(pl.key, pl.plan.to_dict(), fixed[pl.key], keep_pixels=pl.point.role != "repeat")
        if pl.point.role == "reference":
            g["ref"] = item
        else:
            g["items"].append(item)
    refs = {(pl.point.prompt, pl.point.seed): pl for pl in planned if pl.point.role == "reference"}
    groups = []
    for (prompt, seed), g in by_ps.items():
        ref_pixels = None
        done_ref = refs.get((prompt, seed))
        if g["ref"] is None and done_ref is not None and done_ref.key in journal.rows:
            ref_pixels = load_pixels(run_dir, journal.rows[done_ref.key].get("image", ""))
        groups.append(Group(prompt, seed, g["ref"], ref_pixels, g["items"]))
    return groups, fixed


def load_pixels(run_dir: Path, rel: str) -> np.ndarray | None:
    """The uint8 pixels of a run's image (``rel`` relative to the run folder), or None when it is not there."""
    if not rel:
        return None
    from PIL import Image

    try:
        with Image.open(run_dir / rel) as im:
            return np.asarray(im.convert("RGB"))
    except OSError:
        return None  # a reference image deleted by hand: its points run without reference metrics


def _save(res: Result, run_dir: Path) -> str:
    if res.pixels is None or res.plan is None:
        return ""
    from PIL import Image

    from iga.provenance import save_image

    path = save_image(Image.fromarray(res.pixels, "RGB"), res.plan, run_dir / IMAGES)
    return f"{IMAGES}/{path.name}"


@dataclass
class Backend:
    """Where groups are computed: ``local`` (in-process or N worker processes) or ``ray``."""

    kind: str = "local"
    workers: int = 1
    ray_address: str | None = None
    model: Any = None  # an already loaded iga.generate.Model to render on (in-process only), e.g. a server's

    def __post_init__(self) -> None:
        if self.model is not None and (self.kind != "local" or self.workers > 1):
            raise ValueError("a loaded model can only be used in-process (kind local, one worker)")

    def run(self, groups: list[Group], config: WorkerConfig) -> Iterator[Result]:
        """Results as they finish (in-process: one by one; pools: a group at a time)."""
        if not groups:
            return iter(())
        if self.kind == "ray":
            from .ray_backend import run_on_ray

            return run_on_ray(groups, config, self.workers, self.ray_address)
        if self.workers > 1:
            return _run_processes(groups, config, self.workers)
        return _run_inline(groups, config, self.model)


def _run_inline(groups: list[Group], config: WorkerConfig, model: Any = None) -> Iterator[Result]:
    worker = SweepWorker(config, model)
    for g in groups:
        yield from worker.run_group(g)


_PROCESS_WORKER: SweepWorker | None = None


def _init_process(config: WorkerConfig) -> None:
    global _PROCESS_WORKER
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and shuts the pool down
    _PROCESS_WORKER = SweepWorker(config)


def _process_group(group: Group) -> list[Result]:
    assert _PROCESS_WORKER is not None
    return _PROCESS_WORKER.run_group_list(group)


def _run_processes(groups: list[Group], config: WorkerConfig, n: int) -> Iterator[Result]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child inherits the parent's OpenMP state, which can deadlock torch
    pool = ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_init_process,
                               initargs=(config,))
    try:
        futures = [pool.submit(_process_group, g) for g in groups]
        for f in as_completed(futures):
            yield from f.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker: this process's torch thread count (which honours OMP_NUM_THREADS) shared out,
    so workers x threads fills what the user allowed without oversubscribing the CPU."""
    import torch

    return max(1, torch.get_num_threads() // max(1, workers))


def run_points(points: Iterable[Point], source: ModelSource, config: WorkerConfig, run_dir: Path, *,
               backend: Backend | None = None, action: str = "eval",
               progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Run every point (resuming from the run's journal) and return the rows of exactly these points.

    Writes run_dir/images/, rows.jsonl (as it goes), results.parquet and results.csv (when it stops, also on
    Ctrl-C). Overrides are recorded in the audit log when a point is dispatched, as `iga generate` does.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(run_dir / "rows.jsonl")
    points = list(points)  # keeps every given recipe alive while its id() keys the memo below
    given: dict[int, ModelIdentity] = {}
    planned = [resolve_point(p, source, given) for p in points]
    keys = [pl.key for pl in planned]
    for pl in planned:
        if pl.plan is None and pl.key not in journal.rows:
            journal.append(_fixed_row(pl))
    groups, fixed = _groups(planned, journal, run_dir)
    todo = sum(len(g.items) + (g.reference is not None) for g in groups)
    done = 0
    try:
        for pl in planned:
            if pl.plan is not None and pl.key in fixed and pl.plan.overrides:
                record_plan_overrides(pl.plan, action=action)
        for res in (backend or Backend()).run(groups, config):
            journal.append({**fixed[res.key], **res.row, "image": _save(res, run_dir)})
            done += 1
            if progress:
                progress(done, todo)
    finally:
        rows = [journal.rows[k] for k in dict.fromkeys(keys) if k in journal.rows]
        write_tables(run_dir, rows)
    return rows
