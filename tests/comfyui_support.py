"""ComfyUI, headless, for end-to-end tests: its own virtual environment, a checkpoint it detects, a client.

ComfyUI (GPL-3.0) is a test harness only: ``scripts/comfyui_env.sh`` extracts it from the shared tarball into a
cache with a second virtual environment (torch 2.14.1 + torchvision; iga installed there without dependencies) and
prints ``IGA_COMFYUI_DIR`` and ``IGA_COMFYUI_PYTHON``, which ``.ci/run`` exports. Without them every test that asks
for the server skips, saying how to get it.

``comfyui_server(tmp)`` starts one server on a temporary base folder (models, custom_nodes, input, output, temp,
user, database and iga's audit log all live there) holding:

* ``models/checkpoints/<CHECKPOINT_NAME>``: a link to the cached test checkpoint (``cached_checkpoint()``): SD1.5's
  full-size CLIP-L and VAE around a 64-channel UNet, random weights, fp16 (about 490 MB, built once per recipe);
* ``custom_nodes/iga_test_config``: the test-only node that makes ComfyUI detect that UNet width;
* the iga node pack, installed by ``iga.integrations.comfyui.install.install`` (when that module exists).

Tests post API-format workflows (``txt2img_workflow`` builds the stock graph) and read /history.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import inspect
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from server_support import free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIG_NODE = Path(__file__).resolve().parent / "comfyui_nodes" / "iga_test_config"
CHECKPOINT_NAME = "iga-small-sd1.safetensors"
# what the test checkpoint is; its cache key is a hash of this and of the builder's source
CHECKPOINT_RECIPE = {"builder": "build_small_sd1", "seed": 0, "unet_channels": 64, "scale": 0.01, "dtype": "float16"}
START_TIMEOUT = 120  # s; ~6.5 s on an idle 2-core machine, far more while another worker builds the checkpoint
ENV_HINT = 'run `eval "$(bash scripts/comfyui_env.sh)"` first (.ci/run does)'


def cache_dir() -> Path:
    """The same cache as scripts/comfyui_env.sh."""
    return Path(os.environ.get("IGA_COMFYUI_CACHE") or Path.home() / ".cache" / "iga" / "comfyui")


def comfyui_env() -> tuple[Path, Path]:
    """(ComfyUI's folder, its venv's python), or skip the calling test saying why."""
    folder, python = os.environ.get("IGA_COMFYUI_DIR"), os.environ.get("IGA_COMFYUI_PYTHON")
    if not folder or not python:
        pytest.skip(f"ComfyUI is not set up (IGA_COMFYUI_DIR / IGA_COMFYUI_PYTHON unset): {ENV_HINT}")
    if not (Path(folder) / "main.py").is_file() or not os.access(python, os.X_OK):
        pytest.skip(f"ComfyUI's set-up is gone ({folder}, {python}): {ENV_HINT}")
    return Path(folder), Path(python)


def _checkpoint_key() -> str:
    """The builder's recipe and source, and torch's version (its random initialisation may change with it)."""
    import torch

    from iga.models import testing

    source = inspect.getsource(testing.build_small_sd1) + inspect.getsource(testing._perturb)
    blob = json.dumps(CHECKPOINT_RECIPE, sort_keys=True) + source + torch.__version__
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_checkpoint() -> Path:
    """The cached test checkpoint (LDM single file), built on first use; concurrent workers wait for one build.
    Servers see it through a hard link: change a copy, or replace the link (atomic writes do), never write in it."""
    import torch

    from iga.models.export import ldm_state_dict, save_safetensors
    from iga.models.testing import build_small_sd1

    folder = cache_dir() / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"iga-small-sd1-{_checkpoint_key()}.safetensors"
    with open(folder / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():  # save_single_file writes atomically: a file there is whole
            r = CHECKPOINT_RECIPE
            model = build_small_sd1(r["seed"], r["unet_channels"], scale=r["scale"])
            tensors = ldm_state_dict("sd1", model.unet, model.vae, model.text_encoders)
            save_safetensors(path, {k: v.to(getattr(torch, r["dtype"])) for k, v in tensors.items()})
            for old in folder.glob("iga-small-sd1-*.safetensors*"):  # other recipes' files: 490 MB each
                if not old.name.startswith(path.stem):
                    old.unlink(missing_ok=True)
    return path


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system: a symlink serves as well
        dst.symlink_to(src)


def _install_node_pack(custom_nodes: Path) -> str | None:
    """Install iga's node pack into ``custom_nodes`` (of a ComfyUI base folder: ``--base-directory``); returns why
    not, for the node pack's tests to fail with, when iga has no node pack."""
    if importlib.util.find_spec("iga.integrations.comfyui.install") is None:
        return "iga.integrations.comfyui.install does not exist"
    from iga.integrations.comfyui.install import install

    install(custom_nodes, say=lambda _: None)
    return None


@dataclass
class ComfyUI:
    """A running ComfyUI server and what the tests need to talk to it."""

    url: str
    base: Path
    checkpoint_path: Path
    node_pack_missing: str | None  # why the iga node pack is not installed, or None when it is
    proc: subprocess.Popen
    log_path: Path
    checkpoint_name: str = CHECKPOINT_NAME

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def audit_log(self) -> Path:
        return self.base / "audit.jsonl"

    def log(self, tail: int = 4000) -> str:
        """The end of the server's log (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-tail:]

    def post(self, workflow: dict[str, Any]) -> str | dict[str, Any]:
        """POST an API-format workflow to /prompt: its prompt id, or ComfyUI's error body when it answers 400 (the
        graph did not validate)."""
        r = requests.post(f"{self.url}/prompt", json={"prompt": workflow}, timeout=30)
        if r.status_code == 400:
            return r.json()
        assert r.status_code == 200, f"POST /prompt answered {r.status_code}: {r.text[:2000]}\n{self.log()}"
        return r.json()["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 120) -> dict[str, Any]:
        """Poll /history until the prompt ran: {"status": "success" | "error", "outputs", "messages", "error"
        (ComfyUI's exception message and type, or None), "images" (paths of saved images), "history" (raw)}."""
        deadline = time.monotonic() + timeout
        while True:
            entry = requests.get(f"{self.url}/history/{prompt_id}", timeout=30).json().get(prompt_id)
            status = (entry or {}).get("status") or {}
            if status.get("completed") or status.get("status_str") == "error":
                return self._result(entry)
            if self.proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {self.proc.returncode} while running {prompt_id}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"prompt {prompt_id} did not finish in {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.1)

    def _result(self, entry: dict[str, Any]) -> dict[str, Any]:
        status = entry["status"]
        messages = status.get("messages") or []
        error = next((body for kind, body in messages if kind == "execution_error"), None)
        images = [self.output_dir / img.get("subfolder", "") / img["filename"]
                  for out in entry.get("outputs", {}).values() for img in out.get("images", [])
                  if img.get("type") == "output"]
        return {"status": status.get("status_str"), "outputs": entry.get("outputs", {}), "messages": messages,
                "error": error and f"{error.get('exception_type')}: {error.get('exception_message')}".strip(),
                "images": images, "history": entry}

    def run(self, workflow: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """post + wait, failing with ComfyUI's answer when the graph is rejected."""
        prompt_id = self.post(workflow)
        assert isinstance(prompt_id, str), f"ComfyUI rejected the workflow: {json.dumps(prompt_id)[:3000]}"
        return self.wait(prompt_id, timeout)

    def object_info(self, node: str) -> dict[str, Any] | None:
        """GET /object_info/<node>: the node's description, or None when ComfyUI has no such node."""
        return requests.get(f"{self.url}/object_info/{node}", timeout=30).json().get(node)


def _prepare_base(base: Path) -> tuple[Path, str | None]:
    checkpoint = cached_checkpoint()
    for sub in ("models/checkpoints", "custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    _link(checkpoint, base / "models" / "checkpoints" / CHECKPOINT_NAME)
    (base / "custom_nodes" / CONFIG_NODE.name).symlink_to(CONFIG_NODE, target_is_directory=True)
    return checkpoint, _install_node_pack(base / "custom_nodes")


@contextlib.contextmanager
def comfyui_server(base: Path) -> Iterator[ComfyUI]:
    """Start ComfyUI on a free loopback port with ``base`` as its base folder; stop it on exit."""
    folder, python = comfyui_env()
    checkpoint, node_pack_missing = _prepare_base(base)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "IGA_AUDIT_LOG": str(base / "audit.jsonl"),
           "IGA_MODEL_INDEX": str(base / "iga-models.json"), "IGA_CONFIG": str(base / "iga-config.json"),
           # this checkout's iga, whichever checkout the cached venv was last installed from
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    cmd = [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--disable-api-nodes", "--base-directory", str(base), "--database-url", f"sqlite:///{base / 'comfyui.db'}"]
    log_path = base / "comfyui.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ComfyUI(f"http://127.0.0.1:{port}", base, checkpoint, node_pack_missing, proc, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(server: ComfyUI) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            pytest.fail(f"ComfyUI exited with {server.proc.returncode} at start-up:\n{server.log()}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{server.url}/system_stats", timeout=5).status_code == 200:
                break
        if time.monotonic() > deadline:
            pytest.fail(f"ComfyUI did not answer /system_stats in {START_TIMEOUT} s:\n{server.log()}")
        time.sleep(0.25)
    assert server.object_info("IgaTestConfig"), f"the test-only config node did not load:\n{server.log()}"


def txt2img_workflow(checkpoint: str, prompt: str, *, negative: str = "", seed: int = 0, steps: int = 4,
                     cfg: float = 7.0, sampler: str = "euler", scheduler: str = "karras", width: int = 64,
                     height: int = 64, clip_skip: int = 1, prefix: str = "iga-test") -> dict[str, Any]:
    """ComfyUI's stock txt2img graph in API format (CheckpointLoaderSimple, CLIPSetLastLayer, CLIPTextEncode x2,
    EmptyLatentImage, KSampler, VAEDecode, SaveImage); ``clip_skip`` as iga counts it (1 = the last layer, which
    is ComfyUI's CLIPSetLastLayer -1)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -clip_skip}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": prompt}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": negative}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "seed": seed, "steps": steps,
                                                   "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
                                                   "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": prefix}},
    }
