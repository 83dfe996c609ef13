"""LeGrad: layer-wise gradients of the attention maps (Bousselham et al., 2024).

For each of the last ``blocks`` attention blocks ``l`` of a tower (a hybrid's: those of its last
attention stage), the block's output tokens
``h_l`` are read through the model's own head into an embedding ``e_l``; the score of ``e_l``
against the other modality is differentiated with respect to the block's attention
probabilities ``A_l`` (B, heads, T, T)::

    G_l   = d score(e_l) / d A_l
    map_l = mean_{heads, queries} relu(G_l)           # one value per key token
    map   = mean_l map_l

How ``h_l`` is read (``pooling``):

* ``"mean"`` (the released code for CLIP ViTs): the mean over all tokens (class token included),
  then the final norm and projection — only for towers whose head reads one token;
* ``"head"``: the tower's own head on ``h_l`` (CLS / EOS pooling, SigLIP's attention-pooling
  head). Default for text towers and for image towers without a class token.

Image side: patch keys on the grid. Text side (the same construction on the text tower): every
token position; the query mean runs over the text's real tokens only. The released code min-max
normalises the summed map; we keep the raw mean over blocks (the normalisation is for display).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import MethodError
from ..models.base import TextBatch, Tower
from .base import SIDES, Explainer, PairBatch, Side, register_method
from .clip_native import capabilities, to_grid

Pooling = Literal["mean", "head"]


def legrad_map(
    tower: Tower, x: Any, score: Callable[[Tensor], Tensor], blocks: int, pooling: Pooling, query_mask: Tensor | None
) -> Tensor:
    """(B, T) LeGrad relevance of every key token, averaged over the last ``blocks`` blocks.

    Args:
        score: (B, d) un-normalised embedding -> (B,) scores; rows are independent.
        query_mask: (B, T) 1 for the query rows to average over (None: all rows).
    """
    keys = tower.attention_blocks[-blocks:]  # the last attention blocks (hybrids: of the last attention stage)
    first, last = keys[0], keys[-1]
    hiddens: dict[int, Tensor] = {}
    with torch.enable_grad():
        with torch.no_grad():
            h0 = tower.encode(x, stop=first - 1)
        h0 = h0.detach().requires_grad_(True)
        attns: dict[int, Tensor] = {}

        def on_block(i: int, h: Tensor, a: Tensor | None) -> None:
            if i in keys:
                hiddens[i] = h
                assert a is not None
                attns[i] = a  # (B, heads, T, T)

        tower.encode(x, start=first - 1, hidden=h0, stop=last, on_block=on_block, need_attn=True)
        total = None
        for i in keys:
            h = hiddens[i]
            e = tower.head(h.mean(1, keepdim=True), x) if pooling == "mean" else tower.head(h, x)
            (g,) = torch.autograd.grad(score(e).sum(), attns[i], retain_graph=i < last)
            g = g.relu().mean(1)  # (B, T, T) mean over heads
            if query_mask is None:
                r = g.mean(1)
            else:
                qm = query_mask.to(g.dtype)
                r = (g * qm[:, :, None]).sum(1) / qm.sum(1, keepdim=True).clamp_min(1)
            total = r if total is None else total + r
    assert total is not None
    return total / len(keys)


@register_method
class LeGrad(Explainer):
    """LeGrad: positive gradients of each block's read-out score w.r.t. its attention maps.

    Args:
        model: the dual encoder.
        blocks: how many last blocks contribute (2, the released default ``layer_index=-2``;
            capped at the tower's depth).
        pooling: how the image tower's block tokens are read through the head: ``"mean"`` (mean
            over tokens, the released code for CLIP) or ``"head"`` (the head's own pooling); None:
            ``"mean"`` for towers with a class token, ``"head"`` elsewhere. Texts always use the head.

    Paper: Bousselham, Boggust, Chaybouti, Strobelt, Kuehne. LeGrad: An Explainability Method for
    Vision Transformers via Feature Formation Sensitivity. arXiv 2404.03214, 2024.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="legrad", blocks=4)
    """

    name = "legrad"
    contrast_form = "positive gradients of each block's read-out difference w.r.t. its attention"
    paper = "Bousselham et al. LeGrad: An Explainability Method for Vision Transformers via Feature Formation Sensitivity. arXiv 2404.03214, 2024"
    summary = "layer-wise positive gradients of the read-out score w.r.t. attention (Bousselham et al. 2024)"
    needs_attention = True

    def __init__(self, model, blocks: int = 2, pooling: Pooling | None = None):
        super().__init__(model)
        if pooling not in (None, "mean", "head"):
            raise MethodError(f"legrad: pooling must be 'mean' or 'head', got {pooling!r}")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise MethodError(f"legrad: blocks must be a positive number of last blocks, got {blocks!r}")
        self.blocks, self.pooling = blocks, pooling
        for side in SIDES:
            ok = type(self).why_not(model, side) is None
            if ok and self._pooling(side) == "mean" and not capabilities(model, side).pooled:
                raise MethodError(
                    f"legrad: pooling='mean' needs a head that reads one token; the {side} tower pools with attention"
                )

    def _pooling(self, side: Side) -> Pooling:
        if side == "text":
            return "head"  # a mean over a text's positions would depend on the batch's padding
        if self.pooling is not None:
            return self.pooling
        tower = self.model.tower(side)
        return "mean" if tower.num_prefix_tokens > 0 and capabilities(self.model, side).pooled else "head"

    def _blocks(self, tower: Tower) -> int:
        return min(self.blocks, len(tower.attention_blocks))

    def attribute_image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        r = legrad_map(
            tower,
            batch.pixels,
            batch.score_image,
            self._blocks(tower),
            self._pooling("image"),
            None,
        )
        return to_grid(tower, r)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        texts: TextBatch = batch.texts
        tower = self.model.text
        return legrad_map(
            tower,
            texts,
            batch.score_text,
            self._blocks(tower),
            self._pooling("text"),
            texts.attention_mask,
        )
