"""ClearCLIP: the last block without residual, with q-q attention, without MLP (Lan et al., ECCV 2024).

The last block's output is replaced by its attention branch alone, with the query-key attention
replaced by query-query attention, per head; the final norm and projection give one embedding per
patch::

    u   = out_proj(softmax(q q^T / sqrt(d_head)) v)          # no residual, no feed-forward
    map = cos(proj(ln_post(u_j)), text embedding)

as the released ``custom_attn(..., model_type='ClearCLIP')`` with ``ignore_residual=True`` and
``last_n_layers=1`` (mc-lan/ClearCLIP ``open_clip/transformer.py``). Training-free and
gradient-free; image side of CLIP ViTs. The map is a cosine whatever the run's target.
"""

from __future__ import annotations

from torch import Tensor

from ..models.base import DualEncoder
from ..models.blocks import BlockRecord
from .base import Explainer, PairBatch, Side, register_method
from .clip_native import PATCH_CONTRAST, last_block_features, merge_heads, pair_cosines, split_heads, why_not_native


def qq_attention(r: BlockRecord) -> Tensor:
    """(B, T, D) output of query-query self-attention from a block's q and v."""
    q, v = split_heads(r.q, r.num_heads), split_heads(r.v, r.num_heads)  # (B, h, T, hd)
    a = ((q @ q.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1)
    return merge_heads(a @ v)


@register_method
class ClearCLIP(Explainer):
    """ClearCLIP: the last block's q-q attention branch alone (no residual, no MLP).

    Paper: Lan, Chen, Ke, Wang, Feng, Zhang. ClearCLIP: Decomposing CLIP Representations for
    Dense Vision-Language Inference. ECCV 2024.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="clearclip")
    """

    name = "clearclip"
    paper = "Lan et al. ClearCLIP: Decomposing CLIP Representations for Dense Vision-Language Inference. ECCV 2024"
    summary = "last block: q-q attention, residual and MLP removed, cosine with the text (Lan et al., ECCV 2024)"
    needs_attention = True
    needs_gradients = False
    sides = ("image",)
    contrast_form = PATCH_CONTRAST

    @classmethod
    def why_not(cls, model: DualEncoder, side: Side) -> str | None:
        return super().why_not(model, side) or why_not_native(cls.name, model, side, projects=True, parts=True)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        f = last_block_features(tower, batch.pixels, qq_attention, residual=False, mlp=False)
        return pair_cosines(tower, f, batch)
