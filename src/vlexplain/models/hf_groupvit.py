"""Adapter for transformers ``GroupViTModel`` (GroupViT, Xu et al., CVPR 2022).

GroupViT's image tower is a ViT in stages: stage 0 runs its layers over the patch tokens and
learned group tokens, then a grouping block assigns every patch to a group (hard assignment); later
stages run over the groups, and the embedding is the mean of the final groups through an MLP
projection. Only stage 0 sees the patch grid, so the tower's blocks are stage 0's layers
(tokens: the group tokens first, then the patches; self-attention without a mask does not depend
on the order, and the head restores GroupViT's own) and the head is everything after them: the
grouping, the later stages, the final norm, the mean and the projection. Attention methods read
stage 0's attention (no class token: the mean over query rows); methods that read one pooled
token or per-token projections are refused on the image side. The text tower is CLIP's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Tower
from .families import Family, register_family
from .hf_clip import HFDualEncoder
from .hf_common import HFEntry, clip_block, register_hf, tiny_transformer


class GroupViTImageTower(Tower):
    """Stage 0 of a ``GroupViTVisionTransformer`` as blocks; grouping and later stages as the head."""

    modality = "image"
    kind = "vit"

    def __init__(self, vision_model: Any, projection: nn.Module):
        super().__init__()
        self.vm: Any = vision_model  # a transformers GroupViTVisionTransformer
        self.projection = projection
        self.stages: Any = self.vm.encoder.stages
        cfg = self.vm.config
        self.num_heads = int(cfg.num_attention_heads)
        self.num_prefix_tokens = int(self.stages[0].num_group_token)
        g = int(cfg.image_size) // int(cfg.patch_size)
        self.grid = (g, g)

    @property
    def class_token_pooled(self) -> bool:
        return False  # the embedding is the mean over the final groups

    @property
    def num_blocks(self) -> int:
        return len(self.stages[0].layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.stages[0].layers)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        emb = self.vm.embeddings
        e = emb(x.to(emb.patch_embeddings.projection.weight.dtype))  # (B, P, D)
        groups = self.stages[0].group_token.expand(e.shape[0], -1, -1)
        return torch.cat([groups, e], dim=1)  # (B, G + P, D)

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        return clip_block(self.stages[0].layers[i], h, None, need_attn, self.num_heads, rows)

    def head(self, h: Tensor, x: Any) -> Tensor:
        n = self.num_prefix_tokens
        groups = h[:, :n]
        out, _ = self.stages[0].downsample(h[:, n:], groups)  # patches -> groups
        for stage in self.stages[1:]:
            out, groups = stage(out, groups)[:2]
        return self.projection(self.vm.layernorm(out).mean(dim=1))

    def head_ops(self, x: Any) -> list[Any]:
        # the grouping block's group-token path is mlp_inter (a GELU MLP over the token axis) and
        # norm_post_tokens with no residual around them: the groups that reach the embedding are not
        # a sum of images of stage 0's parts, whatever norms and assignment weights are held fixed
        raise NotImplementedError(
            "GroupViT's head is not linear in stage 0's tokens once norms and pooling weights are held fixed: "
            "its grouping block maps the group tokens through an MLP without a residual"
        )


class GroupViTDualEncoder(HFDualEncoder):
    """``GroupViTModel`` behind the DualEncoder protocol (CLIP's text tower and tokenizer rules)."""

    def image_tower(self, model: Any) -> Tower:
        return GroupViTImageTower(model.vision_model, model.visual_projection)


def _groupvit(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> HFDualEncoder:
    return GroupViTDualEncoder(model, tokenizer, processor, name)


register_hf(HFEntry(("groupvit",), "GroupViTModel", _groupvit, "hf-groupvit"))


def tiny_groupvit(seed: int = 0) -> nn.Module:
    """A random-weight GroupViTModel: stages of 2, 1 and 1 layers, 4 then 2 groups, 32-px images."""
    from transformers import GroupViTConfig, GroupViTModel

    torch.manual_seed(seed)
    vision = tiny_transformer(
        4, image_size=32, patch_size=8, depths=(2, 1, 1), num_group_tokens=(4, 2, 0), num_output_groups=(4, 2, 2)
    )
    cfg = GroupViTConfig(
        text_config=tiny_transformer(2, vocab_size=49408, max_position_embeddings=16),
        vision_config=vision,
        projection_dim=16,
        projection_intermediate_dim=32,
    )
    return GroupViTModel(cfg).eval()


register_family(
    Family(
        key="hf-groupvit",
        name="GroupViT (transformers GroupViTModel)",
        library="transformers",
        examples="hf:nvidia/groupvit-gcc-yfcc, hf:nvidia/groupvit-gcc-redcaps",
        tiny=tiny_groupvit,
        notes="image blocks = stage 0 (group tokens + patches), the grouping and later stages run as the head; "
        "mean-pooled groups: attention maps are the mean over query rows, grad_eclip / mask_clip / "
        "clip_surgery refused on the image side; CLIP's causal text tower; M2IB and Grad-CAM at block "
        "round(10 n / 12) - 1 of stage 0's n",
    )
)
