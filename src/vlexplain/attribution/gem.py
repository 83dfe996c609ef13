"""GEM: self-self attention on a second path through the last blocks (Bousselham et al., CVPR 2024).

Like CLIP Surgery, a second path runs beside the model through the last ``blocks`` blocks: each adds
its attention branch evaluated with *self-self* attention and skips the MLP, while the attention's
inputs come from the original path. Per block and head, with ``x = ln_1(h)`` of the original path::

    t = mean_j |x_j| / sqrt(d_head)                      # adaptive inverse temperature, per image
    for z in (q, k, v):                                   # iterated self-self attention
        repeat ``iterations`` times: z = softmax(t * n(z) n(z)^T) n(z)     (n: unit norm per token)
        A_z = softmax(t * n(z) n(z)^T)
    x_gem = x_gem + out_proj(mean(A_q, A_k, A_v) v)
    map_j = cos(proj(ln_post(x_gem_j)), text embedding)

as the released ``SelfSelfAttention`` / ``GEMResidualBlock`` (WalBouss/GEM, PyPI ``gem-torch``):
``depth=7`` replaces the last 6 blocks, one iteration, temperature None (adaptive). Training-free
and gradient-free; image side of CLIP ViTs. The map is a cosine whatever the run's target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder
from .base import Explainer, PairBatch, Side, register_method
from .clip_native import PATCH_CONTRAST, check_count, merge_heads, pair_cosines, run_tail, split_heads, why_not_native

#: the released default: ``GEMWrapper(depth=7)`` replaces blocks -1 .. -6
RELEASED_BLOCKS = 6


def self_self_attention(z: Tensor, inv_temp: Tensor, iterations: int) -> Tensor:
    """(B, h, T, hd) -> (B, h, T, T) attention of the iterated, normalised ``z`` with itself."""
    for _ in range(iterations):
        z = F.normalize(z, dim=-1)
        z = ((z @ z.transpose(-1, -2)) * inv_temp).softmax(-1) @ z
    z = F.normalize(z, dim=-1)
    return ((z @ z.transpose(-1, -2)) * inv_temp).softmax(-1)


@register_method
class GEM(Explainer):
    """GEM: grouping by self-self attention (q-q, k-k, v-v) on a dual path through the last blocks.

    Args:
        model: the dual encoder.
        blocks: how many last blocks get the GEM path (None: 6 as released, at most all of them).
        iterations: self-self attention iterations (released: 1).
        temperature: fixed inverse temperature (None: the released adaptive one, the mean token norm
            of the block's normalised input over sqrt(d_head)).

    Paper: Bousselham, Petersen, Ferrari, Kuehne. Grounding Everything: Emerging Localization
    Properties in Vision-Language Transformers. CVPR 2024.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="gem")
    """

    name = "gem"
    paper = "Bousselham, Petersen, Ferrari, Kuehne. Grounding Everything: Emerging Localization Properties in Vision-Language Transformers. CVPR 2024"
    summary = (
        "self-self attention (q-q, k-k, v-v) on a dual path through the last blocks (Bousselham et al., CVPR 2024)"
    )
    needs_attention = True
    needs_gradients = False
    sides = ("image",)
    contrast_form = PATCH_CONTRAST

    def __init__(self, model, blocks: int | None = None, iterations: int = 1, temperature: float | None = None):
        super().__init__(model)
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise MethodError(f"gem: iterations must be a whole number >= 0, got {iterations!r}")
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))):
            raise MethodError(f"gem: temperature must be a number or null, got {temperature!r}")
        self.blocks, self.iterations, self.temperature = blocks, iterations, temperature
        if type(self).why_not(model, "image") is None:
            n = model.image.num_blocks
            self.blocks = check_count(
                model.image, min(RELEASED_BLOCKS, n) if blocks is None else blocks, "blocks", "gem"
            )

    @classmethod
    def why_not(cls, model: DualEncoder, side: Side) -> str | None:
        return super().why_not(model, side) or why_not_native(cls.name, model, side, projects=True, parts=True)

    def features(self, pixels: Tensor) -> Tensor:
        """(B, T, d) unit-norm token features of the GEM path through the head."""
        tower = self.model.image
        assert self.blocks is not None, "resolved in __init__ when the image side applies"
        _, recs = run_tail(tower, pixels, tower.num_blocks - self.blocks, grad=False)
        x = recs[0].h
        assert x is not None, "why_not_native(parts=True) admits only pre-norm blocks"
        for r in recs:
            assert r.h is not None and r.ln1 is not None
            q, k, v = (split_heads(t, r.num_heads) for t in (r.q, r.k, r.v))  # (B, h, T, hd)
            if self.temperature is None:
                inv_t = r.ln1(r.h).norm(dim=-1).mean(-1)[:, None, None, None] * q.shape[-1] ** -0.5
            else:
                inv_t = v.new_tensor(float(self.temperature))
            a = [self_self_attention(z, inv_t, self.iterations) @ v for z in (v, k, q)]
            x = x + r.attn_branch(merge_heads((a[0] + a[1] + a[2]) / 3))
        return F.normalize(tower.project_tokens(x, pixels), dim=-1)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        with torch.no_grad():
            f = self.features(batch.pixels)
        return pair_cosines(self.model.image, f, batch)
