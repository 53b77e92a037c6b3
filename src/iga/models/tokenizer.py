"""The CLIP BPE tokenizer, built offline from the vendored vocabulary (``iga/data/clip``).

Every Stable Diffusion 1.x/2.x/XL text encoder uses the same 49,408-token OpenAI CLIP vocabulary; the
families differ only in the padding token: OpenAI CLIP-L pads with ``<|endoftext|>`` (49407), the
OpenCLIP encoders (SD2's ViT-H, SDXL's bigG) pad with ``!`` (id 0), as ``open_clip.tokenize`` does.
Building the tokenizer takes ~0.5 s, so it is cached per process.
"""

from __future__ import annotations

import functools
import gzip
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import CLIPTokenizer

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # the CLIP vocabulary uses the first 48,894 merges of the file
VOCAB_SIZE = 49408
BOS_ID = 49406
EOS_ID = 49407
MAX_LENGTH = 77  # BOS + 75 tokens + EOS

PAD_TOKENS = {"eos": "<|endoftext|>", "!": "!"}


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE, in vocabulary order.

    Printable Latin-1 bytes stand for themselves; the others (controls, space, soft hyphen ...) are
    mapped in ascending order onto code points from 256 on, so that no symbol is whitespace.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    keep = set(printable)
    others = [b for b in range(256) if b not in keep]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


@functools.cache
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read the vendored merge list and derive the token -> id table."""
    raw = resources.files("iga").joinpath("data", "clip", VOCAB_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise RuntimeError(f"the vendored CLIP vocabulary iga/data/clip/{VOCAB_FILE} is damaged; reinstall iga")
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"CLIP vocabulary has {len(vocab)} entries, expected {VOCAB_SIZE}")
    return vocab, merges  # type: ignore[return-value]


def save_clip_tokenizer(tok: "CLIPTokenizer", folder: str | Path) -> Path:
    """Write ``tok`` as released SD folders ship a CLIP tokenizer: ``vocab.json`` + ``merges.txt`` (from the vendored
    vocabulary, 1.5 MB against 3.6 MB for transformers' ``tokenizer.json``) and ``tokenizer_config.json``."""
    vocab, merges = _vocab_and_merges()
    if len(tok) != len(vocab):
        raise ValueError(f"the tokenizer has {len(tok)} tokens; only the CLIP vocabulary ({len(vocab)}) is written")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": int(tok.model_max_length),
              "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
              "unk_token": tok.unk_token}
    files = {"vocab.json": json.dumps(vocab, ensure_ascii=False),
             "merges.txt": "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
             "tokenizer_config.json": json.dumps(config, indent=2)}
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


@functools.cache
def clip_tokenizer(pad: str = "eos") -> "CLIPTokenizer":
    """A transformers ``CLIPTokenizer`` over the real CLIP vocabulary (cached); ``pad`` is "eos" or "!"."""
    if pad not in PAD_TOKENS:
        raise ValueError(f"unknown CLIP pad token {pad!r}; use one of {sorted(PAD_TOKENS)}")
    from transformers import CLIPTokenizer

    vocab, merges = _vocab_and_merges()
    kwargs: dict[str, Any] = dict(vocab=dict(vocab), merges=list(merges), model_max_length=MAX_LENGTH)
    if pad != "eos":
        kwargs["pad_token"] = PAD_TOKENS[pad]
    tok = CLIPTokenizer(**kwargs)
    if tok.bos_token_id != BOS_ID or tok.eos_token_id != EOS_ID:
        raise RuntimeError("transformers built a CLIP tokenizer with unexpected special tokens")
    return tok


def tokenize(text: str, pad: str = "eos") -> list[int]:
    """Token ids of ``text`` without BOS/EOS and without truncation."""
    tok = clip_tokenizer(pad)
    return list(tok(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])
