"""The node pack in a real, headless ComfyUI: API-format workflows POSTed to /prompt, results read from /history.

Uses the session's ComfyUI (the ``comfyui`` fixture of tests/conftest.py, from tests/comfyui_support.py; skips,
saying how to set it up, without `scripts/comfyui_env.sh`). The harness's test checkpoint carries no recipe; here a
copy of it gets one (cached beside it, never changed in place) and joins the server's checkpoints folder: SD1,
euler + karras, 4 steps, CFG 7, clip skip 1, presets Fast and Smooth, and "Euler a" forbidden under its A1111
label, so that ComfyUI's ``euler_ancestral`` must be refused through the name table.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from comfyui_support import cached_checkpoint

RECIPE_CHECKPOINT = "iga-small-sd1-recipe.safetensors"
RECIPE = {
    "iga_version": "1.4.0", "model_id": "iga-small-sd1", "architecture": "sd1", "prediction_type": "eps",
    "training_schedule": {"kind": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                          "num_train_timesteps": 1000},
    "sampler": {"name": "euler"}, "scheduler": {"name": "karras"},
    "cfg": {"default": 7.0, "min": 1.0, "max": 10.0}, "steps": {"default": 4, "min": 2, "max": 8},
    "resolution": {"preferred": ["64x64"], "max": "512x512"}, "clip_skip": 1,
    "constraints": {"forbid_samplers": ["Euler a"], "forbid_schedules": ["exponential"]},
    "presets": [{"name": "Fast", "steps": 2}, {"name": "Smooth", "steps": 6, "sampler": "dpmpp_2m"}],
}
NODES = ("IgaCheckpointLoader", "IgaKSampler", "IgaSaveImage")
PROMPT = "a red circle on a blue background"


def recipe_checkpoint() -> Path:
    """The harness's checkpoint with RECIPE embedded by `iga embed`'s function, built once per recipe."""
    from iga.checkpoint import embed_recipe_with_hashes

    base = cached_checkpoint()
    key = hashlib.sha256((base.name + json.dumps(RECIPE, sort_keys=True)).encode()).hexdigest()[:12]
    path = base.with_name(f"{base.stem}-recipe-{key}.safetensors")
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            shutil.copyfile(base, tmp)
            embed_recipe_with_hashes(tmp, RECIPE)
            os.replace(tmp, path)
            for old in path.parent.glob("*-recipe-*.safetensors"):  # earlier recipes' copies: 490 MB each
                if old != path:  # servers still running keep theirs through their hard links
                    old.unlink(missing_ok=True)  # (its lock file stays: removing a lock file races its users)
    return path


@pytest.fixture(scope="module")
def comfy(comfyui):
    """The session's ComfyUI with the recipe checkpoint beside the harness's (ComfyUI rescans the folder when it
    changes)."""
    assert comfyui.node_pack_missing is None, comfyui.node_pack_missing
    link = comfyui.base / "models" / "checkpoints" / RECIPE_CHECKPOINT
    if not link.exists():
        os.link(recipe_checkpoint(), link)
    return comfyui


def workflow(*, seed: int = 7, loader_preset: str = "recipe default", mode: str = "guarded", **ksampler) -> dict:
    """IGA Checkpoint Loader -> CLIPTextEncode x2 -> IGA KSampler -> VAEDecode -> IGA Save Image (API format)."""
    return {
        "1": {"class_type": "IgaCheckpointLoader", "inputs": {"ckpt_name": RECIPE_CHECKPOINT, "mode": mode,
                                                              "preset": loader_preset, "verify": False}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "IgaKSampler", "inputs": {"model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                      "latent_image": ["5", 0], "recipe": ["1", 3], "seed": seed,
                                                      "preset": "from loader", **ksampler}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "IgaSaveImage", "inputs": {"images": ["7", 0], "plan": ["6", 1]}},
    }


def _iga(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iga.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


def _show(path: Path) -> dict:
    r = _iga("show", path, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_three_nodes_appear_in_object_info_with_the_recipes_presets(comfy):
    info = {name: comfy.object_info(name) for name in NODES}
    assert all(info.values()), f"missing nodes: {[n for n, i in info.items() if not i]}\n{comfy.log()}"
    loader = info["IgaCheckpointLoader"]
    assert loader["display_name"] == "IGA Checkpoint Loader" and loader["category"] == "iga"
    assert loader["output"][:4] == ["MODEL", "CLIP", "VAE", "IGA_RECIPE"]
    assert "euler" in loader["output"][4] and "karras" in loader["output"][5]  # COMBO outputs for a KSampler
    assert {"Fast", "Smooth"} <= set(loader["input"]["required"]["preset"][0])
    assert info["IgaKSampler"]["output"] == ["LATENT", "IGA_PLAN"] and info["IgaSaveImage"]["output_node"]


def test_recipe_defaults_are_applied_and_the_png_reads_back_with_iga_show(comfy):
    result = comfy.run(workflow())
    assert result["status"] == "success", result["error"] or comfy.log()
    (path,) = result["images"]
    assert path.name.endswith(".png") and "iga-small-sd1" in path.name and "-euler-karras-4-" in path.name
    shown = _show(path)
    assert shown["source"] == "iga" and shown["prompt"] == PROMPT and shown["negative_prompt"] == "blurry"
    assert (shown["sampler"], shown["schedule"], shown["steps"], shown["cfg"], shown["seed"]) == \
        ("euler", "karras", 4, 7.0, 7)
    assert (shown["width"], shown["height"]) == (64, 64) and shown["plan"]["comfyui"]["denoise"] == 1.0
    assert "prompt" in shown["raw"] and "parameters" in shown["raw"]  # ComfyUI's graph beside iga's chunks


def test_a_forbidden_sampler_is_refused_through_its_a1111_label_with_the_reason(comfy):
    result = comfy.run(workflow(sampler_name="euler_ancestral"))
    assert result["status"] == "error" and not result["images"]
    assert "euler_ancestral is forbidden by this model's recipe" in result["error"]
    assert "use euler" in result["error"]


def test_a_deviation_without_an_override_stops_and_says_how_to_override(comfy):
    result = comfy.run(workflow(sampler_name="dpmpp_2m"))
    assert result["status"] == "error" and "dpmpp_2m is not the recipe's sampler euler" in result["error"]
    assert "override_reason" in result["error"]


def test_an_override_with_a_reason_runs_and_leaves_its_audit_record(comfy):
    result = comfy.run(workflow(seed=11, sampler_name="dpmpp_2m", overrides="sampler",
                                override_reason="compare with the stock graph"))
    assert result["status"] == "success", result["error"]
    records = [json.loads(line) for line in comfy.audit_log.read_text().splitlines()]
    assert {"action": "comfyui", "field": "sampler", "requested_value": "dpmpp_2m", "recipe_value": "euler",
            "reason": "compare with the stock graph", "seed": 11}.items() <= records[-1].items()
    plan = _show(result["images"][0])["plan"]
    assert [(o["field"], o["reason"]) for o in plan["overrides"]] == [("sampler", "compare with the stock graph")]


def test_a_clip_skip_set_in_the_graph_is_judged_by_the_guard_and_recorded(comfy):
    graph = workflow(seed=9)
    graph["2"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}}
    graph["3"]["inputs"]["clip"] = graph["4"]["inputs"]["clip"] = ["2", 0]
    refused = comfy.run(graph)
    assert refused["status"] == "error" and "clip_skip" in refused["error"]
    graph["6"]["inputs"].update(overrides="clip_skip", override_reason="the style LoRA wants it")
    result = comfy.run(graph)
    assert result["status"] == "success", result["error"]
    assert _show(result["images"][0])["clip_skip"] == 2


def test_the_loaders_outputs_drive_the_stock_ksampler_to_the_same_pixels_as_the_iga_ksampler(comfy):
    from PIL import Image

    graph = workflow(seed=3, loader_preset="Fast")
    graph["9"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "seed": 3,
        "sampler_name": ["1", 4], "scheduler": ["1", 5], "steps": ["1", 6], "cfg": ["1", 7], "denoise": 1.0}}
    graph["10"] = {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}}
    graph["11"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "stock"}}
    result = comfy.run(graph)
    assert result["status"] == "success", result["error"]
    ours, = [p for p in result["images"] if not p.name.startswith("stock")]
    stock, = [p for p in result["images"] if p.name.startswith("stock")]
    assert _show(ours)["steps"] == 2  # the loader's preset
    assert np.array_equal(np.asarray(Image.open(ours).convert("RGB")), np.asarray(Image.open(stock).convert("RGB")))


def test_a_saved_image_replays_in_iga_within_two_levels(comfy):
    result = comfy.run(workflow(seed=5))
    assert result["status"] == "success", result["error"]
    r = _iga("replay", result["images"][0], "--model", comfy.base / "models" / "checkpoints" / RECIPE_CHECKPOINT,
             "--json")
    assert r.returncode in (0, 1), r.stderr  # 1: the pixels differ (ComfyUI's and iga's arithmetic)
    report = json.loads(r.stdout)
    assert report["file_max_abs"] <= 2, report


# --- ComfyUI's page in a real browser (Debian's Chromium; IGA_SCREENSHOTS=1 writes docs/comfyui-*.png) ----------

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DOCS = Path(__file__).resolve().parents[1] / "docs"
APP = "const app = window.comfyAPI.app.app;"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed in this environment")
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("the browser test needs Debian's Chromium and its driver (apt-get install chromium "
                    "chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1600,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _until(check, timeout: float = 60.0, what: str = ""):
    import time

    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)
    return value


def _screenshot(driver, name: str) -> None:
    if os.environ.get("IGA_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        driver.save_screenshot(str(DOCS / name))


def test_the_workflow_runs_from_comfyuis_page_and_a_refusal_shows_the_guards_reason(comfy, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.get(comfy.url + "/")
    # ready once the first-visit template gallery opens (after the page's own first workflow, which would
    # otherwise replace ours)
    _until(lambda: "Get Started with a Template" in browser.find_element("tag name", "body").text,
           what="ComfyUI's page and its template gallery")
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    browser.execute_script(APP + "return app.loadApiJson(arguments[0], 'iga')", workflow(seed=42))
    _until(lambda: {"IgaCheckpointLoader", "IgaKSampler", "IgaSaveImage"} <= set(
        browser.execute_script(APP + "return app.graph._nodes.map(n => n.type)")), what="the nodes in the graph")
    browser.execute_script(APP + "app.graph.arrange(); app.graph.setDirtyCanvas(true, true);")
    browser.execute_script(APP + "app.extensionManager.command.execute('Comfy.Canvas.FitView');")
    before = set(comfy.output_dir.glob("*.png"))  # published whole (iga's atomic save): no partial file matches
    browser.execute_script(APP + "app.queuePrompt(0, 1)")
    (saved,) = _until(lambda: set(comfy.output_dir.glob("*.png")) - before, what="the saved image")
    assert _show(saved)["sampler"] == "euler"
    _until(lambda: browser.execute_script(APP + "const s = app.graph._nodes.find(n => n.type == 'IgaSaveImage');"
                                          "return s.imgs && s.imgs.length && s.imgs[0].complete"),
           what="the saved image shown on the IGA Save Image node")  # the UI dict ComfyUI's SaveImage returns
    _screenshot(browser, "comfyui-workflow.png")
    browser.execute_script(APP + "const k = app.graph._nodes.find(n => n.type == 'IgaKSampler');"
                           "k.widgets.find(w => w.name == 'sampler_name').value = 'euler_ancestral';"
                           "app.queuePrompt(0, 1)")
    _until(lambda: "euler_ancestral is forbidden" in browser.find_element("tag name", "body").text,
           what="the guard's refusal in the page")
    _screenshot(browser, "comfyui-refusal.png")
