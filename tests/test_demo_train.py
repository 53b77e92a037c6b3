"""Demo training smoke test: a few steps, resume equals uninterrupted training, export loads back."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402

from iga.demo.model import DemoModelError, load_demo_model, read_demo_config  # noqa: E402
from iga.demo.trainer import TrainConfig, Trainer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _cfg(steps: int) -> TrainConfig:
    return TrainConfig(seed=3, batch=2, max_steps=steps, warmup=2, checkpoint_every_s=1e9)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    torch.set_num_threads(2)
    tr = Trainer(tmp_path_factory.mktemp("full"), _cfg(4))
    tr.run()
    return tr


def test_resume_continues_exactly_like_uninterrupted_training(tmp_path, uninterrupted):
    first = Trainer(tmp_path, _cfg(4))
    first.train_step()
    first.train_step()
    first.save()  # interrupted after 2 of 4 steps
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 2
    resumed = Trainer(tmp_path, _cfg(4), resume=True)
    assert resumed.step == 2
    resumed.run()
    assert resumed.step == uninterrupted.step == 4
    # same losses for steps 3-4, and bit-identical weights, EMA and optimizer moments
    assert resumed.losses == uninterrupted.losses[2:]
    for a, b in ((resumed.model, uninterrupted.model), (resumed.ema, uninterrupted.ema)):
        for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(va, vb), k
    sa, sb = resumed.opt.state_dict()["state"], uninterrupted.opt.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_export_round_trips_through_load_demo_model(tmp_path, uninterrupted):
    path = uninterrupted.export(tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["iga.architecture"] == "demo" and meta["modelspec.prediction_type"] == "v"
    assert meta["modelspec.sai_model_spec"] == "1.0.0" and meta["modelspec.resolution"] == "32x32"
    assert all(k.startswith(("demo.unet.", "demo.text_encoder.")) for k in keys)
    unet, te, tok, cfg = load_demo_model(path)
    assert cfg["prediction_type"] == "v" and cfg["training_schedule"]["num_train_timesteps"] == 1000
    for k, v in uninterrupted.ema.unet.state_dict().items():
        assert torch.equal(unet.state_dict()[k], v), k
    ids = tok(["a red circle on a black background", "a purple blob"])
    assert ids.shape == (2, 8)
    unk = tok.vocab.index("<unk>")
    assert (ids[1] == unk).sum() == 2  # "purple", "blob"
    assert (tok([""]) == 0).all()  # the empty prompt is all padding: the unconditional input
    states, pooled = te(ids)
    out = unet(torch.zeros(2, 3, 32, 32), torch.tensor([10, 500]), encoder_hidden_states=states,
               class_labels=pooled).sample
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()


def test_read_demo_config_refuses_files_that_are_not_demo_models(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={"iga.architecture": "sd1"})
    with pytest.raises(DemoModelError, match="not an iga demo model"):
        read_demo_config(p)
    q = tmp_path / "broken.safetensors"
    save_file({"w": torch.zeros(2)}, str(q), metadata={"iga.architecture": "demo", "iga.demo.config": "{"})
    with pytest.raises(DemoModelError, match="invalid"):
        read_demo_config(q)
    r = tmp_path / "garbage.safetensors"
    r.write_bytes(b"\xff" * 64)
    with pytest.raises(DemoModelError):
        read_demo_config(r)
    with pytest.raises(FileNotFoundError):
        read_demo_config(tmp_path / "missing.safetensors")
