"""iga.models: key conversion, family configs, tokenizer, architecture/prediction detection."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from iga.models import ldm  # noqa: E402
from iga.models.configs import ConfigError, family, infer_text_config, infer_unet_config, \
    parse_model_config  # noqa: E402
from iga.models.detect import UnsupportedCheckpoint, detect, detect_prediction  # noqa: E402
from iga.models.export import ldm_state_dict  # noqa: E402


def _build_on_meta(fam_name: str):
    """The real-size models of a family, built from the shipped configs on the meta device (no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from iga.models.loader import _known_kwargs

    f = family(fam_name)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**_known_kwargs(UNet2DConditionModel, f["unet"]))
        vae = AutoencoderKL(**_known_kwargs(AutoencoderKL, f["vae"]))
        tes = []
        for spec in f["text"]:
            cfg = {k: v for k, v in spec["config"].items() if k not in ("architectures", "model_type")}
            cls = CLIPTextModelWithProjection if spec["pooled"] else CLIPTextModel
            tes.append(cls(CLIPTextConfig(**cfg)))
    return unet, vae, tes


def _n(model) -> int:
    return sum(p.numel() for p in model.parameters())


# Published parameter counts of the real models (model cards / papers) and real single-file key names.
@pytest.mark.parametrize("fam_name,unet_params,text_params,keys", [
    ("sd1", 859_520_964, [123_060_480], {
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
    }),
    ("sd2-v", 865_910_724, [340_387_840], {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.positional_embedding": (77, 1024),
    }),
    ("sdxl", 2_567_463_684, [123_060_480, 694_659_840], {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (640, 2048),
        "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn1.to_q.weight": (1280, 1280),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
    }),
])
def test_family_configs_build_the_published_models(fam_name, unet_params, text_params, keys):
    unet, vae, tes = _build_on_meta(fam_name)
    assert _n(unet) == unet_params
    assert _n(vae) == 83_653_863
    assert [_n(t) for t in tes] == text_params
    arch = "sd2" if fam_name.startswith("sd2") else fam_name
    sd = ldm_state_dict(arch, unet, vae, tes)
    for k, shape in keys.items():
        assert tuple(sd[k].shape) == shape, k
    n_unet = sum(k.startswith(ldm.UNET_PREFIX) for k in sd)
    assert n_unet == {"sd1": 686, "sd2-v": 686, "sdxl": 1680}[fam_name]  # key counts of the real files
    assert sum(k.startswith(ldm.VAE_PREFIX) for k in sd) == 248


@pytest.mark.parametrize("fam_name", ["sd1", "sd2-v", "sdxl"])
def test_real_layout_converts_back_and_infers_the_family_config(fam_name):
    unet, vae, tes = _build_on_meta(fam_name)
    arch = "sd2" if fam_name.startswith("sd2") else fam_name
    sd = ldm_state_dict(arch, unet, vae, tes)
    unet_sd, unmatched = ldm.unet_from_ldm(ldm.strip_prefix(sd, ldm.UNET_PREFIX))
    assert not unmatched
    assert {k: tuple(v.shape) for k, v in unet_sd.items()} == {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    f = family(fam_name)
    pooled = f["text"][-1]["config"]["projection_dim"] if arch == "sdxl" else None
    cfg = infer_unet_config(unet_sd, f["unet"], f["family"]["unet_attention_heads_rule"], None, pooled)
    for key in ("block_out_channels", "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                "layers_per_block", "down_block_types", "up_block_types"):
        got, want = cfg[key], f["unet"][key]
        norm = (lambda v: list(v) if isinstance(v, (list, tuple)) else v)
        assert norm(got) == norm(want), key
    assert cfg["transformer_layers_per_block"] == f["unet"]["transformer_layers_per_block"]
    vae_sd, unmatched = ldm.vae_from_ldm(ldm.strip_prefix(sd, ldm.VAE_PREFIX))
    assert not unmatched and set(vae_sd) == set(vae.state_dict())


def test_unet_layout_rule_matches_a_different_width_without_metadata():
    """A non-family width falls back to the family's head rule (SD2: head size 64)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(block_out_channels=(128, 256), layers_per_block=1, cross_attention_dim=64,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), use_linear_projection=True)
    f = family("sd2")
    cfg = infer_unet_config(unet.state_dict(), f["unet"], f["family"]["unet_attention_heads_rule"])
    assert cfg["attention_head_dim"] == [2, 4]
    assert cfg["cross_attention_dim"] == 64 and cfg["block_out_channels"] == [128, 256]
    with pytest.raises(ConfigError, match="attention_head_dim"):
        with torch.device("meta"):
            small = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        infer_unet_config(small.state_dict(), f["unet"], f["family"]["unet_attention_heads_rule"])


def test_text_heads_come_from_metadata_or_the_head_size_rule():
    base = family("sd1")["text"][0]["config"]
    sd = {"text_model.embeddings.token_embedding.weight": torch.empty(49408, 128, device="meta"),
          "text_model.embeddings.position_embedding.weight": torch.empty(77, 128, device="meta"),
          "text_model.encoder.layers.0.mlp.fc1.weight": torch.empty(512, 128, device="meta"),
          "text_model.encoder.layers.1.mlp.fc1.weight": torch.empty(512, 128, device="meta")}
    cfg = infer_text_config(sd, base)
    assert (cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["intermediate_size"]) == (2, 2, 512)
    assert cfg["hidden_act"] == "quick_gelu"
    assert infer_text_config(sd, base, overrides={"num_attention_heads": 8})["num_attention_heads"] == 8


def test_openclip_split_and_fuse_are_inverse():
    g = torch.Generator().manual_seed(3)
    canonical = {}
    D = 16
    for i in range(2):
        pre = f"text_model.encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            canonical[f"{pre}self_attn.{n}.weight"] = torch.randn(D, D, generator=g)
            canonical[f"{pre}self_attn.{n}.bias"] = torch.randn(D, generator=g)
        for n in ("layer_norm1", "layer_norm2"):
            canonical[f"{pre}{n}.weight"] = torch.randn(D, generator=g)
            canonical[f"{pre}{n}.bias"] = torch.randn(D, generator=g)
        canonical[f"{pre}mlp.fc1.weight"] = torch.randn(4 * D, D, generator=g)
        canonical[f"{pre}mlp.fc1.bias"] = torch.randn(4 * D, generator=g)
        canonical[f"{pre}mlp.fc2.weight"] = torch.randn(D, 4 * D, generator=g)
        canonical[f"{pre}mlp.fc2.bias"] = torch.randn(D, generator=g)
    canonical["text_model.embeddings.token_embedding.weight"] = torch.randn(10, D, generator=g)
    canonical["text_model.embeddings.position_embedding.weight"] = torch.randn(77, D, generator=g)
    canonical["text_model.final_layer_norm.weight"] = torch.randn(D, generator=g)
    canonical["text_model.final_layer_norm.bias"] = torch.randn(D, generator=g)
    canonical["text_projection.weight"] = torch.randn(8, D, generator=g)
    packed = ldm.openclip_to_ldm(canonical, unused_final_blocks=1)
    w = packed["transformer.resblocks.0.attn.in_proj_weight"]
    assert w.shape == (3 * D, D)
    assert torch.equal(w[D:2 * D], canonical["text_model.encoder.layers.0.self_attn.k_proj.weight"])
    assert torch.equal(packed["text_projection"], canonical["text_projection.weight"].t())
    assert "transformer.resblocks.2.attn.in_proj_weight" in packed  # SD2's never-run extra block
    back, ignored = ldm.openclip_from_ldm(packed, unused_final_blocks=1)
    assert not ignored
    assert set(back) == set(canonical)
    assert all(torch.equal(back[k], canonical[k]) for k in canonical)


def test_vae_attention_is_reshaped_between_conv_and_linear():
    from iga.models.testing import tiny_vae

    vae = tiny_vae(seed=0)
    sd = vae.state_dict()
    packed = ldm.vae_to_ldm(sd)
    assert packed["encoder.mid.attn_1.q.weight"].shape[-2:] == (1, 1)
    assert "decoder.up.0.block.1.conv1.weight" in packed and "decoder.up.3.upsample.conv.weight" in packed
    # LDM numbers decoder levels from full resolution; diffusers' up_blocks.0 is the lowest resolution
    assert torch.equal(packed["decoder.up.3.block.0.conv1.weight"], sd["decoder.up_blocks.0.resnets.0.conv1.weight"])
    back, unmatched = ldm.vae_from_ldm(packed)
    assert not unmatched and set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    assert ldm.is_ldm_vae(packed) and not ldm.is_ldm_vae(sd)


def test_tokenizer_gives_the_real_clip_ids():
    from iga.models.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    assert tok("a photograph of an astronaut riding a horse")["input_ids"] == [
        49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert clip_tokenizer() is tok  # cached
    bang = clip_tokenizer("!")
    assert bang.pad_token_id == 0 and tok.pad_token_id == 49407
    assert bang("a cat", padding="max_length", max_length=77)["input_ids"][4:6] == [0, 0]


def _keys(arch: str) -> list[str]:
    text = {"sd1": ["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"],
            "sd2": ["cond_stage_model.model.token_embedding.weight"],
            "sdxl": ["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                     "conditioner.embedders.1.model.token_embedding.weight",
                     "model.diffusion_model.label_emb.0.0.weight"]}[arch]
    return ["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight", *text]


def _shape(_key: str) -> tuple[int, ...]:
    return (320, 4, 3, 3)


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_detects_architecture_from_key_names(arch):
    found = detect(_keys(arch), _shape, {})
    assert found.architecture == arch
    assert found.prediction_type == ("v" if arch == "sd2" else "eps")
    assert "default" in found.prediction_source


@pytest.mark.parametrize("keys,meta,expected", [
    (["v_pred"], {}, ("v", False)),
    (["v_pred", "ztsnr"], {}, ("v", True)),
    ([], {"modelspec.prediction_type": "epsilon"}, ("eps", False)),
    ([], {"modelspec.prediction_type": "v-zsnr"}, ("v", True)),
    ([], {"modelspec.predict_key": "v"}, ("v", False)),
    ([], {"modelspec.architecture": "stable-diffusion-v2-768-v"}, ("v", False)),
    ([], {"ss_base_model_version": "sd_v1_v", "ss_zero_terminal_snr": "True"}, ("v", True)),
])
def test_prediction_markers(keys, meta, expected):
    pred, source, ztsnr = detect_prediction("sd1", keys, meta)
    assert (pred, ztsnr) == expected and "default" not in source


@pytest.mark.parametrize("keys,shape,match", [
    (["lora_unet_down_blocks_0_attentions_0.alpha"], (1,), "LoRA"),
    (["encoder.down.0.block.0.conv1.weight"], (1,), "VAE only"),
    (["down_blocks.0.resnets.0.conv1.weight"], (1,), "diffusers key names"),
    (["model.diffusion_model.input_blocks.0.0.weight"], (320, 8, 3, 3), "8 input channels"),  # pix2pix
    (["model.diffusion_model.input_blocks.0.0.weight"], (320, 4, 3, 3), "no text encoder"),
    (["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.0.model.ln_final.weight"],
     (320, 4, 3, 3), "refiner"),
])
def test_refuses_what_it_cannot_load_with_a_reason(keys, shape, match):
    with pytest.raises(UnsupportedCheckpoint, match=match):
        detect(keys, lambda _k: shape, {})


def test_model_config_metadata_is_validated():
    assert parse_model_config(json.dumps({"unet": {"attention_head_dim": [2, 4]}})) == {
        "unet": {"attention_head_dim": [2, 4]}}
    with pytest.raises(ConfigError, match="cannot be set"):
        parse_model_config(json.dumps({"unet": {"block_out_channels": [1]}}))
    with pytest.raises(ConfigError, match="unknown component"):
        parse_model_config(json.dumps({"scheduler": {}}))
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_model_config("{")
    with pytest.raises(ConfigError, match="larger"):
        parse_model_config(json.dumps({"unet": {"act_fn": "x" * 70000}}))


def test_legacy_diffusers_vae_attention_names_are_modernized():
    from iga.models.testing import tiny_vae

    sd = tiny_vae(seed=0).state_dict()
    legacy = {}
    for k, v in sd.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if f"attentions.0.{new}." in k:
                k = k.replace(f".{new}.", f".{old}.")
                v = v[:, :, None, None] if v.ndim == 2 else v
        legacy[k] = v
    assert any(".query." in k for k in legacy)
    back = ldm.modernize_diffusers_vae(legacy)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
