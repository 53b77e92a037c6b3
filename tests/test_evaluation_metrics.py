"""Metrics and failure detectors on constructed images whose answers are known."""

import math

import numpy as np
import pytest

from iga.evaluation import failures, metrics


def solid(rgb, size=32):
    return np.full((size, size, 3), rgb, dtype=np.uint8)


def noise(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def checkerboard(size=32, lo=0, hi=255):
    yy, xx = np.mgrid[:size, :size]
    v = np.where((xx + yy) % 2 == 0, hi, lo).astype(np.uint8)
    return np.repeat(v[..., None], 3, axis=2)


def disc(fg=(220, 30, 30), bg=(30, 50, 140), size=32, r=9):
    yy, xx = np.mgrid[:size, :size]
    img = solid(bg, size)
    img[(xx - size / 2) ** 2 + (yy - size / 2) ** 2 < r * r] = fg
    return img


def test_ssim_of_an_image_with_itself_is_one_and_falls_with_noise():
    a = disc()
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a.astype(int) + np.random.default_rng(1).normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    worse = np.clip(a.astype(int) + np.random.default_rng(1).normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    assert 1.0 > metrics.ssim(noisy, a) > metrics.ssim(worse, a)


def test_psnr_of_a_constant_offset_is_the_closed_form():
    a, b = solid((100, 100, 100)), solid((110, 110, 110))
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert metrics.psnr(a, a) == math.inf


def test_delta_hue_is_signed_circular_and_in_degrees():
    red, green, blue = solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255))
    assert metrics.delta_hue(green, red) == pytest.approx(120.0)
    assert metrics.delta_hue(red, green) == pytest.approx(-120.0)
    assert metrics.delta_hue(blue, red) == pytest.approx(-120.0)  # 240 wraps to -120, not +240
    rose = solid((255, 0, 43))  # hue ~350 degrees
    orange = solid((255, 43, 0))  # hue ~10 degrees
    assert metrics.delta_hue(orange, rose) == pytest.approx(20.2, abs=0.3)


def test_delta_hue_is_undefined_for_grey_images():
    assert math.isnan(metrics.delta_hue(solid((128, 128, 128)), solid((255, 0, 0))))


def test_delta_saturation_and_lightness_have_the_expected_sign_and_size():
    grey, red = solid((128, 128, 128)), solid((255, 0, 0))
    assert metrics.delta_saturation(grey, red) == pytest.approx(-1.0)
    assert metrics.delta_lightness(solid((255, 255, 255)), solid((0, 0, 0))) == pytest.approx(100.0)
    assert metrics.lightness(solid((119, 119, 119))).mean() == pytest.approx(50.0, abs=0.3)  # sRGB 119 ~ L* 50


def test_colourfulness_is_zero_for_grey_and_matches_hasler_suesstrunk_for_two_colours():
    assert metrics.colourfulness(solid((90, 90, 90))) == 0.0
    img = solid((255, 0, 0))
    img[:, 16:] = (0, 0, 255)  # half red, half blue
    rg = np.array([255.0, 0.0])
    yb = np.array([127.5, -255.0])
    expected = math.sqrt(rg.var() + yb.var()) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    assert metrics.colourfulness(img) == pytest.approx(expected)


def test_sharpness_is_zero_when_flat_and_grows_with_edges():
    assert metrics.sharpness(solid((50, 60, 70))) == pytest.approx(0.0)
    assert metrics.sharpness(checkerboard()) > metrics.sharpness(disc()) > 0


def test_hf_energy_separates_smooth_images_noise_and_the_nyquist_pattern():
    yy, xx = np.mgrid[:32, :32]
    wave = 128 + 100 * np.cos(2 * np.pi * xx / 32) * np.cos(2 * np.pi * yy / 32)  # periodic: no wrap-around edge
    smooth = np.repeat(wave.round().astype(np.uint8)[..., None], 3, axis=2)
    assert metrics.hf_energy(smooth) < 0.01
    assert metrics.hf_energy(checkerboard()) == pytest.approx(1.0)
    assert 0.7 < metrics.hf_energy(noise()) < 0.9  # white noise: the area outside radius 0.25, about 0.80
    assert metrics.hf_energy(solid((10, 10, 10))) == 0.0


def test_clipped_counts_pixels_with_a_channel_at_either_end():
    img = solid((128, 128, 128))
    img[:8, :, 0] = 255
    img[8:12, :, 2] = 0
    assert metrics.clipped(img) == pytest.approx(12 / 32)


def test_metrics_refuse_images_that_are_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        metrics.sharpness(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="sizes differ"):
        metrics.ssim(solid((0, 0, 0), 32), solid((0, 0, 0), 16))


def _detect(px, ref=None, **extra):
    m = {**metrics.image_metrics(px), **extra}
    return failures.detect(px, m, metrics.image_metrics(ref) if ref is not None else None)


def test_a_clean_render_trips_no_detector():
    assert _detect(disc(), ref=disc()) == []
    assert _detect(disc()) == []


def test_a_black_frame_is_reported_as_black_first():
    found = _detect(solid((0, 0, 0)))
    assert found[0] == "black" and "constant" in found


def test_a_flat_grey_frame_is_constant_but_not_black():
    assert _detect(solid((120, 120, 120))) == ["constant"]


def test_burnt_needs_many_more_clipped_pixels_than_the_reference():
    burnt = disc(fg=(255, 255, 0), bg=(255, 0, 255))
    assert "burnt" in _detect(burnt, ref=disc())
    assert "burnt" not in _detect(burnt, ref=burnt)  # the reference is just as clipped: that is the model's look


def test_residual_noise_is_judged_against_the_reference():
    noisy = np.clip(disc().astype(int) + np.random.default_rng(3).normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
    assert "residual_noise" in _detect(noisy, ref=disc())
    assert "residual_noise" not in _detect(noisy, ref=noisy)


def test_judge_unreadable_uses_the_lowest_confidence():
    assert "judge_unreadable" in _detect(disc(), judge_confidence=0.3)
    assert "judge_unreadable" not in _detect(disc(), judge_confidence=0.9)


def test_every_failure_type_has_a_documented_rule():
    rules = failures.describe()
    assert list(rules) == list(failures.FAILURES)
    assert all(len(rule) > 20 for rule in rules.values())


def test_an_edge_between_two_colours_of_equal_luma_is_low_frequency_not_noise():
    img = disc(fg=(30, 190, 50), bg=(128, 128, 128))  # green on grey: nearly the same luma
    assert metrics.hf_energy(img) < 0.1
    assert _detect(img) == []
