"""Attention rollout (Abnar & Zuidema, ACL 2020).

For every block ``b`` (from ``start_layer`` on) with attention probabilities ``A_b`` (B, heads, T, T)::

    Ahat_b = 0.5 * mean_heads(A_b) + 0.5 * I,   rows re-normalised to sum to 1
    R = Ahat_b @ R                              (R starts as I)

Gradient-free, so it explains the tower's representation rather than a particular pair's score.
Read out like ``.chefer``: the CLS row (image towers with a class token), the mean over rows
(image towers without one, e.g. SigLIP), the pooled position's row (text), or the mean over real
tokens' rows (mean-pooled text towers).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models.base import Tower
from .base import Explainer, PairBatch, register_method
from .chefer import attention_keys, check_start_layer, image_readout, require_attention, text_readout


def rollout_relevance(tower: Tower, x: Any, start_layer: int = 0) -> Tensor:
    """(B, T, T) attention rollout of ``tower`` on ``x`` from block ``start_layer`` on."""
    require_attention(tower, "attention_rollout")
    wanted = set(attention_keys(tower, start_layer))
    attns: list[Tensor] = []

    def on_block(i: int, h: Tensor, a: Tensor | None) -> None:
        if i in wanted:
            assert a is not None, "need_attn=True passes each attention block's attention"
            attns.append(a)  # (B, heads, T, T)

    with torch.no_grad():
        tower.encode(x, on_block=on_block, need_attn=True)
        B, T = attns[0].shape[0], attns[0].shape[-1]
        eye = torch.eye(T, device=attns[0].device, dtype=attns[0].dtype)
        R = eye.expand(B, T, T)
        for A in attns:
            ahat = 0.5 * A.mean(1) + 0.5 * eye
            ahat = ahat / ahat.sum(-1, keepdim=True)
            R = ahat @ R
    return R


@register_method
class AttentionRollout(Explainer):
    """Attention rollout: the product of head-averaged, residual-mixed attention matrices.

    Args:
        model: the dual encoder.
        start_layer: first block that contributes (0).

    Paper: Abnar, Zuidema. Quantifying Attention Flow in Transformers. ACL 2020.
    """

    name = "attention_rollout"
    no_contrast = (
        "its map reads attention only, not a score, so it is the same whatever two texts or images are contrasted"
    )
    summary = "attention rollout (gradient-free)"
    paper = "Abnar & Zuidema. Quantifying Attention Flow in Transformers. ACL 2020"
    needs_attention = True
    needs_gradients = False

    def __init__(self, model, start_layer: int = 0):
        super().__init__(model)
        self.start_layer = check_start_layer(model, start_layer, self.name)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        return image_readout(tower, rollout_relevance(tower, batch.pixels, self.start_layer))

    def attribute_text(self, batch: PairBatch) -> Tensor:
        return text_readout(batch.texts, rollout_relevance(self.model.text, batch.texts, self.start_layer))
