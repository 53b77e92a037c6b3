"""The T5 tokenizer (SD3's third and Flux's second text encoder), offline.

A diffusers folder ships its own (``tokenizer_3`` for SD3, ``tokenizer_2`` for Flux); bare single files do
not, so iga vendors Google's T5 SentencePiece vocabulary as a ``tokenizers`` JSON (``iga/data/t5``, see its
NOTICE.md): 32,000 pieces + 100 ``<extra_id_N>`` sentinels, pad 0, ``</s>`` 1 (appended), ``<unk>`` 2. The
JSON carries the unigram model itself, so neither ``sentencepiece`` nor a download is needed.
"""

from __future__ import annotations

import functools
import gzip
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

VOCAB_SIZE = 32100  # tokens the vocabulary defines; T5 encoders pad their embedding table to 32128
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
MODEL_MAX_LENGTH = 512


def _vendored_files() -> tuple[str, dict[str, Any]]:
    """(tokenizer.json text, tokenizer_config.json) of the vendored vocabulary."""
    data = resources.files("iga").joinpath("data", "t5")
    text = gzip.decompress(data.joinpath("tokenizer.json.gz").read_bytes()).decode("utf-8")
    config = json.loads(data.joinpath("tokenizer_config.json").read_text(encoding="utf-8"))
    return text, config


@functools.cache
def _vendored() -> "PreTrainedTokenizerBase":
    from tokenizers import Tokenizer
    from transformers import T5TokenizerFast

    text, config = _vendored_files()
    tok = T5TokenizerFast(tokenizer_object=Tokenizer.from_str(text), extra_ids=int(config.get("extra_ids", 100)),
                          model_max_length=MODEL_MAX_LENGTH)
    if len(tok) != VOCAB_SIZE or (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) != (PAD_ID, EOS_ID, UNK_ID):
        raise RuntimeError("the vendored T5 vocabulary iga/data/t5 is damaged; reinstall iga")
    return tok


def load_t5_tokenizer(folder: str | Path | None = None) -> "PreTrainedTokenizerBase":
    """The tokenizer in a diffusers tokenizer folder (e.g. ``model/tokenizer_3``) if given, else the vendored one.

    Folder tokenizers load from local files only; the vendored one is built once per process (tokenizers are
    not modified in use, so sharing it is safe).
    """
    if folder is None:
        return _vendored()
    from transformers import T5TokenizerFast

    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"T5 tokenizer folder {str(path)!r} does not exist")
    return T5TokenizerFast.from_pretrained(str(path), local_files_only=True)
