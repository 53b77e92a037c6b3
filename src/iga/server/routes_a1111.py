"""`/sdapi/v1`: the A1111 endpoints (see ``iga.server.a1111`` for the default-payload policy)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Request as HttpRequest

from iga.server import a1111
from iga.server.service import ApiError, Service

POLL_S = 0.05  # how often an event stream looks for new events
DISCONNECT_CHECK_S = 0.2  # how often a request waiting for its images checks that its client is still there


async def json_object(http: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says where it is broken."""
    import json

    raw = await http.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise ApiError(400, f"the request body is not valid JSON{where}: {getattr(e, 'msg', e)}",
                       kind="malformed JSON") from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply", kind="malformed JSON") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"the request body must be a JSON object, not {type(data).__name__}")
    return data


async def wait_for(job: Any, http: HttpRequest, service: Service) -> None:
    """Wait for a job; if the client goes away first, cancel it (the worker stops at the next step)."""
    done = job.waiter()
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), DISCONNECT_CHECK_S)
        except asyncio.TimeoutError:
            if await http.is_disconnected():
                service.queue.cancel(job)
                return


def router(service: Service) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible"])

    @r.post("/txt2img", summary="text to image (A1111); client defaults stand for the recipe's values")
    async def txt2img(http: HttpRequest):
        payload = await json_object(http)
        t = a1111.translate(payload, http.headers)
        entry = service.entry(t.model)
        plan = service.plan(entry, service.request(**t.fields), service.mode(t.mode))
        job, _ = service.submit(entry, plan, save=t.save)
        await wait_for(job, http, service)
        if job.status == "failed":
            raise ApiError(500, f"generation failed: {job.error}", kind="generation failed")
        images = [base64.b64encode(res.png).decode() for res in job.results]
        return {"images": images, "parameters": payload, "info": a1111.info_json(job, entry, t, plan)}

    @r.post("/img2img", summary="not available yet (iga generates text to image only)")
    async def img2img():
        raise ApiError(501, "img2img is not available in iga yet: it generates text to image only "
                            "(use /sdapi/v1/txt2img)", kind="not implemented")

    @r.get("/samplers")
    def samplers():
        from iga.catalog.samplers import SAMPLERS

        return [{"name": s.a1111_label or s.name, "aliases": [s.name, *s.aliases], "options": {}}
                for s in SAMPLERS.values()]

    @r.get("/schedulers")
    def schedulers():
        from iga.catalog.schedules import SCHEDULES

        auto = {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1,
                "need_inner_model": False}
        return [auto] + [{"name": s.name, "label": s.a1111_label or s.name, "aliases": list(s.aliases) or None,
                          "default_rho": 7.0 if s.name == "karras" else -1, "need_inner_model": False}
                         for s in SCHEDULES.values()]

    @r.get("/sd-models")
    def sd_models():
        return [{"title": e.title, "model_name": e.path.stem, "hash": e.short_hash,
                 "sha256": e.source.identity.weights_sha256, "filename": e.id, "config": None}
                for e in service.pool.entries.values()]

    @r.get("/sd-vae")
    def sd_vae():
        return []  # the checkpoints' own VAEs only: a recipe's VAE by id arrives with the model store

    @r.get("/options")
    def get_options():
        entry = service.pool.entry(None)
        return {"sd_model_checkpoint": entry.title, "sd_checkpoint_hash": entry.source.identity.weights_sha256,
                "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1, "samples_format": "png",
                "iga_mode": service.config.mode}

    @r.post("/options")
    async def set_options(http: HttpRequest):
        body = await json_object(http)
        if "sd_model_checkpoint" in body:
            service.pool.current = service.entry(body["sd_model_checkpoint"]).id
        return None

    @r.get("/progress")
    def progress():
        running = service.queue.running()
        job = running[0] if running else None
        current = base64.b64encode(job.preview_png).decode() if job and job.preview_png else None
        eta = None
        if job and job.started and job.step:
            import time

            elapsed = time.time() - job.started
            eta = max(0.0, elapsed / job.step * (job.total - job.step))
        return {"progress": job.progress if job else 0.0, "eta_relative": eta or 0.0,
                "state": {"skipped": False, "interrupted": bool(job and job.cancel.is_set()),
                          "job": job.id if job else "", "job_count": service.queue.active(),
                          "job_timestamp": "0", "job_no": 0, "sampling_step": job.step if job else 0,
                          "sampling_steps": job.total if job else 0},
                "current_image": current, "textinfo": None if job is None else
                f"step {job.step}/{job.total}, sigma {job.sigma if job.sigma is not None else float('nan'):.3g}"}

    @r.post("/interrupt")
    def interrupt():
        for job in service.queue.running():
            service.queue.cancel(job)
        return {}

    @r.post("/skip")
    def skip():
        return interrupt()

    @r.post("/png-info")
    async def png_info(http: HttpRequest):
        body = await json_object(http)
        return a1111.png_info(a1111.decode_image(body.get("image")))

    @r.get("/scripts")
    def scripts():
        return {"txt2img": [], "img2img": []}

    return r
