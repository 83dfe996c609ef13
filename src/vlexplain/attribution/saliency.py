"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman, 2014).

Image: ``|dy/dx|`` with ``x`` the preprocessed pixels, maximum over colour channels -> (B, H, W).
Text: the L2 norm of ``dy/de`` per token, ``e`` the token input embeddings (before position
embeddings) -> (B, T).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.base import DualEncoder
from .base import Explainer, PairBatch, register_method


def image_input_gradient(model: DualEncoder, batch: PairBatch) -> tuple[Tensor, Tensor]:
    """(pixels, d sum_b target_b / d pixels), both (B, 3, H, W); the text embedding is held fixed."""
    x = batch.pixels.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = batch.score_image(model.image.encode(x))  # (B,)
        (g,) = torch.autograd.grad(y.sum(), x)
    return x.detach(), g


def text_input_gradient(model: DualEncoder, batch: PairBatch) -> tuple[Tensor, Tensor]:
    """(token input embeddings, d sum_b target_b / d them), both (B, T, D); the image embedding is fixed."""
    tower = model.text
    with torch.no_grad():
        e = tower.token_embeddings(batch.texts)
    e = e.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = batch.score_text(tower.encode(batch.texts, inputs_embeds=e))  # (B,)
        (g,) = torch.autograd.grad(y.sum(), e)
    return e.detach(), g


@register_method
class Saliency(Explainer):
    """Gradient magnitude of the target with respect to the input.

    Args:
        model: the dual encoder.

    Paper: Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps. ICLR workshop 2014.
    """

    name = "saliency"
    contrast_form = "the gradient magnitude of the difference, |d(s1 - s2)/dx| (not linear in the target)"
    summary = "input-gradient magnitude (pixels: max over channels; tokens: L2 norm)"
    paper = "Simonyan, Vedaldi & Zisserman. Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps. ICLR workshop 2014"

    def __init__(self, model):
        super().__init__(model)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        _, g = image_input_gradient(self.model, batch)
        return g.abs().amax(1)  # (B, H, W)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        _, g = text_input_gradient(self.model, batch)
        return g.norm(dim=-1)  # (B, T)
