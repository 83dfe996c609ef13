"""Adapter for transformers ``Aimv2Model`` (AIMv2's LiT-tuned dual encoder, Fini et al. 2024).

Image tower: a ViT without a class token (RMSNorm everywhere, SwiGLU MLPs), then the final
RMSNorm, an attention-pooling head (one learned query over every patch) and ``visual_projection``.
Text tower: CLIP's layout with RMSNorm and SwiGLU, causal, pooled at the first ``eos_token_id``,
then ``text_projection``. transformers' text model applies its causal mask only when it is given an
``attention_mask`` (as its processor gives); vlexplain's text tower is always causal, which is
that path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelLoadError
from .base import TextBatch, Tower
from .blocks import causal_mask, prenorm_block
from .families import Family, register_family
from .hf_clip import check_eos
from .hf_common import HFAdapter, HFEntry, register_hf, resolve_tokenizer, tiny_transformer
from .text import clip_bpe_tokenizer


def aim_block(layer: Any, h: Tensor, mask: Tensor | None, need_attn: bool, num_heads: int, rows: Tensor | None):
    """An ``Aimv2EncoderLayer``: ``x + attention(rms_norm1(x))``, ``x + ffn(rms_norm2(x))``."""
    at = layer.attention
    return prenorm_block(
        h,
        ln1=layer.rms_norm1,
        qkv=lambda u: (at.q_proj(u), at.k_proj(u), at.v_proj(u)),
        out_proj=at.out_proj,
        ln2=layer.rms_norm2,
        mlp=layer.ffn,
        num_heads=num_heads,
        mask=mask,
        need_attn=need_attn,
        rows=rows,
    )


class Aimv2VisionTower(Tower):
    """The patch-token ViT of AIMv2 with its attention-pooling head."""

    modality = "image"
    kind = "vit"
    num_prefix_tokens = 0

    def __init__(self, vision_model: Any, projection: nn.Module):
        super().__init__()
        self.vm: Any = vision_model  # a transformers Aimv2VisionModel
        self.projection = projection
        cfg = self.vm.config
        self.num_heads = int(cfg.num_attention_heads)
        g = int(cfg.image_size) // int(cfg.patch_size)
        self.grid = (g, g)

    @property
    def num_blocks(self) -> int:
        return len(self.vm.encoder.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.vm.encoder.layers)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        return self.vm.embeddings(x.to(self.vm.embeddings.patch_embed.weight.dtype))

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        return aim_block(self.vm.encoder.layers[i], h, None, need_attn, self.num_heads, rows)

    def head(self, h: Tensor, x: Any) -> Tensor:
        return self.projection(self.vm.head(self.vm.rms_norm(h)))

    def head_ops(self, x: Any) -> list[Any]:
        from .head_ops import Affine, AttentionPool, Mean, Norm

        pool = self.vm.head
        return [
            Norm(self.vm.rms_norm),
            AttentionPool(lambda u: _pool_weights(pool, u), pool.v_proj, pool.output_proj),
            Mean(0),
            Affine(self.projection),
        ]


def _pool_weights(pool: Any, u: Tensor) -> Tensor:
    """(B, heads, 1, T): the attention of ``Aimv2AttentionPoolingHead``'s learned query (its
    ``cls_token``, not projected) over the keys ``k_proj(u)``."""
    B, T, D = u.shape
    H = int(pool.num_heads)
    q = pool.cls_token.reshape(1, H, 1, D // H)
    k = pool.k_proj(u).reshape(B, T, H, D // H).transpose(1, 2)
    return ((q @ k.transpose(-1, -2)) * (D // H) ** -0.5).softmax(-1)


class Aimv2TextTower(Tower):
    """AIMv2's causal text tower, pooled at the first end-of-text token."""

    modality = "text"
    kind = "text"

    def __init__(self, text_model: Any, projection: nn.Module):
        super().__init__()
        self.tm: Any = text_model  # a transformers Aimv2TextModel
        self.projection = projection
        self.num_heads = int(self.tm.config.num_attention_heads)

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

    def block(self, i: int, h: Tensor, x: TextBatch, need_attn: bool = False, rows: Tensor | None = None):
        mask = causal_mask(h.shape[1], h.device, h.dtype)
        return aim_block(self.tm.encoder.layers[i], h, mask, need_attn, self.num_heads, rows)

    def pooled_positions(self, x: TextBatch) -> Tensor | None:
        return x.pool_index

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        h = self.tm.rms_norm(h)
        return self.projection(h[torch.arange(h.shape[0], device=h.device), x.pool_index])

    def project_tokens(self, h: Tensor, x: TextBatch) -> Tensor:
        return self.projection(self.tm.rms_norm(h))


class Aimv2DualEncoder(HFAdapter):
    """``Aimv2Model`` behind the DualEncoder protocol (CLIP's BPE is its tokenizer)."""

    def __init__(self, model: Any, tokenizer: Any = None, processor: Any = None, name: str = "hf"):
        super().__init__(model, name)
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        if not getattr(model.vision_model, "use_head", False):
            raise ModelLoadError(
                "this Aimv2Model's vision config has use_head=False: its own forward has no image embedding"
            )
        if getattr(vcfg, "is_native", False):
            raise ModelLoadError(
                "native-resolution AIMv2 vision models (is_native=True) are image encoders without a text tower; "
                "vlexplain explains the LiT dual encoders (aimv2-*-lit)"
            )
        self.image: Tower = Aimv2VisionTower(model.vision_model, model.visual_projection)
        self.text: Tower = Aimv2TextTower(model.text_model, model.text_projection)
        self.input_size = (int(vcfg.image_size), int(vcfg.image_size))
        self._use_processor(processor)
        ctx, table = int(tcfg.max_position_embeddings), model.text_model.embeddings.token_embedding
        clip = lambda: clip_bpe_tokenizer(ctx, "eos") if table.num_embeddings == 49408 else None
        tok = resolve_tokenizer(tokenizer, processor, table, "Aimv2Model", ctx, "eos", fallback=clip)
        self._tok = check_eos(tok, model.text_model, "eos")

    @property
    def logit_scale(self) -> Tensor:
        # the model's own: exp(logit_scale) clamped to max_logit_scale
        s = self.model.logit_scale
        return s.clamp(0, self.model.max_log_logit_scale).exp()


def _aimv2(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> Aimv2DualEncoder:
    return Aimv2DualEncoder(model, tokenizer, processor, name)


register_hf(HFEntry(("aimv2",), "Aimv2Model", _aimv2, "hf-aimv2"))


def tiny_aimv2(seed: int = 0) -> nn.Module:
    """A random-weight Aimv2Model (CLIP's vocabulary, 32-px images, 2 layers per tower)."""
    from transformers import Aimv2Config, Aimv2Model

    torch.manual_seed(seed)
    cfg = Aimv2Config(
        text_config=tiny_transformer(2, vocab_size=49408, max_position_embeddings=16),
        vision_config=tiny_transformer(2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    return Aimv2Model(cfg).eval()


register_family(
    Family(
        key="hf-aimv2",
        name="AIMv2 LiT (transformers Aimv2Model)",
        library="transformers",
        examples="hf:apple/aimv2-large-patch14-224-lit",
        tiny=tiny_aimv2,
        notes="no class token, attention-pooling head: attention maps are the mean over query rows, "
        "grad_eclip / mask_clip / clip_surgery refused on the image side; causal text tower pooled at the "
        "first end-of-text token (the model's path with an attention mask); M2IB and Grad-CAM at block "
        "round(10 n / 12) - 1 of n",
    )
)
