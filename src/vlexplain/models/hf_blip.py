"""Adapter for transformers ``BlipForImageTextRetrieval``: its image-text contrastive (ITC) path.

The ITC score is the cosine of ``vision_proj(post_layernorm(h)[:, 0])`` (a class-token ViT) and
``text_proj(h_text[:, 0])`` (BERT run without cross-attention, pooled at [CLS]), which is what
``model(..., use_itm_head=False)`` returns. The image-text matching head (ITM, cross-attention) is
not a dual encoder and is not explained. The transformers model carries no ITC temperature, so
the "logit" and "softmax" targets use CLIP's scale of 100.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .families import Family, register_family
from .hf_common import (
    BertTextTower,
    ClipViTTower,
    HFAdapter,
    HFEntry,
    bert_fallback,
    register_hf,
    resolve_tokenizer,
    tiny_transformer,
)


class BlipITCDualEncoder(HFAdapter):
    """BlipForImageTextRetrieval's contrastive path behind the DualEncoder protocol.

    Pass BLIP's tokenizer (bert-base-uncased plus [DEC] / [ENC]; texts start with [CLS]).
    """

    def __init__(self, model: Any, tokenizer: Any = None, processor: Any = None, name: str = "hf"):
        super().__init__(model, name)
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        self.image = ClipViTTower(model.vision_model, model.vision_proj)
        self.text = BertTextTower(model.text_encoder, model.text_proj)
        self.input_size = (int(vcfg.image_size), int(vcfg.image_size))
        self._use_processor(processor)
        table = model.text_encoder.embeddings.word_embeddings
        ctx = int(tcfg.max_position_embeddings)
        self._tok = resolve_tokenizer(
            tokenizer, processor, table, "BlipForImageTextRetrieval", ctx, "first", fallback=bert_fallback(table, ctx)
        )


def _blip(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> BlipITCDualEncoder:
    return BlipITCDualEncoder(model, tokenizer, processor, name)


register_hf(
    HFEntry(("blip",), "BlipForImageTextRetrieval", _blip, "hf-blip", architectures=("BlipForImageTextRetrieval",))
)


def tiny_blip(seed: int = 0) -> nn.Module:
    """A random-weight BlipForImageTextRetrieval at a tiny width (30522-token vocabulary). Text weights are drawn with
    std 0.2: at BERT's 0.02 a 2-layer tiny tower maps every text to nearly the same vector."""
    from transformers import BlipConfig, BlipForImageTextRetrieval

    torch.manual_seed(seed)
    cfg = BlipConfig(
        text_config=tiny_transformer(
            2,
            vocab_size=30522,
            max_position_embeddings=64,
            encoder_hidden_size=32,
            bos_token_id=101,
            initializer_range=0.2,
        ),
        vision_config=tiny_transformer(2, image_size=32, patch_size=8),
        image_text_hidden_size=16,
    )
    return BlipForImageTextRetrieval(cfg).eval()


register_family(
    Family(
        key="hf-blip",
        name="BLIP retrieval, contrastive path (transformers BlipForImageTextRetrieval)",
        library="transformers",
        examples="hf:Salesforce/blip-itm-base-coco",
        tiny=tiny_blip,
        notes="class-token ViT; BERT text tower pooled at [CLS]; the ITC score (use_itm_head=False), not the "
        "ITM head; no ITC temperature in the model: logit targets use a scale of 100; M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
    )
)
