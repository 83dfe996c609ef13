"""Adapter for transformers ``Tipsv2Model`` (TIPSv2, Google 2025/26).

Image tower: a DINOv2-style ViT (class token, register tokens, layer scale); the embedding is the
final layer norm of the class token, with no projection. Text tower: a bidirectional transformer
over SentencePiece tokens (no start or end token, sinusoidal positions, token embeddings scaled by
the square root of the width), masked mean over the real tokens (plus the config's
``pooling_epsilon`` in the denominator), no projection. The score is the cosine; the model's logits
divide it by its learned ``temperature``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import TextBatch, Tower
from .blocks import padding_mask, prenorm_block
from .families import Family, register_family
from .hf_common import HFAdapter, HFEntry, clip_block, register_hf, resolve_tokenizer, tiny_transformer
from .tiny_tokenizers import sentencepiece_tokenizer


class Tipsv2VisionTower(Tower):
    """Class token, registers, patches; pre-norm blocks with layer scale; head = ``layernorm(h)[:, 0]``."""

    modality = "image"
    kind = "vit"

    def __init__(self, vision_model: Any):
        super().__init__()
        self.vm: Any = vision_model  # a transformers Tipsv2VisionModel
        cfg = self.vm.config
        self.num_heads = int(cfg.num_attention_heads)
        self.num_prefix_tokens = 1 + int(cfg.num_register_tokens)
        g = int(cfg.image_size) // int(cfg.patch_size)
        self.grid = (g, g)

    @property
    def num_blocks(self) -> int:
        return len(self.vm.encoder.layer)

    def block_modules(self) -> list[nn.Module]:
        return list(self.vm.encoder.layer)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        return self.vm.embeddings(x)

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        layer = self.vm.encoder.layer[i]
        at = layer.attention
        return prenorm_block(
            h,
            ln1=layer.norm1,
            qkv=lambda u: (at.q_proj(u), at.k_proj(u), at.v_proj(u)),
            out_proj=at.o_proj,
            ln2=layer.norm2,
            mlp=layer.mlp,
            num_heads=self.num_heads,
            mask=None,
            need_attn=need_attn,
            ls1=layer.layer_scale1,
            ls2=layer.layer_scale2,
            rows=rows,
        )

    def pooled_positions(self, x: Any) -> Tensor | None:
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def head(self, h: Tensor, x: Any) -> Tensor:
        return self.vm.layernorm(h[:, 0])

    def project_tokens(self, h: Tensor, x: Any) -> Tensor:
        return self.vm.layernorm(h)

    def head_ops(self, x: Any) -> list[Any]:
        from .head_ops import Norm, Select

        return [Select(0), Norm(self.vm.layernorm)]


class Tipsv2TextTower(Tower):
    """Bidirectional text tower, padding masked, masked mean of the final layer norm."""

    modality = "text"
    kind = "text"

    def __init__(self, text_model: Any):
        super().__init__()
        self.tm: Any = text_model  # a transformers Tipsv2TextModel
        self.num_heads = int(self.tm.config.num_attention_heads)
        self.eps = float(self.tm.config.pooling_epsilon)

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
        return self.tm.embeddings(inputs_embeds=inputs_embeds)  # scaled by sqrt(width) there, as ids are

    def block(self, i: int, h: Tensor, x: TextBatch, need_attn: bool = False, rows: Tensor | None = None):
        mask = padding_mask(x.attention_mask, h.dtype)
        return clip_block(self.tm.encoder.layers[i], h, mask, need_attn, self.num_heads, rows)

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        h = self.tm.final_layer_norm(h)
        m = x.attention_mask.to(h.dtype)[..., None]  # (B, T, 1)
        return (h * m).sum(1) / (m.sum(1) + self.eps)


class Tipsv2DualEncoder(HFAdapter):
    """``Tipsv2Model`` behind the DualEncoder protocol (pass its SentencePiece tokenizer)."""

    def __init__(self, model: Any, tokenizer: Any = None, processor: Any = None, name: str = "hf"):
        super().__init__(model, name)
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        self.image: Tower = Tipsv2VisionTower(model.vision_model)
        self.text: Tower = Tipsv2TextTower(model.text_model)
        self.input_size = (int(vcfg.image_size), int(vcfg.image_size))
        self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # TIPSv2's processor: [0, 1] pixels
        self._use_processor(processor)
        table = model.text_model.embeddings.token_embedding
        ctx = int(tcfg.max_position_embeddings)
        self._tok = resolve_tokenizer(tokenizer, processor, table, "Tipsv2Model", ctx, "mean")

    @property
    def logit_scale(self) -> Tensor:
        return 1.0 / self.model.temperature  # the model's logits: cosine / temperature


def _tipsv2(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> Tipsv2DualEncoder:
    return Tipsv2DualEncoder(model, tokenizer, processor, name)


register_hf(HFEntry(("tipsv2",), "Tipsv2Model", _tipsv2, "hf-tipsv2"))


def tiny_tipsv2(seed: int = 0) -> nn.Module:
    """A random-weight Tipsv2Model: 32-px images, one register token, the tiny SentencePiece vocabulary."""
    from transformers import Tipsv2Config, Tipsv2Model

    torch.manual_seed(seed)
    vision = tiny_transformer(2, image_size=32, patch_size=8)
    del vision["intermediate_size"]  # TIPSv2's MLP width comes from mlp_ratio
    cfg = Tipsv2Config(
        text_config=tiny_transformer(2, vocab_size=len(sentencepiece_tokenizer()), max_position_embeddings=32),
        vision_config=dict(vision, mlp_ratio=2, num_register_tokens=1),
    )
    return Tipsv2Model(cfg).eval()


register_family(
    Family(
        key="hf-tipsv2",
        name="TIPSv2 (transformers Tipsv2Model)",
        library="transformers",
        examples="hf:google/tipsv2-b14, hf:google/tipsv2-l14",
        tiny=tiny_tipsv2,
        tokenizer=sentencepiece_tokenizer,
        notes="class token + register tokens, embedding = the class token's final layer norm (no projection); "
        "bidirectional text tower, masked mean pooling (pass its SentencePiece tokenizer): grad_eclip refused "
        "on the text side; logit targets use 1 / temperature; M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
    )
)
