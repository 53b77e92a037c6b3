"""Recipe v1: loading, normalisation, every cross-field rule, versions and the committed JSON Schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from iga.recipe import RecipeError, load_recipe_file, parse_recipe_dict, parse_recipe_text
from iga.recipe.canonical import recipe_metadata_sha256
from iga.recipe.versions import MIGRATIONS, migrate
from iga.schemas import schema_json
from shared_support import SHARED

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = SHARED / "reference" / "iga-proposal-example.json"
EXAMPLE_COPY = ROOT / "examples" / "recipes" / "proposal-example.json"


def base() -> dict:
    """A small valid recipe that tests mutate one field at a time."""
    return {
        "iga_version": "1.0.0",
        "model_id": "test",
        "prediction_type": "eps",
        "sampler": {"name": "dpmpp_2m"},
        "scheduler": {"name": "karras", "canonical_steps": 20, "subsample": [16, 24, 28]},
        "cfg": {"default": 7.0, "min": 4.0, "max": 9.0},
        "steps": {"default": 20, "min": 16, "max": 32},
        "constraints": {"forbid_samplers": ["ddim"], "forbid_schedules": ["beta"]},
        "presets": [{"name": "Quality", "steps": 28, "cfg": 6.5}, {"name": "Fast", "steps": 16}],
    }


def errors_of(d: dict) -> list:
    with pytest.raises(RecipeError) as e:
        parse_recipe_dict(d)
    return e.value.issues


def test_proposal_example_loads_normalised_with_warnings():
    path = EXAMPLE if EXAMPLE.exists() else EXAMPLE_COPY
    recipe, issues = load_recipe_file(path)
    assert recipe.sampler.name == "euler_ancestral"
    assert recipe.scheduler.name == "karras"
    assert recipe.constraints.forbid_samplers == ["ddim", "lcm"]
    assert recipe.constraints.forbid_schedules == ["beta", "turbo"]
    warnings = [i for i in issues if i.severity == "warning"]
    assert any(i.path == "sampler.params.order" for i in warnings), warnings
    assert recipe.allowed_steps() == [16, 20, 24, 28, 32]


def test_example_copy_is_identical_to_reference():
    if not EXAMPLE.exists():
        pytest.skip("shared reference not present on this machine")
    assert json.loads(EXAMPLE.read_text()) == json.loads(EXAMPLE_COPY.read_text())


def test_legacy_combined_label_sets_schedule():
    d = base()
    d["sampler"] = {"name": "DPM++ 2M SDE Karras"}
    del d["scheduler"]["name"]
    recipe, _ = parse_recipe_dict(d)
    assert (recipe.sampler.name, recipe.scheduler.name) == ("dpmpp_2m_sde", "karras")


def test_combined_label_conflicting_with_schedule_is_an_error():
    d = base()
    d["sampler"] = {"name": "DPM++ 2M Exponential"}
    issues = errors_of(d)
    assert any("implies schedule" in i.message for i in issues)


@pytest.mark.parametrize(
    "mutate, path, fragment",
    [
        (lambda d: d["steps"].update(default=40), "steps", "min <= default <= max"),
        (lambda d: d["steps"].update(min=0, default=0, max=4), "steps.min", "at least 1"),
        (lambda d: d["cfg"].update(default=12.0), "cfg", "min <= default <= max"),
        (lambda d: d["cfg"].update(min=float("nan")), "cfg.min", "finite"),
        (lambda d: d["presets"][0].update(steps=40), "presets[0].steps", "outside the steps range"),
        (lambda d: d["presets"][0].update(steps=30), "presets[0].steps", "not an allowed step count"),
        (lambda d: d["presets"][1].update(cfg=2.0), "presets[1].cfg", "outside the CFG range"),
        (lambda d: d["presets"][1].update(name="quality"), "presets[1].name", "duplicate"),
        (lambda d: d["scheduler"].update(subsample=[8, 24]), "scheduler.subsample[0]", "outside the steps range"),
        (lambda d: d["scheduler"].update(subsample=[24, 16]), "scheduler.subsample", "strictly increasing"),
        (lambda d: d["steps"].update(default=18), "steps.default", "not an allowed step count"),
        (lambda d: d["constraints"].update(forbid_samplers=["DPM++ 2M"]), "sampler.name", "forbid_samplers"),
        (lambda d: d["constraints"].update(forbid_schedules=["Karras"]), "scheduler.name", "forbid_schedules"),
        (lambda d: d["constraints"].update(allow_samplers=["euler"]), "sampler.name", "allow_samplers"),
        (lambda d: d["presets"][0].update(sampler="DDIM"), "presets[0].sampler", "forbidden"),
        (lambda d: d["sampler"].update(name="dpmpp_2n"), "sampler.name", "unknown sampler"),
        (lambda d: d["scheduler"].update(name="karas"), "scheduler.name", "unknown schedule"),
        (lambda d: d.update(prediction_type="velocity"), "prediction_type", "input should be"),
        (lambda d: d.update(default_preset="Slow"), "default_preset", "no preset"),
        (lambda d: d.update(resolution={"preferred": ["1000x1001"]}), "resolution.preferred[0]", "multiples of 8"),
        (lambda d: d.update(resolution={"preferred": ["1024x1536"], "max": "1024x1024"}),
         "resolution.preferred[0]", "larger than"),
        (lambda d: d.update(resolution={"preferred": ["big"]}), "resolution.preferred[0]", "not a size"),
        (lambda d: d.update(hashes={"weights_sha256": "xyz"}), "hashes.weights_sha256", "pattern"),
        (lambda d: d.pop("cfg"), "cfg", "field required"),
    ],
)
def test_each_rule_reports_path_value_and_fix(mutate, path, fragment):
    d = base()
    mutate(d)
    issues = errors_of(d)
    hits = [i for i in issues if i.path == path and fragment.lower() in i.message.lower()]
    assert hits, [str(i) for i in issues]
    assert all(i.fix for i in hits), "every error must say how to fix it"


@pytest.mark.parametrize(
    "grid, fragment",
    [
        ([14.6, 7.0, 7.0, 0.0], "strictly decrease"),
        ([14.6, 9.0, 12.0, 0.0], "strictly decrease"),
        ([14.6, 7.0, 1.0, 0.5], "end in 0"),
        ([14.6, float("inf"), 1.0, 0.0], "finite"),
        ([14.6, -1.0, 0.0], "> 0"),
    ],
)
def test_explicit_grid_rules(grid, fragment):
    d = base()
    d["scheduler"] = {"name": "explicit", "grid": grid}
    d["steps"] = {"default": 2, "min": 1, "max": len(grid) - 1}
    d["presets"] = []
    issues = errors_of(d)
    assert any(fragment in i.message for i in issues), [str(i) for i in issues]


def test_valid_explicit_grid_and_refinement_limit():
    d = base()
    d["scheduler"] = {"name": "explicit", "grid": [14.6, 5.0, 2.0, 0.5, 0.0], "canonical_steps": 4}
    d["steps"] = {"default": 4, "min": 2, "max": 4}
    d["presets"] = []
    parse_recipe_dict(d)
    d["steps"]["max"] = 8
    assert any(i.path == "steps.max" for i in errors_of(d))


def test_all_errors_reported_at_once():
    d = base()
    d["steps"]["default"] = 99
    d["cfg"]["default"] = -1
    d["sampler"]["name"] = "nope"
    paths = {i.path for i in errors_of(d)}
    assert {"sampler.name"} <= paths
    # name errors stop before structural checks only when the name is unusable; fix it and the rest show
    d["sampler"]["name"] = "euler"
    paths = {i.path for i in errors_of(d)}
    assert {"steps", "cfg", "cfg.default"} <= paths


def test_error_message_names_path_value_and_fix():
    d = base()
    d["presets"][0]["cfg"] = 12
    with pytest.raises(RecipeError) as e:
        parse_recipe_dict(d, source="my.json")
    text = str(e.value)
    assert "my.json" in text and "presets[0].cfg = 12" in text and "Fix:" in text


def test_unknown_field_warns_with_suggestion_and_is_kept():
    d = base()
    d["cfg"]["rescal"] = 0.7
    recipe, issues = parse_recipe_dict(d)
    w = [i for i in issues if i.path == "cfg.rescal"]
    assert w and w[0].severity == "warning" and "rescale" in w[0].fix
    assert recipe.to_dict()["cfg"]["rescal"] == 0.7


def test_newer_minor_preserves_unknown_fields_on_round_trip():
    d = base()
    d["iga_version"] = "1.7.0"
    d["future_block"] = {"a": [1, 2, {"b": None}]}
    d["sampler"]["future_knob"] = "x"
    recipe, issues = parse_recipe_dict(d)
    out = recipe.to_dict()
    assert out["future_block"] == d["future_block"]
    assert out["sampler"]["future_knob"] == "x"
    assert out["iga_version"] == "1.7.0"
    assert all(i.severity == "info" for i in issues if "newer" in i.message)
    again, _ = parse_recipe_dict(out)
    assert again.to_dict() == out


def test_newer_major_refused_clearly():
    d = base()
    d["iga_version"] = "2.0.0"
    issues = errors_of(d)
    assert issues[0].path == "iga_version" and "newer major" in issues[0].message


def test_missing_version_refused():
    d = base()
    del d["iga_version"]
    assert "iga_version" in errors_of(d)[0].message


def test_migration_from_flat_proposal_layout():
    flat = {
        "model_id": "old", "prediction_type": "v", "sampler": "Euler a", "scheduler": "Karras",
        "steps_default": 20, "steps_range": [16, 32], "cfg_range": [5.0, 9.0], "vae_id": "sdxl-vae-fp16-fix",
        "clip_skip": 2, "resolution_hints": ["1024x1024"],
        "presets": [{"name": "Quality", "steps": 28, "cfg": 6.5}],
    }
    assert (0, 1) in MIGRATIONS
    migrated, version, notes = migrate(flat)
    assert str(version) == "0.1.0" and migrated["iga_version"] == "1.4.0"  # 0.1 -> 1.0 -> 1.1 -> 1.2 -> 1.3 -> 1.4
    assert migrated["steps"] == {"default": 20, "min": 16, "max": 32}
    assert migrated["cfg"] == {"default": 7.0, "min": 5.0, "max": 9.0}
    recipe, issues = parse_recipe_dict(flat)
    assert recipe.sampler.name == "euler_ancestral" and recipe.vae.id == "sdxl-vae-fp16-fix"
    assert recipe.resolution.preferred == ["1024x1024"]
    assert any("migrated" in i.message for i in issues)
    assert "steps_range" not in recipe.to_dict()


def test_yaml_and_json_authoring_agree(tmp_path):
    import yaml

    d = base()
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "r.json").write_text(json.dumps(d))
    a, _ = load_recipe_file(tmp_path / "r.yaml")
    b, _ = load_recipe_file(tmp_path / "r.json")
    assert a.to_dict() == b.to_dict()


def test_size_limit_and_bad_text():
    with pytest.raises(RecipeError, match="at most"):
        parse_recipe_text("{" + " " * (1 << 20) + "}")
    with pytest.raises(RecipeError, match="cannot parse"):
        parse_recipe_text('{"iga_version": ')
    with pytest.raises(RecipeError, match="object"):
        parse_recipe_text("[1, 2]")
    with pytest.raises(RecipeError, match="UTF-8"):
        parse_recipe_text(b"\xff\xfe{}")


def test_metadata_hash_ignores_hashes_field_and_key_order():
    d = base()
    h1 = recipe_metadata_sha256(d)
    d2 = json.loads(json.dumps(d, sort_keys=True))
    d2["hashes"] = {"weights_sha256": "0" * 64}
    assert recipe_metadata_sha256(d2) == h1
    d2["cfg"]["default"] = 7.5
    assert recipe_metadata_sha256(d2) != h1


def test_committed_schema_is_current():
    committed = (ROOT / "schema" / "recipe-v1.schema.json").read_text()
    assert committed == schema_json("recipe"), "run: iga schema recipe > schema/recipe-v1.schema.json"


def test_prediction_type_aliases():
    for alias, canon in (("epsilon", "eps"), ("v_prediction", "v"), ("sample", "x0"), ("flow_prediction", "flow")):
        d = copy.deepcopy(base())
        d["prediction_type"] = alias
        assert parse_recipe_dict(d)[0].prediction_type == canon


def test_a_1_0_recipe_migrates_to_1_1_with_its_content_unchanged():
    from iga.recipe.versions import migrate

    data = {"iga_version": "1.0.0", "prediction_type": "eps", "sampler": {"name": "euler"},
            "scheduler": {"name": "karras"}, "cfg": {"default": 7, "min": 5, "max": 9},
            "steps": {"default": 20, "min": 15, "max": 30}}
    migrated, version, _ = migrate(data)
    assert str(version) == "1.0.0" and migrated == {**data, "iga_version": "1.4.0"}


def test_a_calibration_block_round_trips_and_an_older_minor_recipe_has_none():
    from iga.recipe import parse_recipe_dict

    base = {"iga_version": "1.1.0", "prediction_type": "v", "sampler": {"name": "euler"},
            "scheduler": {"name": "karras"}, "cfg": {"default": 3, "min": 2, "max": 4},
            "steps": {"default": 20, "min": 15, "max": 30}}
    cal = {"date": "2026-11-29T00:00:00Z", "iga_version": "0.1.0", "budget": {"prompts": 8},
           "thresholds": {"forbid_failure_rate": 0.25}, "evidence": {"lcm": "burnt 40 %"}}
    recipe, _ = parse_recipe_dict({**base, "calibration": cal})
    assert recipe.to_dict()["calibration"]["evidence"] == {"lcm": "burnt 40 %"}
    older, _ = parse_recipe_dict({**base, "iga_version": "1.0.0"})
    assert older.calibration is None
