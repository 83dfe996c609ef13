"""Gradient times input (Shrikumar et al., 2016).

Image: ``sum_c x_c * dy/dx_c`` over colour channels of the preprocessed pixels -> (B, H, W).
Text: ``sum_d e_d * dy/de_d`` over the dimensions of the token input embeddings -> (B, T).

``smooth`` (with ``n_samples`` and ``stdev``) averages the maps over noisy copies of the input,
each map the noisy input times its gradient (``vlexplain.attribution.smooth``).
"""

from __future__ import annotations

from torch import Tensor

from .base import Explainer, PairBatch, register_method
from .saliency import image_input_gradient, text_input_gradient
from .smooth import Smooth, check_smooth, smoothed


@register_method
class GradientXInput(Explainer):
    """Input times the gradient of the target, summed over channels / embedding dimensions.

    Args:
        model: the dual encoder.
        smooth: None, or ``smoothgrad`` / ``smoothgrad_sq`` / ``vargrad`` over noisy inputs.
        n_samples: noisy copies per pair when smoothing (8).
        stdev: noise standard deviation as a fraction of the input's range (0.15).

    Paper: Shrikumar, Greenside, Shcherbina, Kundaje. Not Just a Black Box: Learning Important
    Features Through Propagating Activation Differences. arXiv:1605.01713, 2016.
    """

    name = "gradient_x_input"
    summary = "input times gradient (signed)"
    paper = "Shrikumar et al. Not Just a Black Box: Learning Important Features Through Propagating Activation Differences. 2016"

    def __init__(self, model, smooth: Smooth | None = None, n_samples: int = 8, stdev: float = 0.15):
        super().__init__(model)
        check_smooth(self.name, smooth, n_samples, stdev)
        self.smooth, self.n_samples, self.stdev = smooth, n_samples, stdev

    def _image(self, batch: PairBatch) -> Tensor:
        x, g = image_input_gradient(self.model, batch)
        return (x * g).sum(1)  # (B, H, W)

    def _text(self, batch: PairBatch) -> Tensor:
        e, g = text_input_gradient(self.model, batch)
        return (e * g).sum(-1)  # (B, T)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        return smoothed(self._image, batch, "image", self.model, self.smooth, self.n_samples, self.stdev)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        return smoothed(self._text, batch, "text", self.model, self.smooth, self.n_samples, self.stdev)
