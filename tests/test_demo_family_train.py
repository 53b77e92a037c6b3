"""The demo family's training at toy scale: every stage resumes exactly, exports load through the ordinary
loaders (SD1 single file and diffusers folder for the latent model, the demo backend with the flow
parameterization for the flow model), and `iga demo train --model` runs and resumes the stages."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from iga.demo.flow import FlowTask  # noqa: E402
from iga.demo.latent import (  # noqa: E402
    NAME, SHIFTED_VAE_NAME, VAE_NAME, LatentDiffusionTask, ShiftedDecoderTask, VaeTask, warm_colours,
)
from iga.demo.runs import Limits, train  # noqa: E402
from iga.demo.trainer import TrainConfig, Trainer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def _cfg(steps: int) -> TrainConfig:
    return TrainConfig(seed=5, batch=2, max_steps=steps, warmup=2, checkpoint_every_s=1e9)


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """A whole `--model latent` run: 2 steps per stage, batch 2."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("latent")
    stages = train("latent", out, Limits(steps=2, vae_steps=2, batch=2))
    return out, stages


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("make", [lambda out: FlowTask(), lambda out: VaeTask(),
                                  lambda out: ShiftedDecoderTask(out / "vae"),
                                  lambda out: LatentDiffusionTask(out / "vae")],
                         ids=["flow", "vae", "vae-warm", "latent"])
def test_every_stage_resumes_exactly_like_an_uninterrupted_run(tmp_path, latent_run, make):
    out, _ = latent_run
    whole = Trainer(tmp_path / "whole", _cfg(3), task=make(out))
    whole.run()
    first = Trainer(tmp_path / "cut", _cfg(3), task=make(out))
    first.train_step()
    first.save()
    resumed = Trainer(tmp_path / "cut", _cfg(3), resume=True, task=make(out))
    assert resumed.step == 1
    resumed.run()
    assert resumed.losses == whole.losses[1:]
    assert _same_state(resumed.model, whole.model) and _same_state(resumed.ema, whole.ema)


def test_a_checkpoint_of_another_model_is_refused_on_resume(tmp_path):
    Trainer(tmp_path, _cfg(1), task=VaeTask()).run()
    with pytest.raises(ValueError, match="'latent-vae'.*not 'flow'"):
        Trainer(tmp_path, _cfg(1), resume=True, task=FlowTask())


def test_the_latent_run_writes_both_layouts_and_both_vaes(latent_run):
    out, stages = latent_run
    assert [s["stage"] for s in stages] == ["vae", "vae-warm", "diffusion"]
    assert all(s["steps"] == 2 for s in stages)
    for name in (f"{NAME}.safetensors", f"{VAE_NAME}.safetensors", f"{SHIFTED_VAE_NAME}.safetensors"):
        assert (out / name).is_file(), name
    index = json.loads((out / NAME / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert json.loads((out / "vae" / "training.json").read_text())["psnr_train"] > 0


def test_the_latent_exports_load_through_the_ordinary_sd1_loader(latent_run):
    from iga.models.loader import clear_cache, load_backend

    out, _ = latent_run
    single, folder = load_backend(out / f"{NAME}.safetensors"), load_backend(out / NAME)
    for b in (single, folder):
        assert (b.architecture, b.prediction_type) == ("sd1", "eps")
        assert b.latent_shape(32, 32) == (4, 8, 8)
        assert b.training_schedule["kind"] == "scaled_linear"
    assert single.vae.config.scaling_factor == folder.vae.config.scaling_factor != 1.0
    for name, p in single.unet.state_dict().items():
        assert torch.equal(p, folder.unet.state_dict()[name]), name
    clear_cache()


def test_rerunning_a_finished_latent_run_skips_every_stage(latent_run):
    out, _ = latent_run
    again = train("latent", out, Limits(steps=2, vae_steps=2, batch=2))
    assert [s.get("skipped") for s in again] == ["already complete"] * 3


def test_the_warm_target_turns_hue_and_keeps_grey_grey():
    from iga.demo.data import sample_batch, to_uint8
    from iga.evaluation.metrics import delta_hue

    x = torch.from_numpy(sample_batch(8, np.random.default_rng(0)).images)
    before, after = to_uint8(x.numpy()), to_uint8(warm_colours(x).numpy())
    hue = [delta_hue(a, b) for a, b in zip(after, before)]
    assert np.nanmean(np.abs(hue)) > 10
    grey = torch.zeros(1, 3, 4, 4)
    assert torch.allclose(warm_colours(grey), grey, atol=1e-5)  # chroma only: neutral colours stay put


def test_the_flow_export_runs_through_the_flow_parameterization(tmp_path):
    import iga

    tr = Trainer(tmp_path / "ckpt", _cfg(1), task=FlowTask())
    tr.run()
    path = tr.export(tmp_path / "flow.safetensors")
    model = iga.load(path)
    plan = model.plan("a red circle on a black background", seed=1, steps=4)
    assert plan.prediction_type == "flow" and plan.training_schedule["shift"] == 3.0
    assert plan.sigmas[0] == pytest.approx(1.0) and plan.sigmas[-1] == 0
    [img] = model.generate(plan=plan)
    assert img.pixels.shape == (32, 32, 3) and np.isfinite(img.pixels).all()


def test_demo_train_cli_runs_the_latent_stages_and_resumes(tmp_path):
    import typer
    from typer.testing import CliRunner

    from iga.commands.demo import register

    app = typer.Typer()
    register(app)
    app.command()(lambda: None)
    args = ["demo", "train", "--model", "latent", "--steps", "1", "--vae-steps", "1", "--batch", "2", "--out",
            str(tmp_path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["model"] == "latent" and [s["steps"] for s in summary["stages"]] == [1, 1, 1]
    res2 = CliRunner().invoke(app, [*args[:4], "--steps", "2", *args[6:]])
    stages = json.loads(res2.output[res2.output.index("{"):])["stages"]
    assert [s.get("skipped") for s in stages[:2]] == ["already complete"] * 2 and stages[2]["steps"] == 2
    bad = CliRunner().invoke(app, ["demo", "train", "--model", "pixels", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "pixel, latent, flow" in bad.output
