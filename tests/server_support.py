"""Running `iga serve` inside a test: a real uvicorn server on a free loopback port, in a thread of the test
process (clients such as webuiapi speak real HTTP to it), and a models folder with two distinct recipes."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(config) -> Iterator[str]:
    """Serve ``config`` (an iga.server.ServerConfig; its port is replaced by a free one); yield the base URL."""
    import uvicorn

    from iga.server import create_app

    config.port = free_port()
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/sdapi/v1/options", timeout=2).status_code in (200, 401):
                break
        except requests.ConnectionError:
            time.sleep(0.05)
    else:
        raise RuntimeError("the test server did not start within 30 s")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


ALT_ID = "iga-demo-alt.safetensors"


def models_folder(root: Path) -> Path:
    """The bundled demo model and a copy whose recipe differs (default steps 25, CFG 2.5): switching models must
    switch recipes."""
    from iga.checkpoint.embed import embed_recipe_with_hashes
    from iga.guard.source import describe_model
    from iga.paths import DEMO_MODEL

    folder = root / "models"
    folder.mkdir()
    shutil.copy(DEMO_MODEL, folder / DEMO_MODEL.name)
    recipe = describe_model(DEMO_MODEL).recipe.to_dict()
    recipe.pop("hashes", None)
    recipe["model_id"] = "iga-demo-alt"
    recipe["steps"] = {**recipe["steps"], "default": 25}
    recipe["cfg"] = {**recipe["cfg"], "default": 2.5}
    shutil.copy(DEMO_MODEL, folder / ALT_ID)
    embed_recipe_with_hashes(folder / ALT_ID, recipe)
    return folder


class ServeProcess:
    """`iga serve` as a subprocess on a free port, with its own audit log and model index in ``tmp`` (for tests
    that need the real command line: its flags, its exit codes, its start-up)."""

    def __init__(self, tmp: Path, *args: str, start_timeout: float = 60):
        import os
        import subprocess
        import sys

        env = {**os.environ, "HF_HUB_OFFLINE": "1", "IGA_AUDIT_LOG": str(tmp / "audit.jsonl"),
               "IGA_MODEL_INDEX": str(tmp / "models.json")}
        env.pop("IGA_SERVE_TOKEN", None)  # a test's token comes from its own command line only
        self.tmp, self.log_path = tmp, tmp / "server.log"
        self._log = self.log_path.open("wb")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "iga.cli", "serve", "--port", str(port), *args],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(start_timeout)

    def _wait_ready(self, timeout: float) -> None:
        import pytest

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._log.close()
                pytest.fail(f"iga serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                requests.get(self.base + "/openapi.json", timeout=2)  # served even when a token is required
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"iga serve did not answer in {timeout:.0f} s:\n{self.log()}")
                time.sleep(0.25)  # the socket opens once the app is built: there is nothing else to wait on

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
