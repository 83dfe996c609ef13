"""MaskCLIP: dense value features read through the model's head (Zhou, Loy & Dai, ECCV 2022).

The last block is re-run with its attention replaced by the identity (every token attends only to
itself), so each token's output is its own value vector through the block's output projection,
residual connection and MLP; the final norm and projection then give one embedding per patch::

    u_j   = h_j + out_proj(v_j);   u_j = u_j + mlp(ln_2(u_j))
    f_j   = proj(ln_post(u_j))
    map_j = cos(f_j, text embedding)

This is the released ViT code (``skip_last_attn``) and Grad-ECLIP's MaskCLIP baseline; the
latter also multiplies by a class-key/patch-key cosine that is not part of MaskCLIP, which we
leave out. Training-free and gradient-free; image side of towers whose head reads the class
token through a norm and a projection (CLIP ViTs). The map is a cosine whatever the run's target; for the ``contrast`` target, a difference of cosines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.base import DualEncoder
from .base import Explainer, PairBatch, Side, register_method
from .clip_native import PATCH_CONTRAST, pair_cosines, run_tail, why_not_native


@register_method
class MaskCLIP(Explainer):
    """MaskCLIP: cosine of each patch's value embedding (through the head) with the text.

    Paper: Zhou, Loy, Dai. Extract Free Dense Labels from CLIP. ECCV 2022.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="mask_clip")
    """

    name = "mask_clip"
    paper = "Zhou, Loy, Dai. Extract Free Dense Labels from CLIP. ECCV 2022"
    summary = "value embeddings of the last block through the head, cosine with the text (Zhou et al., ECCV 2022)"
    needs_attention = True
    needs_gradients = False
    sides = ("image",)
    contrast_form = PATCH_CONTRAST

    @classmethod
    def why_not(cls, model: DualEncoder, side: Side) -> str | None:
        return super().why_not(model, side) or why_not_native(cls.name, model, side, projects=True, parts=True)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        with torch.no_grad():
            _, recs = run_tail(tower, batch.pixels, tower.num_blocks - 1, grad=False)
            r = recs[-1]
            assert r.h is not None, "why_not_native(parts=True) admits only pre-norm blocks"
            u = r.h + r.attn_branch(r.v)  # (B, T, D): attention replaced by the identity
            u = u + r.mlp_branch(u)
            f = F.normalize(tower.project_tokens(u, batch.pixels), dim=-1)  # (B, T, d)
            return pair_cosines(tower, f, batch)  # per patch; for a contrast, the difference of cosines
