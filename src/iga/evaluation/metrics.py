"""Image metrics that need no pretrained network: against a reference image, and of one image alone.

Every function takes uint8 H x W x 3 RGB arrays (what iga saves) and returns a float. Reference-based metrics
compare an image with the same prompt and seed rendered by a documented reference plan (the recipe's sampler
and schedule at 4x the canonical steps: an estimate of the trajectory's converged end point).
"""

from __future__ import annotations

import math

import numpy as np

# Wang et al. 2004 ("Image Quality Assessment: From Error Visibility to Structural Similarity"): an 11x11
# Gaussian window with sigma 1.5 and these stabilising constants, for 8-bit images (L = 255).
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # scipy's radius int(3.5 * 1.5 + 0.5) = 5 gives the paper's 11x11 window
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2

REFERENCE_METRICS = ("ssim", "psnr", "delta_hue", "delta_saturation", "delta_lightness")
IMAGE_METRICS = ("colourfulness", "sharpness", "hf_energy", "clipped")


def _check(px: np.ndarray, name: str = "image") -> np.ndarray:
    if not isinstance(px, np.ndarray) or px.dtype != np.uint8 or px.ndim != 3 or px.shape[2] != 3:
        raise ValueError(f"{name} must be a uint8 H x W x 3 array, got {getattr(px, 'dtype', type(px))} "
                         f"{getattr(px, 'shape', '')}")
    return px.astype(np.float64)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = _check(a, "image"), _check(b, "reference")
    if fa.shape != fb.shape:
        raise ValueError(f"image and reference sizes differ: {a.shape} vs {b.shape}")
    return fa, fb


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004), mean over the three RGB channels; 1 = identical.

    Gaussian-weighted local means, variances and covariance (11x11, sigma 1.5), C1 = (0.01*255)^2,
    C2 = (0.03*255)^2, averaged over every pixel (scipy's reflect padding at the borders).
    """
    from scipy.ndimage import gaussian_filter

    fa, fb = _pair(a, b)
    vals = []
    for c in range(3):
        x, y = fa[..., c], fb[..., c]
        blur = lambda z: gaussian_filter(z, _SSIM_SIGMA, truncate=_SSIM_TRUNCATE)  # noqa: E731
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        num = (2 * mx * my + _SSIM_C1) * (2 * cxy + _SSIM_C2)
        den = (mx * mx + my * my + _SSIM_C1) * (vx + vy + _SSIM_C2)
        vals.append(float((num / den).mean()))
    return float(np.mean(vals))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all channels: 10 log10(255^2 / MSE); inf when identical."""
    fa, fb = _pair(a, b)
    mse = float(((fa - fb) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _hsv(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (radians), saturation and value of float RGB in 0..255 (the HSV hexcone, Smith 1978)."""
    r, g, b = (f[..., i] / 255.0 for i in range(3))
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    chroma = mx - mn
    safe = np.where(chroma > 0, chroma, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    sat = np.where(mx > 0, chroma / np.where(mx > 0, mx, 1.0), 0.0)
    return h * (math.pi / 3), sat, mx


def mean_hue(px: np.ndarray) -> float:
    """Chroma-weighted circular mean hue in degrees [0, 360); NaN for an achromatic (grey) image.

    Grey pixels have no hue, so each pixel's hue vector is weighted by its chroma (max - min of RGB).
    """
    f = _check(px)
    h, _, _ = _hsv(f)
    w = (f.max(axis=2) - f.min(axis=2)) / 255.0
    if w.sum() < 1e-6 * w.size:
        return math.nan
    ang = math.atan2(float((w * np.sin(h)).sum()), float((w * np.cos(h)).sum()))
    return math.degrees(ang) % 360.0


def delta_hue(a: np.ndarray, ref: np.ndarray) -> float:
    """Signed circular difference of the chroma-weighted mean hues, image minus reference, in (-180, 180] degrees.

    NaN when either image is achromatic (its hue is undefined).
    """
    _pair(a, ref)
    ha, hr = mean_hue(a), mean_hue(ref)
    if math.isnan(ha) or math.isnan(hr):
        return math.nan
    d = (ha - hr) % 360.0
    return d - 360.0 if d > 180.0 else d


def delta_saturation(a: np.ndarray, ref: np.ndarray) -> float:
    """Mean HSV saturation of the image minus that of the reference (in -1..1; > 0: more saturated)."""
    fa, fr = _pair(a, ref)
    return float(_hsv(fa)[1].mean() - _hsv(fr)[1].mean())


def lightness(px: np.ndarray) -> np.ndarray:
    """CIELAB L* (0..100) per pixel, from sRGB with the D65 white (IEC 61966-2-1 and CIE 15)."""
    f = _check(px) / 255.0
    lin = np.where(f <= 0.04045, f / 12.92, ((f + 0.055) / 1.055) ** 2.4)
    y = lin @ np.array([0.2126, 0.7152, 0.0722])
    fy = np.where(y > (6 / 29) ** 3, np.cbrt(y), y / (3 * (6 / 29) ** 2) + 4 / 29)
    return 116.0 * fy - 16.0


def delta_lightness(a: np.ndarray, ref: np.ndarray) -> float:
    """Mean CIELAB L* of the image minus that of the reference (L* units, 0..100 scale; > 0: lighter)."""
    _pair(a, ref)
    return float(lightness(a).mean() - lightness(ref).mean())


def colourfulness(px: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003) colourfulness M = sigma_rgyb + 0.3 mu_rgyb, on 0..255 RGB.

    rg = R - G, yb = (R + G)/2 - B; sigma_rgyb = sqrt(var(rg) + var(yb)), mu_rgyb = sqrt(mean(rg)^2 + mean(yb)^2).
    0 for a grey image; about 33 is "moderately colourful", 59 "quite", 82+ "extremely" in the paper's scale.
    """
    f = _check(px)
    rg = f[..., 0] - f[..., 1]
    yb = 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
    return float(math.sqrt(rg.var() + yb.var()) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


def _grey(px: np.ndarray) -> np.ndarray:
    return _check(px) @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma


def sharpness(px: np.ndarray) -> float:
    """Variance of the Laplacian of the luma (Pech-Pacheco et al. 2000); higher = more edges and detail.

    4-neighbour Laplacian on 0..255 luma, borders reflected. Noise raises it too: read it with hf_energy.
    """
    from scipy.ndimage import laplace

    return float(laplace(_grey(px), mode="reflect").var())


def hf_energy(px: np.ndarray) -> float:
    """Fraction of the image's spectral energy (each RGB channel, its mean removed) above half the Nyquist
    frequency, in 0..1.

    Radial frequency r = sqrt(fx^2 + fy^2) in cycles/pixel; "high" means r > 0.25. Smooth images sit near 0,
    white noise near 0.8 (the area of the frequency square outside that radius). All three channels count, so
    an edge between two colours of equal luma (a green square on grey) is low-frequency energy, not nothing.
    """
    f = _check(px)
    spec = np.zeros(f.shape[:2])
    for c in range(3):
        spec += np.abs(np.fft.fft2(f[..., c] - f[..., c].mean())) ** 2
    fy = np.fft.fftfreq(f.shape[0])[:, None]
    fx = np.fft.fftfreq(f.shape[1])[None, :]
    total = float(spec.sum())
    if total <= 0:
        return 0.0
    return float(spec[np.sqrt(fx**2 + fy**2) > 0.25].sum() / total)


def clipped(px: np.ndarray) -> float:
    """Fraction of pixels with at least one channel at 0 or 255 (crushed shadows or burnt highlights)."""
    a = np.asarray(px)
    _check(a)
    return float(((a == 0) | (a == 255)).any(axis=2).mean())


def image_metrics(px: np.ndarray) -> dict[str, float]:
    """Every per-image metric of IMAGE_METRICS."""
    return {"colourfulness": colourfulness(px), "sharpness": sharpness(px), "hf_energy": hf_energy(px),
            "clipped": clipped(px)}


def reference_metrics(px: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Every metric of REFERENCE_METRICS against a reference image of the same size."""
    return {"ssim": ssim(px, ref), "psnr": psnr(px, ref), "delta_hue": delta_hue(px, ref),
            "delta_saturation": delta_saturation(px, ref), "delta_lightness": delta_lightness(px, ref)}
