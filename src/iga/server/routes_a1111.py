"""`/sdapi/v1`: the A1111 endpoints (see ``iga.server.a1111`` for the default-payload policy)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Request as HttpRequest

from iga.server import a1111
from iga.server.http import Svc, json_object
from iga.server.service import ApiError, Service

DISCONNECT_CHECK_S = 0.2  # how often a request waiting for its images checks that its client is still there


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


router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible"])


@router.post("/txt2img", summary="text to image (A1111); client defaults stand for the recipe's values")
async def txt2img(service: Svc, http: HttpRequest):
    payload = await json_object(http)
    return await _generate(service, http, payload, a1111.translate(payload, http.headers))


@router.post("/img2img", summary="image to image and inpainting (A1111): one init image, an optional mask")
async def img2img(service: Svc, http: HttpRequest):
    payload = await json_object(http)
    return await _generate(service, http, payload, a1111.translate(payload, http.headers, service.uploads))


async def _generate(service: Service, http: HttpRequest, payload: dict[str, Any], t: a1111.Translation):
    """Plan, queue and wait for one translated A1111 request; answer A1111's shape (images, parameters, info)."""
    entry = service.entry(t.model)
    plan = service.plan(entry, service.request(**t.fields), service.mode(t.mode))
    job, _ = service.submit(entry, plan, save=t.save)
    await wait_for(job, http, service)
    if job.status == "failed":
        raise ApiError(500, f"generation failed: {job.error}", kind="generation failed")
    images = [base64.b64encode(res.png).decode() for res in job.results]
    shown = {**payload, **{k: None for k in ("init_images", "mask") if k in payload}}  # as A1111: no images back
    return {"images": images, "parameters": shown, "info": a1111.info_json(job, entry, t, plan)}


@router.get("/samplers")
def samplers():
    from iga.catalog.samplers import SAMPLERS

    return [{"name": s.a1111_label or s.name, "aliases": [s.name, *s.aliases], "options": {}}
            for s in SAMPLERS.values()]


@router.get("/schedulers")
def schedulers():
    from iga.catalog.schedules import SCHEDULES

    auto = {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1,
            "need_inner_model": False}
    return [auto] + [{"name": s.name, "label": s.a1111_label or s.name, "aliases": list(s.aliases) or None,
                      "default_rho": 7.0 if s.name == "karras" else -1, "need_inner_model": False}
                     for s in SCHEDULES.values()]


@router.get("/sd-models")
def sd_models(service: Svc):
    return [{"title": e.title, "model_name": e.path.stem, "hash": e.short_hash,
             "sha256": e.source.identity.weights_sha256, "filename": e.id, "config": None}
            for e in service.pool.entries.values()]


@router.get("/sd-vae")
def sd_vae():
    return []  # the checkpoints' own VAEs only: a recipe's VAE by id arrives with the model store


@router.get("/options")
def get_options(service: Svc):
    entry = service.pool.entry(None)
    return {"sd_model_checkpoint": entry.title, "sd_checkpoint_hash": entry.source.identity.weights_sha256,
            "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1, "samples_format": "png",
            "iga_mode": service.config.mode}


@router.post("/options")
async def set_options(service: Svc, http: HttpRequest):
    body = await json_object(http)
    if "sd_model_checkpoint" in body:
        service.pool.current = service.entry(body["sd_model_checkpoint"]).id
    return None


@router.get("/progress")
def progress(service: Svc):
    running = service.queue.running()
    job = running[0] if running else None
    if job is not None:
        job.watched = True  # a client polls progress: from now on the job renders the live preview
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


@router.post("/interrupt")
def interrupt(service: Svc):
    for job in service.queue.running():
        service.queue.cancel(job)
    return {}


@router.post("/skip")
def skip(service: Svc):
    return interrupt(service)


@router.post("/png-info")
async def png_info(service: Svc, http: HttpRequest):
    body = await json_object(http)
    from iga.server.uploads import decode_base64

    return a1111.png_info(decode_base64(body.get("image"), "image"))


@router.get("/scripts")
def scripts():
    return {"txt2img": [], "img2img": []}
