"""The procedural shapes dataset: determinism, held-out split, colours, anti-aliasing, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from iga.demo import data


def test_same_seed_same_batch_and_different_seed_differs():
    a = data.batch_for_step(3, 7, 32)
    b = data.batch_for_step(3, 7, 32)
    c = data.batch_for_step(3, 8, 32)
    assert np.array_equal(a.images, b.images) and a.prompts == b.prompts
    assert not np.array_equal(a.images, c.images)


def test_iterator_matches_per_step_batches_and_skips_ahead():
    it = data.iterate(seed=5, batch_size=8, start_step=2)
    first, second = next(it), next(it)
    assert np.array_equal(first.images, data.batch_for_step(5, 2, 8).images)
    assert np.array_equal(second.images, data.batch_for_step(5, 3, 8).images)


def test_images_are_float_in_range_with_expected_shape():
    b = data.sample_batch(16, np.random.default_rng(0))
    assert b.images.shape == (16, 3, data.SIZE, data.SIZE) and b.images.dtype == np.float32
    assert b.images.min() >= -1.0 and b.images.max() <= 1.0
    assert len(b) == 16 and len(b.prompts) == 16


def test_held_out_split_is_about_ten_percent_covers_every_value_and_is_disjoint():
    all_t, held, train = data.all_triples(), data.held_out_triples(), data.train_triples()
    assert set(held).isdisjoint(train) and set(held) | set(train) == set(all_t)
    assert 0.05 <= len(held) / len(all_t) <= 0.15
    assert {t.shape for t in held} == set(data.SHAPES)
    assert {t.fg for t in held} == set(data.FG_COLORS)
    assert {t.bg for t in held} == set(data.BG_COLORS)
    # every value of a held-out triple is still seen in training, in other combinations
    assert {t.shape for t in train} == set(data.SHAPES) and {t.fg for t in train} == set(data.FG_COLORS)


def test_training_stream_never_shows_held_out_prompts():
    held = {t.prompt for t in data.held_out_triples()}
    seen = {p for step in range(20) for p in data.batch_for_step(0, step, 64).prompts}
    assert seen.isdisjoint(held)
    assert len(seen) > 50  # the stream does cover the training prompts


def test_foreground_never_equals_background():
    assert all(t.fg != t.bg for t in data.all_triples())


@pytest.mark.parametrize("shape", data.SHAPES)
def test_centered_shape_has_fg_colour_inside_bg_in_corner_and_soft_edges(shape):
    fg, bg = "red", "gray"
    img = data.render([data.Attributes(shape, fg, bg)], np.random.default_rng(0), vary=False)[0]
    u8 = data.to_uint8(img[None])[0]
    assert tuple(u8[0, 0]) == data.BG_COLORS[bg]
    if shape != "ring":  # a ring's centre is background
        assert tuple(u8[16, 16]) == data.FG_COLORS[fg] or tuple(u8[17, 16]) == data.FG_COLORS[fg]
    else:
        assert tuple(u8[16, 16]) == data.BG_COLORS[bg]
    # anti-aliased: some edge pixels are strictly between the two colours in the red channel
    red = u8[..., 0].astype(int)
    lo, hi = sorted((data.BG_COLORS[bg][0], data.FG_COLORS[fg][0]))
    assert ((red > lo) & (red < hi)).sum() >= 4


def test_shapes_are_distinct_masks():
    masks = []
    for s in data.SHAPES:
        img = data.render([data.Attributes(s, "white", "black")], np.random.default_rng(0), vary=False)[0]
        masks.append(img[0] > 0)
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] != masks[j]).sum() > 20, (data.SHAPES[i], data.SHAPES[j])


def test_prompt_grammar_round_trips_and_rejects_other_text():
    t = data.Attributes("star", "yellow", "blue")
    assert t.prompt == "a yellow star on a blue background"
    assert all(data.parse_prompt(x.prompt) == x for x in data.all_triples())
    for bad in ("a yellow star on blue background", "a purple star on a blue background", "a star"):
        with pytest.raises(ValueError):
            data.parse_prompt(bad)


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="unknown split"):
        data.sample_batch(2, np.random.default_rng(0), split="validation")


def test_generation_is_fast():
    rng = np.random.default_rng(0)
    data.sample_batch(64, rng)
    t = time.perf_counter()
    data.sample_batch(512, rng)
    # thousands per second unloaded; a loose bound because the CPU is shared
    assert time.perf_counter() - t < 3.0
