"""OpenCLIP text towers on the encoder of an encoder-decoder translation model: NLLB-CLIP
(``open_clip:nllb-clip-base``, ``nllb-clip-large-siglip``), an ``HFTextEncoder`` whose transformer
is the M2M-100 encoder of ``facebook/nllb-200-distilled-600M``.

stem = ``embed_tokens`` (scaled by sqrt(width) inside) + ``embed_positions`` (sinusoidal, counted
from the ids past the padding); blocks = the encoder ``layers``, pre-norm
(``x + attn(self_attn_layer_norm(x))``, ``x + fc2(act(fc1(final_layer_norm(x))))``), run through
``blocks.prenorm_block`` on their own parameters with the padding masked, as the model masks it;
head = the encoder's final ``layer_norm``, OpenCLIP's pooler (NLLB-CLIP: the first token, the
source-language code) and its projection.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import TextBatch, Tower
from .blocks import padding_mask, prenorm_block


class M2M100EncoderTower(Tower):
    """OpenCLIP ``HFTextEncoder`` on a transformers ``M2M100Encoder``."""

    modality = "text"
    kind = "text"

    def __init__(self, enc: Any):
        super().__init__()
        self.enc: Any = enc  # an OpenCLIP HFTextEncoder
        self.tf: Any = enc.transformer  # its M2M100Encoder
        cfg = enc.config
        self.pad_id = int(cfg.pad_token_id if cfg.pad_token_id is not None else 1)
        self.pool = type(enc.pooler).__name__  # ClsPooler for NLLB-CLIP; MeanPooler, MaxPooler possible
        self.context_length = int(cfg.max_position_embeddings)
        self.attends_to_padding = False
        self.num_heads = int(cfg.encoder_attention_heads)

    @property
    def vocab_size(self) -> int:
        return int(self.tf.embed_tokens.num_embeddings)

    @property
    def num_blocks(self) -> int:
        return len(self.tf.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.tf.layers)

    def pool_index(self, ids: Tensor) -> Tensor:
        value = 0 if self.pool.startswith("Cls") else -1  # -1: pooled over every real token
        return torch.full((ids.shape[0],), value, dtype=torch.long, device=ids.device)

    def pooled_positions(self, x: TextBatch) -> Tensor | None:
        return self.pool_index(x.ids) if self.pool.startswith("Cls") else None

    def token_embeddings(self, x: TextBatch) -> Tensor:
        return self.tf.embed_tokens(x.ids)  # scaled by sqrt(width), as the model's own lookup

    def stem(self, x: TextBatch, inputs_embeds: Tensor | None = None) -> Tensor:
        e = self.tf.embed_tokens(x.ids) if inputs_embeds is None else inputs_embeds
        return e + self.tf.embed_positions(x.ids, e).to(e.device)  # positions from the ids' padding

    def _real(self, x: TextBatch) -> Tensor:
        return (x.ids != self.pad_id).long()  # (B, T), as HFTextEncoder.forward builds it

    def block(self, i: int, h: Tensor, x: TextBatch, need_attn: bool = False, rows: Tensor | None = None):
        layer = self.tf.layers[i]
        at = layer.self_attn
        return prenorm_block(
            h,
            ln1=layer.self_attn_layer_norm,
            qkv=lambda u: (at.q_proj(u), at.k_proj(u), at.v_proj(u)),
            out_proj=at.out_proj,
            ln2=layer.final_layer_norm,
            mlp=lambda u: layer.fc2(layer.activation_fn(layer.fc1(u))),
            num_heads=self.num_heads,
            mask=padding_mask(self._real(x), h.dtype),
            need_attn=need_attn,
            rows=rows,
        )

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        out = BaseModelOutput(last_hidden_state=self.tf.layer_norm(h))
        return self.enc.proj(self.enc.pooler(out, self._real(x)))

    def project_tokens(self, h: Tensor, x: TextBatch) -> Tensor:
        return self.enc.proj(self.tf.layer_norm(h))


def is_m2m100_encoder(enc: Any) -> bool:
    """Whether an OpenCLIP ``HFTextEncoder`` runs an M2M-100 encoder (NLLB-CLIP)."""
    return type(getattr(enc, "transformer", None)).__name__ == "M2M100Encoder"
