"""Grad-ECLIP: gradient-based visual and textual explanations for CLIP (Zhao et al., ICML 2024).

For each of the last ``blocks`` transformer blocks of a tower, with ``a`` the block's attention
output before the output projection (B, T, D), ``v`` its value vectors and ``q``, ``k`` its query
and key vectors (heads concatenated, as the released code reads them)::

    g      = d score / d a[pooled]                              # (D,) at the pooled token
    lam_j  = minmax_j cos(q[pooled], k[j])                      # "withksim" (1 without it)
    m_b[j] = sum_c g_c * v[j, c] * lam_j

Image side: patches ``j``, ``map = sum_b relu(m_b)`` (the last block by default). Text side: every
token ``j``, ``map = relu(sum_b m_b)`` over the last 2/3 of the blocks (8 of 12 in the released
demo). The pooled token is CLS for images and EOS (the position the head reads) for texts.

Differences from the released code: the explained blocks keep the model's own heads (the released
dense forward recomputes them with a single head, which changes the model being explained); the
text side's key-similarity is min-max normalised over the text's own tokens, not over the padding
to 77 tokens; maps stay raw (the released text map is divided by its sum). Queries and keys are
read as in the released notebooks (``generate_emap.py`` first passes them through the output
projection, a variant we do not offer).

An image tower that pools with an attention head of one learned query (SigLIP's and PE-Core's MAP
head in timm) is explained at that head: its query takes the pooled token's place, ``v`` and ``k``
are the head's value and key vectors of the last block's tokens, ``a`` its attention output before
its projection (the map of one "block": ``image_blocks`` must be 1). Towers that pool several
tokens otherwise (average pooling, transformers SigLIP's head) are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder, TextBatch, Tower
from .base import Explainer, PairBatch, Side, register_method
from .clip_native import check_count, run_tail, to_grid, why_not_native


def _probe(model: DualEncoder) -> Tensor:
    return torch.zeros(1, 3, *model.input_size, device=model.device, dtype=model.dtype)


def _minmax(x: Tensor, keep: Tensor) -> Tensor:
    """Min-max over the entries where ``keep`` (B, T) is True, per row."""
    lo = x.masked_fill(~keep, float("inf")).amin(-1, keepdim=True)
    hi = x.masked_fill(~keep, float("-inf")).amax(-1, keepdim=True)
    return (x - lo) / (hi - lo)


def grad_eclip_maps(
    tower: Tower, x: Any, score: Callable[[Tensor], Tensor], blocks: int, withksim: bool, keep: Tensor | None
) -> Tensor:
    """Per-block Grad-ECLIP maps (blocks, B, T) over all token positions.

    Args:
        score: (B, d) un-normalised embedding -> (B,) scores; rows are independent.
        keep: (B, T) tokens the key-similarity is normalised over (a text's real tokens); None:
            the image tower's patch tokens.
    """
    n = tower.num_blocks
    with torch.enable_grad():
        h, recs = run_tail(tower, x, n - blocks, grad=True)
        e = tower.head(h, x)
        grads = torch.autograd.grad(score(e).sum(), [r.attn for r in recs])
    pos = tower.pooled_positions(x)
    assert pos is not None
    ar = torch.arange(h.shape[0], device=h.device)
    if keep is None:
        keep = (torch.arange(h.shape[1], device=h.device) >= tower.num_prefix_tokens)[None].expand(h.shape[:2])
    maps = []
    for r, g in zip(recs, grads):
        g_pool = g[ar, pos]  # (B, D)
        m_b = (g_pool[:, None, :] * r.v.detach()).sum(-1)  # (B, T)
        if withksim:
            q = F.normalize(r.q.detach()[ar, pos], dim=-1)  # (B, D)
            k = F.normalize(r.k.detach(), dim=-1)  # (B, T, D)
            m_b = m_b * _minmax((k * q[:, None]).sum(-1), keep)
        maps.append(m_b)
    return torch.stack(maps)


def pool_head_map(tower: Tower, x: Tensor, score: Callable[[Tensor], Tensor], withksim: bool) -> Tensor:
    """Grad-ECLIP at an attention-pooling head of one query (``Tower.pool_attention``): (B, T)."""
    from ..models.timm_record import recording_attention

    with torch.no_grad():
        h = tower.encode(x, stop=tower.num_blocks - 1)  # (B, T, D) after the last block
    h = h.detach().requires_grad_(True)  # (the parameters' flags may be off)
    with torch.enable_grad(), recording_attention(tower.pool_attention()) as cap:
        e = tower.head(h, x)
        r = cap.record()
        if r is None:
            raise MethodError(f"the {tower.modality} tower's pooling head did not record its attention")
        (g,) = torch.autograd.grad(score(e).sum(), [r.attn])
    m = (g[:, :1] * r.v.detach()).sum(-1)  # (B, T): the query's gradient x every token's value
    if withksim:
        q = F.normalize(r.q.detach()[:, :1], dim=-1)  # (B, 1, D)
        k = F.normalize(r.k.detach(), dim=-1)  # (B, T, D)
        keep = (torch.arange(h.shape[1], device=h.device) >= tower.num_prefix_tokens)[None].expand(h.shape[:2])
        m = m * _minmax((k * q).sum(-1), keep)
    return m


@register_method
class GradECLIP(Explainer):
    """Grad-ECLIP: the pooled token's attention-output gradient times the value vectors.

    Args:
        model: the dual encoder.
        withksim: weight each token by the min-max normalised cosine between the pooled token's
            query and the token's key (the released code's ``withksim``; True).
        image_blocks: how many last blocks of the image tower contribute (1).
        text_blocks: how many last blocks of the text tower contribute (None: 2/3 of them, 8 of 12).

    Paper: Zhao, Wang, Zeng, Zhao, Chan. Gradient-based Visual Explanation for Transformer-based
    CLIP. ICML 2024.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="grad_eclip")
    """

    name = "grad_eclip"
    contrast_form = "channel weights from the gradient of the difference at the pooled token, ReLU after"
    paper = "Zhao et al. Gradient-based Visual Explanation for Transformer-based CLIP. ICML 2024"
    summary = "attention-output gradient x values, query-key weighted (Zhao et al., ICML 2024)"
    needs_attention = True

    def __init__(self, model, withksim: bool = True, image_blocks: int = 1, text_blocks: int | None = None):
        super().__init__(model)
        self.withksim = bool(withksim)
        self.image_blocks = image_blocks
        self.text_blocks = text_blocks
        if type(self).why_not(model, "image") is None:
            check_count(model.image, image_blocks, "image_blocks", self.name)
            if model.image.pooled_positions(_probe(model)) is None and image_blocks != 1:
                raise MethodError(
                    f"{self.name}: this image tower pools at an attention head (one query), read as one block: "
                    "image_blocks must be 1"
                )
        if type(self).why_not(model, "text") is None:
            n = model.text.num_blocks
            self.text_blocks = max(1, round(2 * n / 3)) if text_blocks is None else text_blocks
            check_count(model.text, self.text_blocks, "text_blocks", self.name)

    @classmethod
    def why_not(cls, model: DualEncoder, side: Side) -> str | None:
        why = super().why_not(model, side)
        if why is not None:
            return why
        pool_head = side == "image" and model.tower(side).pool_attention() is not None
        return why_not_native(cls.name, model, side, pooled=not pool_head)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        if tower.pool_attention() is not None and tower.pooled_positions(batch.pixels) is None:
            m = pool_head_map(tower, batch.pixels, batch.score_image, self.withksim)
            return to_grid(tower, m.relu())
        maps = grad_eclip_maps(tower, batch.pixels, batch.score_image, self.image_blocks, self.withksim, None)
        return to_grid(tower, maps.relu().sum(0))

    def attribute_text(self, batch: PairBatch) -> Tensor:
        texts: TextBatch = batch.texts
        keep = texts.attention_mask.bool()
        assert self.text_blocks is not None, "resolved in __init__ when the text side applies"
        maps = grad_eclip_maps(self.model.text, texts, batch.score_text, self.text_blocks, self.withksim, keep)
        return maps.sum(0).relu()
