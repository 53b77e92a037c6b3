"""What every endpoint shares: a request becomes a guard ``Request``, is resolved into a ``Plan`` (refusals are
answered with the guard's findings), its overrides are written to the audit log exactly as `iga generate` writes
them, and the plan goes on the job queue. The A1111 layer and iga's own API differ only in how they spell the
request and the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iga.guard import Plan, Request
from iga.server.config import MAX_IMAGES_PER_REQUEST, MAX_PROMPT_CHARS, MAX_REQUEST_PIXELS, ServerConfig
from iga.server.jobs import EventLog, Gallery, Job, JobQueue, QueueFull
from iga.server.pool import ModelEntry, ModelPool, UnknownModel


class ApiError(Exception):
    """An answer other than success: HTTP status, one clear sentence, optional extra JSON and headers."""

    def __init__(self, status: int, detail: str, *, kind: str = "bad request", extra: dict | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.kind = status, detail, kind
        self.extra, self.headers = extra or {}, headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.kind, "detail": self.detail, **self.extra}


def refusal(findings: list[Any]) -> ApiError:
    """The guard said no: 422 with every finding, the refused ones first in the message."""
    refused = [f for f in findings if f.outcome == "refused"]
    why = "; ".join(f"{f.field}: {f.reason}" + (f" (fix: {f.suggestion})" if f.suggestion else "") for f in refused)
    overridable = bool(refused) and all(f.severity == "soft" for f in refused)
    fields = sorted({f.field for f in refused})
    how = (f"to accept it, name {', '.join(fields)} as an override with a reason: \"overrides\" and \"reason\" "
           f"(/iga/v1), override_settings.iga_overrides and iga_reason or the X-IGA-Override and X-IGA-Reason "
           f"headers (/sdapi/v1)") if overridable else "no override can unlock a hard finding"
    return ApiError(422, f"refused by the guard: {why}", kind="refused",
                    extra={"refused": True, "overridable": overridable, "how_to_override": how,
                           "findings": [f.model_dump(mode="json") for f in findings]})


class Service:
    """The server's state: models, queue, events, gallery; and the one path from a Request to a queued Job."""

    def __init__(self, config: ServerConfig):
        config.check()
        self.config = config
        self.pool = ModelPool(config.models_dir, default=config.default_model, max_loaded=config.max_loaded)
        self.events = EventLog()
        self.gallery = Gallery()
        if config.out_dir is not None and Path(config.out_dir).is_dir():
            self.gallery.load(Path(config.out_dir))  # a restarted server still shows (and replays) what it made
        from iga.server.uploads import Uploads  # it answers with ApiError, defined here

        self.uploads = Uploads(config.out_dir)
        self.queue = JobQueue(self.pool, capacity=config.queue_size, workers=config.workers,
                              out_dir=config.out_dir, preview_interval=config.preview_interval,
                              events=self.events, gallery=self.gallery)

    def entry(self, name: str | None) -> ModelEntry:
        try:
            return self.pool.entry(name)
        except UnknownModel as e:
            raise ApiError(404, str(e), kind="model not found") from None

    def mode(self, mode: str | None) -> str:
        mode = mode or self.config.mode
        if mode not in ("strict", "guarded", "permissive"):
            raise ApiError(422, f"mode {mode!r}: choose strict, guarded or permissive")
        return mode

    def request(self, **fields: Any) -> Request:
        """A guard Request from fields, checked against the server's limits first (one clear message each)."""
        from pydantic import ValidationError

        for key in ("prompt", "negative_prompt"):
            text = fields.get(key) or ""
            if not isinstance(text, str):
                raise ApiError(422, f"{key} must be a string")
            if len(text) > MAX_PROMPT_CHARS:
                raise ApiError(413, f"{key} is {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}",
                               kind="too large")
        batch = fields.get("batch", 1)
        if isinstance(batch, int) and not 1 <= batch <= MAX_IMAGES_PER_REQUEST:
            raise ApiError(422, f"{batch} images in one request: ask for 1 to {MAX_IMAGES_PER_REQUEST}")
        try:
            return Request(**fields)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise ApiError(422, self.uploads.scrub(f"{where}: {err['msg']} (got {err.get('input')!r})")[:500]) from None

    def plan(self, entry: ModelEntry, request: Request, mode: str) -> Plan:
        """Resolve against the model's recipe (raising the guard's refusal as 422), then apply the server's own
        work limits to what the plan would run."""
        from iga.guard import GuardRefused
        from iga.recipe.names import UnknownNameError

        try:
            plan, _ = entry.source.resolve(request, mode)
        except UnknownNameError as e:
            raise ApiError(404 if e.kind == "sampler" else 422, str(e), kind=f"{e.kind} not found") from None
        except GuardRefused as e:
            self.events.emit(None, "refused", {"model": entry.id, "findings": [
                f.model_dump(mode="json") for f in e.findings if f.outcome == "refused"]})
            raise refusal(e.findings) from None
        except (KeyError, ValueError) as e:  # also an unusable input image (iga.guard.images.InputImageError)
            raise ApiError(422, self.uploads.scrub(str(e.args[0]) if e.args else str(e))) from None
        w, h = (plan.hires.width, plan.hires.height) if plan.hires is not None else (plan.width, plan.height)
        pixels = w * h * len(plan.seeds)
        if pixels > MAX_REQUEST_PIXELS:
            raise ApiError(413, f"{w}x{h} x {len(plan.seeds)} images is {pixels:,} pixels; this "
                           f"server takes at most {MAX_REQUEST_PIXELS:,} per request", kind="too large")
        if plan.steps > self.config.max_steps:
            raise ApiError(422, f"steps {plan.steps}: this server runs at most {self.config.max_steps} "
                           f"(iga serve --max-steps)")
        return plan

    def submit(self, entry: ModelEntry, plan: Plan, *, kind: str = "generate", save: bool = True,
               expect_pixels: str | None = None) -> tuple[Job, int]:
        """Record the plan's overrides in the audit log (nothing runs if that fails), then queue it."""
        from iga.guard import AuditLogError, record_plan_overrides

        job = Job(entry, plan, kind=kind, save=save, expect_pixels=expect_pixels)
        action = "generate" if kind == "generate" else kind

        def record() -> None:  # under the queue's lock: a 503 leaves no audit record, a record always a job
            record_plan_overrides(plan, self.config.audit_log, action=action)

        try:
            return job, self.queue.submit(job, on_accept=record)
        except QueueFull:
            raise self._busy() from None
        except AuditLogError as e:
            raise ApiError(503, str(e), kind="audit log unavailable") from None

    def _busy(self) -> ApiError:
        retry = self.queue.retry_after()
        return ApiError(503, f"the queue is full ({self.queue.capacity} jobs waiting or running); retry in {retry} s",
                        kind="busy", headers={"Retry-After": str(retry)})

    def replay(self, name: str) -> tuple[Job, int]:
        """Queue the regeneration of a gallery image from its stored plan, under the same checks as `iga replay`."""
        from iga.replay import stored_plan_problem

        result = self.gallery.get(name)
        if result is None:
            raise ApiError(404, f"no image named {name!r} in the gallery (GET /iga/v1/gallery lists them)",
                           kind="image not found")
        plan = Plan.from_dict(result.plan)
        entry = next((e for e in self.pool.entries.values()
                      if e.source.identity.weights_sha256 == plan.model.weights_sha256), None)
        if entry is None:
            raise ApiError(409, f"{name} was made with weights {str(plan.model.weights_sha256)[:12]}..., which no "
                           f"model of this server has")
        self.uploads.offer(plan)
        problem = stored_plan_problem(plan, entry.source)
        if problem:
            raise ApiError(422, problem)
        return self.submit(entry, plan.model_copy(update={"pixels_sha256": None}), kind="replay", save=False,
                           expect_pixels=plan.pixels_sha256)

    def summary(self, entry: ModelEntry) -> dict[str, Any]:
        """A model and its recipe, as the page and `GET /iga/v1/models` show it."""
        from iga.server.recipes import recipe_summary

        ident = entry.source.identity
        return {"id": entry.id, "title": entry.title, "name": ident.name, "architecture": ident.architecture,
                "loaded": self.pool.is_loaded(entry), "has_recipe": entry.source.recipe is not None,
                "weights_sha256": ident.weights_sha256, "current": entry.id == self.pool.current,
                "recipe": recipe_summary(entry) if entry.source.recipe is not None else None}
