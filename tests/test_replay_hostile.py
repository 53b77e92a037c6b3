"""Replay and show under the guard: a hostile image is one clear line and exit 2, fast, and opens nothing it names."""

import json
import os
import subprocess
import sys
import time

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from iga.provenance import read_provenance, save_image

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def made(tmp_path_factory, module_audit):
    """A real image of the bundled demo model (4 steps) and its stored plan."""
    import iga

    [img] = iga.load().generate(PROMPT, seed=3, steps=4, overrides=["steps"])
    folder = tmp_path_factory.mktemp("made")
    path = save_image(img.image, img.plan.to_dict(), folder)
    return path, read_provenance(path).plan


def _iga(*args, timeout=60):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "iga.cli", *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=timeout)
    return p, time.perf_counter() - t


def _hostile(tmp_path, plan: dict, name: str = "hostile"):
    with Image.new("RGB", (32, 32)) as im:
        return save_image(im, plan, tmp_path / name)


def test_a_real_image_replays_identically(made):
    p, _ = _iga("replay", made[0])
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("change, message", [
    ({"width": 8192, "height": 8192}, "megapixels"),
    ({"sigmas": [float(100_000 - i) for i in range(100_000)] + [0.0], "schedule": "explicit"}, "sigmas"),
    ({"steps": 100_000}, "steps"),
    ({"steps": "many"}, "not valid"),
    ({"sampler": "no_such_sampler"}, "unknown sampler"),
    ({"prediction_type": "eps"}, "prediction_type"),
    ({"model": {"name": "x", "path": "/etc/passwd", "weights_sha256": "0" * 64}}, "pass --model"),
])
def test_a_hostile_stored_plan_is_one_line_exit_2_and_fast(made, tmp_path, change, message):
    path = _hostile(tmp_path, {**made[1], **change})
    p, seconds = _iga("replay", path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "root:" not in p.stderr  # the recorded path is never opened, so nothing of it is echoed
    assert seconds < 15  # the refusal comes before any model runs (process start-up included)


def test_a_recorded_fifo_is_not_opened_even_with_trust_path(made, tmp_path):
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    path = _hostile(tmp_path, {**made[1], "model": {**made[1]["model"], "path": str(fifo), "weights_sha256": "1" * 64}})
    p, _ = _iga("replay", path, "--trust-path", timeout=30)
    assert p.returncode == 2 and "not a model file or folder" in p.stderr


def test_deeply_nested_metadata_is_refused_by_show_and_replay(tmp_path):
    info = PngInfo()
    info.add_itxt("iga_metadata", "[" * 500 + "]" * 500)
    path = tmp_path / "deep.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    for cmd in (("show", path), ("replay", path)):
        p, _ = _iga(*cmd)
        assert p.returncode == 2 and "nested more than 64 levels" in p.stderr and "Traceback" not in p.stderr


def test_show_json_is_strict_json_even_with_nan_in_the_plan(made, tmp_path):
    info = PngInfo()  # iga never writes NaN; a hand-made file can (Python's json reads it)
    info.add_itxt("iga_metadata", json.dumps({**made[1], "cfg_rescale": float("nan")}))
    path = tmp_path / "nan.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    p, _ = _iga("show", path, "--json")
    assert p.returncode == 0, p.stderr

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    json.loads(p.stdout, parse_constant=refuse)


def test_replay_save_never_overwrites(made, tmp_path):
    target = tmp_path / "again.png"
    target.write_bytes(b"mine")
    p, _ = _iga("replay", made[0], "--save", target)
    assert p.returncode == 2 and "exists" in p.stderr and target.read_bytes() == b"mine"
    fresh = tmp_path / "fresh.png"
    p, _ = _iga("replay", made[0], "--save", fresh)
    assert p.returncode == 0 and read_provenance(fresh).plan["seed"] == 3
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".iga-tmp")]


def test_a_model_the_user_ran_is_found_again_by_its_weights_not_by_the_images_path(tmp_path):
    """The path an image records is not trusted; the model index remembers what the user ran."""
    from iga.store.used import ModelNotFound, locate_model, remember
    from iga.models import testing

    _, _, single = testing.save_family(tmp_path / "tiny", ["sd1"], seed=5)["sd1"]
    from iga.checkpoint.hashing import weights_sha256

    digest = weights_sha256(single)
    with pytest.raises(ModelNotFound, match="pass --model"):
        locate_model("tiny", digest, str(single))
    remember(digest, str(single), "tiny")
    assert locate_model("tiny", digest, "/somewhere/else") == str(single.resolve())
    assert locate_model("tiny", digest, str(single), trust_path=True)
