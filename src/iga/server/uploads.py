"""Images that arrive with a request (A1111's base64 ``init_images`` and ``mask``; ``init_image``/``mask`` of iga's
own API): decoded under the input-image limits, checked by the reader the guard uses (``iga.guard.images``), and
written content-addressed (``<sha256>.<png|jpg|webp>``, the bytes as sent) under ``<out>/inputs/`` -- a private
temporary folder when the server keeps its images in memory only. The guard Request then names that file.

A client never names a file on the server: what it sends is always image bytes, and the only paths a request can
carry are the ones this module made. Replay finds an upload again by its hash, like any input image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from iga.guard.images import MAX_INPUT_BYTES, InputImageError, decode_input_image
from iga.server.service import ApiError

INPUTS_FOLDER = "inputs"  # under the server's output folder
_SHA256 = re.compile(r"[0-9a-f]{64}")
# a file name where base64 belongs: base64 has no "~", ".", "\\" or ":"; a JPEG's base64 starts with "/9j/"
_PATH_LIKE = re.compile(r"^(~|\.{1,2}[/\\]|[A-Za-z]:[/\\]|file:|/(?!9j/))|[\\]|\.[A-Za-z0-9]{2,5}$")


def decode_base64(data: Any, field: str) -> bytes:
    """The bytes of a base64 image as A1111 clients send it (a ``data:image/...;base64,`` prefix allowed), at most
    the input-image size limit."""
    if not isinstance(data, str) or not data:
        raise ApiError(422, f"{field} must be a base64 string (optionally a data:image/...;base64, URL)")
    text = data.split(",", 1)[-1] if data.startswith("data:") else data
    if len(text) // 4 * 3 > MAX_INPUT_BYTES:
        raise ApiError(413, f"{field} is over {MAX_INPUT_BYTES >> 20} MiB; send a smaller image", kind="too large")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"{field} is not valid base64{_not_a_path(data)}") from None


def _not_a_path(data: str) -> str:
    """A hint for a client that sent a file name where the image belongs."""
    if len(data) < 1024 and not data.startswith("data:") and _PATH_LIKE.search(data):
        return (" (it looks like a file path: send the image itself, base64-encoded; the server never opens a path "
                "a request names)")
    return ""


def image_format(data: bytes) -> str | None:
    """The file extension of an upload's format (provenance's one format sniffer), or None for any format uploads
    do not take."""
    from iga.provenance.errors import ProvenanceError
    from iga.provenance.read import detect_format

    try:
        return {"png": "png", "jpeg": "jpg", "webp": "webp"}[detect_format(data[:12])]
    except ProvenanceError:
        return None


class Uploads:
    """The folder uploaded input images are kept in, and the one way a request's image becomes a file there."""

    def __init__(self, out_dir: Path | None):
        self._temporary = out_dir is None  # then the folder is made at the first upload, removed by close()
        self.folder: Path | None = None if out_dir is None else (Path(out_dir) / INPUTS_FOLDER).resolve()

    def save(self, data: Any, field: str, *, invert_mask: bool = False) -> str:
        """The path of the uploaded image ``data`` (base64) once checked and stored; ``invert_mask`` stores the
        mask's inverse (A1111's inpainting_mask_invert) as PNG. ApiError names ``field`` when it is unusable."""
        from iga.checkpoint import write_bytes_atomic

        raw = decode_base64(data, field)
        ext = image_format(raw)
        if ext is None:
            hint = _not_a_path(data) if isinstance(data, str) else ""
            raise ApiError(422, f"{field} is not a PNG, JPEG or WebP image{hint}; send one of those, base64-encoded")
        try:
            image = decode_input_image(raw, field)
        except InputImageError as e:
            raise ApiError(422, str(e)) from None
        if invert_mask:
            raw, ext = _inverted(image), "png"
        try:
            if self.folder is None:
                self.folder = Path(tempfile.mkdtemp(prefix="iga-inputs-")).resolve()
            path = self.folder / f"{hashlib.sha256(raw).hexdigest()}.{ext}"
            self.folder.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(str(path), raw, durable=False)
        except OSError as e:
            raise ApiError(503, f"cannot store the uploaded {field} in {INPUTS_FOLDER}/: {e.strerror or e}",
                           kind="storage unavailable") from None
        return str(path)

    def offer(self, plan: Any) -> None:
        """Make the uploads a stored plan read findable by hash again (as `iga replay --input` does), in case the
        index of used files has forgotten them since."""
        from iga.guard.images import open_input_image
        from iga.stages import input_records

        for record in input_records(plan) if self.folder is not None else ():
            if not _SHA256.fullmatch(record.sha256):  # a stored plan may be hostile: never a pattern or a path
                continue
            for path in self.folder.glob(f"{record.sha256}.*"):
                try:
                    open_input_image(path, "input image")
                except InputImageError:
                    pass  # damaged since: replay then says the input is not here

    def scrub(self, message: str) -> str:
        """A message with this server's upload folder taken out (clients learn nothing of its file system)."""
        return message if self.folder is None else message.replace(str(self.folder) + os.sep, "upload ")

    def close(self) -> None:
        """Remove the folder when it was a temporary one (memory-only server shutting down)."""
        if self._temporary and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def _inverted(image: Any) -> bytes:
    """A mask image inverted, as a grey PNG (white = repaint, as the engine reads masks)."""
    from PIL import ImageOps

    from iga.stages import mask_of

    buf = io.BytesIO()
    ImageOps.invert(mask_of(image)).save(buf, format="PNG")
    return buf.getvalue()
