"""``random``: uniform noise interactions, the floor every interaction method must beat."""

from __future__ import annotations

import torch
from torch import Tensor

from ..attribution.base import image_grid_size
from .base import InteractionBatch, InteractionMethod, register_interaction


@register_interaction
class RandomInteractions(InteractionMethod):
    """Uniform noise in [0, 1) for every token and cell, from each pair's own generator.

    A reference for evaluations: it ignores the model, so every metric should rank it last. The
    grid is the image tower's (as [`vlexplain.explain`][vlexplain.explain] maps are).
    """

    name = "random"
    summary = "uniform noise per token and cell (the floor of evaluations)"
    reference = True
    uses_model = False

    def __init__(self, model):
        super().__init__(model)

    def interact(self, batch: InteractionBatch) -> Tensor:
        gh, gw = image_grid_size(self.model)
        cm = batch.texts.content_mask.cpu()
        out = torch.zeros(*cm.shape, gh, gw)
        for j, g in enumerate(batch.generators()):  # one draw per pair: the shown tokens' rows only
            out[j, cm[j]] = torch.rand(int(cm[j].sum()), gh, gw, generator=g)
        return out.to(batch.pixels.device, batch.pixels.dtype)  # (B, T, gh, gw)
