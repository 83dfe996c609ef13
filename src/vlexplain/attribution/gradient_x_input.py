"""Gradient times input (Shrikumar et al., 2016).

Image: ``sum_c x_c * dy/dx_c`` over colour channels of the preprocessed pixels -> (B, H, W).
Text: ``sum_d e_d * dy/de_d`` over the dimensions of the token input embeddings -> (B, T).
"""

from __future__ import annotations

from torch import Tensor

from .base import Explainer, PairBatch, register_method
from .saliency import image_input_gradient, text_input_gradient


@register_method
class GradientXInput(Explainer):
    """Input times the gradient of the target, summed over channels / embedding dimensions.

    Args:
        model: the dual encoder.

    Paper: Shrikumar, Greenside, Shcherbina, Kundaje. Not Just a Black Box: Learning Important
    Features Through Propagating Activation Differences. arXiv:1605.01713, 2016.
    """

    name = "gradient_x_input"
    contrast_form = "input times the gradient of the difference (linear: the map of s1 minus the map of s2)"
    summary = "input times gradient (signed)"
    paper = "Shrikumar et al. Not Just a Black Box: Learning Important Features Through Propagating Activation Differences. 2016"

    def __init__(self, model):
        super().__init__(model)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        x, g = image_input_gradient(self.model, batch)
        return (x * g).sum(1)  # (B, H, W)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        e, g = text_input_gradient(self.model, batch)
        return (e * g).sum(-1)  # (B, T)
