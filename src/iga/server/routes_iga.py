"""`/iga/v1`: iga's own API — models and recipes, plan (dry run), generate with overrides and reasons (and the
img2img, inpainting and hires-fix fields of a ``Request``; images uploaded as base64, LoRAs by model-store id), jobs
with server-sent events, the gallery, replay, and the audit log's tail."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request as HttpRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from iga.server.http import POLL_S, Svc, json_object
from iga.server.service import ApiError, Service

REQUEST_FIELDS = ("prompt", "negative_prompt", "preset", "sampler", "schedule", "steps", "cfg", "guidance", "shift",
                  "seed", "size", "clip_skip", "eta", "vae", "cfg_variant", "cfg_rescale", "batch", "overrides",
                  "reason", "denoise", "denoise_steps", "mask_blur", "inpaint_area", "inpaint_padding", "hires",
                  "hires_steps", "hires_denoise", "hires_upscaler")
UPLOADED = ("init_image", "mask")  # base64 images, stored by iga.server.uploads: never a path
BODY_KEYS = frozenset(REQUEST_FIELDS) | set(UPLOADED) | {"model", "mode", "loras"}
MAX_AUDIT_TAIL = 500


def _request_from(service: Service, body: dict[str, Any]):
    unknown = sorted(set(body) - BODY_KEYS)
    if unknown:
        raise ApiError(422, f"unknown field(s) {', '.join(unknown)}: a generate body takes "
                            f"{', '.join(sorted(BODY_KEYS))}")
    fields = {k: body[k] for k in REQUEST_FIELDS if body.get(k) is not None}
    if fields.get("seed") == -1:
        del fields["seed"]
    entry = service.entry(body.get("model"))
    mode = service.mode(body.get("mode"))
    fields["loras"] = _loras(body.get("loras"))
    for key in UPLOADED:  # after the model, mode and LoRAs: a request that names none that exists stores nothing
        if body.get(key) is not None:
            fields[key] = service.uploads.save(body[key], key)
    return entry, service.request(**fields), mode


def _loras(given: Any) -> list[Any]:
    """``[{"id": ..., "weight": ...}]``: LoRAs named by their model-store id (or SHA-256), found in the store here;
    a client never names a file."""
    from iga.guard.plan import LoraRequest
    from iga.store import ModelNotFound, StoreConfigError, find

    if given is None:
        return []
    if not isinstance(given, list) or not all(isinstance(x, dict) and set(x) <= {"id", "weight"} for x in given):
        raise ApiError(422, 'loras must be a list of {"id": STORE_ID, "weight": NUMBER} (`iga models` lists ids)')
    out = []
    for k, lora in enumerate(given):
        ident, weight = lora.get("id"), lora.get("weight", 1.0)
        if not isinstance(ident, str) or not ident or any(c in ident for c in "/\\") or ident.startswith((".", "~")):
            raise ApiError(422, f"loras[{k}].id must be a model-store id or SHA-256, not a path (got {ident!r})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ApiError(422, f"loras[{k}].weight must be a number, got {weight!r}")
        try:
            out.append(LoraRequest(path=find(ident, kind="lora").path, weight=weight))
        except (ModelNotFound, StoreConfigError) as e:
            raise ApiError(404 if isinstance(e, ModelNotFound) else 422, f"loras[{k}]: {e}",
                           kind="model not found") from None
    return out


def _sse(event: Any, *, with_job: bool = False) -> str:
    """One server-sent event; the server-wide stream also names the job each event belongs to."""
    data = {"job": event.job, **event.data} if with_job else event.data
    return f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(data, allow_nan=False)}\n\n"


router = APIRouter(prefix="/iga/v1", tags=["iga"])


@router.get("/models", summary="the models of this server with their recipe summaries")
def models(service: Svc):
    return {"current": service.pool.current,
            "models": [service.summary(e) for e in service.pool.entries.values()]}


@router.get("/models/{model_id}", summary="one model: its recipe summary and the guard's verdict on every "
                                     "sampler and schedule")
def model(service: Svc, model_id: str):
    from iga.server.recipes import knob_status

    entry = service.entry(model_id)
    return {**service.summary(entry), **knob_status(entry)}


@router.get("/models/{model_id}/recipe", summary="the model's full recipe")
def recipe(service: Svc, model_id: str):
    entry = service.entry(model_id)
    if entry.source.recipe is None:
        raise ApiError(404, f"{entry.id} has no recipe", kind="no recipe")
    return entry.source.recipe.model_dump(mode="json", exclude_none=True)


@router.post("/plan", summary="dry run: the plan the guard would make, with every finding (nothing is generated)")
async def plan(service: Svc, http: HttpRequest):
    entry, req, mode = _request_from(service, await json_object(http))
    p = service.plan(entry, req, mode)
    return {"ok": True, "plan": p.to_dict(), "findings": [f.model_dump(mode="json") for f in p.findings],
            "nfe": p.nfe}


@router.post("/generate", status_code=202, summary="queue a generation; watch it at /jobs/{job}/events")
async def generate(service: Svc, http: HttpRequest):
    entry, req, mode = _request_from(service, await json_object(http))
    p = service.plan(entry, req, mode)
    job, position = service.submit(entry, p)
    return {"job": job.id, "position": position, "plan": p.to_dict()}


@router.get("/jobs/{job_id}")
def job(service: Svc, job_id: str):
    j = _job(service, job_id)
    j.watched = True
    return j.state(service.queue.position(j))


@router.post("/jobs/{job_id}/cancel")
def cancel(service: Svc, job_id: str):
    return {"cancelled": service.queue.cancel(_job(service, job_id))}


@router.get("/jobs/{job_id}/events", summary="server-sent events of one job: queued, started, step, preview, "
                                        "done, failed, cancelled")
async def job_events(service: Svc, job_id: str, http: HttpRequest):
    j = _job(service, job_id)
    j.watched = True

    async def stream():
        sent = 0
        while True:
            events = j.events[sent:]
            for ev in events:
                yield _sse(ev)
            sent += len(events)
            if j.finished.is_set() and sent == len(j.events):
                return
            if await http.is_disconnected():
                return  # the watcher left; the job goes on
            await asyncio.sleep(POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/events", summary="server-sent lifecycle events of every job (queued, started, done, failed, "
                            "cancelled) and every refusal, from now on")
async def events(service: Svc, http: HttpRequest):
    async def stream():
        seen = service.events.last_seq
        yield ": subscribed\n\n"  # a comment line: the client knows it will see everything from here on
        while not await http.is_disconnected():
            for ev in service.events.since(seen):
                seen = ev.seq
                yield _sse(ev, with_job=True)
            await asyncio.sleep(POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/gallery")
def gallery(service: Svc):
    return {"images": [res.summary() for res in service.gallery.items()]}


@router.get("/images/{name}", response_class=Response)
def image(service: Svc, name: str):
    res = service.gallery.get(name)
    if res is None:
        raise ApiError(404, f"no image named {name!r} in the gallery", kind="image not found")
    return Response(res.png, media_type="image/png",
                    headers={"Content-Disposition": f'inline; filename="{res.name}"'})


@router.get("/images/{name}/show", summary="the image's provenance, as `iga show --json` prints it")
def show(service: Svc, name: str):
    from iga.provenance import read_provenance

    res = service.gallery.get(name)
    if res is None:
        raise ApiError(404, f"no image named {name!r} in the gallery", kind="image not found")
    return read_provenance(res.png).to_dict()


@router.post("/replay", status_code=202, summary="regenerate a gallery image from its stored plan")
async def replay(service: Svc, http: HttpRequest):
    body = await json_object(http)
    job, position = service.replay(str(body.get("image") or ""))
    return {"job": job.id, "position": position, "plan": job.plan.to_dict()}


@router.get("/audit", summary="the audit log's last records (accepted deviations, newest last)")
def audit(service: Svc, tail: int = 50):
    from iga.guard.audit import default_audit_path, tail_records

    if not 1 <= tail <= MAX_AUDIT_TAIL:
        raise ApiError(422, f"tail {tail}: ask for 1 to {MAX_AUDIT_TAIL} records")
    path = service.config.audit_log or default_audit_path()
    try:
        records = tail_records(tail, path)
    except ValueError as e:
        return JSONResponse({"path": str(path), "records": [], "error": str(e)})
    return {"path": str(path), "records": records}


def _job(service: Service, job_id: str):
    j = service.queue.jobs.get(job_id)
    if j is None:
        raise ApiError(404, f"no job {job_id!r} (finished jobs are kept for a while, then forgotten)",
                       kind="job not found")
    return j
