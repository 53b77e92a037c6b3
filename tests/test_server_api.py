"""iga's own API (/iga/v1): the same Request -> Plan path as the CLI, jobs with events, gallery, replay, audit,
and the queue's limits."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from iga.guard import Request  # noqa: E402
from iga.server import ServerConfig, create_app  # noqa: E402

PROMPT = "a red circle on a blue background"
DEMO = "iga-demo-v1.safetensors"


@pytest.fixture(scope="module")
def client(module_audit, tmp_path_factory):
    config = ServerConfig(out_dir=tmp_path_factory.mktemp("out"), audit_log=module_audit)
    with TestClient(create_app(config)) as c:
        yield c


def wait(client, job: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/iga/v1/jobs/{job}").json()
        if state["status"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not finish")


def events_of(client, job: str) -> list[tuple[str, dict]]:
    out, kind = [], None
    with client.stream("GET", f"/iga/v1/jobs/{job}/events") as s:
        for line in s.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def test_plan_endpoint_is_the_cli_plan():
    import iga

    with TestClient(create_app(ServerConfig(out_dir=None))) as c:
        body = {"prompt": PROMPT, "preset": "Fast", "seed": 4}
        served = c.post("/iga/v1/plan", json=body).json()["plan"]
    local = iga.load().plan(request=Request(**body)).to_dict()
    for key in ("created",):
        served.pop(key), local.pop(key)
    served["findings"] = [f for f in served["findings"] if f["field"] != "recipe"]
    local["findings"] = [f for f in local["findings"] if f["field"] != "recipe"]
    assert served == local


def test_models_list_recipe_summaries_with_presets_and_model_calls(client):
    models = client.get("/iga/v1/models").json()
    assert models["current"] == DEMO
    demo = next(m for m in models["models"] if m["id"] == DEMO)
    presets = {p["name"]: p for p in demo["recipe"]["presets"]}
    assert presets["Fast"]["steps"] == 15 and presets["Fast"]["nfe"] == 15 and presets["Quality"]["nfe"] == 30
    assert demo["recipe"]["steps"] == {"default": 20, "min": 15, "max": 40}
    assert client.get(f"/iga/v1/models/{DEMO}/recipe").json()["model_id"] == "iga-demo-v1"


def test_model_detail_gives_the_guards_verdict_on_every_sampler(client):
    detail = client.get(f"/iga/v1/models/{DEMO}").json()
    status = {s["name"]: s for s in detail["samplers"]}
    assert status["dpmpp_2m"]["status"] == "recipe"
    assert status["lcm"]["status"] == "forbidden" and "forbidden by this model's recipe" in status["lcm"]["reason"]
    assert status["euler"]["status"] == "override"
    assert {s["name"]: s["status"] for s in detail["schedules"]}["turbo"] == "forbidden"


def test_generate_streams_queued_started_steps_previews_and_done(client):
    r = client.post("/iga/v1/generate", json={"prompt": PROMPT, "preset": "Fast", "seed": 3})
    assert r.status_code == 202
    job = r.json()["job"]
    events = events_of(client, job)
    kinds = [k for k, _ in events]
    assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "done"
    steps = [d for k, d in events if k == "step"]
    assert [d["step"] for d in steps] == list(range(1, 16)) and steps[-1]["total"] == 15
    previews = [d for k, d in events if k == "preview"]
    assert previews and previews[0]["src"].startswith("data:image/png;base64,")
    done = events[-1][1]
    assert done["images"][0]["plan"]["seed"] == 3


def test_refusal_is_422_with_findings_and_an_override_is_audited(client, module_audit):
    from iga.guard.audit import read_records

    r = client.post("/iga/v1/generate", json={"prompt": PROMPT, "steps": 60})
    body = r.json()
    assert r.status_code == 422 and body["refused"] and body["overridable"]
    assert any(f["field"] == "steps" and f["outcome"] == "refused" for f in body["findings"])
    r = client.post("/iga/v1/generate", json={"prompt": PROMPT, "steps": 60, "overrides": ["steps"],
                                              "reason": "api override test"})
    assert r.status_code == 202
    assert wait(client, r.json()["job"])["status"] == "done"
    tail = client.get("/iga/v1/audit?tail=5").json()["records"]
    assert tail[-1]["reason"] == "api override test" and tail[-1]["requested_value"] == 60
    assert any(rec["reason"] == "api override test" for rec in read_records(module_audit))


def test_gallery_download_show_and_replay_identical(client):
    r = client.post("/iga/v1/generate", json={"prompt": PROMPT, "seed": 21})
    state = wait(client, r.json()["job"])
    name = state["images"][0]["name"]
    assert client.get("/iga/v1/gallery").json()["images"][0]["name"] == name
    png = client.get(f"/iga/v1/images/{name}")
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    shown = client.get(f"/iga/v1/images/{name}/show").json()
    assert shown["source"] == "iga" and shown["seed"] == 21
    replay = client.post("/iga/v1/replay", json={"image": name})
    assert replay.status_code == 202
    assert wait(client, replay.json()["job"])["identical"] is True


def test_cancel_stops_a_running_job_at_the_next_step(client):
    r = client.post("/iga/v1/generate", json={"prompt": PROMPT, "batch": 16, "steps": 40, "overrides": [],
                                              "seed": 1})
    job = r.json()["job"]
    deadline = time.monotonic() + 30
    while client.get(f"/iga/v1/jobs/{job}").json()["step"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.post(f"/iga/v1/jobs/{job}/cancel").json() == {"cancelled": True}
    state = wait(client, job, timeout=5)
    assert state["status"] == "cancelled" and state["images"] == [] and state["step"] < state["total"]


def test_full_queue_answers_503_with_retry_after(tmp_path):
    config = ServerConfig(out_dir=None, queue_size=1, audit_log=tmp_path / "audit.jsonl")
    with TestClient(create_app(config)) as c:
        first = c.post("/iga/v1/generate", json={"prompt": PROMPT, "batch": 16, "steps": 40})
        assert first.status_code == 202
        second = c.post("/iga/v1/generate", json={"prompt": PROMPT})
        assert second.status_code == 503 and int(second.headers["Retry-After"]) >= 1
        assert "queue is full" in second.json()["detail"]
        c.post(f"/iga/v1/jobs/{first.json()['job']}/cancel")


def test_unknown_body_fields_and_bad_modes_are_named(client):
    r = client.post("/iga/v1/plan", json={"prompt": PROMPT, "stepz": 20})
    assert r.status_code == 422 and "stepz" in r.json()["detail"]
    r = client.post("/iga/v1/plan", json={"prompt": PROMPT, "mode": "yolo"})
    assert r.status_code == 422 and "strict, guarded or permissive" in r.json()["detail"]
    r = client.get("/iga/v1/jobs/nope")
    assert r.status_code == 404


def test_page_and_openapi_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert "src=\"http" not in docs.text and "href=\"http" not in docs.text  # nothing from elsewhere
    spec = client.get("/openapi.json").json()
    assert "/sdapi/v1/txt2img" in spec["paths"] and "/iga/v1/generate" in spec["paths"]


def test_server_wide_events_carry_refusals_and_job_lifecycle(tmp_path):
    import threading

    import requests

    from server_support import running_server

    lines: list[str] = []
    subscribed = threading.Event()
    with running_server(ServerConfig(out_dir=None, audit_log=tmp_path / "audit.jsonl")) as url:
        def listen():
            with requests.get(f"{url}/iga/v1/events", stream=True, timeout=60) as r:
                for line in r.iter_lines(decode_unicode=True):
                    subscribed.set()
                    lines.append(line)
                    if line == "event: done":
                        return

        t = threading.Thread(target=listen)
        t.start()
        assert subscribed.wait(30)
        assert requests.post(f"{url}/iga/v1/generate", json={"prompt": PROMPT, "steps": 60}).status_code == 422
        assert requests.post(f"{url}/iga/v1/generate", json={"prompt": PROMPT}).status_code == 202
        t.join(60)
    kinds = [line[7:] for line in lines if line.startswith("event: ")]
    assert kinds == ["refused", "queued", "started", "done"]
    refused = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    assert refused["findings"][0]["field"] == "steps"


def test_a_restarted_server_shows_and_replays_what_it_made(tmp_path):
    out = tmp_path / "out"
    config = ServerConfig(out_dir=out, audit_log=tmp_path / "audit.jsonl")
    with TestClient(create_app(config)) as c:
        name = wait(c, c.post("/iga/v1/generate", json={"prompt": PROMPT, "seed": 8}).json()["job"])["images"][0]["name"]
    (out / "not-an-iga-image.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with TestClient(create_app(config)) as c:
        names = [i["name"] for i in c.get("/iga/v1/gallery").json()["images"]]
        assert names == [name]
        assert wait(c, c.post("/iga/v1/replay", json={"image": name}).json()["job"])["identical"] is True


def test_a_finished_job_frees_its_queue_slot_before_its_client_hears_of_it(tmp_path):
    config = ServerConfig(out_dir=None, queue_size=1, audit_log=tmp_path / "audit.jsonl")
    with TestClient(create_app(config)) as c:  # one client, one request after another: never "queue full"
        codes = [c.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "seed": k}).status_code for k in range(20)]
    assert codes == [200] * 20


def test_previews_are_rendered_only_for_watched_jobs(client):
    job = client.post("/iga/v1/generate", json={"prompt": PROMPT, "preset": "Fast", "seed": 1}).json()["job"]
    quiet = client.app.state.service.queue.jobs[job]
    quiet.finished.wait(60)
    assert not any(e.type == "preview" for e in quiet.events) and quiet.preview_png is None
    long_job = {"prompt": PROMPT, "seed": 2, "steps": 40, "batch": 4}  # seconds: time enough to subscribe
    watched = events_of(client, client.post("/iga/v1/generate", json=long_job).json()["job"])
    assert any(kind == "preview" for kind, _ in watched)


def test_forges_distilled_cfg_scale_maps_to_distilled_guidance(client):
    default = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "seed": 1, "distilled_cfg_scale": 3.5})
    assert default.status_code == 200  # Forge's default stands for "not set", like A1111's CFG 7
    r = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "distilled_cfg_scale": 5.0})
    assert r.status_code == 422 and "no distilled-guidance input" in r.json()["detail"]


# --- img2img, inpainting, hires fix and LoRAs over iga's API -------------------------------------------------------


def _png(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_uploaded_init_image_and_mask_give_the_plan_the_cli_makes_from_the_same_files(tmp_path):
    import base64
    import hashlib

    import iga
    from PIL import Image

    init, mask = Image.new("RGB", (32, 32), (200, 40, 30)), Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    (tmp_path / "init.png").write_bytes(_png(init))
    (tmp_path / "mask.png").write_bytes(_png(mask))
    fields = {"prompt": PROMPT, "seed": 4, "denoise": 0.6, "denoise_steps": "comfyui", "mask_blur": 2,
              "inpaint_area": "only_masked", "inpaint_padding": 8}
    with TestClient(create_app(ServerConfig(out_dir=tmp_path / "out"))) as c:
        body = {**fields, "init_image": base64.b64encode(_png(init)).decode(),
                "mask": "data:image/png;base64," + base64.b64encode(_png(mask)).decode()}
        served = c.post("/iga/v1/plan", json=body).json()["plan"]
    local = iga.load().plan(request=Request(**fields, init_image=str(tmp_path / "init.png"),
                                            mask=str(tmp_path / "mask.png"))).to_dict()
    for plan in (served, local):
        plan.pop("created")
        plan["findings"] = [f for f in plan["findings"] if f["field"] != "recipe"]
    assert served == local and served["img2img"]["mask"]["sha256"] == hashlib.sha256(_png(mask)).hexdigest()
    stored = sorted(p.name for p in (tmp_path / "out" / "inputs").iterdir())
    assert stored == sorted(f"{hashlib.sha256(_png(im)).hexdigest()}.png" for im in (init, mask))


def test_a_path_as_init_image_or_mask_is_refused_naming_the_field(client):
    for key, value in (("init_image", "/etc/passwd"), ("init_image", "~/photo.png"), ("mask", "C:\\mask.png")):
        r = client.post("/iga/v1/plan", json={"prompt": PROMPT, key: value})
        assert r.status_code == 422 and r.json()["detail"].startswith(key), r.text
        assert "never opens a path" in r.json()["detail"]


def test_hires_fields_go_by_their_request_names_with_a1111_upscaler_labels(client):
    r = client.post("/iga/v1/plan", json={"prompt": PROMPT, "hires": 2, "hires_steps": 10, "hires_denoise": 0.5,
                                          "hires_upscaler": "Latent (bicubic)"})
    hires = r.json()["plan"]["hires"]
    assert (hires["width"], hires["upscaler"], hires["steps"], hires["denoise"]) == (64, "latent-bicubic", 10, 0.5)
    r = client.post("/iga/v1/plan", json={"prompt": PROMPT, "hires": 2, "hires_upscaler": "4x-UltraSharp"})
    assert r.status_code == 422 and "unknown hires upscaler '4x-UltraSharp'" in r.json()["detail"]


def test_a_hires_job_reports_the_steps_of_both_passes(client):
    r = client.post("/iga/v1/generate", json={"prompt": PROMPT, "seed": 2, "batch": 2, "hires": 2, "hires_steps": 8,
                                              "hires_denoise": 0.5})
    state = wait(client, r.json()["job"])
    assert state["status"] == "done" and state["total"] == 2 * (20 + 8) and state["step"] == state["total"]


def test_loras_over_http_are_named_by_store_id_never_by_path(tmp_path, monkeypatch):
    from iga.checkpoint import embed_recipe
    from iga.models import testing
    from test_generate_support import TINY_RECIPE

    tiny = testing.build_tiny("sd1", seed=3)
    models = tmp_path / "models"
    embed_recipe(testing.save_single_file(tiny, models / "tiny.safetensors"), TINY_RECIPE)
    testing.build_tiny_lora(tiny, tmp_path / "store" / "inkwash.safetensors", metadata={
        "ss_base_model_version": "sd_v1", "modelspec.prediction_type": "epsilon"})
    monkeypatch.setenv("IGA_MODELS", str(tmp_path / "store"))
    with TestClient(create_app(ServerConfig(models_dir=models, out_dir=None))) as c:
        r = c.post("/iga/v1/plan", json={"prompt": PROMPT, "loras": [{"id": "inkwash", "weight": 0.5}]})
        assert r.status_code == 200, r.text
        assert [(u["name"], u["weight"]) for u in r.json()["plan"]["loras"]] == [("inkwash", 0.5)]
        r = c.post("/iga/v1/plan", json={"prompt": PROMPT, "loras": [{"id": str(tmp_path / "store" / "inkwash")}]})
        assert r.status_code == 422 and "not a path" in r.json()["detail"]
        r = c.post("/iga/v1/plan", json={"prompt": PROMPT, "loras": [{"path": "inkwash.safetensors"}]})
        assert r.status_code == 422 and '"id"' in r.json()["detail"]
        r = c.post("/iga/v1/plan", json={"prompt": PROMPT, "loras": [{"id": "inkwsh"}]})
        assert r.status_code == 404 and "inkwash" in r.json()["detail"]  # close ids named


def test_an_uploaded_init_image_is_found_for_replay_even_when_the_used_files_index_forgot_it(client, tmp_path,
                                                                                             monkeypatch):
    import base64

    from PIL import Image

    init = base64.b64encode(_png(Image.new("RGB", (32, 32), (10, 200, 90)))).decode()
    r = client.post("/iga/v1/generate", json={"prompt": PROMPT, "seed": 5, "init_image": init, "denoise": 0.7})
    name = wait(client, r.json()["job"])["images"][0]["name"]
    monkeypatch.setenv("IGA_MODEL_INDEX", str(tmp_path / "fresh-index.json"))  # nothing known any more
    replay = client.post("/iga/v1/replay", json={"image": name})
    assert replay.status_code == 202, replay.text
    assert wait(client, replay.json()["job"])["identical"] is True
