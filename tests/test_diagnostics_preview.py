"""Step previews (iga.diagnostics.preview): which steps give frames, what the decoders show, the live iterator,
the contact sheet and animated WebP, and `iga generate --preview`."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import iga  # noqa: E402
from iga.diagnostics import preview as pv  # noqa: E402
from iga.generate import to_uint8  # noqa: E402
from iga.sampling.base import StepInfo  # noqa: E402

PROMPT = "a red circle on a blue background"

pytestmark = pytest.mark.usefixtures("offline_audit")


@pytest.fixture(scope="module")
def demo():
    """The bundled demo model (pixel space), loaded once."""
    m = iga.load()
    m.backend()
    return m


def _plan(model, steps=15, **fields):
    return model.plan(PROMPT, seed=1, steps=steps, **fields)


class _FakeBackend:
    """Pixel space like the demo backend, without weights: enough to drive a PreviewStream by hand."""

    architecture = "demo"
    latent_channels = 3

    def decode(self, x):
        return ((x.float() + 1) / 2).clamp(0, 1)


def _steps(stream, sigmas, image_size=8):
    for i, (s, s_next) in enumerate(zip(sigmas, sigmas[1:])):
        x = torch.zeros(1, 3, image_size, image_size)
        stream(StepInfo(i, s, s_next, x, x))


def _frames(n, size=32, finite=True):
    rng = np.random.default_rng(0)
    return [pv.PreviewFrame(step=k + 1, total=n, sigma=10.0 / (k + 1), image=0, finite=finite,
                            rgb=rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for k in range(n)]


def test_every_kth_step_and_the_last_step_give_a_frame():
    stream = pv.PreviewStream(_FakeBackend(), every=3, total=7)
    sigmas = [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    _steps(stream, sigmas)
    _steps(stream, sigmas)  # a second image of the batch: the step index starts again at 0
    got = [(f.image, f.step, f.total, f.sigma) for f in stream.frames]
    assert got == [(0, 3, 7, 4.0), (0, 6, 7, 1.0), (0, 7, 7, 0.0), (1, 3, 7, 4.0), (1, 6, 7, 1.0), (1, 7, 7, 0.0)]
    assert stream.steps_seen == 14


def test_the_last_step_of_a_schedule_not_ending_at_zero_is_known_from_total():
    stream = pv.PreviewStream(_FakeBackend(), every=10, total=3)
    _steps(stream, [3.0, 2.0, 1.0, 0.5])
    assert [f.step for f in stream.frames] == [3]


def test_a_non_finite_estimate_gives_a_frame_marked_not_finite():
    seen = []
    stream = pv.PreviewStream(_FakeBackend(), on_frame=seen.append)
    x0 = torch.zeros(1, 3, 4, 4)
    x0[0, 0, 0, 0] = float("nan")
    stream(StepInfo(0, 1.0, 0.0, torch.zeros(1, 3, 4, 4), x0))
    assert seen == stream.frames and not seen[0].finite and seen[0].rgb.dtype == np.uint8


def test_bad_decoder_or_every_is_refused_at_construction():
    with pytest.raises(ValueError, match="decoder"):
        pv.PreviewStream(_FakeBackend(), decoder="taesd")
    with pytest.raises(ValueError, match="every"):
        pv.PreviewStream(_FakeBackend(), every=0)
    unknown = _FakeBackend()
    unknown.architecture = "flux"
    with pytest.raises(ValueError, match="fit"):
        pv.PreviewStream(unknown, decoder="linear")


def test_architecture_comes_from_the_attribute_or_the_identity():
    class Identified:
        identity = {"architecture": "sdxl"}

    assert pv.architecture_of(Identified()) == "sdxl"
    assert pv.architecture_of(_FakeBackend()) == "demo"
    assert pv.architecture_of(object()) is None
    assert pv.LATENT_RGB["sd2"] == pv.LATENT_RGB["sd1"] != pv.LATENT_RGB["sdxl"]


def test_linear_preview_of_the_demo_model_is_its_decoded_x0(demo):
    plan = _plan(demo)
    backend = demo.backend_for(plan)
    stream = pv.PreviewStream(backend, decoder="linear", total=len(plan.sigmas) - 1)
    decoded = []

    def both(info):
        stream(info)
        decoded.append(to_uint8(backend.decode(info.denoised)[0]))

    [result] = demo.generate(plan=plan, callback=both)
    assert len(stream.frames) == len(decoded) == 15
    for frame, ref in zip(stream.frames, decoded):
        assert frame.rgb.shape == ref.shape == (32, 32, 3)
        assert np.abs(frame.rgb.astype(int) - ref.astype(int)).max() <= 1
    assert np.abs(stream.frames[-1].rgb.astype(int) - result.pixels.astype(int)).max() <= 1
    assert stream.frames[0].rgb.std() > 5  # not a blank frame


def test_fit_decoder_approximates_the_vae_of_a_tiny_sd_model(tmp_path):
    """On held-out latents, the fitted map explains part of the random VAE's output (better than the best
    constant colour), while the published SD1 table, made for another VAE, does worse than a constant."""
    import torch.nn.functional as F

    from iga.models import clear_cache, testing

    path = testing.save_single_file(testing.build_tiny("sd1", seed=0), tmp_path / "tiny.safetensors")
    try:
        backend = iga.load(path).backend()
        fitted, table = pv.fit_map(backend), pv.published_map("sd1")
        assert pv.fit_map(backend) is fitted  # cached per backend
        gen = torch.Generator().manual_seed(99)  # not the fit's own latents
        coarse = torch.randn(4, 4, 4, 4, generator=gen)
        z = F.interpolate(coarse, size=(16, 16), mode="bilinear") + 0.5 * torch.randn(4, 4, 16, 16, generator=gen)
        with torch.inference_mode():
            ref = F.adaptive_avg_pool2d(backend.decode(z), (16, 16))
        const = ((ref - ref.mean((0, 2, 3), keepdim=True)) ** 2).mean()

        def r2(mapping):
            pred = torch.stack([mapping(one) for one in z]).clamp(0, 1)
            return float(1 - ((pred - ref) ** 2).mean() / const)

        assert r2(fitted) > 0.03
        assert r2(table) < 0 < r2(fitted)
        stream = pv.PreviewStream(backend, decoder="fit")
        stream(StepInfo(0, 1.0, 0.0, z[:1], z[:1]))
        assert stream.frames[0].rgb.shape == (16, 16, 3)
    finally:
        clear_cache()


def test_previews_iterator_yields_frames_and_then_the_images(demo):
    plan = _plan(demo)
    run = pv.previews(demo, plan, every=5)
    frames = []
    for frame in run:
        if not frames:
            assert run.images is None  # frames arrive while the generation is still running
        frames.append(frame)
    assert [(f.step, f.total) for f in frames] == [(5, 15), (10, 15), (15, 15)]
    assert [f.sigma for f in frames] == [plan.sigmas[5], plan.sigmas[10], plan.sigmas[15]]
    [plain] = demo.generate(plan=plan)
    assert len(run.images) == 1 and np.array_equal(run.images[0].pixels, plain.pixels)  # previews change nothing
    assert not run.cancelled
    with pytest.raises(RuntimeError, match="once"):
        list(run)


def test_stopping_the_iterator_early_cancels_the_run(demo):
    plan = _plan(demo, steps=40)
    run = pv.previews(demo, plan, every=1)
    frames = iter(run)
    first = next(frames)
    frames.close()
    assert first.step == 1
    assert run.cancelled and run.images is None
    assert run.stream.steps_seen < 40
    assert not [t for t in threading.enumerate() if t.name == "iga-preview"]


def test_an_error_in_the_generation_is_raised_by_the_iteration(demo, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("the model broke")

    run = pv.previews(demo, _plan(demo), every=1)
    monkeypatch.setattr(demo, "generate", broken)
    with pytest.raises(RuntimeError, match="the model broke"):
        list(run)


def test_contact_sheet_has_one_labelled_cell_per_frame():
    frames = _frames(7)  # 32 px frames: upscaled x3 to 96 px; 7 frames -> 3 columns, 3 rows
    sheet = pv.contact_sheet(frames)
    cell_w, cell_h = 96, 96 + pv.LABEL_HEIGHT
    assert sheet.size == (3 * cell_w + 4 * pv.MARGIN, 3 * cell_h + 4 * pv.MARGIN)
    px = np.asarray(sheet)
    first = px[pv.MARGIN:pv.MARGIN + 96, pv.MARGIN:pv.MARGIN + 96]
    assert np.array_equal(first[::3, ::3], frames[0].rgb)  # NEAREST upscaling keeps the pixels
    label = px[pv.MARGIN + 96:pv.MARGIN + cell_h, pv.MARGIN:pv.MARGIN + cell_w]
    assert (label < 128).any()  # text was drawn
    last_row_empty = px[pv.MARGIN + 2 * (cell_h + pv.MARGIN):, pv.MARGIN + 1 * (cell_w + pv.MARGIN):]
    assert (last_row_empty == 255).all()  # cells 8 and 9 do not exist
    wide = pv.contact_sheet(frames, columns=7, scale=1)
    assert wide.size == (7 * 32 + 8 * pv.MARGIN, 32 + pv.LABEL_HEIGHT + 2 * pv.MARGIN)


def test_a_non_finite_frame_is_marked_red():
    ok = np.asarray(pv.contact_sheet(_frames(1)))
    bad = np.asarray(pv.contact_sheet(_frames(1, finite=False)))
    red = lambda a: ((a[..., 0] > 200) & (a[..., 1] < 80) & (a[..., 2] < 80)).sum()  # noqa: E731
    assert red(bad) > red(ok) + 50


def test_animated_webp_has_one_frame_per_preview(tmp_path):
    from PIL import Image

    path = pv.animated_webp(_frames(5), tmp_path / "p.webp", duration_ms=120)
    with Image.open(path) as im:
        assert im.format == "WEBP" and im.n_frames == 5 and im.is_animated
        assert im.size == (96, 96 + pv.LABEL_HEIGHT)
        im.seek(1)
        im.load()
        assert im.info.get("loop") == 0 and im.info.get("duration") == 120
    assert [p.name for p in tmp_path.iterdir()] == ["p.webp"]  # no temp file left


def test_save_previews_never_overwrites(tmp_path):
    image = tmp_path / "img.png"
    first = pv.save_previews(_frames(2), image)
    second = pv.save_previews(_frames(3), image)
    assert [p.name for p in first] == ["img-preview.png", "img-preview.webp"]
    assert [p.name for p in second] == ["img-preview-1.png", "img-preview-1.webp"]
    from PIL import Image

    with Image.open(first[1]) as a, Image.open(second[1]) as b:
        assert (a.n_frames, b.n_frames) == (2, 3)


def _cli(args):
    from typer.testing import CliRunner

    from iga.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_generate_preview_writes_sheet_and_webp_beside_the_image(tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    res = _cli(["generate", PROMPT, "--seed", "1", "--steps", "15", "--out", out, "--preview", "--preview-every", "4",
                "-n", "2", "--json"])
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert len(report["images"]) == len(report["previews"]) == 2
    for image, (sheet, webp) in zip(map(Path, report["images"]), report["previews"]):
        assert sheet == str(image.with_name(image.stem + "-preview.png"))
        assert webp == str(image.with_name(image.stem + "-preview.webp"))
        with Image.open(webp) as anim:
            assert anim.n_frames == 4  # steps 4, 8, 12 and the last (15) of this image only
        with Image.open(sheet) as im:
            assert im.size == (2 * 96 + 3 * pv.MARGIN, 2 * (96 + pv.LABEL_HEIGHT) + 3 * pv.MARGIN)
    text = _cli(["generate", PROMPT, "--seed", "1", "--steps", "15", "--out", out, "--preview"])
    assert text.exit_code == 0 and len(text.stdout.split()) == 3  # the image, its sheet and its WebP
    plain = _cli(["generate", PROMPT, "--seed", "1", "--steps", "15", "--out", out, "--json"])
    assert "previews" not in json.loads(plain.stdout)


@pytest.mark.parametrize("args, message", [
    (["--preview-every", "0"], "--preview-every 0"),
    (["--preview-decoder", "taesd"], "--preview-decoder 'taesd'"),
])
def test_bad_preview_every_is_one_clear_error(tmp_path, args, message):
    res = _cli(["generate", PROMPT, "--out", tmp_path, "--preview", *args])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert not any(tmp_path.iterdir())


def test_frames_are_small():
    frames = []
    stream = pv.PreviewStream(_FakeBackend(), decoder="vae", max_side=64, on_frame=frames.append)
    x = torch.zeros(1, 3, 256, 128)
    stream(StepInfo(0, 1.0, 0.0, x, x))
    assert frames[0].rgb.shape == (64, 32, 3) and math.isclose(frames[0].rgb.mean(), 127.5, abs_tol=1)
