"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman, 2014).

Image: ``|dy/dx|`` with ``x`` the preprocessed pixels, maximum over colour channels -> (B, H, W).
Text: the L2 norm of ``dy/de`` per token, ``e`` the token input embeddings (before position
embeddings) -> (B, T).

``smooth="smoothgrad" | "smoothgrad_sq" | "vargrad"`` (with ``n_samples`` and ``stdev``) averages
the maps over noisy copies of the input (``vlexplain.attribution.smooth``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.base import DualEncoder
from .base import Explainer, PairBatch, register_method
from .smooth import Smooth, check_smooth, smoothed


def image_input_gradient(model: DualEncoder, batch: PairBatch) -> tuple[Tensor, Tensor]:
    """(pixels, d sum_b target_b / d pixels), both (B, 3, H, W); the text embedding is held fixed."""
    x = batch.pixels.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = batch.target(model.image.encode(x), batch.text_emb)  # (B,)
        (g,) = torch.autograd.grad(y.sum(), x)
    return x.detach(), g


def text_input_gradient(model: DualEncoder, batch: PairBatch) -> tuple[Tensor, Tensor]:
    """(token input embeddings, d sum_b target_b / d them), both (B, T, D); the image embedding is fixed."""
    tower = model.text
    e = batch.token_embeddings(tower).clone().requires_grad_(True)
    with torch.enable_grad():
        y = batch.target(batch.image_emb, tower.encode(batch.texts, inputs_embeds=e))  # (B,)
        (g,) = torch.autograd.grad(y.sum(), e)
    return e.detach(), g


@register_method
class Saliency(Explainer):
    """Gradient magnitude of the target with respect to the input.

    Args:
        model: the dual encoder.
        smooth: None, or ``smoothgrad`` / ``smoothgrad_sq`` / ``vargrad`` over noisy inputs.
        n_samples: noisy copies per pair when smoothing (8).
        stdev: noise standard deviation as a fraction of the input's range (0.15).

    Paper: Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps. ICLR workshop 2014.
    """

    name = "saliency"
    summary = "input-gradient magnitude (pixels: max over channels; tokens: L2 norm)"
    paper = "Simonyan, Vedaldi & Zisserman. Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps. ICLR workshop 2014"

    def __init__(self, model, smooth: Smooth | None = None, n_samples: int = 8, stdev: float = 0.15):
        super().__init__(model)
        check_smooth(self.name, smooth, n_samples, stdev)
        self.smooth, self.n_samples, self.stdev = smooth, n_samples, stdev

    def _image(self, batch: PairBatch) -> Tensor:
        _, g = image_input_gradient(self.model, batch)
        return g.abs().amax(1)  # (B, H, W)

    def _text(self, batch: PairBatch) -> Tensor:
        _, g = text_input_gradient(self.model, batch)
        return g.norm(dim=-1)  # (B, T)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        return smoothed(self._image, batch, "image", self.model, self.smooth, self.n_samples, self.stdev)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        return smoothed(self._text, batch, "text", self.model, self.smooth, self.n_samples, self.stdev)
