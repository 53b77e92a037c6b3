"""Save a generated image with its provenance embedded, atomically and without ever overwriting a file.

PNG: ``parameters`` (A1111 infotext) + ``iga_metadata`` (the Plan). JPEG/WebP: EXIF UserComment (infotext)
+ ImageDescription (the Plan, see ``iga.provenance.exif``).
The image is written to a hidden temp file in the target folder, fsynced, then published under a fresh name
with ``os.link`` (which fails rather than replace an existing file); where hard links are unsupported, the name
is reserved with O_EXCL and the temp file renamed onto the reservation.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from iga.provenance.errors import ProvenanceError
from iga.provenance.exif import EXIF_HEADER, JPEG_MAX_EXIF, exif_for
from iga.provenance.filename import candidate_names, format_filename, unique_path
from iga.provenance.infotext import format_infotext
from iga.provenance.planjson import dump_plan, plan_to_dict
from iga.provenance.png import make_pnginfo

FORMATS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}
# errors that mean "this file system cannot hard-link", not "the name is taken"
_NO_LINK = {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK,
            errno.ENOSYS, errno.EINVAL}


def normalise_format(fmt: str) -> str:
    """'png', 'jpg' or 'webp' for any accepted spelling; a clear error otherwise."""
    key = fmt.lower().lstrip(".")
    if key not in FORMATS:
        raise ProvenanceError(f"unknown image format {fmt!r}; choose one of png, jpg, webp")
    return FORMATS[key]


def encode_image(image: Any, plan: dict[str, Any], fmt: str, fp: Any, quality: int = 95,
                 extra_text: dict[str, str] | None = None) -> None:
    """Write ``image`` in ``fmt`` to the binary file ``fp`` with the plan's provenance embedded (``extra_text``: other
    tools' PNG text chunks kept beside iga's, PNG only)."""
    from iga import __version__

    fmt = normalise_format(fmt)
    infotext = format_infotext(plan)
    if fmt == "png":
        image.save(fp, "PNG", pnginfo=make_pnginfo(infotext, dump_plan(plan), extra_text))
        return
    if extra_text:
        raise ProvenanceError(f"extra text chunks ({', '.join(extra_text)}) can be kept in PNG only, not {fmt}")
    software = f"iga {plan.get('iga_version') or __version__}"
    # ensure_ascii: ImageDescription is an ASCII field (see exif.py)
    plan_ascii = dump_plan(plan, ensure_ascii=True)
    if fmt == "jpg":
        tiff = exif_for(infotext, plan_ascii, software, max_bytes=JPEG_MAX_EXIF)
        rgb = image if image.mode in ("RGB", "L", "CMYK") else image.convert("RGB")
        rgb.save(fp, "JPEG", quality=quality, exif=EXIF_HEADER + tiff)
    else:
        image.save(fp, "WEBP", quality=quality, exif=exif_for(infotext, plan_ascii, software, max_bytes=None))


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: Path, folder: Path, name: str) -> Path:
    """Give the finished temp file a new name in ``folder`` (``name``, ``name-1``, ...); never overwrites."""
    for candidate in candidate_names(name):
        target = folder / candidate
        try:
            os.link(tmp, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno in _NO_LINK or isinstance(exc, (NotImplementedError, PermissionError)):
                break  # no hard links here: reserve a name instead
            raise
        os.unlink(tmp)
        return target
    else:
        raise ProvenanceError(f"{folder}: too many files named like {name!r}; choose another pattern or folder")
    target = unique_path(folder, name)
    os.replace(tmp, target)
    return target


def save_image(image: Any, plan: Any, out_dir: str | os.PathLike[str], fmt: str = "png",
               pattern: str | None = None, *, now: datetime | None = None, quality: int = 95,
               extra_text: dict[str, str] | None = None) -> Path:
    """Save a PIL image with the plan embedded under a pattern-derived, never-clashing name; returns its path.

    ``plan``: a dict (or pydantic model) as described in ``iga.provenance``; it is stored whole. ``fmt``: png,
    jpg or webp. ``pattern``: see ``iga.provenance.filename`` (default: datetime-seed-model-sampler-...).
    ``extra_text``: other tools' PNG text chunks to keep beside iga's (ComfyUI's ``prompt`` and ``workflow``).
    """
    data = plan_to_dict(plan)
    fmt = normalise_format(fmt)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = format_filename(data, pattern, ext=fmt, now=now)
    tmp = folder / f".iga-{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as f:
            encode_image(image, data, fmt, f, quality=quality, extra_text=extra_text)
            f.flush()
            os.fsync(f.fileno())
        path = publish(tmp, folder, name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return path
