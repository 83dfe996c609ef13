"""Adapter for Hugging Face transformers ``CLIPModel`` and ``SiglipModel``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import DualEncoder, TextBatch, Tower
from .blocks import causal_mask, prenorm_block
from .text import TokenizerSpec, clip_bpe_tokenizer, from_hf_tokenizer


def _hf_block(layer: nn.Module, h: Tensor, mask: Tensor | None, need_attn: bool, rows: Tensor | None = None):
    at = layer.self_attn
    return prenorm_block(
        h,
        ln1=layer.layer_norm1,
        qkv=lambda x: (at.q_proj(x), at.k_proj(x), at.v_proj(x)),
        out_proj=at.out_proj,
        ln2=layer.layer_norm2,
        mlp=layer.mlp,
        num_heads=at.num_heads,
        mask=mask,
        need_attn=need_attn,
        rows=rows,
    )


class HFVisionTower(Tower):
    """ViT image tower of CLIPModel (CLS pooling) or SiglipModel (attention-pooling head, no CLS)."""

    modality = "image"
    kind = "vit"

    def __init__(self, vision_model: nn.Module, projection: nn.Module | None, siglip: bool):
        super().__init__()
        self.vm = vision_model
        self.projection = projection
        self.siglip = siglip
        self.num_prefix_tokens = 0 if siglip else 1
        self.num_heads = vision_model.config.num_attention_heads

    @property
    def num_blocks(self) -> int:
        return len(self.vm.encoder.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.vm.encoder.layers)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        h = self.vm.embeddings(x.to(self.vm.embeddings.patch_embedding.weight.dtype))
        if not self.siglip:
            h = self.vm.pre_layrnorm(h)
        return h

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        return _hf_block(self.vm.encoder.layers[i], h, None, need_attn, rows)

    def pooled_positions(self, x: Any) -> Tensor | None:
        if self.siglip:
            return None  # attention-pooling head reads every token
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def head(self, h: Tensor, x: Any) -> Tensor:
        if self.siglip:
            h = self.vm.post_layernorm(h)
            return self.vm.head(h)
        pooled = self.vm.post_layernorm(h[:, 0])
        return self.projection(pooled)

    def project_tokens(self, h: Tensor, x: Any) -> Tensor:
        if self.siglip:
            raise NotImplementedError("the SigLIP image head pools with attention; it has no per-token projection")
        return self.projection(self.vm.post_layernorm(h))


class HFTextTower(Tower):
    """Causal CLIP text tower (pooled at EOS) or bidirectional SigLIP text tower (last token)."""

    modality = "text"
    kind = "text"

    def __init__(self, text_model: nn.Module, projection: nn.Module | None, siglip: bool):
        super().__init__()
        self.tm = text_model
        self.projection = projection
        self.siglip = siglip
        self.num_heads = text_model.config.num_attention_heads

    @property
    def num_blocks(self) -> int:
        return len(self.tm.encoder.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.tm.encoder.layers)

    def token_embeddings(self, x: TextBatch) -> Tensor:
        return self.tm.embeddings.token_embedding(x.ids)

    def stem(self, x: TextBatch, inputs_embeds: Tensor | None = None) -> Tensor:
        if inputs_embeds is None:
            return self.tm.embeddings(input_ids=x.ids)
        return self.tm.embeddings(inputs_embeds=inputs_embeds)

    def _mask(self, h: Tensor) -> Tensor | None:
        if self.siglip:
            return None  # SigLIP texts are padded to the context length and attend to everything
        return causal_mask(h.shape[1], h.device, h.dtype)

    def block(self, i: int, h: Tensor, x: TextBatch, need_attn: bool = False, rows: Tensor | None = None):
        return _hf_block(self.tm.encoder.layers[i], h, self._mask(h), need_attn, rows)

    def pooled_positions(self, x: TextBatch) -> Tensor | None:
        if self.siglip:
            return torch.full((len(x),), x.ids.shape[1] - 1, dtype=torch.long, device=x.ids.device)
        return x.pool_index

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        h = self.tm.final_layer_norm(h)
        if self.siglip:
            return self.tm.head(h[:, -1])
        pooled = h[torch.arange(h.shape[0], device=h.device), x.pool_index]
        return self.projection(pooled)

    def project_tokens(self, h: Tensor, x: TextBatch) -> Tensor:
        h = self.tm.final_layer_norm(h)
        return self.tm.head(h) if self.siglip else self.projection(h)


class HFDualEncoder(DualEncoder):
    """A transformers CLIPModel or SiglipModel behind the DualEncoder protocol."""

    def __init__(self, model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf"):
        super().__init__()
        self.model = model
        self.name = name
        self.siglip = "siglip" in type(model).__name__.lower()
        vcfg = model.config.vision_config
        tcfg = model.config.text_config
        self.image = HFVisionTower(model.vision_model, getattr(model, "visual_projection", None), self.siglip)
        self.text = HFTextTower(model.text_model, getattr(model, "text_projection", None), self.siglip)
        self.input_size = (vcfg.image_size, vcfg.image_size)
        if self.siglip:
            self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        if processor is not None and getattr(processor, "image_processor", None) is not None:
            ip = processor.image_processor
            self.mean, self.std = tuple(ip.image_mean), tuple(ip.image_std)
        ctx = tcfg.max_position_embeddings
        pool = "last" if self.siglip else "eos"
        if tokenizer is None and processor is not None:
            tokenizer = getattr(processor, "tokenizer", None)
        if isinstance(tokenizer, TokenizerSpec):
            self._tok = tokenizer
        elif tokenizer is not None:
            self._tok = from_hf_tokenizer(tokenizer, ctx, pool, pad_to_context=self.siglip)
        else:
            if tcfg.vocab_size < 49408:
                from ..errors import ModelLoadError

                raise ModelLoadError(
                    f"this model's vocabulary ({tcfg.vocab_size} tokens) is not CLIP's BPE vocabulary; "
                    "pass its tokenizer: load_model(model, tokenizer=...)"
                )
            self._tok = clip_bpe_tokenizer(ctx, pool, pad_to_context=self.siglip)
        if not self.siglip and self._tok.eos_id != tcfg.eos_token_id and tcfg.eos_token_id != 2:
            from ..errors import ModelLoadError

            raise ModelLoadError(
                f"the tokenizer's end-of-text id ({self._tok.eos_id}) differs from the model config's "
                f"eos_token_id ({tcfg.eos_token_id}): the text tower would pool at the wrong position"
            )

    def tokenize(self, texts) -> TextBatch:
        return self._tok(texts, device=self.device)

    @property
    def pad_token_id(self) -> int:
        return self._tok.pad_id

    @property
    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.exp()

    @property
    def logit_bias(self) -> Tensor | None:
        return getattr(self.model, "logit_bias", None)
