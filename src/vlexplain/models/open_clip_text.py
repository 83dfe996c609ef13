"""OpenCLIP text towers: ``TextTransformer`` (every ``pool_type``, CoCa's class token) and ``HFTextEncoder``.

``TextTransformer`` (and the text half of a plain ``CLIP``): stem = token + position embeddings,
blocks = ``transformer.resblocks``, head = ``ln_final`` + pooling + ``text_projection``. The pooled
position follows the tower's own rule, computed from the ids exactly as OpenCLIP does:

* ``argmax``: the position of the largest id (CLIP's end-of-text token);
* ``eos``: the first occurrence of the tower's ``eos_id``;
* ``first`` / ``last``: position 0 / the last position;
* CoCa (``embed_cls``): a class token appended after the (padded) text, read at the end after
  ``ln_final``. ``OpenCLIPDualEncoder.tokenize`` reserves that slot in the ids, so hidden states
  and token positions line up; the slot is not shown to users.
* ``none`` returns token features rather than one embedding and is refused.

Attention masks are OpenCLIP's own: the causal mask (unless ``no_causal_mask``), plus the padding /
class-token mask of ``_build_additive_mask`` where the tower uses one. Towers that attend to padding
(bidirectional without a padding mask, last-position pooling, CoCa) see texts padded to the
context length, as in OpenCLIP's tokenizers, so that embeddings equal the model's own.

``HFTextEncoder`` (BERT, RoBERTa, XLM-R, PubMedBERT as in BiomedCLIP): stem = the transformers
model's ``embeddings``, blocks = ``encoder.layer``, head = OpenCLIP's pooler (CLS with or without
BERT's pooler layer, mean over real tokens, max) + ``proj``. Attention probabilities come from the
eager attention implementation (switched on for the call) via a hook on each layer's self-attention,
which returns them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelLoadError
from .base import TextBatch, Tower
from .blocks import padding_mask, prenorm_block
from .open_clip_m2m import M2M100EncoderTower, is_m2m100_encoder


def oc_block(blk: Any, h: Tensor, mask: Tensor | None, need_attn: bool, rows: Tensor | None = None):
    """OpenCLIP ``ResidualAttentionBlock`` on (B, T, D) with explicit attention (tested against its forward)."""
    mha: nn.MultiheadAttention = blk.attn
    D = h.shape[-1]

    def qkv(x: Tensor):
        w, b = mha.in_proj_weight, mha.in_proj_bias
        q = nn.functional.linear(x, w[:D], None if b is None else b[:D])
        k = nn.functional.linear(x, w[D : 2 * D], None if b is None else b[D : 2 * D])
        v = nn.functional.linear(x, w[2 * D :], None if b is None else b[2 * D :])
        return q, k, v

    ls1 = None if isinstance(blk.ls_1, nn.Identity) else blk.ls_1
    ls2 = None if isinstance(blk.ls_2, nn.Identity) else blk.ls_2
    return prenorm_block(
        h,
        ln1=blk.ln_1,
        qkv=qkv,
        out_proj=mha.out_proj,
        ln2=blk.ln_2,
        mlp=blk.mlp,
        num_heads=mha.num_heads,
        mask=mask,
        need_attn=need_attn,
        ls1=ls1,
        ls2=ls2,
        rows=rows,
    )


def plain_blocks(blocks: nn.ModuleList) -> bool:
    """Whether every block is OpenCLIP's standard ``ResidualAttentionBlock`` (explicit attention available)."""
    from open_clip.transformer import ResidualAttentionBlock

    return all(type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv") for b in blocks)


class OpenCLIPTextTower(Tower):
    """``TextTransformer`` or the text half of ``CLIP`` (``t`` holds token_embedding, transformer, ...)."""

    modality = "text"
    kind = "text"

    def __init__(self, t: Any):
        super().__init__()
        self.t: Any = t  # an OpenCLIP TextTransformer or CLIP
        self.pool = getattr(t, "text_pool_type", getattr(t, "pool_type", "argmax"))
        self.coca = getattr(t, "cls_emb", None) is not None
        if self.pool not in ("argmax", "eos", "first", "last") and not self.coca:
            raise ModelLoadError(
                f"OpenCLIP text pooling {self.pool!r} returns token features, not one text embedding; "
                "vlexplain explains towers that pool (argmax, eos, first, last)"
            )
        eos = getattr(t, "text_eos_id", getattr(t, "eos_id", None))
        if self.pool == "eos" and eos is None:
            raise ModelLoadError("OpenCLIP text tower pools at the end-of-text token but declares no eos_id")
        self.eos_id: int | None = None if eos is None else int(eos)
        self.pad_id = int(getattr(t, "pad_id", 0))
        self.heads = int(getattr(t, "heads", t.transformer.resblocks[0].attn.num_heads))
        self.pad_mask = bool(getattr(t, "use_pad_mask", False)) or self.coca
        self.causal = getattr(t, "attn_mask", None) is not None
        self.has_attention = plain_blocks(t.transformer.resblocks)
        self.context_length = int(t.positional_embedding.shape[0]) - (1 if self.coca else 0)

    @property
    def attends_to_padding(self) -> bool:
        """Whether embeddings depend on how far texts are padded (then pad to the context length)."""
        return self.coca or self.pool == "last" or (not self.causal and not self.pad_mask)

    @property
    def vocab_size(self) -> int:
        return int(self.t.token_embedding.num_embeddings)

    @property
    def num_blocks(self) -> int:
        return len(self.t.transformer.resblocks)

    def block_modules(self) -> list[nn.Module]:
        return list(self.t.transformer.resblocks)

    def pool_index(self, ids: Tensor) -> Tensor:
        """(B,) the position the head reads, from ids laid out as ``tokenize`` lays them out."""
        B, T = ids.shape
        if self.coca or self.pool == "last":
            return torch.full((B,), T - 1, dtype=torch.long, device=ids.device)
        if self.pool == "first":
            return torch.zeros(B, dtype=torch.long, device=ids.device)
        if self.pool == "eos" and self.eos_id is not None:  # always set for eos pooling (checked on load)
            return (ids == self.eos_id).int().argmax(-1)
        return ids.argmax(-1)

    def _text_ids(self, x: TextBatch) -> Tensor:
        return x.ids[:, :-1] if self.coca else x.ids  # CoCa: the last slot is the class token

    def token_embeddings(self, x: TextBatch) -> Tensor:
        return self.t.token_embedding(x.ids)

    def stem(self, x: TextBatch, inputs_embeds: Tensor | None = None) -> Tensor:
        e = self.t.token_embedding(x.ids) if inputs_embeds is None else inputs_embeds
        if self.coca:
            cls = self.t.cls_emb.to(e.dtype).expand(e.shape[0], 1, -1)
            e = torch.cat([e[:, :-1], cls], dim=1)
        return e + self.t.positional_embedding[: e.shape[1]].to(e.dtype)

    def _mask(self, h: Tensor, x: TextBatch) -> Tensor | None:
        T = h.shape[1]
        mask = self.t.attn_mask[:T, :T].to(h.dtype) if self.causal else None
        if self.pad_mask:
            add = self.t._build_additive_mask(self._text_ids(x), T, h.dtype)  # (B * heads, T, T)
            add = add.view(h.shape[0], self.heads, T, T)
            mask = add if mask is None else mask + add
        return mask

    def pooled_positions(self, x: TextBatch) -> Tensor | None:
        return x.pool_index

    def block(self, i: int, h: Tensor, x: TextBatch, need_attn: bool = False, rows: Tensor | None = None):
        blk = self.t.transformer.resblocks[i]
        mask = self._mask(h, x)
        if self.has_attention:
            return oc_block(blk, h, mask, need_attn, rows)
        out = blk(
            h, attn_mask=None if mask is None else mask.reshape(-1, *mask.shape[-2:]) if mask.dim() == 4 else mask
        )
        if rows is not None:
            out = out[torch.arange(h.shape[0], device=h.device), rows][:, None]
        return out, None

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        if self.coca:
            pooled = self.t.ln_final(h[:, -1])
        else:
            h = self.t.ln_final(h)
            pooled = h[torch.arange(h.shape[0], device=h.device), x.pool_index]
        proj = self.t.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj

    def project_tokens(self, h: Tensor, x: TextBatch) -> Tensor:
        t, proj = self.t.ln_final(h), self.t.text_projection
        if proj is None:
            return t
        return proj(t) if isinstance(proj, nn.Linear) else t @ proj


@contextlib.contextmanager
def eager_attention(config: Any) -> Iterator[None]:
    """Use transformers' eager attention (explicit probabilities) within the block."""
    prev = getattr(config, "_attn_implementation", None)
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = prev


class HFTextEncoderTower(Tower):
    """OpenCLIP ``HFTextEncoder``: a transformers encoder (BERT family) + OpenCLIP pooler + projection."""

    modality = "text"
    kind = "text"

    def __init__(self, enc: Any):
        super().__init__()
        self.enc: Any = enc  # an OpenCLIP HFTextEncoder
        self.tf: Any = enc.transformer  # its transformers encoder
        cfg = enc.config
        if (
            getattr(cfg, "is_encoder_decoder", False)
            or not hasattr(self.tf, "encoder")
            or not hasattr(self.tf.encoder, "layer")
        ):
            raise ModelLoadError(
                f"OpenCLIP text tower on a {cfg.model_type!r} model is not supported; supported: BERT-style "
                "encoders (bert, roberta, xlm-roberta) and M2M-100 encoders (NLLB-CLIP)"
            )
        self.pad_id = int(cfg.pad_token_id if cfg.pad_token_id is not None else 0)
        self.pool = type(enc.pooler).__name__  # MeanPooler, ClsPooler, ClsLastHiddenStatePooler, MaxPooler
        self.context_length = int(getattr(cfg, "max_position_embeddings", 512))
        self.attends_to_padding = False

    @property
    def vocab_size(self) -> int:
        return int(self.tf.embeddings.word_embeddings.num_embeddings)

    @property
    def num_blocks(self) -> int:
        return len(self.tf.encoder.layer)

    def block_modules(self) -> list[nn.Module]:
        return list(self.tf.encoder.layer)

    def pool_index(self, ids: Tensor) -> Tensor:
        value = 0 if self.pool.startswith("Cls") else -1  # -1: pooled over every real token
        return torch.full((ids.shape[0],), value, dtype=torch.long, device=ids.device)

    def token_embeddings(self, x: TextBatch) -> Tensor:
        return self.tf.embeddings.word_embeddings(x.ids)

    def stem(self, x: TextBatch, inputs_embeds: Tensor | None = None) -> Tensor:
        # with both given, transformers' BERT-family embeddings take the vectors from inputs_embeds and
        # the positions from the ids (RoBERTa / XLM-R derive them from the ids' padding)
        return self.tf.embeddings(input_ids=x.ids, inputs_embeds=inputs_embeds)

    def _real(self, x: TextBatch) -> Tensor:
        return (x.ids != self.pad_id).long()  # (B, T), as HFTextEncoder.forward builds it

    def block(self, i: int, h: Tensor, x: TextBatch, need_attn: bool = False, rows: Tensor | None = None):
        layer = self.tf.encoder.layer[i]
        mask = padding_mask(self._real(x), h.dtype)  # (B, 1, 1, T)
        if not need_attn:
            return layer(h, attention_mask=mask), None
        probs: list[Tensor] = []
        handle = layer.attention.self.register_forward_hook(lambda m, inp, out: probs.append(out[1]))
        try:
            with eager_attention(self.tf.config):
                out = layer(h, attention_mask=mask)
        finally:
            handle.remove()
        return out, probs[-1]

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

        pooler = getattr(self.tf, "pooler", None)
        out = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=h, pooler_output=pooler(h) if pooler is not None else None
        )
        return self.enc.proj(self.enc.pooler(out, self._real(x)))


def text_tower(model: nn.Module) -> OpenCLIPTextTower | HFTextEncoderTower | M2M100EncoderTower:
    """The text tower of an OpenCLIP model (``CLIP``, ``CustomTextCLIP``, ``CoCa``)."""
    text = getattr(model, "text", None)
    if text is None:
        return OpenCLIPTextTower(model)
    if type(text).__name__ == "HFTextEncoder":
        return M2M100EncoderTower(text) if is_m2m100_encoder(text) else HFTextEncoderTower(text)
    return OpenCLIPTextTower(text)
