"""Tiny random-weight SD1 / SD2 (v-prediction) / SDXL / SD3 / Flux (dev, schnell) models for tests, fully offline.

Every component has the structure of its real family (block types, linear vs conv projections,
OpenCLIP vs CLIP text towers, SDXL's two encoders and size conditioning) at toy width, and uses the real
(vendored) CLIP tokenizer, so the single-file path exercised by tests is the one real files take.
Weights are deterministic in ``seed``; every parameter (biases and norms too) is perturbed from the
library's initialisation so that a key-conversion mistake cannot hide behind a zero or a one.

SD3 and Flux (``build_tiny("sd3" | "flux_dev" | "flux_schnell")``) use the vendored CLIP BPE and Google's T5
vocabulary (``iga.models.t5_tokenizer``); their folders load unchanged in diffusers' own pipelines.

Typical use::

    tiny = build_tiny("sdxl", seed=0)
    folder = save_folder(tiny, tmp / "tiny-sdxl")
    single = save_single_file(tiny, tmp / "tiny-sdxl.safetensors")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from iga.models.configs import family
from iga.models.export import PipelineParts as TinyModel  # noqa: F401 (tests name it so)
from iga.models.export import _FAMILY, _encoder_names, _save_text_encoders, _write_scheduler_and_index, \
    save_sd_folder, save_single_file  # noqa: F401

TINY_TEXT = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 3,
             "projection_dim": 32}
TINY_TEXT_2 = {"hidden_size": 48, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
               "projection_dim": 40}
TINY_VAE = {"block_out_channels": (32, 32, 64, 64), "layers_per_block": 1, "latent_channels": 4,
            "norm_num_groups": 32, "sample_size": 64}

_UNETS: dict[str, dict[str, Any]] = {
    "sd1": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8, cross_attention_dim=32,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    "sd2": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4), cross_attention_dim=32,
                use_linear_projection=True, upcast_attention=True,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    "sdxl": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
                 cross_attention_dim=32 + 48, use_linear_projection=True, transformer_layers_per_block=(1, 2),
                 addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 40,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
    # the refiner's shape: plain blocks around cross-attention ones, bigG context only, 5 time ids (size, crop,
    # aesthetic score) + the pooled text in the added embedding
    "sdxl_refiner": dict(block_out_channels=(32, 64, 64), layers_per_block=1, attention_head_dim=(2, 4, 4),
                         cross_attention_dim=48, use_linear_projection=True, transformer_layers_per_block=2,
                         addition_embed_type="text_time", addition_time_embed_dim=8,
                         projection_class_embeddings_input_dim=5 * 8 + 40,
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
}


def _perturb(model: Any, gen: Any, scale: float = 0.05) -> None:
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


def build_tiny(architecture: str = "sd1", seed: int = 0, *, inpaint: bool = False,
               vae: Any = None) -> "TinyModel | TinyFlowModel":
    """Build a tiny random model of ``architecture`` ("sd1", "sd2" = SD2 v-prediction, "sdxl", "sdxl_refiner",
    "sd3", "flux_dev" = guidance-distilled Flux, "flux_schnell" = Flux without guidance input); ``inpaint``: an SD
    inpainting model (its UNet also takes the mask and the masked image's latent: 9 input channels); ``vae``: use
    this VAE instead of a new one (a refiner shares its base model's, as the real SDXL pair does)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from iga.models.tokenizer import clip_tokenizer

    if architecture in _FLOW_VARIANTS:
        return _build_tiny_flow(architecture, seed)
    if architecture not in _UNETS:
        raise ValueError(f"unknown tiny architecture {architecture!r}; use sd1, sd2, sdxl, sdxl_refiner, "
                         f"{', '.join(_FLOW_VARIANTS)}")
    fam = family(_FAMILY[architecture])
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    from iga.checkpoint.architecture import INPAINT_CHANNELS

    unet = UNet2DConditionModel(sample_size=8, in_channels=INPAINT_CHANNELS if inpaint else 4, out_channels=4,
                                **_UNETS[architecture])
    _perturb(unet, gen)
    if vae is None:
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            scaling_factor=fam["vae"]["scaling_factor"], **TINY_VAE)
        _perturb(vae, gen)
    encoders, tokenizers, model_config = [], [], {}
    for spec, name in zip(fam["text"], _encoder_names(fam["text"])):
        dims = TINY_TEXT_2 if name == "text_encoder_2" else TINY_TEXT
        tok = clip_tokenizer(spec["pad"])
        base = spec["config"]
        cfg = CLIPTextConfig(vocab_size=len(tok), max_position_embeddings=77, hidden_act=base["hidden_act"],
                             layer_norm_eps=base["layer_norm_eps"], bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **dims)
        model = (CLIPTextModelWithProjection if spec["pooled"] else CLIPTextModel)(cfg)
        _perturb(model, gen)
        encoders.append(model.eval())
        tokenizers.append(tok)
        model_config[name] = {"num_attention_heads": dims["num_attention_heads"]}
    if architecture != "sd1":  # SD1's rule (8 heads per block) matches; the head-size-64 rule cannot
        model_config["unet"] = {"attention_head_dim": list(_UNETS[architecture]["attention_head_dim"])}
    return TinyModel(architecture, unet.eval(), vae.eval(), encoders, tokenizers, dict(fam["scheduler"]),
                     model_config)


def build_small_sd1(seed: int = 0, unet_channels: int = 64, *, scale: float = 0.01) -> TinyModel:
    """An SD1 model other tools load as they load SD1.5: the real, full-size CLIP-L and VAE (their configs are
    the family's shipped ones; tools such as ComfyUI hard-code them) around a UNet of SD1.5's structure at
    ``unet_channels`` base channels (SD1.5: 320). Random weights, deterministic in ``seed``; ``scale`` is the
    perturbation, kept small because the full-depth VAE amplifies it (0.05 saturates its output)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from iga.models.tokenizer import clip_tokenizer

    fam = family("sd1")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unet_cfg = {k: v for k, v in fam["unet"].items() if not k.startswith("_")}
    unet_cfg["block_out_channels"] = [unet_channels * m for m in (1, 2, 4, 4)]
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**{k: v for k, v in fam["vae"].items() if not k.startswith("_")})
    spec = fam["text"][0]
    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in spec["config"].items() if k != "architectures"}))
    for model in (unet, vae, text):
        _perturb(model, gen, scale)
    return TinyModel("sd1", unet.eval(), vae.eval(), [text.eval()], [clip_tokenizer(spec["pad"])],
                     dict(fam["scheduler"]))


def save_folder(tiny: "TinyModel | TinyFlowModel", path: str | Path) -> Path:
    """Save as a diffusers folder (SD pipelines: ``iga.models.export.save_sd_folder``; SD3/Flux: flow layout)."""
    if isinstance(tiny, TinyFlowModel):
        return _save_flow_folder(tiny, Path(path))
    return save_sd_folder(tiny, path)


def save_family(root: str | Path, architectures: Iterable[str], seed: int) -> dict[str, tuple[TinyModel, Path, Path]]:
    """{arch: (tiny, folder, single file)} under ``root``; architecture i gets weights seeded ``seed + i``."""
    root = Path(root)
    out = {}
    for i, arch in enumerate(architectures):
        tiny = build_tiny(arch, seed=seed + i)
        out[arch] = (tiny, save_folder(tiny, root / arch), save_single_file(tiny, root / f"{arch}.safetensors"))
    return out


def save_vae(vae: Any, path: str | Path, *, layout: str = "ldm") -> Path:
    """Save a VAE alone as ``.safetensors`` with LDM keys (``layout="ldm"``) or diffusers keys."""
    from iga.models.export import save_safetensors
    from iga.models.ldm import vae_to_ldm

    sd = {k: v.detach() for k, v in vae.state_dict().items()}
    if layout == "ldm":
        sd = vae_to_ldm(sd)
    elif layout != "diffusers":
        raise ValueError("layout must be 'ldm' or 'diffusers'")
    return save_safetensors(path, sd)


def tiny_vae(seed: int = 1, scaling_factor: float = 0.18215) -> Any:
    """A tiny random VAE with the same structure as the tiny models' (for VAE-override tests)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        scaling_factor=scaling_factor, **TINY_VAE)
    _perturb(vae, torch.Generator().manual_seed(seed))
    return vae.eval()


# ---------------------------------------------------------------- SD3 / Flux

# Real-model structure at toy width (reference/feasibility.md s7). SD3: CLIP-L and CLIP-G of different widths
# whose sum is T5's width (as 768 + 1280 <= 4096 in the real model: nothing is cut), pooled = sum of projections.
TINY_T5 = {"vocab_size": 32128, "d_model": 64, "d_kv": 16, "d_ff": 96, "num_layers": 2, "num_heads": 4,
           "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0, "pad_token_id": 0, "eos_token_id": 1,
           "decoder_start_token_id": 0}
TINY_CLIP_L = {"hidden_size": 24, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 3,
               "projection_dim": 24, "hidden_act": "quick_gelu"}
TINY_CLIP_G = {"hidden_size": 40, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
               "projection_dim": 40, "hidden_act": "gelu"}
TINY_FLUX_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                  "projection_dim": 32, "hidden_act": "quick_gelu"}
TINY_SD3 = dict(sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
                num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
                pos_embed_max_size=32)
TINY_FLUX = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
# the real models' VAE latent statistics and scheduler configs
_FLOW_VAE = {"sd3": {"scaling_factor": 1.5305, "shift_factor": 0.0609},
             "flux": {"scaling_factor": 0.3611, "shift_factor": 0.1159}}
_SCHEDULERS = {
    "sd3": {"shift": 3.0},
    "flux_dev": {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
                 "base_image_seq_len": 256, "max_image_seq_len": 4096},
    "flux_schnell": {"shift": 1.0, "use_dynamic_shifting": False, "base_shift": 0.5, "max_shift": 1.15,
                     "base_image_seq_len": 256, "max_image_seq_len": 4096},
}
_FLOW_VARIANTS = tuple(_SCHEDULERS)


@dataclass
class TinyFlowModel:
    """The components of one tiny SD3 or Flux model (text encoders and tokenizers in diffusers' order)."""

    variant: str  # "sd3" | "flux_dev" | "flux_schnell"
    transformer: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]

    @property
    def architecture(self) -> str:
        """ "sd3" or "flux"."""
        return "sd3" if self.variant == "sd3" else "flux"

    @property
    def prediction_type(self) -> str:
        return "flow"


def _tiny_clip(dims: dict[str, Any], pad: str, projected: bool, gen: Any) -> tuple[Any, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from iga.models.tokenizer import clip_tokenizer

    tok = clip_tokenizer(pad)
    cfg = CLIPTextConfig(vocab_size=len(tok), max_position_embeddings=77, layer_norm_eps=1e-5,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         **dims)
    model = (CLIPTextModelWithProjection if projected else CLIPTextModel)(cfg)
    _perturb(model, gen)
    return model.eval(), tok


def _tiny_t5(gen: Any) -> tuple[Any, Any]:
    from transformers import T5Config, T5EncoderModel

    from iga.models.t5_tokenizer import load_t5_tokenizer

    model = T5EncoderModel(T5Config(**TINY_T5))
    _perturb(model, gen)
    return model.eval(), load_t5_tokenizer()


def _build_tiny_flow(variant: str, seed: int) -> TinyFlowModel:
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if variant == "sd3":
        transformer = SD3Transformer2DModel(**TINY_SD3)
        encoders = [_tiny_clip(TINY_CLIP_L, "eos", True, gen), _tiny_clip(TINY_CLIP_G, "!", True, gen)]
    else:
        transformer = FluxTransformer2DModel(guidance_embeds=variant == "flux_dev", **TINY_FLUX)
        encoders = [_tiny_clip(TINY_FLUX_CLIP, "eos", False, gen)]
    _perturb(transformer, gen)
    encoders.append(_tiny_t5(gen))
    family = "sd3" if variant == "sd3" else "flux"
    # SD3/Flux VAEs: 16 latent channels and no quant convs
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        use_quant_conv=False, use_post_quant_conv=False, **{**TINY_VAE, "latent_channels": 16},
                        **_FLOW_VAE[family])
    _perturb(vae, gen)
    sched = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, **_SCHEDULERS[variant]}
    return TinyFlowModel(variant, transformer.eval(), vae.eval(), [m for m, _ in encoders], [t for _, t in encoders],
                         sched)


def _save_flow_folder(tiny: TinyFlowModel, root: Path) -> Path:
    """A StableDiffusion3Pipeline / FluxPipeline folder diffusers loads with ``from_pretrained`` unchanged."""
    import diffusers

    root.mkdir(parents=True, exist_ok=True)
    sd3 = tiny.architecture == "sd3"
    index: dict[str, Any] = {
        "_class_name": "StableDiffusion3Pipeline" if sd3 else "FluxPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "transformer": ["diffusers", type(tiny.transformer).__name__],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    index.update(image_encoder=[None, None], feature_extractor=[None, None])  # optional IP-Adapter slots, unused
    tiny.transformer.save_pretrained(root / "transformer", safe_serialization=True)
    tiny.vae.save_pretrained(root / "vae", safe_serialization=True)
    _save_text_encoders(tiny, root, index)
    return _write_scheduler_and_index(tiny, root, index)


def save_flow_files(tiny: "TinyFlowModel", folder: str | Path) -> Path:
    """A tiny SD3 or Flux model as people share the real ones: SD3 as one all-in-one file; Flux as a transformer
    file in the original (BFL) layout with ``clip_l``, ``t5xxl`` and ``ae`` files beside it. Returns the file
    to load (the SD3 file, or the Flux transformer)."""
    from safetensors.torch import save_file

    from iga.models import flow_convert as fc
    from iga.models import flow_files as ff
    from iga.models.ldm import vae_to_ldm

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    encoders = dict(zip(("text_encoder", "text_encoder_2", "text_encoder_3"), tiny.text_encoders))
    if tiny.architecture == "sd3":
        comps = {"transformer": tiny.transformer, "vae": tiny.vae, **encoders}
        path = out / "sd3-tiny.safetensors"
        save_file(ff.sd3_from_diffusers(comps), str(path), metadata=ff.flow_model_config(comps))
        return path
    path = out / f"{tiny.variant.replace('_', '1-')}-tiny.safetensors"
    save_file(fc.flux_from_diffusers(tiny.transformer.state_dict()), str(path),
              metadata=ff.flow_model_config({"transformer": tiny.transformer}))
    save_file(vae_to_ldm(tiny.vae.state_dict()), str(out / "ae.safetensors"),
              metadata=ff.flow_model_config({"vae": tiny.vae}))
    clip = encoders["text_encoder"]
    save_file({"text_model." + k: v for k, v in clip.state_dict().items()}, str(out / "clip_l.safetensors"),
              metadata=ff.flow_model_config({"text_encoder": clip}))
    save_file(ff.t5_from_diffusers(encoders["text_encoder_2"].state_dict()), str(out / "t5xxl_fp16.safetensors"))
    return path


# ---------------------------------------------------------------- LoRA

# What a LoRA trains in practice: the attention projections and feed-forward layers of the UNet's transformer
# blocks, and the text encoder's attention and MLP.
_LORA_UNET_LEAVES = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
_LORA_TEXT_LEAVES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def lora_targets(tiny: TinyModel) -> dict[str, list[tuple[str, Any]]]:
    """{part: [(module name, module)]}: the UNet and text-encoder Linear/1x1-Conv modules a LoRA would train,
    named as the tiny model's own modules are."""
    import torch

    def pick(model: Any, leaves: tuple[str, ...]) -> list[tuple[str, Any]]:
        return [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
                and any(n.endswith("." + leaf) for leaf in leaves)]

    parts = {"unet": pick(tiny.unet, _LORA_UNET_LEAVES)}
    for i, enc in enumerate(tiny.text_encoders):
        parts["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = pick(enc, _LORA_TEXT_LEAVES)
    return parts


def build_tiny_lora(tiny: TinyModel, path: str | Path, *, layout: str = "kohya", rank: int = 4,
                    alpha: float | None = 2.0, seed: int = 0, scale: float = 0.3,
                    metadata: dict[str, str] | None = None, text_encoder: bool = True) -> Path:
    """Write a random LoRA for ``tiny`` as ``.safetensors``: ``layout`` "kohya" (``lora_unet_*``/``lora_te*_`` with
    ``lora_down``/``lora_up``/``alpha``) or "diffusers" (``unet.*``/``text_encoder.*`` with ``lora_A``/``lora_B``,
    alpha = rank). Both factors are random (a trained LoRA's are), so the LoRA visibly changes the image."""
    import torch
    from safetensors.torch import save_file

    if layout not in ("kohya", "diffusers"):
        raise ValueError("layout must be 'kohya' or 'diffusers'")
    gen = torch.Generator().manual_seed(seed)
    kohya_prefix = {"unet": "lora_unet_", "text_encoder": "lora_te1_" if tiny.architecture == "sdxl" else "lora_te_",
                    "text_encoder_2": "lora_te2_"}
    sd: dict[str, Any] = {}
    for part, modules in lora_targets(tiny).items():
        if part != "unet" and not text_encoder:
            continue
        for name, m in modules:
            conv = isinstance(m, torch.nn.Conv2d)
            n_in, n_out = (m.in_channels, m.out_channels) if conv else (m.in_features, m.out_features)
            tail = (1, 1) if conv else ()
            down = torch.randn((rank, n_in, *tail), generator=gen) * scale / n_in ** 0.5
            up = torch.randn((n_out, rank, *tail), generator=gen) * scale / rank ** 0.5
            if layout == "kohya":
                key = kohya_prefix[part] + name.replace(".", "_")
                sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = down, up
                sd[f"{key}.alpha"] = torch.tensor(float(alpha if alpha is not None else rank))
            else:
                sd[f"{part}.{name}.lora_A.weight"], sd[f"{part}.{name}.lora_B.weight"] = down, up
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out), metadata=metadata)
    return out


# ---------------------------------------------------------------- ControlNet


def build_tiny_controlnet(tiny: TinyModel, path: str | Path, *, seed: int = 0, scale: float = 0.05) -> Path:
    """Write a random ControlNet for ``tiny`` as a diffusers folder (config.json + safetensors). It starts as
    diffusers' copy of the UNet's encoder (``ControlNetModel.from_unet``); every parameter is then perturbed, the
    zero convolutions too (a fresh ControlNet adds nothing until trained), so it visibly changes the image."""
    import torch
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(tiny.unet)
    _perturb(net, torch.Generator().manual_seed(seed), scale)
    with torch.no_grad():  # zero convs: large enough that the residuals matter at this toy width
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            conv.weight.add_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.5)
    out = Path(path)
    net.save_pretrained(str(out), safe_serialization=True)
    return out
