"""Output file names: a small pattern language over a plan, safe on every OS, and never overwriting.

Pattern: literal text with ``[token]`` placeholders (tokens are case-insensitive), e.g. the default
``[datetime]-[seed]-[checkpoint_name]-[sampler]-[schedule]-[steps]-cfg[CFG]``. Write ``[[`` or ``]]`` for a
literal bracket. A trailing image extension in the pattern is replaced by the one of the chosen format.

Every token value and the final name are sanitised: no path separators, control or bidi characters,
characters Windows forbids (``<>:"/\\|?*``), leading dots or trailing dots/spaces, Windows device names
(CON, NUL, COM1 ...); at most ``MAX_NAME_BYTES`` bytes of UTF-8 including the extension.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from iga.provenance.errors import ProvenanceError
from iga.provenance.infotext import format_number, image_seed, short_hash

DEFAULT_PATTERN = "[datetime]-[seed]-[checkpoint_name]-[sampler]-[schedule]-[steps]-cfg[CFG]"
MAX_NAME_BYTES = 200
MAX_TOKEN_BYTES = 80
MAX_UNIQUE_TRIES = 10_000
_FORBIDDEN = set('<>:"/\\|?*')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                    *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10)),
                    *(f"COM{c}" for c in "¹²³"), *(f"LPT{c}" for c in "¹²³")}
_IMAGE_EXT = re.compile(r"\.(png|jpe?g|webp)$", re.IGNORECASE)


def _model_name(plan: Mapping[str, Any]) -> str | None:
    model = plan.get("model")
    return model.get("name") if isinstance(model, Mapping) else None


def _prompt_words(plan: Mapping[str, Any]) -> str:
    words = re.findall(r"\w+", str(plan.get("prompt") or ""))
    return " ".join(words[:8])


_TOKENS: dict[str, Callable[[Mapping[str, Any], datetime], Any]] = {
    "datetime": lambda p, now: now.strftime("%Y%m%d-%H%M%S"),
    "date": lambda p, now: now.strftime("%Y-%m-%d"),
    "time": lambda p, now: now.strftime("%H%M%S"),
    "seed": lambda p, now: image_seed(p),
    "checkpoint_name": lambda p, now: _model_name(p),
    "model_name": lambda p, now: _model_name(p),
    "model_hash": lambda p, now: short_hash(p.get("model") if isinstance(p.get("model"), Mapping) else None),
    "sampler": lambda p, now: p.get("sampler"),
    "schedule": lambda p, now: p.get("schedule"),
    "scheduler": lambda p, now: p.get("schedule"),
    "steps": lambda p, now: p.get("steps"),
    "cfg": lambda p, now: p.get("cfg"),
    "width": lambda p, now: p.get("width"),
    "height": lambda p, now: p.get("height"),
    "batch_index": lambda p, now: p.get("batch_index"),
    "nfe": lambda p, now: p.get("nfe"),
    "prompt_words": lambda p, now: _prompt_words(p),
}
TOKENS: tuple[str, ...] = tuple(sorted(_TOKENS))


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


def sanitize_part(text: str, max_bytes: int = MAX_TOKEN_BYTES) -> str:
    """One name component made safe: forbidden, control and bidi characters become '_', length bounded."""
    out = []
    for ch in unicodedata.normalize("NFC", text):
        cat = unicodedata.category(ch)
        if ch in _FORBIDDEN or cat in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or ch in "\t\n\r":
            out.append("_")
        else:
            out.append(ch)
    return _truncate_utf8("".join(out), max_bytes)


def _safe_stem(stem: str, max_bytes: int) -> str:
    stem = sanitize_part(stem, max_bytes)
    stem = stem.strip(" ").rstrip(".")
    stem = re.sub(r"^\.+", lambda m: "_" * len(m.group(0)), stem)  # no hidden files, no '..'
    if not stem:
        stem = "image"
    if stem.split(".")[0].upper().rstrip(" ") in _WINDOWS_DEVICES:
        stem = "_" + stem
    return _truncate_utf8(stem, max_bytes).rstrip(" .") or "image"


def _render(pattern: str, plan: Mapping[str, Any], now: datetime) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("[[", i) or pattern.startswith("]]", i):
            out.append(ch)
            i += 2
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ProvenanceError(f"filename pattern {pattern!r}: '[' at position {i} is never closed "
                                      "(write '[[' for a literal bracket)")
            name = pattern[i + 1:end].strip().lower()
            if name not in _TOKENS:
                raise ProvenanceError(f"filename pattern {pattern!r}: unknown token [{pattern[i + 1:end]}]; "
                                      f"known tokens: {', '.join(TOKENS)}")
            value = _TOKENS[name](plan, now)
            if value is None or value == "":
                text = "none"
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                text = format_number(value)
            else:
                text = str(value)
            out.append(sanitize_part(text))
            i = end + 1
        elif ch == "]":
            raise ProvenanceError(f"filename pattern {pattern!r}: stray ']' at position {i} "
                                  "(write ']]' for a literal bracket)")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def format_filename(plan: Mapping[str, Any], pattern: str | None = None, ext: str = "png",
                    now: datetime | None = None) -> str:
    """A safe file name (no directory) for a plan, from ``pattern`` (default ``DEFAULT_PATTERN``) plus ``.ext``."""
    ext = sanitize_part(ext.lstrip("."), 10).replace(".", "") or "png"
    stem = _IMAGE_EXT.sub("", _render(pattern or DEFAULT_PATTERN, plan, now or datetime.now()))
    budget = MAX_NAME_BYTES - len(ext.encode("utf-8")) - 1
    return f"{_safe_stem(stem, budget)}.{ext}"


def _numbered(name: str, n: int) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    suffix = f"-{n}"
    budget = MAX_NAME_BYTES - len(suffix.encode()) - (len(ext.encode()) + 1 if dot else 0)
    stem = _truncate_utf8(stem, budget).rstrip(" .") or "image"
    return f"{stem}{suffix}.{ext}" if dot else f"{stem}{suffix}"


def candidate_names(name: str) -> list[str]:
    """``name``, then ``stem-1.ext``, ``stem-2.ext``, ... (bounded)."""
    return [name] + [_numbered(name, n) for n in range(1, MAX_UNIQUE_TRIES)]


def unique_path(directory: str | os.PathLike[str], name: str) -> Path:
    """Reserve a new file ``directory/name`` (or ``name-1``, ``name-2``, ...) with O_EXCL and return its path.

    The file is created empty, so two writers can never pick the same name; the caller fills or replaces it.
    ``name`` must be a bare file name (use ``format_filename``).
    """
    if not name or name != os.path.basename(name) or name in (".", ".."):
        raise ProvenanceError(f"file name {name!r} must be a bare name without directories")
    folder = Path(directory)
    for candidate in candidate_names(name):
        path = folder / candidate
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise ProvenanceError(f"{folder}: {MAX_UNIQUE_TRIES} files named like {name!r} exist already; "
                          "choose another pattern or folder")
