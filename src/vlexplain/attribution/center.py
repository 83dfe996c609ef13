"""``center``: a centred Gaussian, the "objects are in the middle" prior, as an evaluation baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Explainer, PairBatch, register_method


def center_gaussian(size: tuple[int, int], device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """(H, W) Gaussian centred on the image, sigma = 1/4 of the side along each axis, peak 1."""
    H, W = size
    y = (torch.arange(H, device=device, dtype=torch.float32) + 0.5 - H / 2) / (H / 4)
    x = (torch.arange(W, device=device, dtype=torch.float32) + 0.5 - W / 2) / (W / 4)
    return torch.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).to(dtype)


@register_method
class CenterMap(Explainer):
    """A centred Gaussian map for every image (sigma = a quarter of the side) and equal token scores.

    A sanity-check baseline that ignores the model: a method that does not beat it on a
    localisation metric has learned no more than "the object is in the middle".
    """

    name = "center"
    contrast_form = "a reference map that ignores every target: the same Gaussian as without a contrast"
    summary = "centred Gaussian / equal token scores (baseline for evaluations)"
    needs_gradients = False

    def __init__(self, model):
        super().__init__(model)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        H, W = batch.pixels.shape[-2:]
        g = center_gaussian((H, W), batch.pixels.device, batch.pixels.dtype)
        return g.expand(len(batch), H, W).clone()  # (B, H, W)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        return torch.ones(batch.texts.ids.shape, dtype=batch.image_emb.dtype, device=batch.image_emb.device)
