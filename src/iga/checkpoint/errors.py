"""Typed errors of iga.checkpoint: every message says what was wrong, where, and how to fix it."""

from __future__ import annotations

import os


class CheckpointError(Exception):
    """Base class: a checkpoint file could not be read, verified or written safely."""

    default_hint = ""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, hint: str | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        self.hint = self.default_hint if hint is None else hint
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.path}: " if self.path else ""
        tail = f" {self.hint}" if self.hint else ""
        return f"{where}{self.message}.{tail}" if not self.message.endswith(".") else f"{where}{self.message}{tail}"


# --- the file as a whole -------------------------------------------------------------------------------------------


class CheckpointFileError(CheckpointError):
    """The file is missing, unreadable, a directory, or changed while we were using it."""


class PickleFormatError(CheckpointError):
    """A pickle-based checkpoint (.ckpt/.pt/.pth/.bin or a zip/pickle payload): iga never unpickles."""

    default_hint = (
        "iga never unpickles files (loading a pickle can run arbitrary code). Convert it once, in an environment you "
        "trust, to .safetensors (e.g. `safetensors.torch.save_file(torch.load(p, weights_only=True)['state_dict'], "
        "out)`), or keep the recipe in a sidecar file `<model>.iga.json`."
    )


# --- header structure ----------------------------------------------------------------------------------------------


class HeaderError(CheckpointError):
    """The safetensors header is malformed."""

    default_hint = "The file is corrupt or not a safetensors file; re-download it or re-export it with safetensors."


class HeaderTooSmallError(HeaderError):
    """The file is shorter than the 8-byte header-length prefix."""


class HeaderTooLargeError(HeaderError):
    """The declared header length N exceeds the 100,000,000-byte limit of the format."""


class HeaderTruncatedError(HeaderError):
    """The declared header runs past the end of the file."""


class HeaderEncodingError(HeaderError):
    """The header is not valid UTF-8."""


class HeaderStartError(HeaderError):
    """The header does not start with '{' (A1111 and its forks require it to start with '{\"')."""


class HeaderSyntaxError(HeaderError):
    """The header is not valid JSON (or uses NaN/Infinity, or nests too deeply)."""


class DuplicateKeyError(HeaderError):
    """A JSON object in the header repeats a key (the format forbids it; readers disagree on which copy wins)."""


class MetadataError(HeaderError):
    """`__metadata__` is not an object of string values."""


class TensorEntryError(HeaderError):
    """A tensor entry is not {"dtype", "shape", "data_offsets"} with the right types."""


class UnknownDtypeError(TensorEntryError):
    """A tensor uses a dtype the safetensors format does not define."""


class ShapeError(TensorEntryError):
    """A tensor shape is not a list of non-negative integers (or its element count overflows 64 bits)."""


class DataOffsetsError(HeaderError):
    """Tensor data ranges overlap, leave holes, or point past the end of the file."""


class TensorSizeError(HeaderError):
    """A tensor's byte range does not match dtype size times element count."""


class TrailingBytesError(HeaderError):
    """Bytes follow the last tensor: the format forbids them (they make polyglot files possible)."""


class InterruptedEditError(HeaderError):
    """An in-place header edit by iga was interrupted; its undo journal is still armed."""


# --- recipes -------------------------------------------------------------------------------------------------------


class CheckpointRecipeError(CheckpointError):
    """An embedded or sidecar recipe cannot be used."""


class RecipeTooLargeError(CheckpointRecipeError):
    """A recipe is larger than the 1 MiB limit."""

    default_hint = (
        "A recipe is a few KiB; keep long texts (descriptions, thumbnails) out of it. Other readers only look at the "
        "first MiBs of a header."
    )


class RecipeDecodeError(CheckpointRecipeError):
    """A recipe is not a JSON object (or YAML mapping), or repeats a key."""


# --- writing -------------------------------------------------------------------------------------------------------


class CheckpointWriteError(CheckpointError):
    """A header edit or rewrite could not be done; the original file is unchanged."""


class FileBusyError(CheckpointWriteError):
    """Another process holds iga's edit lock on the file."""

    default_hint = "Wait for the other iga process to finish, then retry."
