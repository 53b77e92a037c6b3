"""Architecture and prediction-type detection from header names and shapes (sparse files: no real weights)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from test_checkpoint_support import isolated_cache, write_reference  # noqa: F401

import iga.checkpoint as ck

U = "model.diffusion_model."


def _ldm_unet(ctx: int, ch: int = 320, attn_block: int = 1, adm: tuple[int, int] | None = None, in_ch: int = 4):
    out = [
        (f"{U}input_blocks.0.0.weight", "F16", [ch, in_ch, 3, 3]),
        (f"{U}input_blocks.{attn_block}.1.transformer_blocks.0.attn2.to_k.weight", "F16", [ch, ctx]),
        (f"{U}middle_block.1.transformer_blocks.0.attn2.to_k.weight", "F16", [ch * 4, ctx]),
    ]
    if adm:
        out.append((f"{U}label_emb.0.0.weight", "F16", list(adm)))
    return out


VAE = [("first_stage_model.decoder.conv_in.weight", "F16", [512, 4, 3, 3])]
CLIP_L = [("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "F16", [49408, 768])]
OPEN_H = [("cond_stage_model.model.token_embedding.weight", "F16", [49408, 1024])]
SDXL_TE = [
    ("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", "F16", [49408, 768]),
    ("conditioner.embedders.1.model.token_embedding.weight", "F16", [49408, 1280]),
]
REFINER_TE = [("conditioner.embedders.0.model.token_embedding.weight", "F16", [49408, 1280])]

CASES = {
    "sd1": (_ldm_unet(768) + CLIP_L + VAE, "sd1", "ldm", ("unet", "text_encoder", "vae")),
    "sd2": (_ldm_unet(1024) + OPEN_H + VAE, "sd2", "ldm", ("unet", "text_encoder", "vae")),
    "sdxl": (_ldm_unet(2048, attn_block=4, adm=(1280, 2816)) + SDXL_TE + VAE, "sdxl", "ldm",
             ("unet", "text_encoder", "text_encoder_2", "vae")),
    "sdxl_refiner": (_ldm_unet(1280, ch=384, attn_block=4, adm=(1536, 2560)) + REFINER_TE + VAE, "sdxl_refiner",
                     "ldm", ("unet", "text_encoder", "vae")),
    "sd1 unet only": (_ldm_unet(768), "sd1", "ldm", ("unet",)),
    "sd2 text encoder only": (OPEN_H, "sd2", "unknown", ("text_encoder",)),
    "diffusers sd1": ([("conv_in.weight", "F16", [320, 4, 3, 3]),
                       ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", "F16", [320, 768])],
                      "sd1", "diffusers", ("unet",)),
    "diffusers sd2": ([("conv_in.weight", "F16", [320, 4, 3, 3]),
                       ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", "F16", [320, 1024])],
                      "sd2", "diffusers", ("unet",)),
    "diffusers sdxl": ([("conv_in.weight", "F16", [320, 4, 3, 3]),
                        ("add_embedding.linear_1.weight", "F16", [1280, 2816]),
                        ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight", "F16", [640, 2048])],
                       "sdxl", "diffusers", ("unet",)),
    "diffusers refiner": ([("unet.conv_in.weight", "F16", [384, 4, 3, 3]),
                           ("unet.add_embedding.linear_1.weight", "F16", [1536, 2560]),
                           ("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight", "F16",
                            [768, 1280])],
                          "sdxl_refiner", "diffusers", ("unet",)),
    "lora": ([("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "F16", [4, 320])], "unknown",
             "unknown", ()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_architecture_from_names_and_shapes(tmp_path: Path, case: str) -> None:
    tensors, arch, layout, components = CASES[case]
    path = tmp_path / "m.safetensors"
    write_reference(path, tensors, sparse=True)
    info = ck.detect_architecture(path)
    assert (info.architecture, info.layout, info.components) == (arch, layout, components)
    assert info.conflicts == ()
    if arch != "unknown":
        assert any(e.suggests == arch for e in info.evidence)


def test_demo_marker_by_metadata_or_names(tmp_path: Path) -> None:
    p = tmp_path / "d.safetensors"
    write_reference(p, [("w", "F32", [2])], {"iga.architecture": "demo"})
    assert ck.detect_architecture(p).architecture == "demo"
    write_reference(p, [("demo.unet.w", "F32", [2])])
    info = ck.detect_architecture(p)
    assert (info.architecture, info.layout) == ("demo", "demo")


def test_unet_beats_metadata_and_conflicts_are_reported(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    write_reference(p, _ldm_unet(768), {"modelspec.architecture": "stable-diffusion-xl-v1-base"}, sparse=True)
    info = ck.detect_architecture(p)
    assert info.architecture == "sd1"
    assert len(info.conflicts) == 1 and "sdxl" in info.conflicts[0]


def test_metadata_only_decides_when_tensors_say_nothing(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    write_reference(p, [("x", "U8", [1])], {"modelspec.architecture": "stable-diffusion-v2-768-v"})
    info = ck.detect_architecture(p)
    assert info.architecture == "sd2" and info.prediction_type == "v"
    write_reference(p, [("x", "U8", [1])], {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"})
    assert ck.detect_architecture(p).architecture == "unknown"  # an add-on is not a base model
    write_reference(p, [("x", "U8", [1])], {"ss_v2": "True", "ss_base_model_version": "sd_v2_v"})
    info = ck.detect_architecture(p)
    assert info.architecture == "sd2" and info.prediction_type == "v"


def test_inpainting_note(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    write_reference(p, _ldm_unet(768, in_ch=9), sparse=True)
    info = ck.detect_architecture(p)
    assert info.architecture == "sd1" and any("inpainting" in n for n in info.notes)


def _with_scalars(path: Path, names: dict[str, float], extra_meta: dict[str, str] | None = None) -> None:
    import json

    header: dict = {}
    if extra_meta:
        header["__metadata__"] = extra_meta
    data = b""
    for name, value in names.items():
        b = np.array(value, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": [], "data_offsets": [len(data), len(data) + 4]}
        data += b
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_prediction_hints_from_marker_tensors(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    _with_scalars(p, {"v_pred": 0.0, "ztsnr": 0.0})
    info = ck.detect_architecture(p)
    assert info.prediction_type == "v" and info.zero_terminal_snr is True
    assert {h.source for h in info.prediction_hints} == {"tensor v_pred", "tensor ztsnr"}

    _with_scalars(p, {"edm_vpred.sigma_max": 120.0, "edm_vpred.sigma_min": 0.002})
    hints = {(h.kind, h.value) for h in ck.detect_architecture(p).prediction_hints}
    assert ("prediction_type", "v") in hints and ("parameterization", "edm") in hints
    assert ("sigma_range", "0.002,120") in hints

    _with_scalars(p, {"edm_mean": 0.0, "edm_std": 1.0})
    assert ("parameterization", "edm") in {(h.kind, h.value) for h in ck.detect_architecture(p).prediction_hints}


@pytest.mark.parametrize(
    ("metadata", "prediction", "ztsnr"),
    [
        ({"modelspec.prediction_type": "epsilon"}, "eps", None),
        ({"modelspec.prediction_type": "v"}, "v", None),
        ({"modelspec.predict_key": "v"}, "v", None),
        ({"modelspec.prediction_type": "v-zsnr"}, "v", True),
        ({"ss_base_model_version": "sd_v1"}, "eps", None),
        ({"ss_base_model_version": "sd_v2_v", "ss_zero_terminal_snr": "True"}, "v", True),
        ({"ss_zero_terminal_snr": "False"}, None, False),
        ({"modelspec.prediction_type": "epsilon", "modelspec.predict_key": "v"}, None, None),  # disagree
        ({"iga.recipe": '{"prediction_type": "v", "training_schedule": {"zero_terminal_snr": true}}'}, "v", True),
    ],
)
def test_prediction_hints_from_metadata(tmp_path: Path, metadata: dict, prediction: str | None, ztsnr) -> None:
    p = tmp_path / "m.safetensors"
    write_reference(p, [("x", "U8", [1])], metadata)
    info = ck.detect_architecture(p)
    assert info.prediction_type == prediction
    assert info.zero_terminal_snr is ztsnr
    assert all(h.source for h in info.prediction_hints)
    d = info.to_dict()
    assert d["prediction_type"] == prediction and len(d["prediction_hints"]) == len(info.prediction_hints)


def test_diffusers_folder(tmp_path: Path) -> None:
    info = ck.detect_architecture(tmp_path)
    assert info.architecture == "unknown" and "unet" in info.notes[0]
    (tmp_path / "unet").mkdir()
    write_reference(tmp_path / "unet" / "diffusion_pytorch_model.safetensors", CASES["diffusers sdxl"][0], sparse=True)
    assert ck.detect_architecture(tmp_path).architecture == "sdxl"


def test_group_metadata() -> None:
    groups = ck.group_metadata({"modelspec.title": "t", "ss_v2": "False", "sshs_model_hash": "h", "iga.recipe": "{}",
                                "format": "pt", "sai_model_spec": "1"})
    assert groups == {
        "modelspec": {"modelspec.title": "t", "sai_model_spec": "1"},
        "kohya": {"ss_v2": "False", "sshs_model_hash": "h"},
        "iga": {"iga.recipe": "{}"},
        "other": {"format": "pt"},
    }
