"""A1111 infotext: exact layout, A1111's quoting and parsing rules, legacy labels, round trips, ReDoS guard."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iga.provenance.infotext import format_infotext, parse_infotext, parse_params_line
from iga.provenance.labels import a1111_labels, resolve_sampler_label

# A1111's own parameter pattern, verbatim from modules/infotext_utils.py (reference/metadata.md section 5)
A1111_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_parse(text: str) -> tuple[str, str, dict[str, str]]:
    """A1111's parse_generation_parameters, as described in the reference notes (prompt, negative, params)."""
    *lines, last = text.strip().split("\n")
    if len(A1111_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, done = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done = True
            line = line[16:].strip()
        if done:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    params = {}
    for k, v in A1111_RE_PARAM.findall(last):
        if v[:1] == '"' and v[-1:] == '"':
            v = json.loads(v)
        m = re.match(r"^(\d+)x(\d+)$", v)
        if m:
            params[f"{k}-1"], params[f"{k}-2"] = m.group(1), m.group(2)
        else:
            params[k] = v
    return prompt, negative, params


def make_plan(**kw):
    plan = {
        "schema": "iga.plan/1", "prompt": "a cat", "negative_prompt": "blurry", "seed": 42, "seeds": [42],
        "batch_index": 0, "sampler": "dpmpp_2m", "schedule": "karras", "steps": 20, "cfg": 7.0,
        "cfg_variant": "cfg", "cfg_rescale": 0.0, "eta": None, "width": 512, "height": 768, "clip_skip": 2,
        "model": {"name": "mymodel", "path": "/m/mymodel.safetensors", "architecture": "sd1",
                  "weights_sha256": "f" * 64, "file_sha256": "0123456789" + "a" * 54, "autov2": "0123456789"},
        "vae": {"id": "sd-vae-ft-mse", "source": "file", "file_sha256": None, "autov2": "abcdef0123"},
        "sigmas": [14.6, 1.0, 0.0], "prediction_type": "eps", "nfe": 39, "overrides": [], "iga_version": "0.1.0",
    }
    plan.update(kw)
    return plan


def test_exact_layout_of_a_full_plan():
    assert format_infotext(make_plan()) == (
        "a cat\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768, "
        "Model hash: 0123456789, Model: mymodel, VAE hash: abcdef0123, VAE: sd-vae-ft-mse, Clip skip: 2, "
        "RNG: CPU, Version: iga 0.1.0"
    )


def test_negative_line_always_present_and_consumers_find_their_markers():
    t = format_infotext(make_plan(negative_prompt=""))
    assert "\nNegative prompt: \n" in t
    last = t.split("\n")[-1]
    assert last.startswith("Steps: ")  # Civitai requires it
    # ComfyUI's importA1111: lastIndexOf("\nSteps:"), then "\nNegative prompt:" before it,
    # negative = substring(p2 + 18, p)
    p = t.rfind("\nSteps:")
    p2 = t.rfind("\nNegative prompt:", 0, p)
    assert p2 > -1 and t[:p2].strip() == "a cat" and t[p2 + 18:p].strip() == ""


def test_optional_fields_only_when_they_say_something():
    t = format_infotext(make_plan(clip_skip=1, vae={"source": "checkpoint", "autov2": "abcdef0123"}))
    assert "Clip skip" not in t and "VAE" not in t
    t = format_infotext(make_plan(eta=1.0, schedule_params={"rho": 7.0}, cfg_rescale=0.7, cfg_variant="cfg_pp"))
    assert "Schedule rho: 7, Eta: 1, CFG rescale: 0.7, CFG variant: cfg_pp, Version: iga 0.1.0" in t


@pytest.mark.parametrize("cfg,text", [(7.0, "7"), (7, "7"), (6.5, "6.5"), (7.25, "7.25"), (0.1, "0.1")])
def test_cfg_written_like_a1111(cfg, text):
    assert f", CFG scale: {text}, " in format_infotext(make_plan(cfg=cfg))


def test_batch_image_seed_is_its_own():
    assert "Seed: 8," in format_infotext(make_plan(seed=7, seeds=[7, 8, 9], batch_index=1))
    # a plan made for one image of a batch (seeds=[s], batch_index=k) keeps its seed
    assert "Seed: 9," in format_infotext(make_plan(seed=9, seeds=[9], batch_index=2))


def test_model_hash_from_file_sha_when_no_autov2():
    plan = make_plan()
    plan["model"] = {"name": "m", "file_sha256": "abcdef0123456789"}
    assert "Model hash: abcdef0123, Model: m," in format_infotext(plan)


def test_quoting_follows_a1111_and_values_survive():
    plan = make_plan()
    plan["model"] = {"name": 'my, "best": model', "autov2": "0123456789"}
    t = format_infotext(plan)
    assert 'Model: "my, \\"best\\": model"' in t
    assert parse_infotext(t)["model"] == 'my, "best": model'
    assert a1111_parse(t)[2]["Model"] == 'my, "best": model'
    # a value equal to its key would be written bare by A1111 and dropped; we quote it
    plan["model"] = {"name": "Model"}
    assert parse_infotext(format_infotext(plan))["model"] == "Model"


TRICKY = [
    ("a, b: c", "x, y: z"),
    ("line one\nline two\n\nline four", "neg one\nneg two"),
    ('quotes " inside \\ and "quoted"', ""),
    ("unicode ✓ 猫 émoji 🐱", "ünïcödé"),
    ("Steps: 20, Sampler: Euler, CFG scale: 7", "Steps: 1, Seed: 2, Size: 3x4"),
    ("a\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1", "b"),
    ("", "only a negative"),
    ("(masterpiece:1.2), [foo|bar], <lora:x:0.8>", "(worst quality:1.4)"),
]


@pytest.mark.parametrize("prompt,negative", TRICKY)
def test_round_trip_tricky_prompts(prompt, negative):
    plan = make_plan(prompt=prompt, negative_prompt=negative)
    t = format_infotext(plan)
    got = parse_infotext(t)
    assert (got["prompt"], got["negative_prompt"]) == (prompt, negative)
    assert (got["seed"], got["steps"], got["cfg"], got["width"], got["height"]) == (42, 20, 7.0, 512, 768)
    assert (got["sampler"], got["schedule"], got["clip_skip"]) == ("dpmpp_2m", "karras", 2)
    assert (got["model"], got["model_hash"], got["vae"], got["vae_hash"]) == (
        "mymodel", "0123456789", "sd-vae-ft-mse", "abcdef0123")
    assert got["warnings"] == []
    # and A1111's own parser reads the same
    a_prompt, a_negative, a_params = a1111_parse(t)
    assert (a_prompt, a_negative) == (prompt, negative)
    assert a_params == got["params"]


line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=30).map(
    str.strip).filter(lambda s: s and not s.startswith("Negative prompt:"))
prompts = st.lists(line, max_size=4).map("\n".join)


@settings(max_examples=150, deadline=None)
@given(prompt=prompts, negative=prompts, name=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                                                        max_size=40),
       seed=st.integers(0, 2**64 - 1), cfg=st.floats(0, 30, allow_nan=False))
def test_round_trip_property(prompt, negative, name, seed, cfg):
    plan = make_plan(prompt=prompt, negative_prompt=negative, seed=seed, seeds=[seed], cfg=cfg)
    plan["model"] = {"name": name}
    got = parse_infotext(format_infotext(plan))
    assert got["prompt"] == prompt and got["negative_prompt"] == negative
    assert got["model"] == name and got["seed"] == seed and got["cfg"] == cfg


def test_parse_a1111_v1_10_infotext():
    t = ("masterpiece, best quality, 1girl\nNegative prompt: lowres, bad anatomy\n"
         "Steps: 28, Sampler: DPM++ 2M SDE, Schedule type: Exponential, CFG scale: 6.5, Seed: 3442370263, "
         "Size: 832x1216, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, "
         "Clip skip: 2, Hires upscale: 1.5, Hires steps: 10, Hires upscaler: Latent, "
         'Lora hashes: "add_detail: 7c6bad76eb54, style: 0123456789ab", Version: v1.10.1')
    got = parse_infotext(t)
    assert got["prompt"] == "masterpiece, best quality, 1girl"
    assert got["negative_prompt"] == "lowres, bad anatomy"
    assert (got["sampler"], got["schedule"]) == ("dpmpp_2m_sde", "exponential")
    assert (got["steps"], got["cfg"], got["seed"], got["width"], got["height"]) == (28, 6.5, 3442370263, 832, 1216)
    assert (got["model"], got["model_hash"], got["clip_skip"], got["denoise"]) == (
        "v1-5-pruned-emaonly", "6ce0161689", 2, 0.45)
    assert got["params"]["Lora hashes"] == "add_detail: 7c6bad76eb54, style: 0123456789ab"
    assert got["params"]["Hires upscaler"] == "Latent" and got["params"]["RNG"] == "GPU"  # A1111 default
    assert got["version"] == "v1.10.1"


def test_parse_legacy_combined_sampler_label():
    t = ("a house\nNegative prompt: ugly\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, "
         "Size: 512x512, Model hash: abcdef0123, Model: foo, Version: v1.6.0")
    got = parse_infotext(t)
    assert (got["sampler"], got["schedule"]) == ("dpmpp_2m", "karras")
    assert got["sampler_label"] == "DPM++ 2M Karras" and got["params"]["Schedule type"] == "Automatic"
    assert got["clip_skip"] == 1  # A1111's default when missing


@pytest.mark.parametrize("label,schedule", [("Euler a", "normal"), ("DPM++ 2M", "karras"),
                                            ("DPM++ 3M SDE", "exponential")])
def test_automatic_schedule_is_the_samplers_a1111_default(label, schedule):
    got = parse_infotext(f"p\nSteps: 20, Sampler: {label}, CFG scale: 7, Seed: 1")
    assert got["schedule"] == schedule and got["schedule_label"] == "Automatic"


def test_unknown_sampler_kept_with_warning():
    got = parse_infotext("p\nSteps: 20, Sampler: Frobnicator 3000, Schedule type: Karras, CFG scale: 7")
    assert got["sampler"] == "Frobnicator 3000" and got["schedule"] == "karras"
    assert any("Frobnicator" in w for w in got["warnings"])


def test_last_line_without_three_params_is_prompt():
    got = parse_infotext("just a prompt, with: one colon")
    assert got["prompt"] == "just a prompt, with: one colon" and got["params"] == {} and got["steps"] is None


def test_bad_numbers_are_warnings_not_crashes():
    got = parse_infotext("p\nSteps: many, Sampler: Euler, CFG scale: high, Seed: 1, Size: 5x")
    assert got["steps"] is None and got["cfg"] is None and got["seed"] == 1
    assert len(got["warnings"]) == 3


def test_params_parser_agrees_with_a1111_pattern():
    line = ('Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 512x512, Model: "a, b", '
            'Hashes: {"vae": "x"}, Template: "x\\ny", Emphasis: Original, ADetailer model: face_yolov8n.pt')
    assert parse_params_line(line) == a1111_parse("p\n" + line)[2]


def test_long_adversarial_param_lines_stay_fast():
    for bad in ("a" * 60_000, "\t" * 60_000 + "a", "a " * 30_000, 'k: "' * 15_000):
        t0 = time.perf_counter()
        parse_infotext("prompt\n" + bad)
        assert time.perf_counter() - t0 < 2.0
    got = parse_infotext("p\nSteps: 1, Seed: 2, Size: 3x4, X: " + "y" * 70_000)
    assert got["steps"] is None and "not parsed as parameters" in got["warnings"][0]


def test_labels_work_without_the_name_table(monkeypatch):
    monkeypatch.setitem(sys.modules, "iga.recipe.names", None)  # import now raises ImportError
    assert a1111_labels("dpmpp_2m_sde_heun", "sgm_uniform") == ("DPM++ 2M SDE Heun", "SGM Uniform")
    assert a1111_labels("euler_ancestral", "ddim_uniform") == ("Euler a", "DDIM")
    assert resolve_sampler_label("DPM++ 2M SDE Heun Exponential") == ("dpmpp_2m_sde_heun", "exponential", None)
    assert resolve_sampler_label("DPM2 a Karras")[:2] == ("dpm_2_ancestral", "karras")
    got = parse_infotext("p\nSteps: 20, Sampler: Euler a, Schedule type: Align Your Steps, CFG scale: 7")
    assert (got["sampler"], got["schedule"]) == ("euler_ancestral", "ays")
    assert resolve_sampler_label("made up")[2] is not None


def test_labels_use_the_name_table():
    names = pytest.importorskip("iga.recipe.names")
    for s in names.SAMPLERS:
        if s.a1111_label:
            assert a1111_labels(s.name, "karras")[0] == s.a1111_label
            assert resolve_sampler_label(s.a1111_label)[0] == s.name


def test_separate_vae_named_from_its_path():
    plan = make_plan(vae={"id": None, "path": "/v/vae-ft-mse-840000.safetensors", "source": "file",
                          "file_sha256": "735e4c3a44" + "0" * 54})
    assert ", VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000, " in format_infotext(plan)
