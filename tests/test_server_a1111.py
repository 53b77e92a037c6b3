"""`iga serve` speaks A1111's API well enough for the real `webuiapi` client, with the guard on every request."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
import requests

webuiapi = pytest.importorskip("webuiapi")

from iga.guard.audit import read_records  # noqa: E402
from iga.server import ServerConfig  # noqa: E402

from server_support import ALT_ID, models_folder, running_server  # noqa: E402

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_audit):
    root = tmp_path_factory.mktemp("serve")
    config = ServerConfig(models_dir=models_folder(root), out_dir=root / "out", audit_log=module_audit)
    with running_server(config) as url:
        yield url, config


@pytest.fixture()
def api(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    client = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    client.util_set_model("iga-demo-v1")  # every test starts on the bundled model
    return client


def test_default_webuiapi_payload_gets_the_recipe_image(api):
    result = api.txt2img(prompt=PROMPT, seed=5)
    assert result.image.size == (32, 32)  # the recipe's size, not the client's 512x512
    plan = result.info["iga"]["plans"][0]
    assert (plan["sampler"], plan["schedule"], plan["steps"], plan["cfg"]) == ("dpmpp_2m", "karras", 20, 3.0)
    assert result.info["all_seeds"] == [5]
    replaced = result.info["iga"]["client_defaults_replaced"]
    assert replaced["sampler"] == "Euler a" and replaced["cfg_scale"] == 7.0 and replaced["width"] == 512
    assert "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 3, Seed: 5, Size: 32x32" in \
        result.info["infotexts"][0]


def test_response_image_carries_full_provenance(api):
    from iga.provenance import read_provenance

    result = api.txt2img(prompt=PROMPT, seed=9)
    raw = base64.b64decode(result.json["images"][0])
    prov = read_provenance(raw)
    assert prov.source == "iga" and prov.plan["seed"] == 9 and prov.plan["sampler"] == "dpmpp_2m"


def test_a1111_combined_label_maps_through_the_name_table(api):
    result = api.txt2img(prompt=PROMPT, seed=1, sampler_name="DPM++ 2M Karras")
    plan = result.info["iga"]["plans"][0]
    assert (plan["sampler"], plan["schedule"]) == ("dpmpp_2m", "karras")
    assert result.info["sampler_name"] == "DPM++ 2M" and result.info["scheduler"] == "Karras"


def test_deliberate_label_deviation_is_refused_until_named_as_override(api, server):
    _, config = server
    with pytest.raises(RuntimeError) as refused:
        api.txt2img(prompt=PROMPT, seed=1, sampler_name="Heun", scheduler="Exponential")
    status, body = refused.value.args
    assert status == 422 and "heun" in json.loads(body)["detail"]
    result = api.txt2img(prompt=PROMPT, seed=1, sampler_name="Heun", scheduler="Exponential",
                         override_settings={"iga_overrides": ["sampler", "schedule"], "iga_reason": "compare heun"})
    plan = result.info["iga"]["plans"][0]
    assert (plan["sampler"], plan["schedule"]) == ("heun", "exponential")
    records = [r for r in read_records(config.audit_log) if r.get("reason") == "compare heun"]
    assert {r["field"] for r in records} == {"sampler", "schedule"} and records[0]["action"] == "generate"


def test_forbidden_sampler_is_refused_with_the_reason_even_as_override(api):
    for settings in ({}, {"iga_overrides": ["sampler"], "iga_reason": "try it"}):
        with pytest.raises(RuntimeError) as refused:
            api.txt2img(prompt=PROMPT, sampler_name="LCM", override_settings=settings)
        status, body = refused.value.args
        detail = json.loads(body)
        assert status == 422 and detail["refused"] is True and detail["overridable"] is False
        assert "lcm is forbidden by this model's recipe" in detail["detail"]


def test_soft_deviation_outside_the_range_needs_an_override(api, server):
    url, config = server
    with pytest.raises(RuntimeError) as refused:
        api.txt2img(prompt=PROMPT, steps=60)
    assert json.loads(refused.value.args[1])["overridable"] is True
    r = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": PROMPT, "steps": 16, "cfg_scale": 4.5},
                      headers={"X-IGA-Override": "cfg", "X-IGA-Reason": "a little more guidance"})
    assert r.status_code == 200, r.text
    plan = json.loads(r.json()["info"])["iga"]["plans"][0]
    assert plan["steps"] == 16 and plan["cfg"] == 4.5  # 16 is in range: deliberate, taken as asked
    assert any(r["reason"] == "a little more guidance" and r["field"] == "cfg" for r in read_records(config.audit_log))


def test_literal_mode_takes_client_defaults_as_deliberate(api):
    with pytest.raises(RuntimeError) as refused:
        api.txt2img(prompt=PROMPT, override_settings={"iga_literal": True})
    detail = json.loads(refused.value.args[1])["detail"]
    assert "cfg" in detail and "euler_ancestral" in detail  # CFG 7 and Euler a, as the client sent them


def test_options_switch_the_model_and_its_recipe(api):
    titles = api.util_get_model_names()
    alt = next(t for t in titles if t.startswith(ALT_ID))
    api.set_options({"sd_model_checkpoint": alt})
    assert api.util_get_current_model() == alt
    plan = api.txt2img(prompt=PROMPT, seed=2).info["iga"]["plans"][0]
    assert (plan["steps"], plan["cfg"]) == (25, 2.5)  # the other recipe's defaults
    api.set_options({"sd_model_checkpoint": "iga-demo-v1.safetensors"})
    plan = api.txt2img(prompt=PROMPT, seed=2).info["iga"]["plans"][0]
    assert (plan["steps"], plan["cfg"]) == (20, 3.0)


def test_per_request_model_in_override_settings(api):
    result = api.txt2img(prompt=PROMPT, seed=3, override_settings={"sd_model_checkpoint": "iga-demo-alt"})
    assert result.info["iga"]["plans"][0]["steps"] == 25
    assert api.util_get_current_model().startswith("iga-demo-v1")  # a per-request model does not switch


def test_listing_endpoints_have_the_fields_clients_read(api):
    samplers = api.util_get_sampler_names()
    assert "DPM++ 2M" in samplers and "Euler a" in samplers
    schedulers = api.util_get_scheduler_names()
    assert "automatic" in schedulers and "karras" in schedulers
    models = api.get_sd_models()
    assert all({"title", "model_name", "hash", "sha256", "filename"} <= set(m) for m in models)
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.get_sd_vae() == []


def test_png_info_reads_an_iga_image(api):
    result = api.txt2img(prompt=PROMPT, seed=11)
    info = api.png_info(result.image)  # webuiapi re-encodes the PIL image: send the raw PNG too
    raw = requests.post(f"{api.baseurl}/png-info",
                        json={"image": "data:image/png;base64," + result.json["images"][0]}).json()
    assert raw["parameters"]["Seed"] == "11" and raw["parameters"]["Sampler"] == "DPM++ 2M"
    assert raw["parameters"]["Prompt"] == PROMPT and "iga_metadata" in raw["items"]
    assert info.json is not None  # webuiapi's own call succeeds


def test_png_info_reads_an_a1111_image(api):
    from PIL import Image, PngImagePlugin

    text = ("a castle on a hill\nNegative prompt: blurry\nSteps: 28, Sampler: DPM++ 2M, Schedule type: Karras, "
            "CFG scale: 6.5, Seed: 1234, Size: 512x768, Model hash: 31e35c80fc, Model: sd_xl_base_1.0")
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", text)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=meta)
    r = requests.post(f"{api.baseurl}/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()}).json()
    assert r["info"] == text
    p = r["parameters"]
    assert (p["Prompt"], p["Negative prompt"], p["Steps"], p["CFG scale"]) == ("a castle on a hill", "blurry", "28",
                                                                            "6.5")
    assert (p["Size-1"], p["Size-2"]) == ("512", "768")


def test_progress_shows_a_live_preview_and_interrupt_stops_the_job(api):
    out: dict = {}

    def long_job():  # 16 images x 40 steps: several seconds on the demo model
        out["result"] = api.txt2img(prompt=PROMPT, seed=1, steps=40, batch_size=16)

    t = threading.Thread(target=long_job)
    t.start()
    deadline = time.monotonic() + 60
    progress = api.get_progress()
    while time.monotonic() < deadline and not (progress["progress"] > 0 and progress["current_image"]):
        time.sleep(0.05)
        progress = api.get_progress()
    assert 0 < progress["progress"] < 1 and progress["state"]["job_count"] >= 1
    from PIL import Image

    assert Image.open(io.BytesIO(base64.b64decode(progress["current_image"]))).size == (32, 32)
    api.interrupt()
    t.join(timeout=30)
    assert not t.is_alive()
    result = out["result"]
    assert result.images == [] and result.info["iga"]["interrupted"] is True
    assert api.get_progress()["state"]["job_count"] == 0


def test_client_disconnect_cancels_the_job(api):
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"{api.baseurl}/txt2img", json={"prompt": PROMPT, "steps": 40, "batch_size": 16},
                      timeout=1.0)
    deadline = time.monotonic() + 5  # the whole job takes several seconds; a cancelled one ends at the next step
    while time.monotonic() < deadline and api.get_progress()["state"]["job_count"]:
        time.sleep(0.05)
    assert api.get_progress()["state"]["job_count"] == 0


# --- img2img, inpainting and hires fix ---------------------------------------------------------------------------


def _init_and_mask():
    from PIL import Image

    init = Image.new("RGB", (32, 32), (200, 40, 30))
    init.paste((20, 60, 210), (0, 16, 32, 32))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (12, 12, 20, 20))  # white = repaint
    return init, mask


def _pixels(image):
    import numpy as np

    return np.asarray(image.convert("RGB")).astype(int)


def test_img2img_through_webuiapi_starts_from_the_uploaded_image_by_a1111s_step_rule(api):
    import hashlib

    init, _ = _init_and_mask()
    result = api.img2img(images=[init], prompt=PROMPT, seed=4, denoising_strength=0.5)
    assert result.image.size == (32, 32)  # the init image's size: 512x512 is the client's default
    plan = result.info["iga"]["plans"][0]
    sent = base64.b64decode(webuiapi.raw_b64_img(init))
    assert plan["img2img"]["init_image"]["sha256"] == hashlib.sha256(sent).hexdigest()  # stored as sent
    assert plan["img2img"]["denoise_steps"] == "a1111" and len(plan["sigmas"]) - 1 == int(0.5 * 20) + 1
    assert result.info["denoising_strength"] == 0.5 and result.parameters["init_images"] is None
    assert "Denoising strength: 0.5" in result.info["infotexts"][0]
    plain = api.txt2img(prompt=PROMPT, seed=4).image
    assert (_pixels(result.image) != _pixels(plain)).any()


def test_inpainting_repaints_only_the_mask_and_invert_repaints_the_rest(api):
    init, mask = _init_and_mask()
    kw = dict(images=[init], mask_image=mask, prompt=PROMPT, seed=6, denoising_strength=0.9, inpainting_fill=1,
              inpaint_full_res=True, inpaint_full_res_padding=4, mask_blur=1)
    inside = api.img2img(**kw)
    before, after = _pixels(init), _pixels(inside.image)
    assert (after[:8] == before[:8]).all() and (after[12:20, 12:20] != before[12:20, 12:20]).any()
    text = inside.info["infotexts"][0]
    assert "Mask blur: 1" in text and "Inpaint area: Only masked" in text and "Masked area padding: 4" in text
    outside = _pixels(api.img2img(**kw, inpainting_mask_invert=1).image)
    assert (outside[14:18, 14:18] == before[14:18, 14:18]).all() and (outside[:4] != before[:4]).any()


def test_inpainting_fill_default_stands_for_original_and_latent_noise_is_refused_with_the_reason(api):
    init, mask = _init_and_mask()
    result = api.img2img(images=[init], mask_image=mask, prompt=PROMPT, seed=1)  # webuiapi sends fill 0
    assert result.info["iga"]["client_defaults_replaced"]["inpainting_fill"] == 0
    with pytest.raises(RuntimeError) as refused:
        api.img2img(images=[init], mask_image=mask, prompt=PROMPT, inpainting_fill=2)
    status, body = refused.value.args
    assert status == 422 and "latent noise" in json.loads(body)["detail"] and "send 1" in json.loads(body)["detail"]
    with pytest.raises(RuntimeError) as refused:
        api.img2img(images=[init], prompt=PROMPT, resize_mode=1)
    assert "resize_mode 1 (crop and resize)" in json.loads(refused.value.args[1])["detail"]


def test_hires_fix_through_webuiapi_runs_a_second_pass_at_twice_the_size(api):
    result = api.txt2img(prompt=PROMPT, seed=7, enable_hr=True, hr_scale=2, hr_upscaler="Latent",
                         hr_second_pass_steps=10, denoising_strength=0.5)
    assert result.image.size == (64, 64)
    hires = result.info["iga"]["plans"][0]["hires"]
    assert (hires["steps"], hires["denoise"], hires["upscaler"], len(hires["sigmas"]) - 1) == (10, 0.5, "latent", 10)
    assert "Denoising strength: 0.5, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent" in \
        result.info["infotexts"][0]
    assert result.info["extra_generation_params"]["Hires upscale"] == 2


def test_hires_fix_with_its_own_size_or_sampler_is_refused_naming_the_field(api):
    for extra in ({"hr_resize_x": 1024}, {"hr_sampler_name": "Heun"}, {"hr_prompt": "another prompt"}):
        with pytest.raises(RuntimeError) as refused:
            api.txt2img(prompt=PROMPT, enable_hr=True, **extra)
        status, body = refused.value.args
        assert status == 422 and next(iter(extra)) in json.loads(body)["detail"]


def test_an_img2img_image_the_server_made_replays_identically(api, server):
    url, _ = server
    init, mask = _init_and_mask()
    api.img2img(images=[init], mask_image=mask, prompt=PROMPT, seed=12, denoising_strength=0.6, inpainting_fill=1)
    newest = requests.get(f"{url}/iga/v1/gallery").json()["images"][0]
    assert newest["plan"]["img2img"]["mask"] is not None
    job = requests.post(f"{url}/iga/v1/replay", json={"image": newest["name"]}).json()["job"]
    deadline = time.monotonic() + 60
    state = requests.get(f"{url}/iga/v1/jobs/{job}").json()
    while state["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        state = requests.get(f"{url}/iga/v1/jobs/{job}").json()
    assert state["status"] == "done" and state["identical"] is True
