"""Step previews: small RGB frames of what the sampler expects the finished image to be, step by step.

A preview is made after a sampling step from the step's *denoised estimate* x0 (the model's guess of the clean
image), not from the noisy state x. Early on x is mostly noise and shows nothing, while x0 already shows the
composition; it sharpens as sigma falls, so a run of x0 frames shows how the image forms and where it goes wrong
(a NaN, a collapse, colours that drift).

A latent model's x0 needs a decoder to become pixels; choose one by name:

* ``"linear"``: ``rgb = x0 @ M + b`` per latent pixel with published per-architecture coefficients
  (``LATENT_RGB``): a few tensor ops, frames at latent resolution (64x64 for a 512x512 SD image);
* ``"fit"``: the same kind of map, fitted once by least squares to this model's own VAE (for VAEs without
  published coefficients, e.g. random-weight test models);
* ``"vae"``: the full VAE decode, exact but about as slow as decoding the final image, at every previewed step;
* ``"auto"``: linear when the architecture has coefficients, else fit.

Use::

    from iga.diagnostics.preview import contact_sheet, previews
    run = previews(model, model.plan("a red circle on a blue background", seed=1), every=2)
    frames = list(run)  # PreviewFrame(step, total, sigma, image, rgb, finite), yielded while sampling runs
    contact_sheet(frames).save("sheet.png"); run.images[0].image.save("final.png")

Or pass ``PreviewStream(backend, on_frame=push)`` as ``callback=`` to ``Model.generate`` to get each frame as
it is made (a server pushing live previews).
"""

from __future__ import annotations

import io
import math
import os
import queue
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image, ImageFont

    from iga.sampling.base import StepInfo

DECODERS = ("auto", "linear", "fit", "vae")

# Latent -> RGB factors of the scaled latent space the UNet samples in (x0 exactly as the sampler sees it): row c
# is latent channel c's (R, G, B) contribution, plus a bias; the result is in [-1, 1] like the VAE's output.
# Source: ComfyUI, comfy/latent_formats.py (classes SD15 and SDXL, fields latent_rgb_factors and
# latent_rgb_factors_bias), used by its Latent2RGB previewer as (rgb + 1) / 2. The method is keturn's
# "Decoding latents to RGB without upscaling" (discuss.huggingface.co/t/23204), a least-squares fit on SD 1.4.
# SD2 shares SD1's VAE and latent space. The demo model samples pixels in [-1, 1], so its latent is the image.
LATENT_RGB: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]]] = {
    "sd1": ((( 0.3512,  0.2297,  0.3227),  # noqa: E201
             ( 0.3250,  0.4974,  0.2350),  # noqa: E201
             (-0.2829,  0.1762,  0.2721),
             (-0.2120, -0.2616, -0.7177)), (0.0, 0.0, 0.0)),
    "sdxl": ((( 0.3651,  0.4232,  0.4341),  # noqa: E201
              (-0.2533, -0.0042,  0.1068),
              ( 0.1076,  0.1111, -0.0362),  # noqa: E201
              (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011)),
    "demo": (((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), (0.0, 0.0, 0.0)),
}
LATENT_RGB["sd2"] = LATENT_RGB["sd1"]

MIN_CELL = 96  # contact-sheet cells are upscaled to at least this width, so 32x32 frames stay readable
MARGIN = 4
LINE = 12  # label line height for Pillow's default font (size 10)
LABEL_HEIGHT = 2 * LINE + 4


@dataclass(frozen=True)
class PreviewFrame:
    """One preview: the x0 estimate after ``step`` of ``total`` steps, at noise level ``sigma``."""

    step: int  # steps done (1-based)
    total: int | None  # steps in the run (None when unknown, e.g. an adaptive sampler)
    sigma: float  # sigma at the end of the step
    image: int  # index of the image in the batch (0-based)
    rgb: "np.ndarray"  # uint8 H x W x 3
    finite: bool  # False when x0 had NaN/Inf (shown as black there)


def architecture_of(backend: Any) -> str | None:
    """The backend's architecture ("demo", "sd1", "sd2", "sdxl", ...), or None when it does not say."""
    arch = getattr(backend, "architecture", None)
    if arch is None:
        arch = (getattr(backend, "identity", None) or {}).get("architecture")
    return str(arch) if arch is not None else None


@dataclass(frozen=True)
class LinearMap:
    """``rgb01 = weight.T @ latent + bias`` per pixel: weight (C, 3), bias (3,), output in [0, 1]."""

    weight: "torch.Tensor"
    bias: "torch.Tensor"

    def __call__(self, x0: "torch.Tensor") -> "torch.Tensor":
        """(C, h, w) latent -> (3, h, w) RGB, float32, unclamped."""
        import torch

        c, h, w = x0.shape
        weight, bias = self.weight.to(x0.device), self.bias.to(x0.device)
        return torch.addmm(bias[:, None], weight.T, x0.reshape(c, h * w).float()).reshape(3, h, w)


def published_map(architecture: str | None) -> LinearMap | None:
    """The published linear map of an architecture (``LATENT_RGB``), or None when there is none."""
    import torch

    if architecture not in LATENT_RGB:
        return None
    factors, bias = LATENT_RGB[architecture]
    # the table maps to [-1, 1]; halve it and shift by 0.5 so every LinearMap ends in [0, 1]
    return LinearMap(torch.tensor(factors) / 2, torch.tensor(bias) / 2 + 0.5)


_FITS: "weakref.WeakKeyDictionary[Any, LinearMap]" = weakref.WeakKeyDictionary()


def fit_map(backend: Any, *, samples: int = 4, size: int = 16, seed: int = 0) -> LinearMap:
    """A linear map fitted to the backend's own decoder (cached per backend).

    Decodes a few random latents once and regresses the decoded image, average-pooled to latent resolution, on
    the latent channels. The latents are smooth blobs plus fine noise, because real x0 estimates are spatially
    smooth and a VAE's output at a pixel depends on its neighbourhood, not only on the latent under it. A private
    generator keeps the global random state (and so any sampling that uses it) untouched.
    """
    if backend in _FITS:
        return _FITS[backend]
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    c = int(backend.latent_channels)
    coarse = torch.randn(samples, c, 4, 4, generator=gen)
    z = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    z = z + 0.5 * torch.randn(samples, c, size, size, generator=gen)
    with torch.inference_mode():
        rgb = backend.decode(z.to(backend.device, backend.dtype)).float().cpu()
    rgb = F.adaptive_avg_pool2d(rgb, (size, size))
    x = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, c), torch.ones(samples * size * size, 1)], 1).double()
    y = rgb.permute(0, 2, 3, 1).reshape(-1, 3).double()
    solution = torch.linalg.lstsq(x, y).solution.float()
    fitted = LinearMap(solution[:c].contiguous(), solution[c].contiguous())
    _FITS[backend] = fitted
    return fitted


def make_decoder(backend: Any, name: str = "auto") -> Callable[["torch.Tensor"], "torch.Tensor"]:
    """x0 (C, h, w) -> RGB (3, H, W) float, about [0, 1] (frames clamp it), by decoder ``name`` (see the module
    docstring)."""
    if name not in DECODERS:
        raise ValueError(f"unknown preview decoder {name!r}; choose {', '.join(DECODERS)}")
    arch = architecture_of(backend)
    if name == "vae":
        return lambda x0: backend.decode(x0[None])[0]
    table = published_map(arch)
    if name == "linear" and table is None:
        raise ValueError(f"no published latent-to-RGB coefficients for architecture {arch!r}; "
                         "use the decoder 'fit' or 'vae'")
    return table if name in ("linear", "auto") and table is not None else fit_map(backend)


def _to_frame_pixels(rgb: "torch.Tensor", max_side: int) -> "np.ndarray":
    """(3, H, W) in [0, 1] -> uint8 H x W x 3, area-downscaled so the longer side is at most max_side."""
    import torch.nn.functional as F

    _, h, w = rgb.shape
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        rgb = F.interpolate(rgb[None], size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")[0]
    # the same rounding as iga.generate.to_uint8, so a pixel-space preview equals the decoded image
    return (rgb.clamp(0, 1) * 255.0).round().to("cpu").byte().permute(1, 2, 0).contiguous().numpy()


class PreviewStream:
    """A sampling callback that turns every ``every``-th step's x0 (and the last step's) into a PreviewFrame.

    Frames are appended to ``.frames`` and handed to ``on_frame``. Images of a batch are sampled one after
    another, each in ``passes`` sampler runs (a hires fix or a refiner adds one; each run starts at step index 0),
    and frames count steps over an image's passes. ``total``: steps per image (``iga.generate.steps_run``), used to
    label frames and to recognise the last step of a schedule that does not end at sigma 0.
    """

    def __init__(self, backend: Any, *, every: int = 1, decoder: str = "auto",
                 on_frame: Callable[[PreviewFrame], None] | None = None, max_side: int = 256,
                 total: int | None = None, passes: int = 1):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.every, self.on_frame, self.max_side, self.total = every, on_frame, max_side, total
        self.decode = make_decoder(backend, decoder)
        self.frames: list[PreviewFrame] = []
        self.steps_seen = 0
        self.passes = max(1, int(passes))
        self._image, self._runs, self._step = -1, 0, 0

    def __call__(self, info: "StepInfo") -> None:
        import torch

        self.steps_seen += 1
        if info.i == 0:
            if self._runs % self.passes == 0:
                self._image, self._step = self._image + 1, 0
            self._runs += 1
        self._step += 1
        step = self._step
        last = info.sigma_next <= 0 or step == self.total
        if step % self.every and not last:
            return
        x0 = (info.denoised if info.denoised is not None else info.x)[0].detach()
        finite = bool(torch.isfinite(x0).all())
        if not finite:
            x0 = torch.nan_to_num(x0, nan=0.0, posinf=0.0, neginf=0.0)
        total = self.total if self.total is not None and step <= self.total else None
        frame = PreviewFrame(step, total, float(info.sigma_next), max(self._image, 0),
                             _to_frame_pixels(self.decode(x0), self.max_side), finite)
        self.frames.append(frame)
        if self.on_frame is not None:
            self.on_frame(frame)


_DONE = object()


class PreviewRun:
    """Frames of one generation as they are made (iterate once); ``.images`` holds the result afterwards.

    The generation runs in a background thread; an error there is raised by the iteration. Stopping early
    (``break``, or closing the iterator) cancels the run after its current step and leaves ``.images`` None.
    """

    def __init__(self, model: Any, plan: Any, *, every: int = 1, decoder: str = "auto"):
        self.model, self.plan = model, plan
        from iga.generate import passes_per_image, steps_run

        self.stream = PreviewStream(model.backend_for(plan), every=every, decoder=decoder, total=steps_run(plan),
                                    passes=passes_per_image(plan))
        self.images: list[Any] | None = None
        self.cancelled = False
        self._started = False

    def __iter__(self) -> Iterator[PreviewFrame]:
        if self._started:
            raise RuntimeError("a PreviewRun can be iterated once; call previews() again for a new run")
        self._started = True
        frames: queue.Queue = queue.Queue()
        cancel = threading.Event()
        self.stream.on_frame = frames.put

        def work() -> None:
            try:
                self.images = self.model.generate(plan=self.plan, callback=self.stream, cancel=cancel)
                frames.put(_DONE)
            except BaseException as e:  # handed to the consumer, which re-raises it
                frames.put(e)

        worker = threading.Thread(target=work, name="iga-preview", daemon=True)
        worker.start()
        finished = False
        try:
            while True:
                item = frames.get()
                if item is _DONE:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:  # the consumer stopped early (or was interrupted): stop sampling too
                self.cancelled = True
                cancel.set()
            worker.join()


def previews(model: Any, plan: Any, *, every: int = 1, decoder: str = "auto") -> PreviewRun:
    """Generate ``plan`` with ``model`` (an ``iga.generate.Model``), yielding preview frames while it runs."""
    return PreviewRun(model, plan, every=every, decoder=decoder)


def _font() -> "ImageFont.FreeTypeFont | ImageFont.ImageFont":
    from PIL import ImageFont

    return ImageFont.load_default()


def _sigma_symbol(font: Any) -> str:
    """"σ" when the font has the glyph, else "sigma" (Pillow's bundled font has no Greek letters)."""
    try:
        missing = font.getmask("\ue000").tobytes()  # a private-use code point: surely the "missing" box
        return "σ" if font.getmask("σ").tobytes() != missing else "sigma"
    except (UnicodeError, AttributeError):
        return "sigma"


def _labels(frame: PreviewFrame, several_images: bool, sigma: str) -> tuple[str, str]:
    prefix = f"#{frame.image + 1} " if several_images else ""
    step = f"{prefix}step {frame.step}" + (f"/{frame.total}" if frame.total else "")
    return step, ("NaN/Inf" if not frame.finite else f"{sigma} {frame.sigma:.3g}")


def _cells(frames: Sequence[PreviewFrame], scale: int | None) -> list["Image.Image"]:
    """Each frame upscaled (NEAREST) into an equal-size white cell with its two-line label below."""
    from PIL import Image, ImageDraw

    if not frames:
        raise ValueError("no preview frames")
    w = max(f.rgb.shape[1] for f in frames)
    h = max(f.rgb.shape[0] for f in frames)
    scale = scale or max(1, math.ceil(MIN_CELL / w))
    font = _font()
    sigma = _sigma_symbol(font)
    several = len({f.image for f in frames}) > 1
    cells = []
    for f in frames:
        cell = Image.new("RGB", (w * scale, h * scale + LABEL_HEIGHT), "white")
        img = Image.fromarray(f.rgb, "RGB")
        cell.paste(img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST), (0, 0))
        draw = ImageDraw.Draw(cell)
        top, second = _labels(f, several, sigma)
        draw.text((2, h * scale + 2), top, fill="black", font=font)
        draw.text((2, h * scale + 2 + LINE), second, fill="black" if f.finite else "red", font=font)
        if not f.finite:
            draw.rectangle((0, 0, w * scale - 1, h * scale - 1), outline="red", width=2)
        cells.append(cell)
    return cells


def contact_sheet(frames: Sequence[PreviewFrame], *, columns: int | None = None,
                  scale: int | None = None) -> "Image.Image":
    """The frames in a grid (default about square), each labelled "step N/T" and "σ value" below it.

    ``scale``: integer upscaling of every frame (default: the least that makes a cell at least MIN_CELL wide).
    """
    from PIL import Image

    cells = _cells(frames, scale)
    columns = columns or math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    cw, ch = cells[0].size
    sheet = Image.new("RGB", (columns * cw + (columns + 1) * MARGIN, rows * ch + (rows + 1) * MARGIN), "white")
    for k, cell in enumerate(cells):
        r, c = divmod(k, columns)
        sheet.paste(cell, (MARGIN + c * (cw + MARGIN), MARGIN + r * (ch + MARGIN)))
    return sheet


def _webp_bytes(frames: Sequence[PreviewFrame], duration_ms: int) -> bytes:
    cells = _cells(frames, None)
    buf = io.BytesIO()
    # lossless: lossy WebP smears the small label text
    cells[0].save(buf, format="WEBP", save_all=True, append_images=cells[1:], duration=duration_ms, loop=0,
                  lossless=True)
    return buf.getvalue()


def animated_webp(frames: Sequence[PreviewFrame], path: str | os.PathLike[str], *, duration_ms: int = 150) -> Path:
    """Write the labelled frames as a looping animated WebP, atomically (whole file or none)."""
    from iga.checkpoint import write_bytes_atomic

    write_bytes_atomic(str(path), _webp_bytes(frames, duration_ms))
    return Path(path)


def save_previews(frames: Sequence[PreviewFrame], image_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<stem>-preview.png`` (contact sheet) and ``<stem>-preview.webp`` beside an image.

    Existing files are never overwritten: the pair gets the first free suffix (-1, -2, ...) instead.
    """
    from iga.checkpoint import write_bytes_atomic

    image_path = Path(image_path)
    folder, stem = image_path.parent, image_path.stem
    k = 0
    while True:
        suffix = f"-{k}" if k else ""
        sheet, webp = folder / f"{stem}-preview{suffix}.png", folder / f"{stem}-preview{suffix}.webp"
        if not sheet.exists() and not webp.exists():
            break
        k += 1
    buf = io.BytesIO()
    contact_sheet(frames).save(buf, format="PNG")
    write_bytes_atomic(str(sheet), buf.getvalue())
    animated_webp(frames, webp)
    return sheet, webp
