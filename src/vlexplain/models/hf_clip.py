"""Adapters for transformers ``CLIPModel`` and ``SiglipModel``."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelLoadError
from .base import TextBatch, Tower
from .blocks import causal_mask
from .families import Family, register_family
from .hf_common import (
    ClipViTTower,
    HFAdapter,
    HFEntry,
    clip_block,
    register_hf,
    resolve_tokenizer,
    tiny_transformer,
)
from .text import PoolMode, TokenizerSpec, clip_bpe_tokenizer


class SiglipVisionTower(Tower):
    """SigLIP ViT: no class token, attention-pooling (MAP) head after the final norm."""

    modality = "image"
    kind = "vit"
    num_prefix_tokens = 0

    def __init__(self, vision_model: Any):
        super().__init__()
        self.vm: Any = vision_model  # a transformers vision model
        cfg = self.vm.config
        self.num_heads = cfg.num_attention_heads
        g = cfg.image_size // cfg.patch_size
        self.grid = (g, g)

    @property
    def num_blocks(self) -> int:
        return len(self.vm.encoder.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.vm.encoder.layers)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        return self.vm.embeddings(x.to(self.vm.embeddings.patch_embedding.weight.dtype))

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        return clip_block(self.vm.encoder.layers[i], h, None, need_attn, self.num_heads, rows)

    def head(self, h: Tensor, x: Any) -> Tensor:
        return self.vm.head(self.vm.post_layernorm(h))

    def head_ops(self, x: Any) -> list[Any]:
        return siglip_head_ops(self.vm, None)


def siglip_head_ops(vm: Any, key_padding_mask: Tensor | None) -> list[Any]:
    """The final norm and the attention-pooling head of a transformers SigLIP / SigLIP 2 vision model."""
    from .head_ops import MHAPool, Norm, ResidualMLP, Select

    head = vm.head
    return [
        Norm(vm.post_layernorm),
        MHAPool(head.attention, lambda b: head.probe.expand(b, -1, -1), key_padding_mask),
        ResidualMLP(head.layernorm, head.mlp),
        Select(0),
    ]


class HFTextTower(Tower):
    """Causal CLIP text tower (pooled at EOS) or bidirectional SigLIP text tower (last token)."""

    modality = "text"
    kind = "text"

    def __init__(self, text_model: Any, projection: nn.Module | None, siglip: bool):
        super().__init__()
        self.tm: Any = text_model  # a transformers text model
        self.projection = projection
        self.siglip = siglip
        self.num_heads = self.tm.config.num_attention_heads

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
        return clip_block(self.tm.encoder.layers[i], h, self._mask(h), need_attn, self.num_heads, rows)

    def pooled_positions(self, x: TextBatch) -> Tensor | None:
        if self.siglip:
            return torch.full((len(x),), x.ids.shape[1] - 1, dtype=torch.long, device=x.ids.device)
        return x.pool_index

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        h = self.tm.final_layer_norm(h)
        if self.siglip:
            return self.tm.head(h[:, -1])
        pooled = h[torch.arange(h.shape[0], device=h.device), x.pool_index]
        assert self.projection is not None, "CLIP text towers have a projection"
        return self.projection(pooled)

    def project_tokens(self, h: Tensor, x: TextBatch) -> Tensor:
        h = self.tm.final_layer_norm(h)
        if self.siglip:
            return self.tm.head(h)
        assert self.projection is not None, "CLIP text towers have a projection"
        return self.projection(h.flatten(0, 1)).unflatten(0, h.shape[:2])  # (GroupViT's has a BatchNorm1d)


def causal_text_pool(text_model: Any) -> PoolMode:
    """Where a transformers CLIP-style causal text model pools, by the rule of its own forward.

    CLIP, CLIPSeg and GroupViT text models whose config keeps the legacy ``eos_token_id = 2``
    (configs older than transformers PR #24773, and MetaCLIP 2-style checkpoints with an XLM
    tokenizer, ``<s>=0 <pad>=1 </s>=2``) pool at the largest id of the text (``argmax``), which with
    such a tokenizer is a word, not ``</s>``; with any other ``eos_token_id`` they pool at its first
    occurrence. OWL-ViT and OWLv2 always pool at the largest id; MetaCLIP 2 and AIMv2 always at
    the first ``eos_token_id``.
    """
    name = type(text_model).__name__
    if name.startswith(("OwlViT", "Owlv2")):
        return "argmax"
    legacy = name.startswith(("CLIPText", "CLIPSegText", "GroupViTText"))
    return "argmax" if legacy and text_model.config.eos_token_id == 2 else "eos"


def check_eos(tok: TokenizerSpec, text_model: Any, pool: PoolMode) -> TokenizerSpec:
    """The tokenizer with the text model's pooling rule; refused when the model pools at its
    ``eos_token_id`` and the tokenizer ends texts with another id."""
    eos = text_model.config.eos_token_id
    if pool == "eos" and tok.eos_id != eos:
        raise ModelLoadError(
            f"the tokenizer's end-of-text id ({tok.eos_id}) differs from the model config's "
            f"eos_token_id ({eos}): the text tower would pool at the wrong position"
        )
    return tok if tok.pool == pool else dataclasses.replace(tok, pool=pool)


class HFDualEncoder(HFAdapter):
    """A transformers CLIPModel or SiglipModel behind the DualEncoder protocol.

    Without a tokenizer, models whose text embedding table has CLIP's 49408 rows use the CLIP BPE
    vocabulary that ships with open_clip; any other vocabulary must be passed. The text tower
    pools where the model's own forward pools (``causal_text_pool``).
    """

    #: the CLIP BPE vocabulary that ships with open_clip is the fallback for 49408-row tables
    clip_bpe_fallback = True

    def __init__(self, model: Any, tokenizer: Any = None, processor: Any = None, name: str = "hf"):
        super().__init__(model, name)
        self.siglip = "siglip" in type(model).__name__.lower()
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        if self.siglip:
            self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        self.image: Tower = self.image_tower(model)
        self.text = HFTextTower(model.text_model, getattr(model, "text_projection", None), self.siglip)
        self.input_size = (vcfg.image_size, vcfg.image_size)
        self._use_processor(processor)
        ctx = tcfg.max_position_embeddings
        pool: PoolMode = "last" if self.siglip else causal_text_pool(model.text_model)
        table = model.text_model.embeddings.token_embedding

        def clip_bpe() -> TokenizerSpec | None:
            if table.num_embeddings != 49408 or not self.clip_bpe_fallback:
                return None
            return clip_bpe_tokenizer(ctx, pool, pad_to_context=self.siglip)

        self._tok = resolve_tokenizer(
            tokenizer, processor, table, type(model).__name__, ctx, pool, pad_to_context=self.siglip, fallback=clip_bpe
        )
        if not self.siglip:
            self._tok = check_eos(self._tok, model.text_model, pool)

    def image_tower(self, model: Any) -> Tower:
        """The image tower (subclasses of other image architectures override this)."""
        if self.siglip:
            return SiglipVisionTower(model.vision_model)
        return ClipViTTower(model.vision_model, model.visual_projection)


def _clip(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> HFDualEncoder:
    return HFDualEncoder(model, tokenizer, processor, name)


register_hf(HFEntry(("clip",), "CLIPModel", _clip, "hf-clip"))
register_hf(HFEntry(("siglip",), "SiglipModel", _clip, "hf-siglip"))


def tiny_clip(image_size: int = 64, patch: int = 16, layers: int = 3, seed: int = 0) -> nn.Module:
    """A random-weight CLIPModel with the real architecture at a tiny width (CLIP's 49408 vocabulary)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=tiny_transformer(layers, vocab_size=49408, max_position_embeddings=77),
        vision_config=tiny_transformer(layers, image_size=image_size, patch_size=patch),
        projection_dim=16,
    )
    return CLIPModel(cfg).eval()


def tiny_siglip(image_size: int = 64, patch: int = 16, layers: int = 3, seed: int = 0) -> nn.Module:
    """A random-weight SiglipModel at a tiny width (texts padded to a 16-token context)."""
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    cfg = SiglipConfig(
        text_config=tiny_transformer(layers, vocab_size=49408, max_position_embeddings=16, projection_size=32),
        vision_config=tiny_transformer(layers, image_size=image_size, patch_size=patch),
    )
    return SiglipModel(cfg).eval()


register_family(
    Family(
        key="hf-clip",
        name="CLIP (transformers CLIPModel)",
        library="transformers",
        examples="hf:openai/clip-vit-base-patch32, hf:openai/clip-vit-large-patch14",
        tiny=tiny_clip,
        notes="class-token ViT; causal text tower pooled at [EOS], or, with the legacy eos_token_id = 2 "
        "(XLM tokenizers), at the largest id as the model's own forward does; M2IB and Grad-CAM at block "
        "round(10 n / 12) - 1 of n",
    )
)
register_family(
    Family(
        key="hf-siglip",
        name="SigLIP (transformers SiglipModel)",
        library="transformers",
        examples="hf:google/siglip-base-patch16-224",
        tiny=tiny_siglip,
        notes="no class token, attention-pooling head (attention maps read as the mean over query rows); "
        "texts padded to the context, pooled at the last position; M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
    )
)
