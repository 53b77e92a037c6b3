"""Ctrl-C: an interrupt during sampling (or saving) leaves no file (and no temp file) behind; the CLI exits 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import iga  # noqa: E402
from iga.commands import generate as generate_cmd  # noqa: E402
from iga.models import clear_cache, testing  # noqa: E402
from test_generate_support import PROMPT, cli, files_in, one_thread  # noqa: E402

SETTINGS = ["--size", "64x64", "--steps", "4", "--seed", "1"]


pytestmark = pytest.mark.usefixtures("offline_audit")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = testing.save_single_file(testing.build_tiny("sd1", seed=60), tmp_path_factory.mktemp("ctrlc") / "m.safetensors")
    yield path
    clear_cache()


def test_api_interrupt_propagates_and_the_model_stays_usable(model_path):
    m = iga.load(model_path)
    before = m.generate(PROMPT, seed=1, size="64x64", steps=4)[0].pixels
    steps_seen = []

    def stop(info):
        steps_seen.append(info.i)
        if info.i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.generate(PROMPT, seed=1, size="64x64", steps=4, callback=stop)
    assert steps_seen == [0, 1]
    assert np.array_equal(m.generate(PROMPT, seed=1, size="64x64", steps=4)[0].pixels, before)


def test_cli_interrupt_during_sampling_exits_130_and_writes_nothing(model_path, tmp_path, monkeypatch):
    calls = []

    def interrupt(self, info):
        calls.append(info.i)
        if len(calls) == 6:  # image 2 of 3, step 2: image 1 is finished but must not be written either
            raise KeyboardInterrupt

    monkeypatch.setattr(generate_cmd._Progress, "__call__", interrupt)
    out = tmp_path / "out"
    res = cli(["generate", PROMPT, "--model", model_path, *SETTINGS, "-n", 3, "--out", out])
    assert res.exit_code == 130
    assert "interrupted" in res.stderr and "nothing was written" in res.stderr
    assert len(calls) == 6 and files_in(out) == []


def test_cli_interrupt_while_saving_leaves_only_whole_files(model_path, tmp_path, monkeypatch):
    from iga.provenance import save as save_mod

    real = save_mod.encode_image
    count = []

    def encode(image, plan, fmt, fp, **passed):
        count.append(1)
        if len(count) == 2:
            fp.write(b"\x89PNG partial")  # half a file in the temp file, then Ctrl-C
            raise KeyboardInterrupt
        real(image, plan, fmt, fp, **passed)

    monkeypatch.setattr(save_mod, "encode_image", encode)
    out = tmp_path / "out"
    res = cli(["generate", PROMPT, "--model", model_path, *SETTINGS, "-n", 2, "--out", out])
    assert res.exit_code == 130 and "1 of 2 images written" in res.stderr
    [name] = files_in(out)  # the first image, complete; no temp file of the second
    assert not name.startswith(".") and name.endswith(".png")
    from iga.provenance import read_provenance

    assert read_provenance(out / name).seed == 1


_CHILD = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores SIGINT
    import iga.generate as g

    real_render, marker = g.render, Path(sys.argv[1])

    def render(plan, backend, callback=None, **passed):
        def cb(info):
            if info.i == 1:
                marker.write_text("sampling")
                time.sleep(120)  # the parent's SIGINT lands here, inside the sampler loop
            if callback is not None:
                callback(info)
        return real_render(plan, backend, callback=cb, **passed)

    g.render = render
    from iga.cli import main
    sys.argv = ["iga", "generate", *sys.argv[2:]]
    main()
""")


def test_real_sigint_during_sampling(model_path, tmp_path):
    """A real SIGINT delivered to `iga generate` while the sampler runs: exit 130, nothing written."""
    marker, out = tmp_path / "marker", tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "IGA_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(marker), PROMPT, "--model", str(model_path),
                             *SETTINGS, "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, f"iga exited {proc.returncode} before sampling: {proc.communicate()}"
            assert time.monotonic() < deadline, "sampling never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert files_in(out) == []
