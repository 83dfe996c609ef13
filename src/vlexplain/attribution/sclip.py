"""SCLIP: correlative self-attention in the last block (Wang, Ding, Mohamed & Kong, ECCV 2024).

The last block is re-run with its query-key attention replaced by the sum of two self-correlations,
per head, its residual connection and MLP kept; the final norm and projection give one embedding
per patch::

    A   = softmax(q q^T / sqrt(d_head)) + softmax(k k^T / sqrt(d_head))     # (heads, T, T)
    u   = h + out_proj(A v);   u = u + mlp(ln_2(u))
    map = cos(proj(ln_post(u_j)), text embedding)

as the released ``custom_attn(..., csa=True)`` (wangf3014/SCLIP ``clip/model.py``): the two
softmaxes are added, not averaged, and the sum is not renormalised. Training-free and
gradient-free; image side of CLIP ViTs. The map is a cosine whatever the run's target.
"""

from __future__ import annotations

from torch import Tensor

from ..models.base import DualEncoder
from ..models.blocks import BlockRecord
from .base import Explainer, PairBatch, Side, register_method
from .clip_native import PATCH_CONTRAST, last_block_features, merge_heads, pair_cosines, split_heads, why_not_native


def correlative_attention(r: BlockRecord) -> Tensor:
    """(B, T, D) output of correlative self-attention from a block's q, k, v."""
    q, k, v = (split_heads(t, r.num_heads) for t in (r.q, r.k, r.v))  # (B, h, T, hd)
    s = q.shape[-1] ** -0.5
    a = ((q @ q.transpose(-1, -2)) * s).softmax(-1) + ((k @ k.transpose(-1, -2)) * s).softmax(-1)
    return merge_heads(a @ v)


@register_method
class SCLIP(Explainer):
    """SCLIP: the last block's attention replaced by q-q plus k-k self-correlation.

    Paper: Wang, Ding, Mohamed, Kong. SCLIP: Rethinking Self-Attention for Dense
    Vision-Language Inference. ECCV 2024.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="sclip")
    """

    name = "sclip"
    paper = "Wang, Ding, Mohamed, Kong. SCLIP: Rethinking Self-Attention for Dense Vision-Language Inference. ECCV 2024"
    summary = "correlative self-attention (q-q + k-k) in the last block, cosine with the text (Wang et al., ECCV 2024)"
    needs_attention = True
    needs_gradients = False
    sides = ("image",)
    contrast_form = PATCH_CONTRAST

    @classmethod
    def why_not(cls, model: DualEncoder, side: Side) -> str | None:
        return super().why_not(model, side) or why_not_native(cls.name, model, side, projects=True, parts=True)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        f = last_block_features(tower, batch.pixels, correlative_attention, residual=True, mlp=True)
        return pair_cosines(tower, f, batch)
