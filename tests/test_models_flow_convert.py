"""SD3 / Flux original-layout single files: exact round trips through iga's converters, config inference,
detection, the stock loader's narrow-Flux failure, and Flux companion files (tiny random models, no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402
from test_checkpoint_support import isolated_cache, run  # noqa: E402,F401  (isolated_cache: autouse)

import iga.checkpoint as ck  # noqa: E402
from iga.models import flow_convert as fc  # noqa: E402
from iga.models import flow_files as ff  # noqa: E402
from iga.models.ldm import vae_to_ldm  # noqa: E402

FLUX = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
SD3 = dict(sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
           num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
           pos_embed_max_size=32)
# SD3.5-style: q/k RMS norms (give the head size) and a dual-attention block
SD35 = dict(SD3, num_layers=3, qk_norm="rms_norm", dual_attention_layers=(0, 1))


def _seed(n: int = 0) -> None:
    torch.manual_seed(n)


def _randomize(model: Any) -> Any:
    """Fresh models zero some layers (adaLN, proj_out); random values everywhere make the checks bite."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def _flux(guidance: bool = True) -> Any:
    _seed(1)
    return _randomize(diffusers.FluxTransformer2DModel(**FLUX, guidance_embeds=guidance))


def _sd3(cfg: dict) -> Any:
    _seed(2)
    return _randomize(diffusers.SD3Transformer2DModel(**cfg))


def _vae(scaling: float, shift: float) -> Any:
    _seed(3)
    return _randomize(diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=scaling, shift_factor=shift))


def _clip(hidden: int, proj: int | None, identity: bool = False) -> Any:
    _seed(hidden)
    cfg = transformers.CLIPTextConfig(vocab_size=514, hidden_size=hidden, intermediate_size=2 * hidden,
                                      num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                      projection_dim=proj or hidden, bos_token_id=512, eos_token_id=513,
                                      pad_token_id=513)
    model = _randomize(transformers.CLIPTextModelWithProjection(cfg) if proj else transformers.CLIPTextModel(cfg))
    if identity:
        with torch.no_grad():
            model.text_projection.weight.copy_(torch.eye(hidden))
    return model


def _t5() -> Any:
    _seed(5)
    return _randomize(transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=256, d_model=64, d_kv=8, d_ff=128, num_layers=2, num_heads=8, feed_forward_proj="gated-gelu",
        dropout_rate=0.0)))


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _flux_inputs() -> dict:
    g = torch.Generator().manual_seed(7)
    n_img, n_txt = 16, 5
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"),
                          -1).reshape(-1, 3)
    return dict(hidden_states=torch.randn(1, n_img, 64, generator=g),
                encoder_hidden_states=torch.randn(1, n_txt, 64, generator=g),
                pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.tensor([0.7]),
                img_ids=img_ids, txt_ids=torch.zeros(n_txt, 3), return_dict=False)


def _sd3_inputs() -> dict:
    g = torch.Generator().manual_seed(8)
    return dict(hidden_states=torch.randn(1, 16, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(1, 6, 64, generator=g),
                pooled_projections=torch.randn(1, 64, generator=g), timestep=torch.tensor([500.0]), return_dict=False)


def _plain(config: Any) -> dict:
    """A diffusers config without its bookkeeping entries, tuples as lists (configs reloaded from JSON)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if not k.startswith("_")}


def _expected(model: Any, keys: list[str]) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in model.config.items() if k in keys}


# ---------------------------------------------------------------- Flux


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."], ids=["bfl", "comfyui"])
def test_flux_round_trip_exact(guidance: bool, prefix: str) -> None:
    model = _flux(guidance)
    theirs = model.state_dict()
    original = fc.flux_from_diffusers(theirs, dict(model.config))
    assert "double_blocks.1.img_attn.qkv.weight" in original and "single_blocks.1.linear1.weight" in original
    assert ("guidance_in.in_layer.weight" in original) is guidance
    assert not any(k.startswith(("transformer_blocks", "x_embedder")) for k in original)
    back, cfg = fc.flux_to_diffusers({prefix + k: v for k, v in original.items()})
    _assert_same(back, theirs)
    _assert_same(fc.flux_from_diffusers(back, cfg), original)
    # everything but out_channels (None = in_channels) is read from shapes; rope axes by the proportional rule
    assert cfg == _expected(model, list(cfg)) | {"guidance_embeds": guidance}
    rebuilt = diffusers.FluxTransformer2DModel.from_config(cfg).eval()
    rebuilt.load_state_dict(back, strict=True)
    inputs = _flux_inputs()
    if guidance:
        inputs["guidance"] = torch.tensor([3.5])
    with torch.no_grad():
        assert torch.equal(model(**inputs)[0], rebuilt(**inputs)[0])


class _TorchWithSplitFor:
    """``torch`` as seen by diffusers' converter, but with its single-block split sized for ``inner`` instead of
    the hard-coded 3072: the rest of diffusers' own mapping then serves as an independent oracle for ours."""

    def __init__(self, inner: int):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def split(self, t: Any, sizes: Any, dim: int = 0) -> Any:
        i = self.inner
        return torch.split(t, [i, i, i, t.shape[dim] - 3 * i], dim=dim)


def test_flux_mapping_matches_diffusers_own_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.loaders import single_file_utils as sfu

    model = _flux(True)
    original = fc.flux_from_diffusers(model.state_dict())
    monkeypatch.setattr(sfu, "torch", _TorchWithSplitFor(model.inner_dim))
    stock = sfu.convert_flux_transformer_checkpoint_to_diffusers(dict(original))
    ours, _ = fc.flux_to_diffusers(original)
    _assert_same(ours, stock)


def test_stock_from_single_file_cannot_load_narrow_flux_but_iga_can(tmp_path: Path) -> None:
    model = _flux(True)
    folder = tmp_path / "cfg"
    model.save_pretrained(folder)
    f = tmp_path / "flux_tiny.safetensors"
    save_file(fc.flux_from_diffusers(model.state_dict()), str(f))
    # diffusers 0.42.1 splits single_blocks.N.linear1 at 3072 rows (the released width): fails on a narrow file
    with pytest.raises(RuntimeError, match="split_with_sizes"):
        diffusers.FluxTransformer2DModel.from_single_file(str(f), config=str(folder), local_files_only=True)
    from safetensors.torch import load_file

    sd, cfg = fc.flux_to_diffusers(load_file(str(f)))
    _assert_same(sd, model.state_dict())


def test_flux_rope_axes_rule() -> None:
    assert fc.flux_rope_axes(128) == (16, 56, 56)
    assert fc.flux_rope_axes(16) == (4, 6, 6)
    assert all(sum(fc.flux_rope_axes(h)) == h and all(a % 2 == 0 for a in fc.flux_rope_axes(h))
               for h in range(8, 257, 8))


def test_flux_broken_input_is_refused() -> None:
    original = fc.flux_from_diffusers(_flux(False).state_dict())
    with pytest.raises(fc.ConversionError, match="no counterpart"):
        fc.flux_to_diffusers(dict(original, **{"double_blocks.0.img_attn.extra.weight": torch.zeros(1)}))
    del original["single_blocks.0.linear2.weight"]
    with pytest.raises(fc.ConversionError):
        fc.flux_to_diffusers(original)
    with pytest.raises(fc.ConversionError, match="not a Flux"):
        fc.flux_to_diffusers({"x": torch.zeros(1)})
    model = _flux(True)
    with pytest.raises(fc.ConversionError, match="num_layers"):  # a config that does not describe the weights
        fc.flux_from_diffusers(model.state_dict(), dict(model.config, num_layers=3))


# ---------------------------------------------------------------- SD3 transformer


@pytest.mark.parametrize("cfg", [SD3, SD35], ids=["sd3", "sd3.5"])
def test_sd3_transformer_round_trip_and_stock_oracle(cfg: dict) -> None:
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    model = _sd3(cfg)
    theirs = model.state_dict()
    original = fc.sd3_transformer_from_diffusers(theirs, dict(model.config))
    prefixed = {"model.diffusion_model." + k: v for k, v in original.items()}
    _assert_same(convert_sd3_transformer_checkpoint_to_diffusers(dict(prefixed)), theirs)  # diffusers agrees
    overrides = {"sample_size": 32} if "qk_norm" in cfg else {"sample_size": 32, "attention_head_dim": 8}
    back, inferred = fc.sd3_transformer_to_diffusers(prefixed, overrides)
    _assert_same(back, theirs)
    _assert_same(fc.sd3_transformer_from_diffusers(back, inferred), original)
    assert inferred == _expected(model, list(inferred))
    rebuilt = diffusers.SD3Transformer2DModel.from_config(inferred).eval()
    rebuilt.load_state_dict(back, strict=True)
    with torch.no_grad():
        assert torch.equal(model(**_sd3_inputs())[0], rebuilt(**_sd3_inputs())[0])


def test_sd3_defaults_without_overrides() -> None:
    """Without a q/k norm the head size is the released 64, and the sample size the released 128."""
    sd = _sd3(dict(SD3, attention_head_dim=64, num_attention_heads=1, caption_projection_dim=64)).state_dict()
    _, cfg = fc.sd3_transformer_to_diffusers(fc.sd3_transformer_from_diffusers(sd))
    assert (cfg["sample_size"], cfg["attention_head_dim"], cfg["num_attention_heads"]) == (128, 64, 1)
    with pytest.raises(fc.ConversionError, match="attention_head_dim"):
        fc.sd3_transformer_config(_sd3(SD3).state_dict())  # width 32 is not a multiple of 64


# ---------------------------------------------------------------- SD3 all-in-one


def _sd3_components() -> dict:
    return {"transformer": _sd3(SD3), "vae": _vae(1.5305, 0.0609), "text_encoder": _clip(32, 32, identity=True),
            "text_encoder_2": _clip(48, 32), "text_encoder_3": _t5()}


def _outputs(name: str, m: Any) -> Any:
    ids = torch.tensor([[512, 5, 9, 300, 513, 513]])
    with torch.no_grad():
        if name == "transformer" and isinstance(m, diffusers.SD3Transformer2DModel):
            return m(**_sd3_inputs())[0]
        if name == "transformer":
            return m(**_flux_inputs(), guidance=torch.tensor([3.5]))[0]
        if name == "vae":
            return m.decode(torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(9))).sample
        if isinstance(m, transformers.T5EncoderModel):
            return m(input_ids=torch.tensor([[3, 7, 11, 1]])).last_hidden_state
        out = m(input_ids=ids, output_hidden_states=True)
        return out.hidden_states[-2]


def test_sd3_all_in_one_round_trip_file(tmp_path: Path) -> None:
    comps = _sd3_components()
    sd = ff.sd3_from_diffusers(comps)
    assert {k.split(".")[0] for k in sd} == {"model", "first_stage_model", "text_encoders"}
    assert "text_encoders.clip_l.transformer.text_projection.weight" not in sd  # identity: not stored
    assert "text_encoders.clip_g.transformer.text_projection.weight" in sd
    assert "first_stage_model.encoder.down.0.block.0.conv1.weight" in sd
    f = tmp_path / "sd3_tiny.safetensors"
    save_file(sd, str(f), metadata=ff.flow_model_config(comps))

    info = ck.detect_architecture(f)
    assert (info.architecture, info.layout, info.variant, info.prediction_type) == ("sd3", "ldm", "3", "flow")
    assert info.components == ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")

    loaded = ff.load_sd3_single_file(f)
    assert sorted(loaded) == sorted(comps)
    for name, m in comps.items():
        _assert_same(loaded[name].state_dict(), m.state_dict())
        assert torch.equal(_outputs(name, loaded[name]), _outputs(name, m)), name
    for name in ("transformer", "vae"):
        built = _plain(comps[name].config)
        assert {k: v for k, v in _plain(loaded[name].config).items() if k in built} == built, name
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        want, got = comps[name].config.to_dict(), loaded[name].config.to_dict()
        keys = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "projection_dim",
                "vocab_size", "bos_token_id", "eos_token_id", "d_model", "d_kv", "d_ff", "num_heads", "num_layers",
                "feed_forward_proj")
        assert {k: got.get(k) for k in keys} == {k: want.get(k) for k in keys}, name
    # and back again: the file's tensors exactly
    again = ff.sd3_from_diffusers(loaded)
    _assert_same(again, sd)


# ---------------------------------------------------------------- Flux file sets


def _flux_set(tmp_path: Path, prefix: str = "model.diffusion_model.") -> tuple[Path, dict]:
    comps = {"transformer": _flux(True), "vae": _vae(0.3611, 0.1159), "text_encoder": _clip(32, None),
             "text_encoder_2": _t5()}
    tf = tmp_path / "flux1-dev-tiny.safetensors"
    save_file({prefix + k: v for k, v in fc.flux_from_diffusers(comps["transformer"].state_dict()).items()}, str(tf),
              metadata=ff.flow_model_config({"transformer": comps["transformer"]}))
    save_file(vae_to_ldm(comps["vae"].state_dict()), str(tmp_path / "ae.safetensors"),
              metadata=ff.flow_model_config({"vae": comps["vae"]}))
    clip_sd = {"text_model." + k: v for k, v in comps["text_encoder"].state_dict().items()}
    save_file(clip_sd, str(tmp_path / "clip_l.safetensors"),
              metadata=ff.flow_model_config({"text_encoder": comps["text_encoder"]}))
    save_file(ff.t5_from_diffusers(comps["text_encoder_2"].state_dict()), str(tmp_path / "t5xxl_fp16.safetensors"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "t5xxl_fp8_e4m3fn.safetensors"))  # the lesser copy
    return tf, comps


def test_flux_file_set_loads_exactly(tmp_path: Path) -> None:
    tf, comps = _flux_set(tmp_path)
    found = ff.find_flux_companions(tf)
    assert {k: v.name for k, v in found.items()} == {"clip_l": "clip_l.safetensors", "t5": "t5xxl_fp16.safetensors",
                                                      "vae": "ae.safetensors"}
    loaded = ff.load_flux_files(tf)
    assert sorted(loaded) == sorted(comps)
    for name, m in comps.items():
        _assert_same(loaded[name].state_dict(), m.state_dict())
        assert torch.equal(_outputs(name, loaded[name]), _outputs(name, m)), name
    assert _plain(loaded["transformer"].config) == _plain(comps["transformer"].config)
    assert loaded["vae"].config.scaling_factor == 0.3611 and loaded["vae"].config.shift_factor == 0.1159
    half = ff.load_flux_files(tf, clip_l=tmp_path / "clip_l.safetensors", dtype=torch.bfloat16)
    assert {next(m.parameters()).dtype for m in half.values()} == {torch.bfloat16}


def test_flux_companions_missing_are_named(tmp_path: Path) -> None:
    tf, _ = _flux_set(tmp_path)
    (tmp_path / "ae.safetensors").unlink()
    (tmp_path / "clip_l.safetensors").unlink()
    with pytest.raises(ff.FlowFilesError) as e:
        ff.find_flux_companions(tf)
    msg = str(e.value)
    assert "clip_l" in msg and "vae" in msg and "ae.safetensors" in msg and "t5 (" not in msg
    assert "pass vae=PATH" in msg
    (tmp_path / "my_flux_vae.safetensors").write_bytes((tmp_path / "t5xxl_fp8_e4m3fn.safetensors").read_bytes())
    assert ff.find_flux_companions(tf, need=["vae"])["vae"].name == "my_flux_vae.safetensors"


# ---------------------------------------------------------------- detection


def _detect(tmp_path: Path, name: str, sd: dict) -> Any:
    f = tmp_path / name
    save_file(sd, str(f))
    return ck.detect_architecture(f)


def test_detection_in_every_layout(tmp_path: Path) -> None:
    dev, schnell = _flux(True).state_dict(), _flux(False).state_dict()
    bfl = fc.flux_from_diffusers(dev)
    cases = {
        "bfl.safetensors": (bfl, "flux", "ldm", "dev"),
        "comfy.safetensors": ({"model.diffusion_model." + k: v for k, v in bfl.items()}, "flux", "ldm", "dev"),
        "schnell.safetensors": (fc.flux_from_diffusers(schnell), "flux", "ldm", "schnell"),
        "diffusers_dev.safetensors": (dev, "flux", "diffusers", "dev"),
        "diffusers_schnell.safetensors": ({"transformer." + k: v for k, v in schnell.items()}, "flux", "diffusers",
                                          "schnell"),
        "sd3_diffusers.safetensors": (_sd3(SD35).state_dict(), "sd3", "diffusers", "3.5"),
        "sd3_mmdit.safetensors": ({"model.diffusion_model." + k: v for k, v in
                                   fc.sd3_transformer_from_diffusers(_sd3(SD3).state_dict()).items()},
                                  "sd3", "ldm", "3"),
    }
    for name, (sd, arch, layout, variant) in cases.items():
        info = _detect(tmp_path, name, {k: v.contiguous() for k, v in sd.items()})
        assert (info.architecture, info.layout, info.variant) == (arch, layout, variant), name
        assert info.prediction_type == "flow" and info.components[0] == "transformer", name
        assert info.to_dict()["variant"] == variant and any(variant in n for n in info.notes)


def test_inspect_shows_the_architecture(tmp_path: Path) -> None:
    import typer

    from iga.commands import checkpoint as commands

    app = typer.Typer()
    commands.register(app)
    f = tmp_path / "flux.safetensors"
    save_file(fc.flux_from_diffusers(_flux(True).state_dict()), str(f))
    code, out, _ = run(app, "inspect", f)
    assert code == 0 and "flux" in out and "flow" in out, out
