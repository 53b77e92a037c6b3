"""Axes, values and the setting spaces of the protocol (no images rendered)."""

import pytest

from iga.evaluation import SpecError, parse_spec
from iga.evaluation.axes import (KNOB_CFG, KNOB_STEPS, knob_recipe, knob_space, knob_values, parse_values,
                                 recipe_space, recipe_values)
from iga.evaluation.experiment import sweep_points
from iga.guard.defaults import UI_CFG, UI_STEPS
from iga.recipe.names import SAMPLER_NAMES, UnknownNameError


@pytest.fixture(scope="module")
def recipe():
    from iga.generate import load

    return load().recipe


def test_values_parse_lists_ranges_and_canonical_names():
    assert parse_values("steps", "10-40:10") == [10, 20, 30, 40]
    assert parse_values("cfg", "2, 3.5") == [2.0, 3.5]
    assert parse_values("sampler", "Euler a,DPM++ 2M") == ["euler_ancestral", "dpmpp_2m"]
    assert parse_values("schedule", "Karras") == ["karras"]
    assert parse_values("cfg", "recipe") == "recipe"


def test_a_combined_label_would_vary_two_axes_and_is_refused():
    with pytest.raises(SpecError, match="also sets the schedule"):
        parse_values("sampler", "DPM++ 2M Karras")


def test_unknown_names_list_close_matches_and_duplicates_are_refused():
    with pytest.raises(UnknownNameError, match="euler"):
        parse_values("sampler", "eulerr")
    with pytest.raises(SpecError, match="twice"):
        parse_values("steps", "20,20")


def test_recipe_values_are_what_the_recipe_admits(recipe):
    samplers = recipe_values("sampler", recipe)
    assert samplers[0] == recipe.sampler.name and "lcm" not in samplers  # native first, forbidden left out
    steps = recipe_values("steps", recipe)
    assert steps[0] == recipe.steps.min and steps[-1] == recipe.steps.max and len(steps) <= 8
    assert recipe.steps.default in steps
    cfgs = recipe_values("cfg", recipe)
    assert cfgs[0] == recipe.cfg.min and cfgs[-1] == recipe.cfg.max and recipe.cfg.default in cfgs


def test_knob_values_cover_a_uis_controls_end_to_end():
    assert knob_values("sampler") == list(SAMPLER_NAMES)
    assert KNOB_STEPS[0] == UI_STEPS[0] and KNOB_STEPS[-1] == UI_STEPS[1]
    assert KNOB_CFG[0] == UI_CFG[0] and KNOB_CFG[-1] == UI_CFG[1]
    space = knob_space()
    assert space.steps == tuple(range(1, 151)) and space.cfgs[0] == 1.0 and space.cfgs[-1] == 30.0
    assert len(space.cfgs) == 59  # 1 to 30 by 0.5


def test_the_recipe_space_lies_inside_the_recipe_and_the_knob_recipe_keeps_only_facts(recipe):
    space = recipe_space(recipe)
    assert set(space.steps) == set(range(recipe.steps.min, recipe.steps.max + 1))
    assert min(space.cfgs) == recipe.cfg.min and max(space.cfgs) == recipe.cfg.max
    knobs = knob_recipe(recipe)
    assert knobs.prediction_type == recipe.prediction_type and knobs.training_schedule == recipe.training_schedule
    assert knobs.constraints.forbid_samplers == [] and knobs.presets == []
    assert (knobs.steps.min, knobs.steps.max) == UI_STEPS


def test_two_axes_need_grid_and_then_give_their_product(recipe):
    spec = {"vary": {"steps": [10, 20], "cfg": [2, 3, 4]}, "prompts": ["a red circle on a blue background"],
            "seeds": 1}
    with pytest.raises(SpecError, match="exactly one at a time"):
        parse_spec(dict(spec))
    points = sweep_points(parse_spec({**spec, "grid": True}), recipe, ["p"], [1])
    grid = [p for p in points if p.role == "point"]
    assert len(grid) == 6 and {(p.value, p.grid_value) for p in grid} == {
        (s, c) for s in ("10", "20") for c in ("2", "3", "4")}
    assert all(sorted(p.request.overrides) == ["cfg", "steps"] for p in grid)


def test_a_spec_rejects_unknown_fields_and_bad_learned_weights(tmp_path):
    with pytest.raises(SpecError, match="colour"):
        parse_spec({"colour": "red"})
    with pytest.raises(SpecError, match="clip_model"):
        parse_spec({"clip_model": str(tmp_path / "missing")})
    with pytest.raises(SpecError, match="base field"):
        parse_spec({"base": {"bogus": 1}})
