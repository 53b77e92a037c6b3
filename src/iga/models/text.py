"""Prompt encoding for the CLIP-family text encoders of SD1/SD2/SDXL: chunking and clip-skip.

Long prompts (A1111 convention): the prompt's tokens are split into windows of 75; each window is
wrapped as ``[BOS, tokens..., EOS, pad...]`` (77 ids), encoded on its own, and the hidden states are
concatenated along the sequence axis (77 * chunks). All prompts and negative prompts of one call are
padded to the same number of chunks with empty windows (``[BOS, EOS, pad...]``), so that conditional and
unconditional conditioning can be batched for CFG. A prompt of 76+ tokens therefore gives 2 chunks.
A1111's "go back to the last comma" chunk splitting and its ``(emphasis:1.2)`` syntax are not applied:
parentheses are plain text here. SDXL's pooled text embedding comes from the first chunk.

clip-skip (A1111 numbering: 1 = no skip) selects which hidden layer conditions the UNet:
- SD1 (CLIP ViT-L): ``final_layer_norm(hidden_states[-clip_skip])``; 1 is the last layer, 2 the
  penultimate layer (A1111 "Clip skip: 2"). diffusers' ``clip_skip=k`` equals ours ``k+1``.
- SD2 (OpenCLIP ViT-H): the model already ends at the penultimate block of OpenCLIP (diffusers ships 23
  of 24 blocks); clip_skip=1 is that native output and k > 1 skips further with the same formula.
  A1111 ignores clip skip on SD2; diffusers applies it as we do (its ``k`` = our ``k+1``).
- SDXL (both encoders): native conditioning is ``hidden_states[-2]`` with no final norm; clip_skip=k
  uses ``hidden_states[-(k+1)]`` of both encoders (diffusers' ``k-1``). The pooled embedding (from the
  projected final layer of encoder 2) does not change. A1111 ignores clip skip on SDXL by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iga.models.tokenizer import MAX_LENGTH

if TYPE_CHECKING:  # pragma: no cover
    import torch

CHUNK_BODY = MAX_LENGTH - 2  # 75 prompt tokens between BOS and EOS


@dataclass
class TextEncoderSlot:
    """One text encoder with its tokenizer and the family's rule for which layer conditions the UNet."""

    model: Any  # transformers CLIPTextModel / CLIPTextModelWithProjection
    tokenizer: Any  # transformers CLIPTokenizer
    layer: str  # "last" (SD1/SD2: final layer norm applied) or "penultimate" (SDXL: no final norm)
    pooled: bool  # this encoder provides SDXL's pooled text embedding

    @property
    def num_layers(self) -> int:
        """How many transformer layers the encoder has."""
        return int(self.model.config.num_hidden_layers)

    @property
    def ids(self) -> tuple[int, int, int]:
        """(bos, eos, pad) token ids."""
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(tok.bos_token_id), int(tok.eos_token_id), int(pad)

    def token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without BOS/EOS and without truncation."""
        return list(self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])

    def rows(self, token_ids: list[int], n_chunks: int) -> list[list[int]]:
        """``n_chunks`` windows of 77 ids: [BOS, up to 75 ids, EOS, pad...]."""
        bos, eos, pad = self.ids
        out = []
        for c in range(n_chunks):
            row = [bos, *token_ids[c * CHUNK_BODY : (c + 1) * CHUNK_BODY], eos]
            out.append(row + [pad] * (MAX_LENGTH - len(row)))
        return out

    def check_clip_skip(self, clip_skip: int) -> None:
        """Raise ``ValueError`` if ``clip_skip`` asks for a layer this encoder does not have."""
        limit = self.num_layers if self.layer == "last" else self.num_layers - 1
        if not isinstance(clip_skip, int) or isinstance(clip_skip, bool) or not 1 <= clip_skip <= limit:
            raise ValueError(f"clip_skip must be an integer from 1 (no skip) to {limit} for this text encoder "
                             f"({self.num_layers} layers); got {clip_skip!r}")

    def encode(self, rows: "torch.Tensor", clip_skip: int) -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """Hidden states [N, 77, D] for token rows [N, 77] and, for the pooled encoder, the pooled [N, P]."""
        out = self.model(input_ids=rows, output_hidden_states=True)
        hidden = out.hidden_states
        if self.layer == "last":
            body = getattr(self.model, "text_model", self.model)
            states = body.final_layer_norm(hidden[-clip_skip])
        else:
            states = hidden[-(clip_skip + 1)]
        pooled = None
        if self.pooled:
            pooled = out.text_embeds if hasattr(out, "text_embeds") and out.text_embeds is not None else out.pooler_output
        return states, pooled


def chunk_count(slots: list[TextEncoderSlot], texts: list[str]) -> tuple[int, dict[int, list[list[int]]]]:
    """The common number of 75-token chunks for ``texts`` and their token ids per encoder."""
    tokens = {i: [slot.token_ids(t) for t in texts] for i, slot in enumerate(slots)}
    n = max(max(1, -(-len(ids) // CHUNK_BODY)) for per in tokens.values() for ids in per)
    return n, tokens
