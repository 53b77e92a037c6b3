"""What a model backend offers the rest of iga, and the small shared helpers (device, dtype, errors).

A backend turns a checkpoint into three things the sampling engine and the CLI need: a prompt encoder
(``encode_prompt``), the raw network call (``raw_model``, wrapped into a denoiser by
``iga.sampling.parameterization``) and a decoder from latents to pixels (``decode``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from iga.sampling.base import Conditioning

ARCHITECTURES = ("sd1", "sd2", "sdxl", "sd3", "flux")
PREDICTION_TYPES = ("eps", "v", "x0", "flow")

# diffusers scheduler spelling -> iga spelling
DIFFUSERS_PREDICTION = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow": "flow", "flow_prediction": "flow"}


class ModelLoadError(RuntimeError):
    """A checkpoint, VAE or model folder could not be loaded; the message says what and how to fix it."""


@runtime_checkable
class Backend(Protocol):
    """A loaded diffusion model as the rest of iga uses it."""

    architecture: str  # "sd1" | "sd2" | "sdxl" | "sd3" | "flux"
    prediction_type: str  # "eps" | "v" | "x0" | "flow"
    training_schedule: dict[str, Any]  # {"kind", "beta_start", "beta_end", "num_train_timesteps", "zero_terminal_snr"}
    latent_channels: int
    vae_scale_factor: int  # pixel-space models: 1 and no VAE
    device: "torch.device"
    dtype: "torch.dtype"
    identity: dict[str, Any]  # name, path, format, architecture, component sources, ...

    def encode_prompt(
        self, prompts: list[str], negatives: list[str], *, clip_skip: int = 1, width: int, height: int
    ) -> tuple["Conditioning", "Conditioning"]:
        """Return ``(cond, uncond)`` conditioning dicts of batch-first tensors."""
        ...

    def raw_model(self, x: "torch.Tensor", t: "torch.Tensor", cond: "Conditioning") -> "torch.Tensor":
        """Run the network on scaled input ``x`` at timesteps ``t`` ([B]) and return its raw prediction."""
        ...

    def decode(self, latents: "torch.Tensor") -> "torch.Tensor":
        """Decode latents to images (B, 3, H, W) in [0, 1], float32 on the CPU."""
        ...

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """The (C, h, w) latent shape for an image of ``width`` x ``height`` pixels."""
        ...


_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "full": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


def resolve_dtype(dtype: "str | torch.dtype") -> "torch.dtype":
    """Turn "float32"/"fp16"/"bf16"/... or a torch dtype into a torch dtype (floating types only)."""
    import torch

    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = str(dtype).strip().lower()
    if name not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of float32 (fp32), float16 (fp16), bfloat16 (bf16)")
    return getattr(torch, _DTYPES[name])


def resolve_device(device: "str | torch.device") -> "torch.device":
    """Turn "cpu"/"cuda"/"cuda:1"/"mps"/"auto" into a torch device, checking that it is available."""
    import torch

    text = str(device).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"device {device!r} requested but CUDA is not available to this torch build "
                f"({torch.__version__}); use device='cpu' or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r} requested but Apple MPS is not available; use device='cpu'")
    elif dev.type != "cpu":
        raise ModelLoadError(f"device type {dev.type!r} is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def check_dtype_on_device(dtype: "torch.dtype", device: "torch.device") -> None:
    """Refuse combinations that do not work (float16 on the CPU: many kernels are missing or very slow)."""
    import torch

    if device.type == "cpu" and dtype == torch.float16:
        raise ModelLoadError(
            "float16 is not supported on the CPU (missing/slow half-precision kernels); "
            "use dtype='float32' (default) or 'bfloat16' on the CPU, or float16 on a CUDA/MPS device"
        )


def vae_decode(vae: Any, latents: "torch.Tensor", device: "torch.device", dtype: "torch.dtype") -> "torch.Tensor":
    """Model latents (B, C, h, w) -> images (B, 3, H, W) float32 in [0, 1] on the CPU: un-scale and un-shift by the
    VAE's own factors (SD: scaling only; SD3/Flux also a shift), decode one image at a time (VAE activations
    dominate peak memory), as diffusers' pipelines do before their image processor."""
    import torch

    scale = float(vae.config.scaling_factor)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    out = []
    with torch.no_grad():
        for one in latents.split(1):
            image = vae.decode(one.to(device, dtype) / scale + shift, return_dict=False)[0]
            out.append((image.float() / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(out)


def vae_encode(vae: Any, images: "torch.Tensor", device: "torch.device", dtype: "torch.dtype") -> "torch.Tensor":
    """Images (B, 3, H, W) in [0, 1] -> model latents: the posterior mean (deterministic), shifted and scaled."""
    import torch

    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.no_grad():
        dist = vae.encode(images.to(device, dtype) * 2 - 1, return_dict=False)[0]
    return ((dist.mean - shift) * float(vae.config.scaling_factor)).float()


class VaeLatents:
    """What a latent backend reads off its VAE's config (``vae`` is set by the backend)."""

    vae: Any

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each axis (8 for the real families)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        """The latent scaling factor (0.18215 SD1/SD2, 0.13025 SDXL, 1.5305 SD3, 0.3611 Flux)."""
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        """The latent shift, subtracted before scaling (0 for SD; 0.0609 SD3, 0.1159 Flux)."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)


def pair_texts(prompts: list[str] | str, negatives: list[str] | str) -> tuple[list[str], list[str]]:
    """Prompts and as many negatives (one negative applies to every prompt; none means empty negatives)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    negatives = [negatives] if isinstance(negatives, str) else list(negatives)
    if not prompts:
        raise ValueError("encode_prompt needs at least one prompt")
    negatives = negatives or [""]
    if len(negatives) == 1:
        negatives = negatives * len(prompts)
    if len(negatives) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(negatives)} negative prompts; give one or the same number")
    for text in (*prompts, *negatives):
        if not isinstance(text, str):
            raise TypeError(f"prompts must be strings, got {type(text).__name__}")
    return prompts, negatives
