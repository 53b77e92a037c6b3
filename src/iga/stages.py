"""The passes of a plan beyond plain text-to-image: the img2img start latent, inpainting masks (blended sampling or
an inpainting UNet's extra channels, "only masked" crops pasted back) and the hires-fix second pass.

Conventions, each stated where it is applied:
* an init image is resized to the plan's size with Lanczos (A1111's "Just resize") after flattening any alpha onto
  white, and encoded with the VAE posterior's mean (deterministic: A1111 and diffusers sample the posterior, which
  costs a random draw and makes the start depend on the RNG);
* a mask is white (or, for an image with transparency, transparent) where the image is repainted; it is blurred
  by ``mask_blur`` pixels, then binarized at 0.5 and reduced to the latent grid by nearest sampling (diffusers);
* "whole picture" inpainting returns the decoded image as is (diffusers); "only masked" renders the padded crop at
  the plan's size and pastes it back through the blurred mask (A1111), so the rest of the picture is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iga.guard.images import find_input_image
from iga.guard.plan import Img2Img, InputImage, Plan

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image


@dataclass
class Prepared:
    """What a plan's img2img stage needs, computed once for all seeds."""

    latent: "torch.Tensor"  # the init latent [1, C, h, w]
    mask: "torch.Tensor | None" = None  # [1, 1, h, w] in {0, 1} (1 = repaint)
    concat: "torch.Tensor | None" = None  # an inpainting UNet's extra input: mask + masked-image latent
    crop: tuple[int, int, int, int] | None = None  # only masked: (left, top, right, bottom) in the init image
    original: "Image.Image | None" = None  # only masked: the init image the crop is pasted back into
    soft_mask: "Image.Image | None" = None  # only masked: the blurred mask used for pasting


def images_given(spec: Img2Img, init_image: Any = None, mask: Any = None) -> tuple["Image.Image", "Image.Image | None"]:
    """The plan's init image and mask, found again and verified by hash (``init_image``/``mask``: files the user
    points at, for a replay on another machine)."""
    init = find_input_image(spec.init_image, "init image", init_image)
    m = find_input_image(spec.mask, "mask", mask) if spec.mask is not None else None
    return init, m


def to_rgb(image: "Image.Image") -> "Image.Image":
    """RGB, with transparency flattened onto white (A1111's default background)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return image.convert("RGB")


def mask_of(image: "Image.Image") -> "Image.Image":
    """An 'L' mask, 255 = repaint: the alpha channel inverted when the image has transparency, else its grey."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            from PIL import ImageOps

            return ImageOps.invert(alpha)
    return image.convert("L")


def pixels_tensor(image: "Image.Image") -> "torch.Tensor":
    """An RGB image as a [1, 3, H, W] float tensor in [0, 1]."""
    import numpy as np
    import torch

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def prepare(plan: Plan, backend: Any, init: "Image.Image", mask: "Image.Image | None") -> Prepared:
    """Encode the init image (and mask) at the plan's size; for "only masked", crop first."""
    from PIL import Image, ImageFilter

    spec = plan.img2img
    assert spec is not None
    init = to_rgb(init)
    soft = None
    if mask is not None:
        soft = mask_of(mask)
        if spec.mask_blur > 0:
            soft = soft.filter(ImageFilter.GaussianBlur(spec.mask_blur))
    crop = None
    original = init
    if soft is not None and spec.inpaint_area == "only_masked":
        crop = crop_region(soft, spec.inpaint_padding, plan.width, plan.height)
        init, mask_view = init.crop(crop), soft.crop(crop)
    else:
        mask_view = soft
    size = (plan.width, plan.height)
    if init.size != size:
        init = init.resize(size, Image.Resampling.LANCZOS)
    latent = backend.encode_image(pixels_tensor(init))
    out = Prepared(latent=latent, crop=crop, original=original if crop else None, soft_mask=soft if crop else None)
    if mask_view is not None:
        if mask_view.size != size:
            mask_view = mask_view.resize(size, Image.Resampling.LANCZOS)
        out.mask, out.concat = _mask_latents(spec, backend, init, mask_view, latent)
    return out


def _mask_latents(spec: Img2Img, backend: Any, init: "Image.Image", mask: "Image.Image", latent: "torch.Tensor"):
    """(latent-resolution binary mask, an inpainting UNet's concat input or None)."""
    import torch
    import torch.nn.functional as F

    full = (pixels_tensor(mask.convert("RGB"))[:, :1] >= 0.5).to(torch.float32)
    small = F.interpolate(full, size=latent.shape[-2:], mode="nearest").to(latent.dtype)
    if spec.inpaint_method != "model":
        return small, None
    masked = pixels_tensor(init) * (full < 0.5)  # the picture with the repainted region blacked out (diffusers)
    masked_latent = backend.encode_image(masked)
    return small, torch.cat([small.to(latent.device), masked_latent.to(latent.device)], dim=1)


def crop_region(mask: "Image.Image", padding: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The masked region's bounding box grown by ``padding`` and then to the plan's aspect ratio, inside the image
    (A1111's "only masked"); the whole image when the mask is empty."""
    box = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    W, H = mask.size
    if box is None:
        return 0, 0, W, H
    l, t, r, b = max(0, box[0] - padding), max(0, box[1] - padding), min(W, box[2] + padding), min(H, box[3] + padding)
    want = width / height
    cw, ch = r - l, b - t
    if cw / ch < want:  # too narrow: widen around the centre
        grow = min(W, round(ch * want)) - cw
        l = max(0, min(l - grow // 2, W - (cw + grow)))
        r = l + cw + grow
    elif cw / ch > want:
        grow = min(H, round(cw / want)) - ch
        t = max(0, min(t - grow // 2, H - (ch + grow)))
        b = t + ch + grow
    return l, t, r, b


def paste_back(prepared: Prepared, rendered: "Image.Image") -> "Image.Image":
    """Only masked: the rendered crop resized to the crop box and composited into the original through the mask."""
    from PIL import Image

    assert prepared.crop is not None and prepared.original is not None and prepared.soft_mask is not None
    l, t, r, b = prepared.crop
    patch = rendered.resize((r - l, b - t), Image.Resampling.LANCZOS)
    out = prepared.original.copy()
    out.paste(patch, (l, t), prepared.soft_mask.crop(prepared.crop))
    return out


def upscale(x: "torch.Tensor", backend: Any, upscaler: str, width: int, height: int) -> "torch.Tensor":
    """Hires fix: the first pass's latent enlarged to ``width`` x ``height`` pixels, in latent or pixel space."""
    import torch.nn.functional as F
    from PIL import Image

    from iga.catalog.upscalers import UPSCALERS
    from iga.generate import to_uint8

    space, method, _ = UPSCALERS[upscaler]
    if space == "latent":
        _, h, w = backend.latent_shape(width, height)
        mode, antialias = (method.removesuffix("-antialias"), method.endswith("-antialias"))
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        return F.interpolate(x, size=(h, w), mode=mode, antialias=antialias, **kwargs)
    resample = {"lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST,
                "bicubic": Image.Resampling.BICUBIC}[method]
    pixels = to_uint8(backend.decode(x)[0])
    big = Image.fromarray(pixels, "RGB").resize((width, height), resample)
    return backend.encode_image(pixels_tensor(big))


def input_records(plan: Plan) -> list[InputImage]:
    """Every image file the plan reads (replay needs each of them again)."""
    spec = plan.img2img
    out = [spec.init_image] if spec else []
    if spec and spec.mask:
        out.append(spec.mask)
    return out + [c.image for c in plan.controls]


def controls_at(plan: Plan, backend: Any, controlnets: list[Any] | None = None) -> tuple[list[Any], list[Any]]:
    """The plan's ControlNets as its first pass and its hires pass run them (their conditioning images found again
    by hash and resized to each pass's size: A1111's ControlNet also guides the hires pass); ``controlnets``: the
    loaded networks in the plan's order (else loaded now)."""
    from iga.models.control import ActiveControl, control_image, load_controls

    if not plan.controls:
        return [], []
    nets = controlnets if controlnets is not None else load_controls(plan, backend)
    images = [find_input_image(c.image, "control image") for c in plan.controls]
    sizes = [(plan.width, plan.height)] + ([(plan.hires.width, plan.hires.height)] if plan.hires else [])
    passes = [[ActiveControl(net, control_image(img, w, h), c.strength, c.start, c.end)
               for net, img, c in zip(nets, images, plan.controls)] for w, h in sizes]
    return passes[0], passes[1] if len(passes) > 1 else []
