"""Adapter for transformers ``VisionTextDualEncoderModel``: a CLIP built from any pretrained vision
and text encoder (how domain CLIPs are assembled and fine-tuned), each encoder's ``pooler_output``
through a linear projection.

Vision encoders: ``ViTModel`` and ``DeiTModel`` (pre-norm ViT, class token; the embedding is
``visual_projection(tanh(dense(layernorm(h)[:, 0])))``, their pooler), and ``CLIPVisionModel``
(``post_layernorm(h[:, 0])``). Text encoders: ``BertModel``, ``RobertaModel``, ``XLMRobertaModel``
(pooled at [CLS] / <s> through the BERT pooler) and ``CLIPTextModel`` (pooled as CLIPModel's). Any
other encoder is refused at load in one line naming these.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelLoadError
from .base import Tower
from .blocks import prenorm_block
from .families import Family, register_family
from .hf_clip import HFTextTower, causal_text_pool, check_eos
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
from .text import clip_bpe_tokenizer

VISION = ("ViTModel", "DeiTModel", "CLIPVisionModel")
TEXT = ("BertModel", "RobertaModel", "XLMRobertaModel", "CLIPTextModel")


class ViTPoolerTower(Tower):
    """transformers ``ViTModel`` / ``DeiTModel``: pre-norm blocks, class token (and DeiT's
    distillation token) first; head = ``projection(pooler(layernorm(h)))``, the pooler reading the
    class token through a dense layer and its activation."""

    modality = "image"
    kind = "vit"

    def __init__(self, vit: Any, projection: nn.Module):
        super().__init__()
        self.vit: Any = vit  # a transformers ViTModel or DeiTModel
        self.projection = projection
        cfg = vit.config
        self.num_heads = int(cfg.num_attention_heads)
        self.num_prefix_tokens = 1 + (getattr(vit.embeddings, "distillation_token", None) is not None)
        g = int(cfg.image_size) // int(cfg.patch_size)
        self.grid = (g, g)

    @property
    def num_blocks(self) -> int:
        return len(self.vit.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.vit.layers)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        emb = self.vit.embeddings
        return emb(x.to(emb.patch_embeddings.projection.weight.dtype))

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        layer = self.vit.layers[i]
        at = layer.attention
        return prenorm_block(
            h,
            ln1=layer.layernorm_before,
            qkv=lambda u: (at.q_proj(u), at.k_proj(u), at.v_proj(u)),
            out_proj=at.o_proj,
            ln2=layer.layernorm_after,
            mlp=layer.mlp,
            num_heads=self.num_heads,
            mask=None,
            need_attn=need_attn,
            rows=rows,
        )

    def pooled_positions(self, x: Any) -> Tensor | None:
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def _pool(self, h: Tensor) -> Tensor:
        p = self.vit.pooler
        return self.projection(p.activation(p.dense(self.vit.layernorm(h))))

    def head(self, h: Tensor, x: Any) -> Tensor:
        return self._pool(h[:, 0])

    def project_tokens(self, h: Tensor, x: Any) -> Tensor:
        return self._pool(h)

    def head_ops(self, x: Any) -> list[Any]:
        from .head_ops import Affine, Gate, Norm, Select

        p = self.vit.pooler
        return [Select(0), Norm(self.vit.layernorm), Affine(p.dense), Gate(p.activation), Affine(self.projection)]


def _vision_tower(model: Any) -> Tower:
    vm, name = model.vision_model, type(model.vision_model).__name__
    if name == "CLIPVisionModel":
        return ClipViTTower(getattr(vm, "vision_model", vm), model.visual_projection)  # (transformers 4 nests it)
    if name in ("ViTModel", "DeiTModel") and hasattr(vm, "layers") and hasattr(vm.layers[0].attention, "q_proj"):
        if vm.pooler is None:
            raise ModelLoadError(
                f"this VisionTextDualEncoderModel's {name} has no pooler: its own forward has no image embedding"
            )
        return ViTPoolerTower(vm, model.visual_projection)
    raise ModelLoadError(
        f"cannot explain a VisionTextDualEncoderModel with a {name} vision encoder; vlexplain explains "
        f"{', '.join(VISION)} there (with transformers 5's ViT layout)"
    )


class VisionTextDualEncoder(HFAdapter):
    """``VisionTextDualEncoderModel`` behind the DualEncoder protocol.

    Pass the text encoder's tokenizer (or load a directory that holds it); without one, an uncased
    BERT of bert-base-uncased's vocabulary size uses the WordPiece vocabulary that ships with the
    offline model and a CLIP text encoder CLIP's BPE.
    """

    def __init__(self, model: Any, tokenizer: Any = None, processor: Any = None, name: str = "hf"):
        super().__init__(model, name)
        tm, tname = model.text_model, type(model.text_model).__name__
        if tname not in TEXT:
            raise ModelLoadError(
                f"cannot explain a VisionTextDualEncoderModel with a {tname} text encoder; vlexplain explains "
                f"{', '.join(TEXT)} there"
            )
        self.image: Tower = _vision_tower(model)
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        self.input_size = (int(vcfg.image_size), int(vcfg.image_size))
        self._use_processor(processor)
        what = f"VisionTextDualEncoderModel ({type(model.vision_model).__name__} + {tname})"
        if tname == "CLIPTextModel":
            pool = causal_text_pool(tm)
            self.text: Tower = HFTextTower(tm, model.text_projection, siglip=False)
            ctx, table = int(tcfg.max_position_embeddings), tm.embeddings.token_embedding
            clip = lambda: clip_bpe_tokenizer(ctx, pool) if table.num_embeddings == 49408 else None
            tok = resolve_tokenizer(tokenizer, processor, table, what, ctx, pool, fallback=clip)
            self._tok = check_eos(tok, tm, pool)
            return
        if tm.pooler is None:
            raise ModelLoadError(f"this {what}'s text encoder has no pooler: its own forward has no text embedding")
        p = tm.pooler
        self.text = BertTextTower(tm, lambda h0: model.text_projection(p.activation(p.dense(h0))))
        roberta = tname != "BertModel"  # RoBERTa position tables hold padding_idx + 1 extra rows
        ctx = int(tcfg.max_position_embeddings) - (int(tcfg.pad_token_id) + 1 if roberta else 0)
        table = tm.embeddings.word_embeddings
        fallback = None if roberta else bert_fallback(table, ctx)
        self._tok = resolve_tokenizer(tokenizer, processor, table, what, ctx, "first", fallback=fallback)


def _adapter(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> VisionTextDualEncoder:
    return VisionTextDualEncoder(model, tokenizer, processor, name)


register_hf(HFEntry(("vision-text-dual-encoder",), "VisionTextDualEncoderModel", _adapter, "hf-vision-text"))


def tiny_vit_bert(seed: int = 0) -> nn.Module:
    """A random-weight VisionTextDualEncoderModel of a ViT and an uncased BERT (bert-base-uncased's
    vocabulary size, so the offline WordPiece vocabulary is its tokenizer). Text weights are drawn with
    std 0.2: at BERT's 0.02 a 2-layer tiny tower maps every text to nearly the same vector."""
    from transformers import BertConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel, ViTConfig

    torch.manual_seed(seed)
    cfg = VisionTextDualEncoderConfig.from_vision_text_configs(
        ViTConfig(**tiny_transformer(2, image_size=32, patch_size=8)),
        BertConfig(**tiny_transformer(2, vocab_size=30522, max_position_embeddings=64, initializer_range=0.2)),
        projection_dim=16,
    )
    return VisionTextDualEncoderModel(cfg).eval()


def tiny_clip_roberta(vocab_size: int, seed: int = 0) -> nn.Module:
    """A random-weight VisionTextDualEncoderModel of a CLIP vision tower and a RoBERTa text tower
    (``<s>=0 <pad>=1 </s>=2``) with ``vocab_size`` tokens."""
    from transformers import CLIPVisionConfig, RobertaConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    torch.manual_seed(seed)
    text = tiny_transformer(2, vocab_size=vocab_size, max_position_embeddings=66, initializer_range=0.2)
    cfg = VisionTextDualEncoderConfig.from_vision_text_configs(
        CLIPVisionConfig(**tiny_transformer(2, image_size=32, patch_size=8)),
        RobertaConfig(**text, pad_token_id=1, bos_token_id=0, eos_token_id=2),
        projection_dim=16,
    )
    return VisionTextDualEncoderModel(cfg).eval()


register_family(
    Family(
        key="hf-vision-text",
        name="Vision-text dual encoder (transformers VisionTextDualEncoderModel)",
        library="transformers",
        examples="a ViTModel / DeiTModel / CLIPVisionModel + BertModel / RobertaModel / XLMRobertaModel / "
        "CLIPTextModel you assembled and fine-tuned",
        tiny=tiny_vit_bert,
        notes="each encoder's pooler_output through its projection: ViT / DeiT class token through their "
        "pooler (tanh), CLIP's post-norm class token; BERT / RoBERTa [CLS] through their pooler, CLIP text as "
        "CLIPModel's; other encoders refused at load; M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
    )
)
