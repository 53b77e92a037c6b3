"""Images a request reads (img2img source, inpainting mask, control image): opened defensively and named by hash.

An input image comes from the user's disk or an HTTP upload, so it is untrusted: its file size and pixel count are
bounded before decoding (PIL's decompression-bomb check is not enough on its own: it only warns below 2x its limit),
and it is recorded in the plan by the SHA-256 of its bytes, so replay can find and verify it again.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .plan import InputImage

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

MAX_INPUT_BYTES = 64 << 20
MAX_INPUT_PIXELS = 8192 * 8192  # larger than any plan: an input is resized or cropped to the plan's size


class InputImageError(ValueError):
    """An input image that cannot be used: the message names the file, what is wrong and how to fix it."""


def open_input_image(path: str | os.PathLike[str], what: str) -> tuple[InputImage, "Image.Image"]:
    """(its InputImage record, the decoded image) for ``path``; ``what`` names it in errors ("init image")."""
    p = Path(path).expanduser()
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise InputImageError(f"{what} {p} is not a file")
    except OSError as e:
        raise InputImageError(f"{what} {p} cannot be read: {e.strerror or e}") from None
    if size > MAX_INPUT_BYTES:
        raise InputImageError(f"{what} {p} is {size / 2**20:.0f} MiB; iga reads images up to "
                              f"{MAX_INPUT_BYTES >> 20} MiB (save it smaller or as PNG/JPEG)")
    data = p.read_bytes()
    image = decode_input_image(data, f"{what} {p}")
    w, h = image.size
    from iga.guard.source import RECORD_PATH_ENV

    recorded = str(p.resolve()) if os.environ.get(RECORD_PATH_ENV) == "1" else None
    record = InputImage(path=recorded, sha256=hashlib.sha256(data).hexdigest(), width=w, height=h)
    _remember(record.sha256, p)
    return record, image


def decode_input_image(data: bytes, named: str) -> "Image.Image":
    """The decoded image of an input file's bytes, its pixel count checked before decoding; ``named`` says which
    input in errors ("init image photo.png"; an HTTP upload: "init_images[0]")."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_INPUT_BYTES:
        raise InputImageError(f"{named} is {len(data) / 2**20:.0f} MiB; iga reads images up to "
                              f"{MAX_INPUT_BYTES >> 20} MiB (save it smaller or as PNG/JPEG)")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
            if w * h > MAX_INPUT_PIXELS:
                raise InputImageError(f"{named} is {w}x{h}; iga reads images up to "
                                      f"{MAX_INPUT_PIXELS / 1e6:.0f} megapixels")
            probe.load()
            return probe.copy()
    except Image.DecompressionBombError:  # PIL's own check, at open for twice its limit: far above ours
        raise InputImageError(f"{named} claims more pixels than iga reads ({MAX_INPUT_PIXELS / 1e6:.0f} "
                              "megapixels at most)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, InputImageError):
            raise
        raise InputImageError(f"{named} is not an image iga can read ({type(e).__name__}: {e}); use PNG, "
                              "JPEG or WebP") from None


def _remember(sha256: str, path: Path) -> None:
    """Input images are found again like VAEs: by hash, in the index of files this user has used."""
    from iga.store.used import remember

    remember(sha256, str(path), path.name)


def stored_input_path(record: InputImage, what: str, given: str | os.PathLike[str] | None = None) -> str:
    """The file a stored plan read, found again (``given``, the recorded path, or a file with its hash this user
    has used) and verified by hash; InputImageError says how to point iga at it."""
    from iga.store.used import find_file

    candidates = [given] if given is not None else [record.path, find_file(record.sha256)]
    for c in candidates:
        if c is None or not Path(c).is_file():
            continue
        if hashlib.sha256(Path(c).read_bytes()).hexdigest() == record.sha256:
            return str(c)
        if given is not None:
            raise InputImageError(f"{what} {given} is not the one the plan used (its SHA-256 differs from "
                                  f"{record.sha256[:12]}...)")
    raise InputImageError(f"the {what} this plan used (SHA-256 {record.sha256[:12]}...) is not here; point iga at "
                          "it (iga replay --input FILE)")


def find_input_image(record: InputImage, what: str, given: str | os.PathLike[str] | None = None) -> "Image.Image":
    """The decoded image a stored plan read (see ``stored_input_path``)."""
    path = stored_input_path(record, what, given)
    found, image = open_input_image(path, what)
    if found.sha256 != record.sha256:  # changed between the two reads
        raise InputImageError(f"{what} {path} changed while it was read; try again")
    return image
