"""Adapter for transformers ``AlignModel``: EfficientNet image tower (no attention), BERT text
tower pooled at [CLS].

The image embedding is the global average of the last EfficientNet block's feature map (ALIGN has
no image projection); the text embedding is ``text_projection(h[:, 0])``. The blocks are the
EfficientNet MBConv blocks; M2IB bottlenecks the block at the shared relative depth (block 9 of
12), Grad-CAM reads the last block (the last convolutional stage, as in the Grad-CAM paper).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Tower
from .families import Family, register_family
from .hf_common import (
    BertTextTower,
    HFAdapter,
    HFEntry,
    bert_fallback,
    register_hf,
    resolve_tokenizer,
    tiny_transformer,
)


class AlignVisionTower(Tower):
    """EfficientNet image tower of ALIGN: stem conv, MBConv blocks, global pooling."""

    modality = "image"
    kind = "cnn"
    has_attention = False
    num_prefix_tokens = 0

    def __init__(self, vision_model: Any):
        super().__init__()
        self.vm: Any = vision_model  # a transformers vision model

    @property
    def num_blocks(self) -> int:
        return len(self.vm.encoder.blocks)

    def block_modules(self) -> list[nn.Module]:
        return list(self.vm.encoder.blocks)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        return self.vm.embeddings(x.to(self.vm.embeddings.convolution.weight.dtype))

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        return self.vm.encoder.blocks[i](h), None

    def head(self, h: Tensor, x: Any) -> Tensor:
        p = self.vm.pooler(h)  # (B, C, 1, 1)
        return p.reshape(p.shape[:2])


class AlignDualEncoder(HFAdapter):
    """A transformers AlignModel behind the DualEncoder protocol.

    Without a tokenizer, the uncased BERT WordPiece vocabulary of the offline model's MiniLM package
    is used when the text embedding table has its size (30522, bert-base-uncased, as ALIGN).
    """

    def __init__(self, model: Any, tokenizer: Any = None, processor: Any = None, name: str = "hf"):
        super().__init__(model, name)
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        self.image = AlignVisionTower(model.vision_model)
        self.text = BertTextTower(model.text_model, model.text_projection)
        self.input_size = (int(vcfg.image_size), int(vcfg.image_size))
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # ALIGN's processor maps pixels to [-1, 1]
        self._use_processor(processor)
        ip = getattr(processor, "image_processor", None)
        crop = getattr(ip, "crop_size", None) if getattr(ip, "do_center_crop", False) else None
        if crop is not None:  # align-base is used at its processor's 289 px crop, not the config's 600
            self.input_size = (int(crop["height"]), int(crop["width"]))
        table = model.text_model.embeddings.word_embeddings
        ctx = int(tcfg.max_position_embeddings)
        self._tok = resolve_tokenizer(
            tokenizer, processor, table, "AlignModel", ctx, "first", fallback=bert_fallback(table, ctx)
        )

    @property
    def logit_scale(self) -> Tensor:
        return 1.0 / self.model.temperature  # ALIGN divides by a learned temperature


def _align(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> AlignDualEncoder:
    return AlignDualEncoder(model, tokenizer, processor, name)


register_hf(HFEntry(("align",), "AlignModel", _align, "hf-align"))


def tiny_align(seed: int = 0) -> nn.Module:
    """A random-weight AlignModel: a 4-block EfficientNet at 32 px and a 2-layer BERT with the
    bert-base-uncased vocabulary size. Text weights are drawn with
    std 0.2: at BERT's 0.02 a 2-layer tiny tower maps every text to nearly the same vector."""
    from transformers import AlignConfig, AlignModel

    torch.manual_seed(seed)
    cfg = AlignConfig(
        text_config=tiny_transformer(2, vocab_size=30522, max_position_embeddings=64, initializer_range=0.2),
        vision_config=dict(
            image_size=32,
            width_coefficient=0.25,
            depth_coefficient=0.25,
            hidden_dim=64,
            in_channels=[32, 16, 24, 40],
            out_channels=[16, 24, 40, 80],
            kernel_sizes=[3, 3, 5, 3],
            strides=[1, 2, 2, 2],
            num_block_repeats=[1, 2, 2, 3],
            expand_ratios=[1, 6, 6, 6],
            depthwise_padding=[],
        ),
        projection_dim=24,
    )
    return AlignModel(cfg).eval()


register_family(
    Family(
        key="hf-align",
        name="ALIGN (transformers AlignModel)",
        library="transformers",
        examples="hf:kakaobrain/align-base",
        tiny=tiny_align,
        image_tower="cnn",
        notes="EfficientNet image tower, blocks = the MBConv blocks (no attention: attention methods apply to "
        "the text side only); M2IB at block round(10 n / 12) - 1 of n, Grad-CAM at the last block; "
        "BERT text tower pooled at [CLS]",
    )
)
