"""The server's one job queue: bounded, served by worker threads, one generation at a time per model, with
progress, live previews, cancellation at the next step, and every finished image kept with its provenance.

A job is a resolved Plan (the guard has already said yes) plus where its results go. Events (queued, started,
step, preview, done, failed, cancelled) go to the job's own list and to a server-wide log that streams to
subscribers.
"""

from __future__ import annotations

import base64
import io
import itertools
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iga.server.config import EVENTS_KEPT, GALLERY_SIZE, JOBS_KEPT, MAX_GALLERY_FILE

if TYPE_CHECKING:
    from iga.guard import Plan
    from iga.server.pool import ModelEntry, ModelPool

FINISHED = ("done", "failed", "cancelled")
LIFECYCLE = ("queued", "started", *FINISHED)


class QueueFull(RuntimeError):
    """The queue holds as many jobs as it may; the client should retry after ``retry_after`` seconds."""

    def __init__(self, capacity: int, retry_after: int):
        super().__init__(f"the queue is full ({capacity} jobs waiting or running); retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Event:
    seq: int
    job: str | None
    type: str
    data: dict[str, Any]


class EventLog:
    """Server-wide events, numbered, the most recent ``EVENTS_KEPT`` kept for subscribers that poll."""

    def __init__(self) -> None:
        self._events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def emit(self, job: str | None, type_: str, data: dict[str, Any]) -> Event:
        with self._lock:
            ev = Event(next(self._seq), job, type_, data)
            self._events.append(ev)
            return ev

    def since(self, seq: int) -> list[Event]:
        with self._lock:
            return [e for e in self._events if e.seq > seq]

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._events[-1].seq if self._events else 0


@dataclass
class Result:
    """One finished image: its PNG (with provenance), its plan, and where it was saved."""

    name: str
    png: bytes
    plan: dict[str, Any]
    infotext: str
    job: str
    created: str
    path: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "url": f"/iga/v1/images/{self.name}", "job": self.job, "plan": self.plan,
                "infotext": self.infotext, "created": self.created}


class Gallery:
    """The most recent images, newest first, findable by name."""

    def __init__(self, size: int = GALLERY_SIZE):
        self._items: deque[Result] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, result: Result) -> None:
        with self._lock:
            self._items.appendleft(result)

    def get(self, name: str) -> Result | None:
        with self._lock:
            return next((r for r in self._items if r.name == name), None)

    def items(self) -> list[Result]:
        with self._lock:
            return list(self._items)

    def load(self, folder: Path) -> int:
        """Fill the gallery with the newest iga PNGs of an output folder (a restarted server shows what it made
        before); files without an iga plan, unreadable or hostile ones are skipped. Returns how many were added."""
        from iga.provenance import ProvenanceError, read_provenance
        from iga.provenance.infotext import format_infotext

        try:
            files = sorted((p for p in folder.glob("*.png") if p.is_file()), key=lambda p: p.stat().st_mtime)
        except OSError:
            return 0
        added = 0
        for path in files[-self._items.maxlen:]:
            try:
                if path.stat().st_size > MAX_GALLERY_FILE:
                    continue
                png = path.read_bytes()
                prov = read_provenance(png)
            except (OSError, ProvenanceError):
                continue
            if prov.plan is None:
                continue
            created = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
            self.add(Result(path.name, png, prov.plan, format_infotext(prov.plan), "", created, path))
            added += 1
        return added


@dataclass
class Job:
    """A plan on its way through the queue, and what came of it."""

    entry: "ModelEntry"
    plan: "Plan"
    kind: str = "generate"  # or "replay"
    save: bool = True  # write the images to the output folder (A1111's save_images can say no)
    expect_pixels: str | None = None  # replay: the pixels the regenerated image must equal
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    status: str = "queued"
    step: int = 0
    image: int = 0
    sigma: float | None = None
    preview_png: bytes | None = None
    results: list[Result] = field(default_factory=list)
    error: str | None = None
    identical: bool | None = None
    events: list[Event] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.time)
    started: float | None = None
    watched: bool = False  # someone follows the job's progress: render preview frames for them
    _waiters: list = field(default_factory=list)  # (event loop, asyncio.Event) of requests awaiting the end
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def waiter(self) -> Any:
        """An asyncio.Event of the running loop, set when the job finishes (at once if it has): a waiting request
        wakes the moment its images are ready instead of polling."""
        import asyncio

        ev = asyncio.Event()
        with self._lock:
            if self.finished.is_set():
                ev.set()
            else:
                self._waiters.append((asyncio.get_running_loop(), ev))
        return ev

    def end(self, status: str) -> None:
        """Mark the job finished and wake every waiting request."""
        with self._lock:
            self.status = status
            self.finished.set()
            waiters, self._waiters = self._waiters, []
        for loop, ev in waiters:
            loop.call_soon_threadsafe(ev.set)

    @property
    def total(self) -> int:
        """Steps of the whole job (every pass of every image of the batch)."""
        from iga.generate import steps_run

        return steps_run(self.plan) * len(self.plan.seeds)

    @property
    def progress(self) -> float:
        return 1.0 if self.status == "done" else min(1.0, self.step / max(1, self.total))

    def state(self, position: int | None = None) -> dict[str, Any]:
        preview = f"data:image/png;base64,{base64.b64encode(self.preview_png).decode()}" if self.preview_png else None
        return {"job": self.id, "kind": self.kind, "status": self.status, "position": position, "step": self.step,
                "total": self.total, "sigma": self.sigma, "preview": preview,
                "images": [r.summary() for r in self.results], "error": self.error, "identical": self.identical}


class _Reporter:
    """The sampling callback of a job: progress every step; while someone watches the job (an event stream, a
    progress poll), a preview frame at most every ``interval`` seconds and at each image's first and last step.
    Nobody watching, nothing is decoded: a script that only waits for its images pays nothing for previews."""

    def __init__(self, queue: "JobQueue", job: Job, backend: Any, interval: float):
        from iga.generate import passes_per_image, steps_run

        self.queue, self.job, self.backend, self.interval = queue, job, backend, interval
        self.per_image = steps_run(job.plan)  # of all passes (a hires fix adds a second)
        self.passes = passes_per_image(job.plan)
        self.stream = None
        self.last_preview = 0.0

    def __call__(self, info: Any) -> None:
        job = self.job
        job.step += 1  # one call per step, over every pass of every image
        job.image = (job.step - 1) // self.per_image
        job.sigma = float(info.sigma_next)
        self.queue.emit(job, "step", {"step": job.step, "total": job.total, "sigma": job.sigma, "image": job.image})
        if not job.watched:
            return
        now = time.monotonic()
        if info.i == 0 or info.sigma_next <= 0 or now - self.last_preview >= self.interval:
            self.last_preview = now
            if self.stream is None:
                from iga.diagnostics.preview import PreviewStream

                self.stream = PreviewStream(self.backend, every=1, decoder="auto", total=self.per_image,
                                            passes=self.passes, on_frame=self._frame)
            self.stream(info)

    def _frame(self, frame: Any) -> None:
        png = png_bytes(frame.rgb)
        self.job.preview_png = png
        self.queue.emit(self.job, "preview", {"step": self.job.step, "total": self.job.total, "image": self.job.image,
                                              "src": f"data:image/png;base64,{base64.b64encode(png).decode()}"})


def png_bytes(rgb: Any) -> bytes:
    """A plain PNG of a uint8 H x W x 3 array (previews carry no provenance: they are not results)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class JobQueue:
    """Jobs waiting or running, at most ``capacity``; ``workers`` threads run them in order of arrival."""

    def __init__(self, pool: "ModelPool", *, capacity: int, workers: int, out_dir: Path | None,
                 preview_interval: float, events: EventLog, gallery: Gallery):
        self.pool, self.capacity, self.out_dir = pool, capacity, out_dir
        self.preview_interval = preview_interval
        self.events, self.gallery = events, gallery
        self.jobs: dict[str, Job] = {}  # jobs waiting, running, and the last JOBS_KEPT finished
        self._pending: deque[Job] = deque()
        self._running: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"iga-worker-{k}", daemon=True)
                         for k in range(workers)]
        for t in self._threads:
            t.start()

    # -- submitting and watching --------------------------------------------------------------------------------

    def submit(self, job: Job, on_accept: Any = None) -> int:
        """Queue a job; return its position (0 = next to run). Raises QueueFull. ``on_accept()`` runs once the
        job has a place and before it is queued (an exception there leaves nothing queued)."""
        with self._cond:
            if len(self._pending) + len(self._running) >= self.capacity:
                raise QueueFull(self.capacity, self.retry_after())
            if on_accept is not None:
                on_accept()
            self._pending.append(job)
            self.jobs[job.id] = job
            self._prune()
            position = len(self._pending) - 1
            self._cond.notify()
        self.emit(job, "queued", {"position": position, "model": job.entry.id, "kind": job.kind})
        return position

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the running jobs' expected remaining time, at least 1."""
        per_call = max((e.seconds_per_call or 0.0) for e in self.pool.entries.values()) or 1.0
        return max(1, min(60, round(per_call * 20)))

    def _prune(self) -> None:
        finished = [k for k, j in self.jobs.items() if j.status in FINISHED]
        for k in finished[:max(0, len(finished) - JOBS_KEPT)]:
            del self.jobs[k]

    def position(self, job: Job) -> int | None:
        with self._cond:
            try:
                return self._pending.index(job)
            except ValueError:
                return None

    def active(self) -> int:
        """Jobs waiting or running."""
        with self._cond:
            return len(self._pending) + len(self._running)

    def running(self) -> list[Job]:
        with self._cond:
            return [self.jobs[k] for k in self._running if k in self.jobs]

    def cancel(self, job: Job) -> bool:
        """Stop a job: a queued one never runs, a running one stops after its current step."""
        if job.status in FINISHED:
            return False
        job.cancel.set()
        with self._cond:
            if job in self._pending:
                self._pending.remove(job)
                self._finish(job, "cancelled")
        return True

    def emit(self, job: Job, type_: str, data: dict[str, Any]) -> None:
        """Add an event to the job's stream; lifecycle events also go to the server-wide log (steps and previews
        would flood it, and previews are large)."""
        if type_ in LIFECYCLE:
            self.events.emit(job.id, type_, data)
        job.events.append(Event(len(job.events) + 1, job.id, type_, data))

    def stop(self) -> None:
        """Cancel everything and let the workers end (server shutdown)."""
        with self._cond:
            self._stopping = True
            pending = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for job in pending:
            job.cancel.set()
            self._finish(job, "cancelled")
        for job in self.running():
            job.cancel.set()

    # -- running ------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                self._running.add(job.id)
            status, data = "failed", {"error": "the worker stopped unexpectedly"}
            try:
                status, data = self._run(job)
            finally:
                with self._cond:  # free the slot before anyone learns the job ended: its client may send the next
                    self._running.discard(job.id)
                self._finish(job, status, data)

    def _run(self, job: Job) -> tuple[str, dict[str, Any]]:
        """Run a job; return its final status and the data of its last event."""
        from iga.sampling.base import Cancelled

        if job.cancel.is_set():
            return "cancelled", {}
        try:
            with job.entry.lock:
                job.status, job.started = "running", time.time()
                self.emit(job, "started", {"model": job.entry.id})
                results = self._generate(job)
            self._publish(job, results)
        except Cancelled:
            return "cancelled", {}
        except Exception as e:  # a model that cannot load or sample: the job fails, the server keeps serving
            job.error = f"{type(e).__name__}: {e}" if not isinstance(e, (ValueError, RuntimeError)) else str(e)
            return "failed", {"error": job.error}
        return "done", {"images": [r.summary() for r in job.results], "identical": job.identical}

    def _generate(self, job: Job) -> list[Any]:
        from iga.replay import recorded_threads

        model = self.pool.model(job.entry)
        reporter = _Reporter(self, job, model.backend_for(job.plan), self.preview_interval)
        t0 = time.perf_counter()
        with recorded_threads(job.plan if job.kind == "replay" else None):
            results = model.generate(plan=job.plan, callback=reporter, cancel=job.cancel)
        job.entry.observe(time.perf_counter() - t0, results[0].nfe * len(results))
        return results

    def _publish(self, job: Job, results: list[Any]) -> None:
        from iga.provenance.infotext import format_infotext
        from iga.provenance.save import encode_image, save_image

        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for r in results:
            plan = r.plan.to_dict()
            path = None
            if self.out_dir is not None and job.save:
                path = save_image(r.image, plan, self.out_dir)
                png = path.read_bytes()
            else:
                buf = io.BytesIO()
                encode_image(r.image, plan, "png", buf)
                png = buf.getvalue()
            name = path.name if path is not None else f"{job.id}-{len(job.results)}.png"
            result = Result(name, png, plan, format_infotext(plan), job.id, created, path)
            job.results.append(result)
            self.gallery.add(result)
        if job.expect_pixels is not None:
            job.identical = results[0].plan.pixels_sha256 == job.expect_pixels

    def _finish(self, job: Job, status: str, data: dict[str, Any] | None = None) -> None:
        # a finished job keeps its events for late subscribers, but not its preview frames (each can be ~100 KB)
        job.events[:] = [Event(e.seq, e.job, e.type, {k: v for k, v in e.data.items() if k != "src"})
                         if e.type == "preview" else e for e in job.events]
        self.emit(job, status, data or {})
        job.end(status)
