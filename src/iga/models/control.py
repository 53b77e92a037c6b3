"""ControlNet adapters: read one defensively, check it fits the base model, and run it inside every model call.

Accepted files: a diffusers ``ControlNetModel`` folder (``config.json`` + ``diffusion_pytorch_model(.fp16)
.safetensors``), or such a ``.safetensors`` file on its own with ``config.json`` (or ``<stem>.json``) beside it.
The header is read through ``iga.checkpoint.read_header`` (its size limits); pickles are refused, never opened,
and so is the original (LDM, ``control_model.``/``input_hint_block.``) layout, which needs converting first.

Whether an adapter fits is read from the two headers, no weights loaded: the text-conditioning width its
cross-attention reads (768 SD1, 1024 SD2, 2048 SDXL), SDXL's added size/pooled-text input, and the width of its
first block, which sets the channels of the residuals it adds to the UNet's skip connections.

At run time (``ControlledModel``), each model call runs every active adapter on the same scaled input, timestep
and text conditioning as the UNet, with the conditioning image; the adapter scales its residuals by its strength,
residuals of several adapters add, and the UNet adds them to its skip connections and middle block
(diffusers' ``StableDiffusionControlNetPipeline`` and ``MultiControlNetModel`` do the same).

Active window: diffusers keeps an adapter at step i of N when not (i/N < start or (i+1)/N > end). Here the step
of a call is found from its timestep in the pass's sigma list: a call at sigma_i, or between sigma_i and
sigma_{i+1}, belongs to step i. Single-call samplers (Euler, DPM++ 2M, ...) thus match diffusers exactly.
Multi-call samplers evaluate at intermediate sigmas (Heun, DPM++ 2S, ...): each call takes the decision of the
step it falls in, and a call exactly at the next grid sigma (Heun's correction) that of the next step.
A hires-fix pass counts its own steps, with the conditioning image resized to its size (``iga.stages.controls_at``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
_LDM_MARKS = ("control_model.", "input_hint_block.")
_FIT_FAMILIES = ("sd1", "sd2", "sdxl")  # UNet families a (UNet) ControlNet attaches to


class ControlError(ValueError):
    """A ControlNet iga will not read or apply; the message names the file and the fix."""


@dataclass(frozen=True)
class UnetShape:
    """What decides whether a ControlNet's residuals and inputs fit a UNet (None: not measurable)."""

    cross_attention: int | None  # width of the text conditioning the cross-attention reads
    added_input: int | None  # SDXL's added-conditioning embedding input (pooled text + size ids); None without
    width: int | None  # channels of the first block (conv_in's output)

    def differences(self, other: "UnetShape") -> list[str]:
        """What differs from ``other`` (values both know)."""
        out = []
        for label, a, b in (("cross-attention width", self.cross_attention, other.cross_attention),
                            ("added-conditioning input", self.added_input, other.added_input),
                            ("first block width", self.width, other.width)):
            # an unmeasured width says nothing; a missing added input means the network has none
            if a != b and (a is not None and b is not None or label == "added-conditioning input"):
                out.append(f"{label} {a if a is not None else 'none'} vs {b if b is not None else 'none'}")
        return out


@dataclass
class ControlInfo:
    """A ControlNet file as the guard sees it: header and config, no tensors loaded."""

    path: str  # the weights file
    name: str
    file_sha256: str
    config: dict[str, Any]
    shape: UnetShape

    @property
    def architecture(self) -> str | None:
        """sd1/sd2/sdxl from its cross-attention width, None when the width is not a released family's."""
        from iga.checkpoint.architecture import CROSS_ATTENTION_WIDTHS

        return CROSS_ATTENTION_WIDTHS.get(self.shape.cross_attention or -1)


def weights_and_config(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(weights file, config file) of a ControlNet folder or file; ControlError when either is missing."""
    from iga.checkpoint.header import PICKLE_SUFFIXES

    p = Path(path).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise ControlError(f"ControlNet {p}: {p.suffix} files are Python pickles, which can run code when loaded; "
                           "iga never unpickles files: use a .safetensors ControlNet (diffusers layout)")
    if p.is_dir():
        weights = next((p / n for n in WEIGHT_NAMES if (p / n).is_file()), None)
        if weights is None:
            raise ControlError(f"ControlNet folder {p} has no {WEIGHT_NAMES[0]} (only .safetensors weights are "
                               "read; a .bin folder must be converted)")
    elif p.is_file():
        weights = p
    else:
        raise ControlError(f"ControlNet not found: {p} (give a diffusers ControlNet folder or .safetensors file)")
    config = next((c for c in (weights.parent / "config.json", weights.with_suffix(".json")) if c.is_file()), None)
    if config is None:
        raise ControlError(f"ControlNet {p}: no config.json beside {weights.name}; put the diffusers config.json of "
                           "this ControlNet next to it (or use its diffusers folder)")
    return weights, config


def read_control(path: str | os.PathLike[str]) -> ControlInfo:
    """Describe a ControlNet; ControlError (one line: the file, what is wrong, the fix) for anything else."""
    from iga.checkpoint import CheckpointError, read_header
    from iga.checkpoint.hashing import file_sha256
    from iga.guard.source import read_config

    weights, config_path = weights_and_config(path)
    try:
        header = read_header(weights)
        digest = file_sha256(weights)
    except CheckpointError as e:
        raise ControlError(f"ControlNet {weights}: {e.message}; only .safetensors ControlNets are accepted") from None
    names = [t.name for t in header.tensors]
    if any(n.startswith(_LDM_MARKS) for n in names):
        raise ControlError(f"ControlNet {weights}: original (LDM) layout, which iga does not convert; use the "
                           "diffusers version of this ControlNet (a folder with config.json)")
    if "controlnet_cond_embedding.conv_in.weight" not in names or "controlnet_mid_block.weight" not in names:
        raise ControlError(f"ControlNet {weights}: no diffusers ControlNet tensors (controlnet_cond_embedding.*, "
                           "controlnet_mid_block.*); is it a checkpoint, a LoRA or another adapter?")
    config = read_config(config_path)
    if config.get("_class_name") != "ControlNetModel":
        raise ControlError(f"ControlNet {weights}: {config_path} is not a diffusers ControlNetModel config "
                           f"(_class_name {config.get('_class_name')!r}); only ControlNetModel is supported")
    shape = unet_shape(header, "")
    blocks = config.get("block_out_channels")
    if shape.cross_attention != config.get("cross_attention_dim") or \
            shape.width != (blocks[0] if isinstance(blocks, list) and blocks else None):
        raise ControlError(f"ControlNet {weights}: {config_path.name} does not describe these tensors (cross-attention "
                           f"{config.get('cross_attention_dim')} vs {shape.cross_attention}); use its own config")
    in_folder = weights.name in WEIGHT_NAMES
    return ControlInfo(path=str(weights), name=weights.parent.name if in_folder else weights.stem,
                       file_sha256=digest, config=config, shape=shape)


def unet_shape(header: Any, prefix: str, layout: str = "diffusers") -> UnetShape:
    """The widths that decide fit, from a header's UNet (or ControlNet) tensors under ``prefix``."""
    from collections import Counter

    from iga.checkpoint.architecture import unet_conv_in

    cross = Counter(int(t.shape[1]) for t in header.tensors
                    if t.name.startswith(prefix) and t.name.endswith("attn2.to_k.weight") and len(t.shape) == 2)
    tensors = {t.name: t for t in header.tensors}
    adm = tensors.get(prefix + ("label_emb.0.0.weight" if layout == "ldm" else "add_embedding.linear_1.weight"))
    conv = unet_conv_in(tensors, prefix, layout)
    return UnetShape(cross_attention=cross.most_common(1)[0][0] if cross else None,
                     added_input=int(adm.shape[1]) if adm is not None and len(adm.shape) == 2 else None,
                     width=int(conv.shape[0]) if conv is not None and len(conv.shape) == 4 else None)


def base_unet_shape(model_path: str | os.PathLike[str]) -> UnetShape | None:
    """The base model's UNet widths (a single file or a diffusers folder's unet/); None when there is no UNet."""
    from iga.checkpoint import read_header
    from iga.checkpoint.architecture import diffusers_unet_file, unet_layout

    p = os.fspath(model_path)
    file = diffusers_unet_file(p) if os.path.isdir(p) else p
    if file is None or not file.endswith(".safetensors") or "transformer" in Path(file).parts:
        return None
    header = read_header(file)
    layout, prefix = unet_layout({t.name: t for t in header.tensors})
    return None if prefix is None else unet_shape(header, prefix, layout)


def fit_problem(info: ControlInfo, architecture: str, base: UnetShape | None) -> str | None:
    """Why this ControlNet cannot drive this model (None: it fits, as far as the headers tell)."""
    if architecture not in (*_FIT_FAMILIES, "unknown"):
        return f"ControlNets apply to SD1/SD2/SDXL UNets here, not to a {architecture} model"
    if base is not None:
        diff = info.shape.differences(base)
        if diff:
            made = f" (made for {info.architecture})" if info.architecture else ""
            return f"it does not fit this model's UNet{made}: {'; '.join(diff)}"
    elif info.architecture and architecture != "unknown" and info.architecture != architecture:
        return f"it was made for {info.architecture} but the model is {architecture}"
    return None


# ---------------------------------------------------------------------------------------------- runtime


def load_controlnet(path: str | os.PathLike[str], device: Any, dtype: Any) -> Any:
    """The diffusers ControlNetModel of a file accepted by ``read_control`` (safetensors: no code runs). The
    network is built without memory (meta device) and takes the file's tensors, so a config that asks for more
    than the file holds fails on the mismatch instead of allocating it."""
    import torch
    from diffusers import ControlNetModel
    from safetensors.torch import load_file

    from iga.guard.source import read_config

    weights, config_path = weights_and_config(path)
    config = {k: v for k, v in read_config(config_path).items() if not k.startswith("_")}
    try:
        with torch.device("meta"):
            net = ControlNetModel.from_config(config)
        net.load_state_dict(load_file(str(weights)), strict=True, assign=True)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ControlError(f"ControlNet {weights}: its tensors do not match its config.json "
                           f"({str(e).splitlines()[0][:200]})") from None
    if net.dtype != dtype:  # only when it differs: diffusers warns on every dtype cast
        net = net.to(dtype=dtype)
    return net.to(device=device).eval().requires_grad_(False)


def check_fits_backend(net: Any, backend: Any, name: str) -> None:
    """The loaded adapter against the loaded UNet (the guard checked the headers; this is the engine's own check)."""
    a, u = net.config, getattr(backend, "unet", None)
    if u is None:
        raise ControlError(f"ControlNet {name!r}: ControlNets apply to SD1/SD2/SDXL UNets")
    for key in ("cross_attention_dim", "block_out_channels", "layers_per_block", "addition_embed_type"):
        if _tuple(getattr(a, key, None)) != _tuple(getattr(u.config, key, None)):
            raise ControlError(f"ControlNet {name!r} does not fit this model's UNet: {key} "
                               f"{getattr(a, key, None)} vs {getattr(u.config, key, None)}")
    if a.in_channels != backend.latent_channels:
        raise ControlError(f"ControlNet {name!r} takes {a.in_channels} latent channels, the model "
                           f"{backend.latent_channels}")


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, tuple)) else v


def control_image(image: "Image.Image", width: int, height: int) -> "torch.Tensor":
    """The conditioning image as the adapter reads it: RGB, resized to the pass's size with Lanczos, [0, 1],
    [1, 3, H, W] (diffusers' control image processor: convert to RGB, resize, no normalisation)."""
    from PIL import Image

    from iga.stages import pixels_tensor

    rgb = image.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    return pixels_tensor(rgb)


@dataclass
class ActiveControl:
    """One adapter as a pass runs it."""

    net: Any
    image: "torch.Tensor"  # [1, 3, H, W] in [0, 1]
    strength: float
    start: float
    end: float

    def active(self, step: int, steps: int) -> bool:
        """diffusers' rule: kept at step i of N unless i/N < start or (i+1)/N > end."""
        return not (step / steps < self.start or (step + 1) / steps > self.end)


class ControlledModel:
    """A raw model (x, t, cond) -> prediction that runs ControlNets first and hands their residuals to the UNet.

    ``step_ts``: the timestep of each sigma of the pass (from the plan's parameterization), to find each call's
    step (see the module docstring). The batch of ``x`` may be [uncond; cond] (CFG): the conditioning image is
    repeated to it, and each half reads its own text conditioning, as in diffusers.
    """

    def __init__(self, backend: Any, controls: list[ActiveControl], step_ts: "torch.Tensor"):
        self.backend, self.controls, self.step_ts = backend, controls, step_ts.to(float)
        self.steps = len(step_ts) - 1

    def step_of(self, t: "torch.Tensor") -> int:
        """The step a call at timestep ``t`` belongs to: the last grid point at or above it (t falls with sigma)."""
        import torch

        tc = float(torch.as_tensor(t).reshape(-1)[0])
        tol = 1e-4 * max(1.0, abs(tc))
        at_or_above = int((self.step_ts >= tc - tol).sum())
        return min(max(at_or_above - 1, 0), self.steps - 1)

    def __call__(self, x: "torch.Tensor", t: "torch.Tensor", cond: dict) -> "torch.Tensor":
        import torch

        step = self.step_of(t)
        live = [c for c in self.controls if c.active(step, self.steps)]
        if not live:
            return self.backend.raw_model(x, t, cond)
        dev, dt, B = self.backend.device, self.backend.dtype, x.shape[0]
        sample = x.to(dev, dt)
        tt = torch.as_tensor(t, device=dev)
        tt = (tt.to(torch.float32) if tt.is_floating_point() else tt).reshape(-1).expand(B)
        text = cond["encoder_hidden_states"].to(dev, dt).expand(B, -1, -1)
        added = ({"text_embeds": cond["text_embeds"].to(dev, dt).expand(B, -1),
                  "time_ids": cond["time_ids"].to(dev, dt).expand(B, -1)} if "text_embeds" in cond else None)
        down, mid = None, None
        with torch.no_grad():
            for c in live:
                d, m = c.net(sample, tt, encoder_hidden_states=text, controlnet_cond=c.image.to(dev, dt).expand(
                    B, -1, -1, -1), conditioning_scale=c.strength, added_cond_kwargs=added, return_dict=False)
                down = list(d) if down is None else [a + b for a, b in zip(down, d)]
                mid = m if mid is None else mid + m
        return self.backend.raw_model(x, t, cond, residuals=(down, mid))


def load_controls(plan: Any, backend: Any, cache: dict | None = None) -> list[Any]:
    """The plan's ControlNets loaded (in its order) and checked against the backend's UNet; ``cache`` keeps them
    by (file SHA-256, device, dtype) across generations. ValueError when a file is not here."""
    from iga.store.used import control_files

    cache = {} if cache is None else cache
    nets = []
    for (sha, path), use in zip(control_files(plan), plan.controls):
        key = (sha, str(backend.device), str(backend.dtype))
        if key not in cache:
            net = load_controlnet(path, backend.device, backend.dtype)
            check_fits_backend(net, backend, use.name)
            cache[key] = net
        nets.append(cache[key])
    return nets
