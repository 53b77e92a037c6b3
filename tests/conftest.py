"""Test-session settings: one torch thread per worker.

With `pytest -n 2` on a 2-core machine, two threads per worker oversubscribe the CPU and tiny-model
convolutions run many times slower; one thread each is both faster and deterministic.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# models the tests run are remembered in a throw-away index, never in the user's (iga.store.used)
os.environ.setdefault("IGA_MODEL_INDEX", os.path.join(__import__("tempfile").mkdtemp(prefix="iga-index-"),
                                                      "models.json"))
# and the model store sees only the bundled model unless a test names folders (iga.store)
os.environ.setdefault("IGA_CONFIG", os.path.join(os.path.dirname(os.environ["IGA_MODEL_INDEX"]), "config.json"))
os.environ.pop("IGA_MODELS", None)


import pytest  # noqa: E402


@pytest.fixture
def offline_audit(monkeypatch, tmp_path):
    """Offline hub and a per-test audit log, so generation tests never touch ~/.local/share/iga."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("IGA_AUDIT_LOG", str(tmp_path / "audit.jsonl"))


@pytest.fixture(scope="module")
def module_audit(tmp_path_factory):
    """offline_audit for module-scoped fixtures (monkeypatch is per test): one audit log per test module."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("IGA_AUDIT_LOG", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    """ComfyUI running headless for this test session (tests/comfyui_support.py); skips when it is not set up."""
    from comfyui_support import comfyui_env, comfyui_server

    comfyui_env()  # skip before building anything when ComfyUI is absent
    with comfyui_server(tmp_path_factory.mktemp("comfyui")) as server:
        yield server
