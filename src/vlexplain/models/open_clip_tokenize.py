"""Tokenizers for OpenCLIP text towers: whatever the user passes is used, or refused with a reason.

Accepted (``text_tokenizer``):

* a ``TokenizerSpec`` (used as is);
* open_clip's ``SimpleTokenizer`` (CLIP BPE);
* open_clip's ``HFTokenizer`` and ``SigLipTokenizer``, and any callable ``texts -> ids`` shaped
  ``(B, context_length)`` like OpenCLIP's tokenizers: called as the model's own pipeline calls
  them (their text cleaning, special tokens and padding included), ids read back as given;
* a transformers tokenizer (used with its own special tokens);
* None: CLIP BPE when the text embedding table has CLIP's 49,408 rows, else a refusal that says
  what to pass.

The tokenizer's vocabulary must fit the tower's embedding table: larger is refused (ids would
fall off the table); a table more than ``VOCAB_SLACK`` rows larger than the vocabulary is
refused too (the tokenizer belongs to another model: its ids would silently mean other tokens).
Tables are commonly padded by a few rows past the vocabulary, which is allowed. A tokenizer that
the model's own config names (``ConfigTokenizer``: open_clip's CLIPA configs pair
bert-base-uncased's 30,522 tokens with a 32,000-row table) may leave any number of rows unused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import InputError, ModelLoadError
from .base import TextBatch
from .text import PoolMode, TokenizerSpec, _clean_token, from_hf_tokenizer

#: rows an embedding table may have past the tokenizer's vocabulary (tables padded to a multiple)
VOCAB_SLACK = 128
CLIP_VOCAB = 49408


class ConfigTokenizer:
    """A tokenizer that the model's own OpenCLIP config names (``text_cfg.hf_tokenizer_name``),
    built as OpenCLIP builds it for that config; its vocabulary may be smaller than the table by
    any number of rows. ``open_clip:`` specs wrap the tokenizer they load so.

    Args:
        tokenizer: the tokenizer (open_clip's ``HFTokenizer`` for such configs).
        named: the name the config gives it (``"bert-base-uncased"``).
    """

    def __init__(self, tokenizer: Any, named: str):
        self.tokenizer = tokenizer
        self.named = named


class IdsTokenizer:
    """A callable ``texts -> (B, L) ids`` (OpenCLIP style) turned into [`TextBatch`][vlexplain.TextBatch] es.

    Args:
        fn: the tokenizer; called with a list of strings, returns ids padded with ``pad_id``.
        pad_id: the padding id ``fn`` uses.
        decode_token: id -> display string (ids shown as ``#id`` when unknown).
        special_ids: ids not shown to users (None: the first and last real token of each text).
        pad_to_context: keep the full padded length (towers that attend to padding).
    """

    def __init__(
        self,
        fn: Callable[[list[str]], Any],
        pad_id: int,
        decode_token: Callable[[int], str] | None,
        special_ids: set[int] | None,
        pad_to_context: bool,
    ):
        self.fn = fn
        self.pad_id = int(pad_id)
        self.decode_token = decode_token or (lambda i: f"#{i}")
        self.special_ids = special_ids
        self.pad_to_context = pad_to_context

    def __call__(self, texts: Sequence[str] | str, device: torch.device | str = "cpu") -> TextBatch:
        if isinstance(texts, str):
            texts = [texts]
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise InputError("empty text: every text must contain at least one visible character")
        ids = torch.as_tensor(self.fn(list(texts)), dtype=torch.long)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2 or ids.shape[0] != len(texts):
            raise InputError(f"the tokenizer returned ids shaped {tuple(ids.shape)}; expected (texts, length)")
        real = ids != self.pad_id
        pos = torch.arange(ids.shape[1])
        length = torch.where(real, pos + 1, 0).max(1).values  # (B,) last real token + 1
        T = ids.shape[1] if self.pad_to_context else int(length.max())
        ids = ids[:, :T]
        am = (pos[:T][None] < length[:, None]).long()
        if self.special_ids is not None:
            content = am.bool() & ~torch.isin(ids, torch.tensor(sorted(self.special_ids), dtype=torch.long))
        else:
            content = (pos[:T][None] > 0) & (pos[:T][None] < (length - 1)[:, None])
        tokens = [
            [self.decode_token(int(i)) if a else "" for i, a in zip(r.tolist(), m.tolist())] for r, m in zip(ids, am)
        ]
        pool = length - 1
        return TextBatch(
            ids.to(device), am.to(device), pool.to(device), content.to(device), tokens, list(texts), [""] * len(texts)
        )


def _vocab_of(tok: Any) -> int | None:
    for get in (lambda: len(tok.encoder), lambda: len(tok.tokenizer), lambda: len(tok), lambda: tok.vocab_size):
        try:
            n = int(get())
            if n > 0:
                return n
        except (AttributeError, TypeError):
            continue
    return None


def check_vocab(vocab: int | None, table: int, what: str, named_by_config: bool = False) -> None:
    """Refuse a tokenizer whose vocabulary does not fit an embedding table of ``table`` rows
    (``named_by_config``: the model's config names it, so unused rows past it are allowed)."""
    if vocab is None:
        return
    if vocab > table:
        raise ModelLoadError(
            f"{what} has {vocab} tokens but the text tower's embedding table has {table} rows: it is not this "
            "model's tokenizer; pass the model's own (tokenizer=..., or open_clip:ARCH/WEIGHTS@TOKENIZER_DIR)"
        )
    if table - vocab > VOCAB_SLACK and not named_by_config:
        raise ModelLoadError(
            f"{what} has {vocab} tokens but the text tower's embedding table has {table} rows: its ids would "
            "name other tokens of this model; pass the model's own tokenizer (tokenizer=..., or "
            "open_clip:ARCH/WEIGHTS@TOKENIZER_DIR, which accepts the tokenizer the architecture's config names)"
        )


def text_tokenizer(tok: Any, tower: Any, context_length: int) -> TokenizerSpec | IdsTokenizer:
    """The tokenizer the dual encoder uses for ``tower`` (see the module docstring)."""
    table = int(tower.vocab_size)
    full = bool(tower.attends_to_padding)
    pool: PoolMode = "mean" if getattr(tower, "pool", "") == "MeanPooler" else "eos"
    if isinstance(tok, TokenizerSpec):
        return tok
    named = isinstance(tok, ConfigTokenizer)
    if isinstance(tok, ConfigTokenizer):
        tok = tok.tokenizer
    if tok is None:
        if table != CLIP_VOCAB or type(tower).__name__ in ("HFTextEncoderTower", "M2M100EncoderTower"):
            raise ModelLoadError(
                f"this model's text vocabulary ({table} tokens) is not CLIP's BPE; pass its tokenizer: "
                "load_model(model, tokenizer=open_clip.get_tokenizer(ARCH) or a transformers tokenizer), "
                "or on the command line open_clip:ARCH/WEIGHTS@TOKENIZER_DIR"
            )
        from .text import clip_bpe_tokenizer

        return clip_bpe_tokenizer(context_length, pad_to_context=full)
    name = type(tok).__name__
    if hasattr(tok, "encoder") and hasattr(tok, "eot_token_id") and hasattr(tok, "encode"):  # SimpleTokenizer
        check_vocab(len(tok.encoder), table, f"the tokenizer ({name})", named)
        t = tok
        return TokenizerSpec(
            encode=t.encode,
            decode_token=lambda i: _clean_token(t.decoder[int(i)]),
            decode=t.decode,
            sos_id=t.sot_token_id,
            eos_id=t.eot_token_id,
            pad_id=0,
            context_length=context_length,
            pad_to_context=full,
        )
    inner = getattr(tok, "tokenizer", None)
    if inner is not None and callable(tok) and hasattr(inner, "convert_ids_to_tokens"):  # HFTokenizer, SigLipTokenizer
        check_vocab(_vocab_of(inner), table, f"the tokenizer ({name})", named)
        pad = inner.pad_token_id if inner.pad_token_id is not None else 0
        return IdsTokenizer(
            lambda texts: tok(texts, context_length=context_length),
            pad,
            lambda i: _clean_token(inner.convert_ids_to_tokens(i)),
            set(inner.all_special_ids),
            full,
        )
    if hasattr(tok, "convert_ids_to_tokens") and hasattr(tok, "all_special_ids"):  # a transformers tokenizer
        check_vocab(_vocab_of(tok), table, f"the tokenizer ({name})", named)
        return from_hf_tokenizer(
            tok, context_length, "last" if getattr(tower, "pool", "") == "last" else pool, pad_to_context=full
        )
    if callable(tok):
        decode = getattr(tok, "decode", None)
        dec = (lambda i: str(decode([i])).strip()) if callable(decode) else None
        return IdsTokenizer(lambda texts: tok(texts), int(getattr(tok, "pad_token_id", 0) or 0), dec, None, full)
    raise ModelLoadError(
        f"cannot use a {name} as a tokenizer: pass open_clip's tokenizer, a transformers tokenizer, a "
        "TokenizerSpec or a callable that maps a list of texts to a (texts, length) tensor of ids"
    )
