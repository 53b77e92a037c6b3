"""iga.load(path).generate(...) on tiny random SD1 / SD2 (v) / SDXL models: folder and single file agree, the
settings that must matter do (clip skip, VAE), and nothing is fetched from the network."""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import iga  # noqa: E402
from iga.guard import GuardRefused, Request  # noqa: E402
from iga.models import clear_cache, testing  # noqa: E402
from test_generate_support import PROMPT, TINY_RECIPE, one_thread, tiny_with_recipe  # noqa: E402

ARCHS = ["sd1", "sd2", "sdxl"]
PREDICTION = {"sd1": "eps", "sd2": "v", "sdxl": "eps"}
# no recipe in these files: architecture defaults (dpmpp_2m + karras), with a small size and few steps
SETTINGS = dict(seed=3, size="64x64", steps=3, cfg=6.0)


pytestmark = pytest.mark.usefixtures("offline_audit")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{arch: (folder, single_file)} for one tiny random model per family, plus a separate VAE file."""
    root = tmp_path_factory.mktemp("tiny-gen")
    out = {arch: (folder, single) for arch, (_, folder, single) in testing.save_family(root, ARCHS, seed=40).items()}
    out["vae"] = testing.save_vae(testing.tiny_vae(seed=7), root / "other-vae.safetensors")
    out["recipe_sd1"] = tiny_with_recipe(root, "sd1-recipe", seed=40)  # same weights as sd1, with a recipe
    yield out
    _MODELS.clear()
    clear_cache()


_MODELS: dict = {}


def _pixels(path, fresh: bool = False, **fields):
    """Generate with SETTINGS; the Model (and its loaded backend) is reused per path unless ``fresh``."""
    if fresh or path not in _MODELS:
        _MODELS[path] = iga.load(path)
    [img] = _MODELS[path].generate(PROMPT, **{**SETTINGS, **fields})
    return img


@pytest.mark.parametrize("arch", ARCHS)
def test_folder_and_single_file_generate_the_same_image(models, arch):
    folder, single = models[arch]
    a, b = _pixels(folder), _pixels(single)
    for img in (a, b):
        assert img.plan.model.architecture == arch
        assert img.plan.prediction_type == PREDICTION[arch]  # a v model sampled as eps would be garbage
        assert img.pixels.shape == (64, 64, 3) and img.pixels.dtype == np.uint8
        assert img.pixels.std() > 5, "a flat image would make every comparison below vacuous"
    assert np.array_equal(a.pixels, b.pixels)
    assert a.plan.sigmas == b.plan.sigmas and a.plan.pixels_sha256 == b.plan.pixels_sha256


def test_a_v_model_sampled_as_eps_differs(models):
    """The prediction type in the plan is what the sampler uses (so getting it right above means something)."""
    folder, _ = models["sd2"]
    m = iga.load(folder)
    plan = m.plan(PROMPT, **SETTINGS)
    right = m.generate(plan=plan)[0].pixels
    wrong = m.generate(plan=plan.model_copy(update={"prediction_type": "eps"}))[0].pixels
    assert np.abs(right.astype(int) - wrong.astype(int)).max() > 20


@pytest.mark.parametrize("arch", ARCHS)
def test_clip_skip_changes_the_image(models, arch):
    _, single = models[arch]
    one, two = _pixels(single, clip_skip=1), _pixels(single, clip_skip=2)
    assert (one.plan.clip_skip, two.plan.clip_skip) == (1, 2)
    assert not np.array_equal(one.pixels, two.pixels)
    assert np.array_equal(_pixels(single, clip_skip=2).pixels, two.pixels)  # and it is deterministic


def test_vae_override_changes_the_image_and_is_recorded(models):
    path, vae = models["recipe_sd1"], models["vae"]
    m = _MODELS.setdefault(path, iga.load(path))
    native = m.generate(PROMPT, seed=3)[0]
    assert native.plan.vae.source == "checkpoint" and native.plan.vae.id == TINY_RECIPE["vae"]["id"]
    with pytest.raises(GuardRefused) as e:  # another VAE than the recipe's is a soft deviation
        m.generate(PROMPT, seed=3, vae=str(vae))
    assert any(f.field == "vae" and f.outcome == "refused" for f in e.value.findings)
    [other] = m.generate(request=Request(prompt=PROMPT, seed=3, vae=str(vae), overrides=["vae"], reason="test"))
    from iga.checkpoint.hashing import file_sha256

    # recorded by its hash, not by where it lives on this machine (IGA_RECORD_MODEL_PATH=1 records the path)
    assert other.plan.vae.source == "file" and other.plan.vae.path is None
    assert other.plan.vae.file_sha256 == file_sha256(vae)
    assert [(o.field, o.requested_value, o.reason) for o in other.plan.overrides] == [("vae", vae.stem, "test")]
    assert not np.array_equal(native.pixels, other.pixels)
    # the same latents, decoded by another VAE: a different picture of the same sampling run
    assert other.plan.sigmas == native.plan.sigmas and other.plan.seed == native.plan.seed


def test_vae_override_is_the_same_for_folder_and_single_file(models):
    folder, single = models["sd1"]
    vae = str(models["vae"])
    a, b = _pixels(folder, vae=vae), _pixels(single, vae=vae)
    assert np.array_equal(a.pixels, b.pixels)
    assert not np.array_equal(a.pixels, _pixels(folder).pixels)


def test_generation_fetches_nothing(models, monkeypatch):
    """With sockets and every hub download function refused, both formats load from scratch and generate."""
    import huggingface_hub  # noqa: F401  (make sure the hub modules are loaded, so that they get patched)

    expected = {arch: _pixels(models[arch][1]).pixels for arch in ("sd1", "sdxl")}
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    patched = 0
    for name, mod in list(sys.modules.items()):  # also the names diffusers/transformers imported directly
        if mod is None or not name.startswith(("huggingface_hub", "diffusers", "transformers")):
            continue
        for fn in ("hf_hub_download", "snapshot_download", "cached_download", "http_get", "get_session"):
            if callable(getattr(mod, fn, None)):
                monkeypatch.setattr(mod, fn, refuse)
                patched += 1
    assert patched >= 2
    from iga.models import tokenizer

    clear_cache()  # load from disk again, under the block
    tokenizer.clip_tokenizer.cache_clear()
    for arch in ("sd1", "sdxl"):
        for path in models[arch]:
            assert np.array_equal(_pixels(path, fresh=True).pixels, expected[arch])
    assert calls == []
