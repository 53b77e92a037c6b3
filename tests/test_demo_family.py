"""The shipped demo family: the latent SD1 model (single file and diffusers folder, its VAE and the warm VAE) and
the rectified-flow model load by path and by name, plan, generate, show and replay; the latent model matches
diffusers' own pipeline on its folder; the recipe's VAE resolves and the other one is a soft finding."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import iga  # noqa: E402
from iga.demo.model import FAMILY  # noqa: E402
from iga.paths import DEMO_DIR  # noqa: E402
from test_generate_support import diffusers_scheduler, pixel_diff  # noqa: E402

LATENT = DEMO_DIR / f"{FAMILY['latent']}.safetensors"
FOLDER = DEMO_DIR / FAMILY["latent"]
FLOW = DEMO_DIR / f"{FAMILY['flow']}.safetensors"
PROMPT = "a green star on a gray background"
SHAPES_PROMPT = ["a red circle on a black background", "a yellow triangle on a blue background"]

pytestmark = [pytest.mark.usefixtures("offline_audit"),
              pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")]


@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from iga.cli import app

    def run(*args: str) -> tuple[int, str]:
        res = CliRunner().invoke(app, list(args))
        return res.exit_code, res.output

    return run


@pytest.mark.parametrize("seed", [0, 7])
def test_the_latent_file_in_iga_matches_diffusers_pipeline_on_the_folder(seed):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(FOLDER), local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = diffusers_scheduler("euler")
    model = iga.load(LATENT)
    cfg = model.source.recipe.cfg.default
    plan = model.plan(PROMPT, sampler="euler", schedule="karras", steps=20, cfg=cfg, seed=seed, size="32x32",
                      mode="permissive")
    ours = model.generate(plan=plan)[0].pixels
    with torch.inference_mode():
        theirs = pipe(PROMPT, num_inference_steps=20, guidance_scale=cfg, height=32, width=32, output_type="np",
                      generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    theirs = (theirs * 255.0).round().astype(np.uint8)
    assert ours.std() > 20  # a trained model draws a shape, not a flat field
    max_abs, mean_abs = pixel_diff(ours, theirs)
    assert max_abs <= 2, (max_abs, mean_abs)


@pytest.mark.parametrize("name, architecture, prediction", [
    (FAMILY["latent"], "sd1", "eps"), (FAMILY["flow"], "demo", "flow"), (FAMILY["pixel"], "demo", "v")])
def test_inspect_by_name_reports_architecture_prediction_and_recipe(cli, name, architecture, prediction):
    code, out = cli("inspect", name, "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["architecture"]["architecture"] == architecture
    assert info["recipe"]["raw"]["prediction_type"] == prediction
    assert info["recipe"]["raw"]["model_id"] == name


def test_the_folder_and_the_single_file_hold_the_same_recipe_and_weights():
    a, b = iga.load(LATENT), iga.load(FOLDER)
    assert a.source.recipe.model_dump(exclude={"hashes"}) == b.source.recipe.model_dump(exclude={"hashes"})
    assert np.array_equal(a.generate(PROMPT, seed=3)[0].pixels, b.generate(PROMPT, seed=3)[0].pixels)


@pytest.mark.parametrize("name", [FAMILY["latent"], FAMILY["flow"]])
def test_generate_by_name_then_show_and_replay_bit_for_bit(cli, tmp_path, name):
    from PIL import Image

    code, out = cli("generate", SHAPES_PROMPT[0], "--model", name, "--seed", "11", "-o", str(tmp_path / "a"))
    assert code == 0, out
    [png] = list((tmp_path / "a").glob("*.png"))
    code, shown = cli("show", str(png))
    assert code == 0 and name in shown
    code, out = cli("replay", str(png), "--save", str(tmp_path / "b.png"))
    assert code == 0, out
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(tmp_path / "b.png")))


def test_the_recipe_vae_resolves_to_the_shipped_vae_and_the_warm_one_is_a_soft_finding():
    from iga.guard import GuardRefused

    model = iga.load(LATENT)
    plan = model.plan(PROMPT, seed=1)
    assert plan.vae is not None and plan.vae.id == "iga-demo-latent-vae-v1"
    with pytest.raises(GuardRefused) as refused:
        model.plan(PROMPT, seed=1, vae="iga-demo-latent-vae-warm-v1")
    [finding] = [f for f in refused.value.findings if f.field == "vae"]
    assert finding.severity == "soft"
    warm = model.plan(PROMPT, seed=1, vae="iga-demo-latent-vae-warm-v1", overrides=["vae"],
                      reason="show the colour shift")
    assert warm.vae.id == "iga-demo-latent-vae-warm-v1" and warm.vae.source == "file"
    a, b = model.generate(plan=plan)[0].pixels, model.generate(plan=warm)[0].pixels
    assert pixel_diff(a, b)[0] > 30  # the same latents, painted in other colours


def test_the_flow_model_plans_on_its_shifted_flow_schedule():
    model = iga.load(FLOW)
    plan = model.plan(PROMPT, seed=2)
    assert plan.prediction_type == "flow" and plan.training_schedule["shift"] == 3.0
    assert plan.sigmas[0] == pytest.approx(1.0) and plan.sigmas[-1] == 0.0
    assert model.generate(plan=plan)[0].pixels.std() > 20


@pytest.fixture(scope="module")
def family_sources():
    from iga.guard.source import describe_model
    from iga.store import model_path

    return [describe_model(str(model_path(name))) for name in FAMILY.values()]


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_the_cross_recipe_matrix_fills_every_cell_or_says_why_not(tmp_path, family_sources, guarded):
    from PIL import Image

    from iga.evaluation.matrix import draw_matrix, markdown_table, run_matrix

    m = run_matrix(family_sources, "demo:all:1", 1, tmp_path, guarded=guarded)
    names = list(FAMILY.values())
    assert m.models == m.recipes == names
    for model in names:
        for recipe in names:
            cell = m.cells[model][recipe]
            assert cell["n"] + cell["refused"] == 1, (model, recipe, cell)
            assert bool(cell["n"]) == bool(m.samples[model][recipe])
        assert m.cells[model][model]["n"] == 1  # a model always runs under its own recipe
    flow_refusals = [m.cells[FAMILY["flow"]][r]["refused"] for r in names if r != FAMILY["flow"]]
    # the flow recipe allows only the samplers its calibration kept; without the guard nothing is refused
    assert flow_refusals == ([1, 1] if guarded else [0, 0])
    table = markdown_table(m)
    assert table.count("\n") == 1 + len(names) and ("refused (1)" in table) == guarded
    png = draw_matrix(m, tmp_path / "m.png")
    with Image.open(png) as im:
        assert im.size[0] > 3 * 4 * 32 and im.size[1] > 3 * 32


def test_an_unknown_model_name_is_a_usage_error_naming_the_known_ids(cli):
    code, out = cli("plan", "a red circle on a black background", "--model", "iga-demo-latnet-v1")
    assert code == 2
    text = " ".join(out.replace("│", " ").split())  # typer boxes and wraps usage errors
    assert "not a file or folder here, nor a model id" in text and FAMILY["latent"] in text
