"""iga.models: loading tiny SD1 / SD2-v / SDXL models from folders and single files, offline."""

from __future__ import annotations

import json
import os
import pickle
import socket
import zipfile

import pytest

torch = pytest.importorskip("torch")

from iga.models import ModelLoadError, clear_cache, load_backend  # noqa: E402
from iga.models import testing  # noqa: E402

ARCHS = ["sd1", "sd2", "sdxl"]
PROMPT = "a photograph of an astronaut riding a horse"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """{arch: (TinyModel, folder, single_file)} built once for this module."""
    return testing.save_family(tmp_path_factory.mktemp("tiny"), ARCHS, seed=10)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _ids(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok(text, padding="max_length", max_length=77, truncation=True)["input_ids"]])


def _reference_conditioning(tiny, text: str, clip_skip: int = 1) -> dict[str, torch.Tensor]:
    """What the conditioning should be, computed straight from the original tiny text encoders."""
    with torch.no_grad():
        if tiny.architecture != "sdxl":
            te, tok = tiny.text_encoders[0], tiny.tokenizers[0]
            out = te(_ids(tok, text), output_hidden_states=True)
            return {"encoder_hidden_states": te.final_layer_norm(out.hidden_states[-clip_skip])}
        parts, pooled = [], None
        for te, tok in zip(tiny.text_encoders, tiny.tokenizers):
            out = te(_ids(tok, text), output_hidden_states=True)
            parts.append(out.hidden_states[-(clip_skip + 1)])
            pooled = getattr(out, "text_embeds", None)
        return {"encoder_hidden_states": torch.cat(parts, -1), "text_embeds": pooled}


@pytest.mark.parametrize("arch", ARCHS)
def test_folder_and_single_file_load_the_same_model(tiny_models, arch):
    tiny, folder, single = tiny_models[arch]
    a, b = load_backend(folder), load_backend(single)
    for backend, fmt in ((a, "diffusers_folder"), (b, "single_file")):
        assert backend.architecture == arch
        assert backend.prediction_type == ("v" if arch == "sd2" else "eps")
        assert backend.identity["format"] == fmt
        assert backend.latent_shape(64, 48) == (4, 6, 8)
        assert backend.training_schedule == {"kind": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                                             "num_train_timesteps": 1000, "zero_terminal_snr": False}
    ca, ua = a.encode_prompt([PROMPT, "a red cube"], ["blurry"], width=64, height=48)
    cb, ub = b.encode_prompt([PROMPT, "a red cube"], ["blurry"], width=64, height=48)
    assert set(ca) == set(cb) == ({"encoder_hidden_states"} | ({"text_embeds", "time_ids"} if arch == "sdxl" else set()))
    for k in ca:
        assert ca[k].shape[0] == ua[k].shape[0] == 2
        assert torch.allclose(ca[k], cb[k], atol=1e-6) and torch.allclose(ua[k], ub[k], atol=1e-6)
    for row, text in enumerate([PROMPT, "a red cube"]):
        for k, v in _reference_conditioning(tiny, text).items():
            assert torch.allclose(ca[k][row:row + 1], v, atol=1e-6), (k, text)
    for k, v in _reference_conditioning(tiny, "blurry").items():  # one negative, used for both prompts
        assert torch.allclose(ua[k], v.expand_as(ua[k]), atol=1e-6), k
    if arch == "sdxl":
        assert ca["time_ids"].tolist() == [[48, 64, 0, 0, 48, 64]] * 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 8, generator=g)
    t = torch.tensor([321.5, 980.0])
    ra, rb = a.raw_model(x, t, ca), b.raw_model(x, t, cb)
    assert torch.allclose(ra, rb, atol=1e-6)
    kwargs = {}
    if arch == "sdxl":
        kwargs["added_cond_kwargs"] = {"text_embeds": ca["text_embeds"], "time_ids": ca["time_ids"]}
    with torch.no_grad():
        direct = tiny.unet(x, t, encoder_hidden_states=ca["encoder_hidden_states"], **kwargs).sample
    assert torch.allclose(ra, direct, atol=1e-6)
    da, db = a.decode(x), b.decode(x)
    assert da.shape == (2, 3, 48, 64) and da.dtype == torch.float32 and da.device.type == "cpu"
    assert 0 <= da.min() and da.max() <= 1
    assert torch.allclose(da, db, atol=1e-6)
    with torch.no_grad():
        ref_img = torch.cat([(tiny.vae.decode(z / tiny.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
                             for z in x.split(1)])
    assert torch.allclose(da, ref_img, atol=1e-6)


def test_loading_fetches_nothing(tiny_models, monkeypatch):
    """With sockets and every hub download function disabled, both formats still load and run."""
    import huggingface_hub
    import huggingface_hub.file_download

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for mod in (huggingface_hub, huggingface_hub.file_download):
        for name in ("hf_hub_download", "snapshot_download"):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, refuse)
    from iga.models import tokenizer

    tokenizer.clip_tokenizer.cache_clear()  # rebuild the vendored tokenizer under the block too
    for arch in ("sd1", "sdxl"):
        _, folder, single = tiny_models[arch]
        for path in (folder, single):
            backend = load_backend(path)
            cond, _ = backend.encode_prompt(["a cat"], [""], width=64, height=64)
            assert torch.isfinite(cond["encoder_hidden_states"]).all()
    assert calls == []


class _Trap:
    """Unpickling this creates a marker file: proof that a loader unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_files_are_refused_without_unpickling(tmp_path, tiny_models):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"state_dict": _Trap(marker)})
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(payload)
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(payload)
    zipped = tmp_path / "zipped.safetensors"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", payload)
    for path in (ckpt, disguised, zipped):
        with pytest.raises(ModelLoadError, match="pickle"):
            load_backend(path)
    _, _, single = tiny_models["sd1"]
    with pytest.raises(ModelLoadError, match="pickle"):
        load_backend(single, vae=ckpt)
    folder = tmp_path / "binfolder"
    (folder / "unet").mkdir(parents=True)
    _, good, _ = tiny_models["sd1"]
    for name in ("model_index.json",):
        (folder / name).write_text((good / name).read_text())
    for sub in ("text_encoder", "scheduler", "unet", "vae"):
        (folder / sub).mkdir(exist_ok=True)
        for f in (good / sub).glob("*.json"):
            (folder / sub / f.name).write_text(f.read_text())
    (folder / "text_encoder" / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(ModelLoadError, match="pickle"):
        load_backend(folder)
    assert not marker.exists()


def test_unreadable_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_backend(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ModelLoadError, match="not a readable"):
        load_backend(junk)
    from safetensors.torch import save_file

    vae_only = tmp_path / "vae_only.safetensors"
    save_file({"encoder.down.0.block.0.conv1.weight": torch.zeros(1)}, str(vae_only))
    with pytest.raises(ModelLoadError, match="VAE only"):
        load_backend(vae_only)


@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_vae_override_replaces_the_decoder(tiny_models, tmp_path, layout):
    tiny, folder, single = tiny_models["sd1"]
    other = testing.tiny_vae(seed=99)
    vae_file = testing.save_vae(other, tmp_path / f"vae-{layout}.safetensors", layout=layout)
    plain = load_backend(single)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = (other.decode(z / other.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    for base in (single, folder):
        swapped = load_backend(base, vae=vae_file)
        assert swapped.identity["vae"] == {"source": "file", "path": str(vae_file.resolve()), "format": layout}
        out = swapped.decode(z)
        assert torch.allclose(out, expected, atol=1e-6)
        assert (out - plain.decode(z)).abs().max() > 1e-2
    assert plain.identity["vae"] == {"source": "checkpoint"}


def test_vae_override_from_a_diffusers_folder(tiny_models):
    tiny, folder, single = tiny_models["sdxl"]
    _, sd1_folder, _ = tiny_models["sd1"]
    swapped = load_backend(single, vae=sd1_folder / "vae")
    assert swapped.identity["vae"]["source"] == "folder"
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    sd1 = load_backend(sd1_folder)
    assert torch.allclose(swapped.decode(z), sd1.decode(z), atol=1e-6)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_clip_skip_selects_an_earlier_layer(tiny_models, arch):
    tiny, _, single = tiny_models[arch]
    backend = load_backend(single)
    c1, _ = backend.encode_prompt([PROMPT], [""], clip_skip=1, width=64, height=64)
    c2, u2 = backend.encode_prompt([PROMPT], [""], clip_skip=2, width=64, height=64)
    assert (c1["encoder_hidden_states"] - c2["encoder_hidden_states"]).abs().max() > 1e-3
    ref = _reference_conditioning(tiny, PROMPT, clip_skip=2)
    assert torch.allclose(c2["encoder_hidden_states"], ref["encoder_hidden_states"], atol=1e-6)
    if arch == "sdxl":  # the pooled embedding does not depend on clip skip
        assert torch.equal(c1["text_embeds"], c2["text_embeds"])
    limit = 3 if arch == "sd1" else 2  # the tiny encoders have 3 layers; SDXL starts at the penultimate
    backend.encode_prompt([PROMPT], [""], clip_skip=limit, width=64, height=64)
    for bad in (0, limit + 1):
        with pytest.raises(ValueError, match="clip_skip"):
            backend.encode_prompt([PROMPT], [""], clip_skip=bad, width=64, height=64)


@pytest.mark.parametrize("arch", ["sd2", "sdxl"])
def test_long_prompts_are_encoded_in_75_token_chunks(tiny_models, arch):
    _, _, single = tiny_models[arch]
    backend = load_backend(single)
    seventy_five = " ".join(["cat"] * 75)  # "cat" is one CLIP token
    c, u = backend.encode_prompt([seventy_five], [""], width=64, height=64)
    assert c["encoder_hidden_states"].shape[1] == 77
    long_prompt = seventy_five + " dog"
    c, u = backend.encode_prompt([long_prompt], [""], width=64, height=64)
    assert c["encoder_hidden_states"].shape[1] == u["encoder_hidden_states"].shape[1] == 154
    first, _ = backend.encode_prompt([seventy_five], [""], width=64, height=64)
    second, empty = backend.encode_prompt(["dog"], [""], width=64, height=64)
    ehs = c["encoder_hidden_states"]
    assert torch.allclose(ehs[:, :77], first["encoder_hidden_states"], atol=1e-6)
    assert torch.allclose(ehs[:, 77:], second["encoder_hidden_states"], atol=1e-6)
    # the negative prompt is padded with an empty chunk
    assert torch.allclose(u["encoder_hidden_states"][:, 77:], empty["encoder_hidden_states"], atol=1e-6)
    if arch == "sdxl":  # pooled output: from the first chunk
        assert torch.allclose(c["text_embeds"], first["text_embeds"], atol=1e-6)


def test_loads_are_cached_by_path_and_mtime(tiny_models):
    _, _, single = tiny_models["sd1"]
    a = load_backend(single)
    assert load_backend(str(single)) is a
    st = os.stat(single)
    os.utime(single, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    b = load_backend(single)
    assert b is not a
    assert load_backend(single, prediction_type="v") is not b


def test_device_and_dtype_choices(tiny_models):
    _, _, single = tiny_models["sd1"]
    with pytest.raises(ModelLoadError, match="float16 is not supported on the CPU"):
        load_backend(single, dtype="fp16")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_backend(single, dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_backend(single, device="cuda")
    with pytest.raises(ModelLoadError, match="unknown device"):
        load_backend(single, device="tpu-ish")
    full = load_backend(single)
    half = load_backend(single, dtype="bf16")
    assert half.dtype == torch.bfloat16 and half.identity["dtype"] == "bfloat16"
    cond, _ = full.encode_prompt(["a cat"], [""], width=64, height=64)
    hcond, _ = half.encode_prompt(["a cat"], [""], width=64, height=64)
    assert hcond["encoder_hidden_states"].dtype == torch.bfloat16
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    out = half.raw_model(x, torch.tensor([500.0]), hcond)
    assert out.dtype == torch.float32  # the sampler's dtype, not the model's
    ref = full.raw_model(x, torch.tensor([500.0]), cond)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


def test_prediction_type_markers_and_override(tiny_models, tmp_path):
    tiny, _, single = tiny_models["sd2"]
    eps = load_backend(single, prediction_type="eps")
    assert eps.prediction_type == "eps" and eps.identity["family"] == "sd2"
    assert "explicit" in eps.identity["prediction_type_source"]
    with pytest.raises(ModelLoadError, match="eps' or 'v'"):
        load_backend(single, prediction_type="flow")
    sd1 = tiny_models["sd1"][0]
    marked = testing.save_single_file(sd1, tmp_path / "vpred.safetensors",
                                      metadata={"modelspec.prediction_type": "v-zsnr"})
    b = load_backend(marked)
    assert b.prediction_type == "v" and b.training_schedule["zero_terminal_snr"] is True
    assert "modelspec.prediction_type" in b.identity["prediction_type_source"]


def test_non_inferable_values_need_the_family_rule_or_metadata(tiny_models, tmp_path):
    tiny = tiny_models["sd2"][0]
    bare = testing.save_single_file(tiny, tmp_path / "bare.safetensors", with_model_config=False)
    with pytest.raises(ModelLoadError, match="iga.model_config"):
        load_backend(bare)
    sd1 = tiny_models["sd1"][0]  # its UNet follows SD1's rule (8 heads); only the text heads are declared
    assert "unet" not in sd1.model_config
    meta = {"iga.model_config": json.dumps({k: v for k, v in sd1.model_config.items() if k != "unet"})}
    ok = testing.save_single_file(sd1, tmp_path / "sd1.safetensors", metadata=meta, with_model_config=False)
    assert load_backend(ok).unet.config.attention_head_dim == 8


def test_bad_sizes_and_batches_are_rejected(tiny_models):
    backend = load_backend(tiny_models["sd1"][2])
    with pytest.raises(ValueError, match="multiple of 8"):
        backend.latent_shape(60, 64)
    with pytest.raises(ValueError, match="negative prompts"):
        backend.encode_prompt(["a", "b", "c"], ["x", "y"], width=64, height=64)
    cond, _ = backend.encode_prompt(["a"], [""], width=64, height=64)
    x = torch.randn(3, 4, 8, 8)
    assert backend.raw_model(x, torch.tensor([10.0, 20.0, 30.0]), cond).shape == x.shape  # batch-1 cond broadcasts
