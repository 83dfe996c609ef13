"""Adapters for CLIPs with a BERT-style text tower: transformers ``AltCLIPModel`` (XLM-R text,
pooled at <s> through ``pre_LN`` and ``transformation``) and ``ChineseCLIPModel`` (Chinese
RoBERTa-wwm in BERT layout, pooled at [CLS]). Both image towers are CLIP's class-token ViT.
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


class BertCLIPDualEncoder(HFAdapter):
    """AltCLIPModel or ChineseCLIPModel behind the DualEncoder protocol.

    The tokenizer must be passed (or found in the model's directory): AltCLIP uses XLM-R's
    SentencePiece vocabulary, Chinese-CLIP a Chinese WordPiece one. Only a text table of
    bert-base-uncased's size (30522 rows) falls back to the uncased WordPiece vocabulary that ships
    with the offline model.
    """

    def __init__(self, model: Any, tokenizer: Any = None, processor: Any = None, name: str = "hf"):
        super().__init__(model, name)
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        self.image = ClipViTTower(model.vision_model, model.visual_projection)
        tm = model.text_model
        if hasattr(tm, "roberta"):  # AltCLIP: XLM-R, then pre_LN and transformation, then projection
            body = tm.roberta
            head = lambda h0: model.text_projection(tm.transformation(tm.pre_LN(h0)))
        else:  # Chinese-CLIP
            body, head = tm, model.text_projection
        self.text = BertTextTower(body, head)
        self.input_size = (int(vcfg.image_size), int(vcfg.image_size))
        self._use_processor(processor)
        table = body.embeddings.word_embeddings
        # RoBERTa-style position tables hold padding_idx + 1 extra rows
        ctx = int(tcfg.max_position_embeddings) - (int(tcfg.pad_token_id) + 1 if hasattr(tm, "roberta") else 0)
        self._tok = resolve_tokenizer(
            tokenizer, processor, table, type(model).__name__, ctx, "first", fallback=bert_fallback(table, ctx)
        )


def _adapter(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> BertCLIPDualEncoder:
    return BertCLIPDualEncoder(model, tokenizer, processor, name)


register_hf(HFEntry(("altclip",), "AltCLIPModel", _adapter, "hf-altclip"))
register_hf(HFEntry(("chinese_clip",), "ChineseCLIPModel", _adapter, "hf-chinese-clip"))

_TEXT = tiny_transformer(2, vocab_size=30522, max_position_embeddings=66, initializer_range=0.2)
_VISION = tiny_transformer(2, image_size=32, patch_size=8)


def tiny_altclip(seed: int = 0) -> nn.Module:
    """A random-weight AltCLIPModel (bert-base-uncased's vocabulary size, padding id 0, so that the
    offline WordPiece vocabulary serves as its tokenizer in tests). Text weights are drawn with
    std 0.2: at BERT's 0.02 a 2-layer tiny tower maps every text to nearly the same vector."""
    from transformers import AltCLIPConfig, AltCLIPModel

    torch.manual_seed(seed)
    cfg = AltCLIPConfig(
        text_config=dict(_TEXT, pad_token_id=0, project_dim=32), vision_config=_VISION, projection_dim=16
    )
    return AltCLIPModel(cfg).eval()


def tiny_chinese_clip(seed: int = 0) -> nn.Module:
    """A random-weight ChineseCLIPModel at a tiny width. Text weights are drawn with
    std 0.2: at BERT's 0.02 a 2-layer tiny tower maps every text to nearly the same vector."""
    from transformers import ChineseCLIPConfig, ChineseCLIPModel

    torch.manual_seed(seed)
    cfg = ChineseCLIPConfig(
        text_config=dict(_TEXT, max_position_embeddings=64), vision_config=_VISION, projection_dim=16
    )
    return ChineseCLIPModel(cfg).eval()


register_family(
    Family(
        key="hf-altclip",
        name="AltCLIP (transformers AltCLIPModel)",
        library="transformers",
        examples="hf:BAAI/AltCLIP, hf:BAAI/AltCLIP-m9",
        tiny=tiny_altclip,
        notes="CLIP ViT; XLM-R text tower pooled at <s> (pass its tokenizer); M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
    )
)
register_family(
    Family(
        key="hf-chinese-clip",
        name="Chinese-CLIP (transformers ChineseCLIPModel)",
        library="transformers",
        examples="hf:OFA-Sys/chinese-clip-vit-base-patch16",
        tiny=tiny_chinese_clip,
        notes="CLIP ViT; Chinese BERT text tower pooled at [CLS] (pass its tokenizer); M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
    )
)
