"""Tokenisation into [`TextBatch`][vlexplain.TextBatch], over Hugging Face and OpenCLIP tokenizers."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .base import TextBatch

PoolMode = Literal["eos", "last", "mean", "first", "argmax"]


@dataclass
class TokenizerSpec:
    """How a tower's texts are tokenised.

    Attributes:
        encode: text -> body token ids (no special tokens).
        decode_token: id -> display string.
        decode: ids -> text (to report what truncation dropped).
        sos_id / eos_id / pad_id: special ids (sos / eos None when the model has no start / end token).
        context_length: the tower's maximum sequence length.
        pool: where the tower pools: first EOS, last position, mean over real tokens, the first
            token ([CLS] of BERT-style towers), or the largest id of the text's own tokens
            (``argmax``: transformers' legacy CLIP pooling, OWL-ViT's and OpenCLIP's ``argmax``).
        pad_to_context: always pad to the context length (SigLIP).
        padding_side: "left" puts the padding before the text (SigLIP 2's Gemma tokenizer).
        mask_padding: with ``pad_to_context``, mark padding 0 in the attention mask (SigLIP 2 masks
            it) instead of 1 (SigLIP attends to its padding).
    """

    encode: Callable[[str], list[int]]
    decode_token: Callable[[int], str]
    decode: Callable[[list[int]], str]
    sos_id: int | None
    eos_id: int | None
    pad_id: int
    context_length: int
    pool: PoolMode = "eos"
    pad_to_context: bool = False
    padding_side: Literal["right", "left"] = "right"
    mask_padding: bool = False

    def __call__(self, texts: Sequence[str] | str, device: torch.device | str = "cpu") -> TextBatch:
        if isinstance(texts, str):
            texts = [texts]
        from ..textclean import clean_text, preview

        rows, dropped, cleaned = [], [], []
        room = self.context_length - (self.sos_id is not None) - (self.eos_id is not None)
        for t in texts:
            t = clean_text(t)  # InputError without a visible character; control characters removed
            cleaned.append(t)
            body = self.encode(t)
            if len(body) > room:
                cut = self.decode(body[room:]).strip()
                warnings.warn(
                    f"text {preview(t)!r} has {len(body)} tokens, more than the model's context holds ({room}); "
                    f"its last {len(body) - room} were dropped, from {preview(cut, 4)!r}",
                    stacklevel=3,
                )
                dropped.append(cut)
                body = body[:room]
            else:
                dropped.append("")
            row = (
                ([self.sos_id] if self.sos_id is not None else [])
                + body
                + ([self.eos_id] if self.eos_id is not None else [])
            )
            rows.append(row)
        T = self.context_length if self.pad_to_context else max(len(r) for r in rows)
        B = len(rows)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        am = torch.zeros((B, T), dtype=torch.long)
        content = torch.zeros((B, T), dtype=torch.bool)
        pool = torch.empty(B, dtype=torch.long)
        tokens: list[list[str]] = []
        off = 1 if self.sos_id is not None else 0
        end = 1 if self.eos_id is not None else 0
        for i, r in enumerate(rows):
            s = T - len(r) if self.padding_side == "left" else 0  # where the text starts
            ids[i, s : s + len(r)] = torch.tensor(r)
            am[i, s : s + len(r)] = 1
            content[i, s + off : s + len(r) - end] = True
            if self.pool == "argmax":  # the first largest id among the text's own tokens (padding excluded)
                pool[i] = s + max(range(len(r)), key=lambda j: (r[j], -j))
            else:
                pool[i] = {"eos": s + len(r) - 1, "last": T - 1, "mean": -1, "first": s}[self.pool]
            toks = [""] * s + [self.decode_token(j) for j in r] + [""] * (T - s - len(r))
            tokens.append(toks)
        if self.pad_to_context and not self.mask_padding:  # the tower attends to the padding too (SigLIP)
            am[:] = 1
        return TextBatch(ids.to(device), am.to(device), pool.to(device), content.to(device), tokens, cleaned, dropped)


def _clean_token(s: str) -> str:
    return s.replace("</w>", "").replace("Ġ", "").replace("▁", "")


def special_tokens_around(tok: Any) -> tuple[int | None, int | None]:
    """The start and end ids a transformers tokenizer's own template puts around a text (None: none).

    Read from the tokenizer itself (``tok(text)`` against ``tok(text, add_special_tokens=False)``), as
    a processor and OpenCLIP's ``HFTokenizer`` call it: NLLB's starts a text with its source-language
    code, not ``<s>``; SigLIP's T5 tokenizer only appends ``</s>``; Gemma's only prepends ``<bos>``.

    Raises:
        ModelLoadError: the template is not one token before and one after the text at most.
    """
    from ..errors import ModelLoadError

    body = tok("a photo", add_special_tokens=False)["input_ids"]
    full = tok("a photo")["input_ids"]
    k = next((i for i in range(len(full) - len(body) + 1) if full[i : i + len(body)] == body), None)
    prefix, suffix = (full[:k], full[k + len(body) :]) if k is not None else ([], [])
    if k is None or not body or len(prefix) > 1 or len(suffix) > 1:
        raise ModelLoadError(f"cannot read where {type(tok).__name__} puts its special tokens ({full} around {body})")
    return (int(prefix[0]) if prefix else None), (int(suffix[0]) if suffix else None)


def from_hf_tokenizer(tok: Any, context_length: int, pool: PoolMode, pad_to_context: bool = False) -> TokenizerSpec:
    """Wrap a transformers tokenizer: texts laid out as its own template lays them out
    (``special_tokens_around``), so the pooled position holds the token the model's pipeline puts there."""
    sos, eos = special_tokens_around(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos if eos is not None else 0)
    return TokenizerSpec(
        encode=lambda t: tok(t, add_special_tokens=False)["input_ids"],
        decode_token=lambda i: _clean_token(tok.convert_ids_to_tokens(int(i))),
        decode=lambda ids: tok.decode(ids),
        sos_id=sos,
        eos_id=eos,
        pad_id=pad,
        context_length=context_length,
        pool=pool,
        pad_to_context=pad_to_context,
    )


@functools.lru_cache(maxsize=1)
def _simple_tokenizer() -> Any:
    """open_clip's ``SimpleTokenizer``, built once per process (reading its 49,408 merges takes a
    second or two; the tokenizer is the same for every model that uses it)."""
    from ..errors import require

    return require("open_clip.tokenizer", "openclip").SimpleTokenizer()


def clip_bpe_tokenizer(context_length: int = 77, pool: PoolMode = "eos", pad_to_context: bool = False) -> TokenizerSpec:
    """The CLIP BPE vocabulary that ships inside open_clip (no download)."""
    t = _simple_tokenizer()
    return TokenizerSpec(
        encode=t.encode,
        decode_token=lambda i: _clean_token(t.decoder[int(i)]),
        decode=lambda ids: t.decode(ids),
        sos_id=t.sot_token_id if pool != "last" else None,
        eos_id=t.eot_token_id,
        pad_id=0,
        context_length=context_length,
        pool=pool,
        pad_to_context=pad_to_context,
    )
