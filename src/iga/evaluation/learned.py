"""Learned image metrics computed with weights already on disk: CLIP score, FID and LPIPS.

Nothing here downloads anything: every metric takes the path of weights the user already has and raises
``MissingWeightsError`` (naming the file, what it should hold and how to obtain it) when they are absent.

* ``clip_score`` -- CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image
  Captioning") on a CLIP model (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
  Supervision"): ``100 * max(cos(image_emb, text_emb), 0)`` per image/prompt pair.  The factor 100 is the
  torchmetrics convention; the paper's CLIP-S uses 2.5 instead, so divide by 40 to compare with it.
* ``inception_features`` / ``fid`` -- Frechet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two
  Time-Scale Update Rule Converge to a Local Nash Equilibrium") on the 2048-d pool3 features of InceptionV3
  (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision") in the variant of the
  original TensorFlow FID graph: average pools that exclude padding, a max pool in the last block's pool branch,
  batch-norm eps 1e-3, inputs resized bilinearly to 299x299 and scaled to [-1, 1].
* ``lpips`` -- LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
  Metric"), VGG16 trunk (Simonyan & Zisserman 2015), "lin" version: channel-unit-normalised relu1_2, relu2_2,
  relu3_3, relu4_3 and relu5_3 activations, squared differences weighted by non-negative 1x1 heads, spatially
  averaged and summed over the five layers.

The networks are defined below in plain torch.  Their parameter names follow the widely shared state dicts
(torchvision / pytorch-fid for Inception and VGG16, the ``lpips`` package for the heads), so existing weights
convert with a few lines (extra keys such as ``fc.*``, ``AuxLogits.*`` or ``classifier.*`` are ignored)::

    import torch
    from safetensors.torch import save_file

    def convert(src, dst, keep=lambda k: True):
        sd = torch.load(src, map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in sd.items() if keep(k)}, dst)

    # FID: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (a plain state dict)
    convert("pt_inception-2015-12-05-6726825d.pth", "inception_fid.safetensors")
    # LPIPS folder: torchvision's vgg16-397923af.pth and the lpips package's weights/v0.1/vgg.pth
    convert("vgg16-397923af.pth", "lpips/vgg16.safetensors", keep=lambda k: k.startswith("features."))
    convert("vgg.pth", "lpips/lpips_vgg.safetensors")

``.pth``/``.pt``/``.bin`` files are also accepted directly, but only through ``torch.load(weights_only=True)``:
a pickle holding anything but tensors is refused.  CLIP takes a transformers CLIP folder, e.g. one written by
``CLIPModel.save_pretrained`` and ``CLIPTokenizer.save_pretrained``.  Loaded networks are cached per
(path, modification time), so a sweep loads each one once.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iga.evaluation.frechet import feature_stats, frechet_distance

__all__ = [
    "FIDInceptionV3",
    "LPIPSVGG16",
    "MissingWeightsError",
    "clip_score",
    "fid",
    "inception_features",
    "lpips",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# LPIPS' ScalingLayer: maps [-1, 1] inputs roughly onto the ImageNet normalisation VGG16 was trained with.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_MIN_SIDE = 16  # relu5_3 sits after four 2x2 max pools
FID_SIZE = 299
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_MAX_LISTED_PROBLEMS = 5


class MissingWeightsError(FileNotFoundError):
    """Weights the metric needs are not on disk (nothing is ever downloaded).

    The message says what file is missing, what it should contain and how to get or convert it, one sentence
    each; ``path`` holds the missing path.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)

    @classmethod
    def for_file(cls, path: str | os.PathLike, contents: str, remedy: str) -> "MissingWeightsError":
        return cls(f"Weights file not found: {path}. It should contain {contents}. {remedy}", path)


_INCEPTION_CONTENTS = (
    "the FID InceptionV3 state dict with torchvision/pytorch-fid key names such as "
    "Mixed_5b.branch1x1.conv.weight and Mixed_5b.branch1x1.bn.running_var"
)
_INCEPTION_REMEDY = (
    "Use pytorch-fid's pt_inception-2015-12-05-6726825d.pth as is (it is loaded with weights_only=True) or "
    "convert it with safetensors.torch.save_file as shown in the iga.evaluation.learned docstring."
)
_VGG_CONTENTS = "the VGG16 convolution weights features.N.weight / features.N.bias (torchvision key names)"
_LIN_CONTENTS = "the five LPIPS heads lin0.model.1.weight ... lin4.model.1.weight (lpips package key names)"
_LPIPS_REMEDY = (
    "Convert torchvision's vgg16-397923af.pth and the lpips package's weights/v0.1/vgg.pth with "
    "safetensors.torch.save_file as shown in the iga.evaluation.learned docstring."
)
_CLIP_REMEDY = (
    "Point model_dir at a transformers CLIP folder you already have, e.g. one written by "
    "CLIPModel.save_pretrained and CLIPTokenizer.save_pretrained (a Hugging Face cache snapshot folder works)."
)


# --------------------------------------------------------------------------------------------- input checks


def _check_images(x: Any, name: str, min_side: int = 1) -> None:
    """Refuse anything but a non-empty uint8 N x H x W x 3 array, so that [0, 255] scaling is unambiguous."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy uint8 array N x H x W x 3, got {type(x).__name__}")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty uint8 array N x H x W x 3, got dtype {x.dtype} shape {x.shape}")
    if min(x.shape[1:3]) < min_side:
        raise ValueError(f"{name} must be at least {min_side} x {min_side} pixels, got {x.shape[1]} x {x.shape[2]}")


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _to_unit_float(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


# ------------------------------------------------------------------------------------------ weights loading


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of one weights file; pickles only through weights_only so a checkpoint cannot run code."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: unsupported weights format {suffix!r}; use one of {', '.join(WEIGHT_SUFFIXES)}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError depending on version
        raise ValueError(
            f"{path}: refused to load: it is not a plain tensor state dict readable with torch.load(weights_only=True)"
            f" ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path}: expected a flat mapping of parameter names to tensors (a state dict)")
    return dict(state)


def _existing_file(path: str | os.PathLike, contents: str, remedy: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{p} is a folder; pass the weights file itself ({', '.join(WEIGHT_SUFFIXES)})")
    if not p.is_file():
        raise MissingWeightsError.for_file(p, contents, remedy)
    return p


def _shape_problems(expected: Mapping[str, torch.Size], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Mis-shaped keys first (they point at the wrong file or variant), then missing keys."""
    wrong = [
        f"{k}: expected shape {tuple(shape)}, got {tuple(state[k].shape)}"
        for k, shape in expected.items()
        if k in state and state[k].shape != shape
    ]
    missing = [f"{k}: missing (expected shape {tuple(shape)})" for k, shape in expected.items() if k not in state]
    return wrong + missing


def _load_into(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Fill a meta-device network from ``state`` (extra keys ignored); ValueError listing the first problems."""
    expected = {k: v.shape for k, v in net.state_dict().items()}
    problems = _shape_problems(expected, state)
    if problems:
        shown = "; ".join(problems[:_MAX_LISTED_PROBLEMS])
        more = f" (and {len(problems) - _MAX_LISTED_PROBLEMS} more)" if len(problems) > _MAX_LISTED_PROBLEMS else ""
        raise ValueError(f"{source}: {len(problems)} weights do not fit {type(net).__name__}: {shown}{more}")
    net.load_state_dict({k: state[k].to(torch.float32).contiguous() for k in expected}, strict=True, assign=True)
    return net.requires_grad_(False).eval()


def _stamp(paths: Sequence[Path]) -> tuple[tuple[str, int], ...]:
    """Cache key: a file replaced in place gets a new mtime, so a stale network is never reused."""
    return tuple((str(p.resolve()), p.stat().st_mtime_ns) for p in paths)


@functools.lru_cache(maxsize=4)
def _cached(kind: str, stamp: tuple[tuple[str, int], ...]) -> Any:
    return _LOADERS[kind]([Path(p) for p, _ in stamp])


# ---------------------------------------------------------------------------------------- FID InceptionV3

# A conv is (name, out channels, kernel, stride, padding); a chain element that is a list of convs is a fork
# whose outputs are concatenated (InceptionE's 1x3 / 3x1 pairs).
_Conv = tuple[str, int, Any, int, Any]


class _FrozenBatchNorm(nn.Module):
    """Inference-only batch norm without ``num_batches_tracked``, so state dicts with or without it load."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:  # 1e-3: the TF Inception graph's epsilon
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


class _ConvBN(nn.Module):
    """Inception's basic unit: bias-free convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: Any, stride: int = 1, padding: Any = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = _FrozenBatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class _InceptionBlock(nn.Module):
    """Parallel conv chains plus a pool branch (always last), concatenated on channels.

    ``pool`` is "avg" (3x3, stride 1, padding excluded from the mean), "max" (3x3, stride 1) or "reduce"
    (3x3, stride 2, no conv: the grid-reduction blocks).  ``pool_conv`` is the 1x1 conv after it, if any.
    """

    def __init__(self, cin: int, chains: list[list[Any]], pool: str, pool_conv: tuple[str, int] | None) -> None:
        super().__init__()
        self.chains: list[list[Any]] = []
        for chain in chains:
            c, names = cin, []
            for step in chain:
                convs = step if isinstance(step, list) else [step]
                for name, cout, kernel, stride, padding in convs:
                    self.add_module(name, _ConvBN(c, cout, kernel, stride, padding))
                names.append([conv[0] for conv in convs] if isinstance(step, list) else step[0])
                c = sum(conv[1] for conv in convs)
            self.chains.append(names)
        self.pool = pool
        self.pool_conv = pool_conv[0] if pool_conv else None
        if pool_conv:
            self.add_module(pool_conv[0], _ConvBN(cin, pool_conv[1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for chain in self.chains:
            y = x
            for step in chain:
                if isinstance(step, list):
                    y = torch.cat([getattr(self, n)(y) for n in step], 1)
                else:
                    y = getattr(self, step)(y)
            outs.append(y)
        if self.pool == "avg":
            p = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        elif self.pool == "max":
            p = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            p = F.max_pool2d(x, 3, stride=2)
        outs.append(getattr(self, self.pool_conv)(p) if self.pool_conv else p)
        return torch.cat(outs, 1)


def _block_a(cin: int, pool_channels: int) -> _InceptionBlock:  # 35x35 grid
    chains = [
        [("branch1x1", 64, 1, 1, 0)],
        [("branch5x5_1", 48, 1, 1, 0), ("branch5x5_2", 64, 5, 1, 2)],
        [("branch3x3dbl_1", 64, 1, 1, 0), ("branch3x3dbl_2", 96, 3, 1, 1), ("branch3x3dbl_3", 96, 3, 1, 1)],
    ]
    return _InceptionBlock(cin, chains, "avg", ("branch_pool", pool_channels))


def _block_b(cin: int) -> _InceptionBlock:  # 35 -> 17 reduction
    chains = [
        [("branch3x3", 384, 3, 2, 0)],
        [("branch3x3dbl_1", 64, 1, 1, 0), ("branch3x3dbl_2", 96, 3, 1, 1), ("branch3x3dbl_3", 96, 3, 2, 0)],
    ]
    return _InceptionBlock(cin, chains, "reduce", None)


def _block_c(cin: int, c7: int) -> _InceptionBlock:  # 17x17 grid, factorised 7x7
    row, col = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))  # kernel, stride, padding of a 1x7 / 7x1 conv
    chains = [
        [("branch1x1", 192, 1, 1, 0)],
        [("branch7x7_1", c7, 1, 1, 0), ("branch7x7_2", c7, *row), ("branch7x7_3", 192, *col)],
        [
            ("branch7x7dbl_1", c7, 1, 1, 0),
            ("branch7x7dbl_2", c7, *col),
            ("branch7x7dbl_3", c7, *row),
            ("branch7x7dbl_4", c7, *col),
            ("branch7x7dbl_5", 192, *row),
        ],
    ]
    return _InceptionBlock(cin, chains, "avg", ("branch_pool", 192))


def _block_d(cin: int) -> _InceptionBlock:  # 17 -> 8 reduction
    chains = [
        [("branch3x3_1", 192, 1, 1, 0), ("branch3x3_2", 320, 3, 2, 0)],
        [
            ("branch7x7x3_1", 192, 1, 1, 0),
            ("branch7x7x3_2", 192, (1, 7), 1, (0, 3)),
            ("branch7x7x3_3", 192, (7, 1), 1, (3, 0)),
            ("branch7x7x3_4", 192, 3, 2, 0),
        ],
    ]
    return _InceptionBlock(cin, chains, "reduce", None)


def _block_e(cin: int, pool: str) -> _InceptionBlock:  # 8x8 grid, expanded filter banks
    def fork(prefix: str) -> list[_Conv]:
        return [(f"{prefix}a", 384, (1, 3), 1, (0, 1)), (f"{prefix}b", 384, (3, 1), 1, (1, 0))]

    chains = [
        [("branch1x1", 320, 1, 1, 0)],
        [("branch3x3_1", 384, 1, 1, 0), fork("branch3x3_2")],
        [("branch3x3dbl_1", 448, 1, 1, 0), ("branch3x3dbl_2", 384, 3, 1, 1), fork("branch3x3dbl_3")],
    ]
    return _InceptionBlock(cin, chains, pool, ("branch_pool", 192))


class FIDInceptionV3(nn.Module):
    """InceptionV3 up to the 2048-d pool3 features, in the FID (TensorFlow graph) variant.

    ``forward`` takes float images in [0, 1], any size, N x 3 x H x W.  Parameter names match torchvision's
    ``inception_v3`` / pytorch-fid's ``FIDInceptionA..E`` state dicts (``Conv2d_1a_3x3.conv.weight``,
    ``Mixed_5b.branch1x1.bn.running_mean``, ``Mixed_7c.branch3x3dbl_3b.conv.weight`` ...).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _block_a(192, 32)
        self.Mixed_5c = _block_a(256, 64)
        self.Mixed_5d = _block_a(288, 64)
        self.Mixed_6a = _block_b(288)
        self.Mixed_6b = _block_c(768, 128)
        self.Mixed_6c = _block_c(768, 160)
        self.Mixed_6d = _block_c(768, 160)
        self.Mixed_6e = _block_c(768, 192)
        self.Mixed_7a = _block_d(768)
        self.Mixed_7b = _block_e(1280, "avg")
        self.Mixed_7c = _block_e(2048, "max")  # the TF graph max-pools here, unlike the paper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False) * 2.0 - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


def _load_inception(paths: list[Path]) -> FIDInceptionV3:
    with torch.device("meta"):  # no random init: every tensor comes from the file
        net = FIDInceptionV3()
    return _load_into(net, _read_state_dict(paths[0]), str(paths[0]))


def inception_features(
    images: np.ndarray, weights: str | os.PathLike, *, batch_size: int = 16
) -> np.ndarray:
    """float64 [N, 2048] pool3 features of the FID InceptionV3 for uint8 N x H x W x 3 ``images``.

    ``weights``: one .safetensors (or .pth/.pt/.bin, read with weights_only) file holding the
    ``FIDInceptionV3`` state dict; see the module docstring for converting pytorch-fid's weights.
    """
    _check_images(images, "images")
    _check_batch_size(batch_size)
    path = _existing_file(weights, _INCEPTION_CONTENTS, _INCEPTION_REMEDY)
    net = _cached("inception", _stamp([path]))
    out = np.empty((images.shape[0], 2048), np.float64)
    with torch.inference_mode():
        for s in _batches(images.shape[0], batch_size):
            out[s] = net(_to_unit_float(images[s])).double().numpy()
    return out


def fid(
    images_a: np.ndarray, images_b: np.ndarray, weights: str | os.PathLike, *, batch_size: int = 16
) -> float:
    """Frechet Inception Distance between two image sets (at least 2 images each; thousands for a stable value).

    Small sets give a biased, noisy FID: compare values only at equal set sizes.
    """
    _check_images(images_a, "images_a")
    _check_images(images_b, "images_b")
    fa = inception_features(images_a, weights, batch_size=batch_size)
    fb = inception_features(images_b, weights, batch_size=batch_size)
    return frechet_distance(*feature_stats(fa), *feature_stats(fb))


# --------------------------------------------------------------------------------------------------- LPIPS

_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class _LinearHead(nn.Module):
    """A 1x1 conv to one channel; slot 0 held dropout during LPIPS training, which keeps the key ``model.1``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))
        with torch.no_grad():  # LPIPS heads are non-negative; so is a freshly built (untrained) head
            self.model[1].weight.uniform_(0.0, 1.0 / channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPSVGG16(nn.Module):
    """LPIPS "lin" metric on a VGG16 trunk.

    ``forward(a, b)`` takes float images in [-1, 1], N x 3 x H x W (H, W >= 16) and returns N distances.
    Parameters: ``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}`` (torchvision VGG16 indices)
    and ``lin{0..4}.model.1.weight`` of shapes [1, C, 1, 1], C = 64, 128, 256, 512, 512.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the ReLU right before each pool, and the last one
        self.taps = [i - 1 for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)] + [len(layers) - 1]
        for i, c in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{i}", _LinearHead(c))

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        shift = torch.tensor(LPIPS_SHIFT, dtype=x.dtype)[:, None, None]
        scale = torch.tensor(LPIPS_SCALE, dtype=x.dtype)[:, None, None]
        x = (x - shift) / scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                # unit length per position: compares feature directions, not activation magnitudes
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self._taps(a), self._taps(b)
        return sum(
            getattr(self, f"lin{i}")((x - y).pow(2)).mean(dim=(1, 2, 3)) for i, (x, y) in enumerate(zip(fa, fb))
        )


def _lpips_files(weights: str | os.PathLike) -> list[Path]:
    p = Path(weights).expanduser()
    if p.is_dir():
        files = [p / "vgg16.safetensors", p / "lpips_vgg.safetensors"]
        for f, contents in zip(files, (_VGG_CONTENTS, _LIN_CONTENTS)):
            if not f.is_file():
                raise MissingWeightsError.for_file(f, contents, _LPIPS_REMEDY)
        return files
    return [_existing_file(p, f"{_VGG_CONTENTS} and {_LIN_CONTENTS}", _LPIPS_REMEDY)]


def _load_lpips(paths: list[Path]) -> LPIPSVGG16:
    state: dict[str, torch.Tensor] = {}
    for p in paths:
        state.update(_read_state_dict(p))
    with torch.device("meta"):
        net = LPIPSVGG16()
    net = _load_into(net, state, " + ".join(map(str, paths)))
    for i in range(len(LPIPS_CHANNELS)):
        w = getattr(net, f"lin{i}").model[1].weight
        if (w < 0).any():  # trained LPIPS heads are clamped at 0; negative ones mean the wrong file
            raise ValueError(f"{paths[-1]}: lin{i}.model.1.weight has negative entries (min {float(w.min()):.3g})")
    return net


def lpips(a: np.ndarray, b: np.ndarray, weights: str | os.PathLike, *, batch_size: int = 16) -> np.ndarray:
    """float64 [N] LPIPS distances between paired uint8 N x H x W x 3 images ``a[i]`` and ``b[i]`` (H, W >= 16).

    ``weights``: either one .safetensors (or weights_only .pth/.pt/.bin) file holding both
    ``features.N.weight`` / ``features.N.bias`` (N in 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28; torchvision
    VGG16 indices and shapes) and ``lin0.model.1.weight`` ... ``lin4.model.1.weight`` ([1, C, 1, 1], C = 64, 128,
    256, 512, 512; lpips package names, non-negative), or a folder holding ``vgg16.safetensors`` (the
    ``features.*`` keys) and ``lpips_vgg.safetensors`` (the ``lin*`` keys).  Extra keys are ignored.
    """
    _check_images(a, "a", LPIPS_MIN_SIDE)
    _check_images(b, "b", LPIPS_MIN_SIDE)
    if a.shape != b.shape:
        raise ValueError(f"LPIPS compares images pairwise: a and b must have one shape, got {a.shape} and {b.shape}")
    _check_batch_size(batch_size)
    net = _cached("lpips", _stamp(_lpips_files(weights)))
    out = np.empty(a.shape[0], np.float64)
    with torch.inference_mode():
        for s in _batches(a.shape[0], batch_size):
            out[s] = net(_to_unit_float(a[s]) * 2 - 1, _to_unit_float(b[s]) * 2 - 1).double().numpy()
    return out


# ---------------------------------------------------------------------------------------------------- CLIP


def _clip_files(model_dir: str | os.PathLike) -> list[Path]:
    """config.json, the weights file and the tokenizer files of a CLIP folder, or MissingWeightsError."""
    d = Path(model_dir).expanduser()
    if not d.is_dir():
        raise MissingWeightsError.for_file(d, "a transformers CLIP folder (config, weights, tokenizer)", _CLIP_REMEDY)
    config = d / "config.json"
    if not config.is_file():
        raise MissingWeightsError.for_file(config, "the transformers CLIPConfig (model_type 'clip')", _CLIP_REMEDY)
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    weights = next((d / n for n in names if (d / n).is_file()), None)
    if weights is None:
        raise MissingWeightsError.for_file(d / names[0], "the CLIPModel weights (or pytorch_model.bin)", _CLIP_REMEDY)
    tokenizer = [d / "tokenizer.json"] if (d / "tokenizer.json").is_file() else [d / "vocab.json", d / "merges.txt"]
    for f in tokenizer:
        if not f.is_file():
            contents = "the CLIP tokenizer (tokenizer.json, or vocab.json + merges.txt)"
            raise MissingWeightsError.for_file(f, contents, _CLIP_REMEDY)
    preprocessor = [d / "preprocessor_config.json"] if (d / "preprocessor_config.json").is_file() else []
    return [config, weights, *tokenizer, *preprocessor]  # all of them in the cache key: editing any reloads


def _clip_normalisation(d: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    path = d / "preprocessor_config.json"
    if not path.is_file():
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    cfg = json.loads(path.read_text(encoding="utf-8"))
    mean, std = tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)), tuple(cfg.get("image_std", OPENAI_CLIP_STD))
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"{path}: image_mean/image_std must be 3 numbers each (std > 0), got {mean} / {std}")
    return mean, std


def _load_clip(paths: list[Path]) -> tuple[Any, Any, tuple[float, ...], tuple[float, ...]]:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    config_path, weights = paths[0], paths[1]
    d = config_path.parent
    model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    if model_type != "clip":
        raise ValueError(f"{config_path}: model_type is {model_type!r}, expected 'clip' (a full CLIPModel folder)")
    if weights.suffix == ".bin":  # read it ourselves so the pickle is only ever opened with weights_only
        config = CLIPConfig.from_pretrained(str(d), local_files_only=True)
        model, info = CLIPModel.from_pretrained(
            None, config=config, state_dict=_read_state_dict(weights), output_loading_info=True
        )
    else:
        model, info = CLIPModel.from_pretrained(
            str(d), local_files_only=True, use_safetensors=True, output_loading_info=True
        )
    problems = [f"{k}: missing" for k in info.get("missing_keys", [])]
    problems += [f"{m[0]}: expected shape {tuple(m[2])}, got {tuple(m[1])}" for m in info.get("mismatched_keys", [])]
    if problems:  # transformers would otherwise fill them with random weights and only log a warning
        shown = "; ".join(problems[:_MAX_LISTED_PROBLEMS])
        raise ValueError(f"{weights}: {len(problems)} CLIP weights do not fit CLIPModel: {shown}")
    tokenizer = CLIPTokenizer.from_pretrained(str(d), local_files_only=True)
    return model.float().eval(), tokenizer, *_clip_normalisation(d)


def _clip_pixels(images: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """CLIP preprocessing without torchvision: bicubic short side -> size, centre crop, [0, 1], normalise."""
    from PIL import Image

    out = np.empty((images.shape[0], size, size, 3), np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        nh, nw = max(size, round(h * size / min(h, w))), max(size, round(w * size / min(h, w)))
        resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BICUBIC))
        top, left = (nh - size) // 2, (nw - size) // 2
        out[i] = resized[top : top + size, left : left + size]
    x = _to_unit_float(out)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def clip_score(
    images: np.ndarray, prompts: list[str], model_dir: str | os.PathLike, *, batch_size: int = 16
) -> np.ndarray:
    """float64 [N] CLIPScore of each image against its prompt: ``100 * max(cos(image_emb, text_emb), 0)``.

    This is the torchmetrics ``CLIPScore`` convention (Hessel et al. 2021 weight the same clipped cosine by 2.5
    instead of 100).  ``images``: uint8 N x H x W x 3; ``prompts``: N strings (truncated to the model's context).
    ``model_dir``: a local transformers CLIP folder -- config.json, model.safetensors (or pytorch_model.bin,
    read only with weights_only) and tokenizer files; image mean/std come from preprocessor_config.json when
    present, else OpenAI's CLIP constants.
    """
    _check_images(images, "images")
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a list of strings, one per image")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts; pass one prompt per image")
    _check_batch_size(batch_size)
    model, tokenizer, mean, std = _cached("clip", _stamp(_clip_files(model_dir)))
    size = model.config.vision_config.image_size
    max_len = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)
    out = np.empty(images.shape[0], np.float64)
    with torch.inference_mode():
        for s in _batches(images.shape[0], batch_size):
            # the sub-models + projections rather than get_*_features, whose return type changed in transformers 5
            pixels = _clip_pixels(images[s], size, mean, std)
            img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
            tok = tokenizer(list(prompts[s]), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            txt = model.text_projection(
                model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output
            )
            cos = (_unit(img.double()) * _unit(txt.double())).sum(-1)
            out[s] = (100.0 * cos.clamp_min(0.0)).numpy()
    return out


_LOADERS: dict[str, Callable[[list[Path]], Any]] = {
    "inception": _load_inception,
    "lpips": _load_lpips,
    "clip": _load_clip,
}
