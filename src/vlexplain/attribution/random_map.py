"""``random``: a uniform noise map, the floor that every method should beat in evaluations."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Explainer, PairBatch, image_grid_size, register_method
from .perturbation import content_positions, scatter_content


@register_method
class RandomMap(Explainer):
    """Uniform noise in [0, 1) on the token grid and per token, from each pair's own generator.

    A sanity-check baseline: it ignores the model, so any metric should rank it last.
    """

    name = "random"
    contrast_form = "a reference map that ignores every target: the same noise as without a contrast"
    summary = "uniform noise (baseline for evaluations)"
    needs_gradients = False

    def __init__(self, model):
        super().__init__(model)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        gh, gw = image_grid_size(self.model)
        dev = batch.pixels.device
        maps = [torch.rand(gh, gw, generator=g, device=dev) for g in batch.generators(dev)]
        return torch.stack(maps).to(batch.pixels.dtype)  # (B, gh, gw)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        _, n = content_positions(batch.texts)
        dev = batch.image_emb.device
        vals = [torch.rand(int(k), generator=g, device=dev) for g, k in zip(batch.generators(dev), n.tolist())]
        return scatter_content(batch.texts, vals).to(batch.image_emb.dtype)  # (B, T)
