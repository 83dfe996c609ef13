"""Grad-CAM at a chosen block of either tower (Selvaraju et al., ICCV 2017).

For the output ``H`` of block ``layer`` and the target ``y``:

* ViT image tower: ``w_c = mean over patch tokens of dy/dH[t, c]``; the map is
  ``relu(sum_c w_c * H[t, c])`` per patch token, arranged on the patch grid. Prefix tokens (CLS,
  registers) are left out of both the channel weights and the map, as when a ViT's patch tokens
  are reshaped into a feature map for Grad-CAM.
* CNN image tower: the standard Grad-CAM on the (B, C, h, w) feature map, ``w_c`` the spatial mean
  of the gradient.
* Text tower: the same on token states, ``w_c`` the mean over real tokens (padding excluded) ->
  one score per token position.

The block output is captured with the tower's ``on_block`` callback, not with module hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..models.base import TextBatch, Tower
from .base import Explainer, PairBatch, check_layer, register_method
from .smooth import Smooth, check_smooth, smoothed


def block_output_and_grad(
    tower: Tower, x: Any, layer: int, target_fn: Callable[[Tensor], Tensor], inputs_embeds: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Run ``tower`` on ``x``; return the output of block ``layer`` and ``d sum(target_fn(emb)) / d it``.

    Args:
        tower: the tower to run; ``x`` its input batch.
        layer: block whose output is captured.
        target_fn: (B, d) un-normalised embedding -> (B,) scores; rows are summed before the
            backward pass, so each row's gradient depends on that row only.
    """
    captured: dict[str, Tensor] = {}

    def on_block(i: int, h: Tensor, attn: Tensor | None) -> Tensor | None:
        if i != layer:
            return None
        if not h.requires_grad:
            h = h.detach().requires_grad_(True)
        captured["h"] = h
        return h

    with torch.enable_grad():
        emb = tower.encode(x, on_block=on_block, inputs_embeds=inputs_embeds)
        h = captured["h"]
        (g,) = torch.autograd.grad(target_fn(emb).sum(), h)
    return h.detach(), g


def gradcam_scores(tower: Tower, h: Tensor, g: Tensor, x: Any) -> Tensor:
    """Grad-CAM from a block output ``h`` and its gradient ``g``.

    Returns:
        (B, h, w) for CNN feature maps, (B, T) per token for token states (image prefix tokens
        and text padding get 0).
    """
    if h.dim() == 4:  # (B, C, h, w)
        w = g.mean((2, 3))  # (B, C)
        return torch.relu((w[:, :, None, None] * h).sum(1))
    if isinstance(x, TextBatch):
        m = x.attention_mask.to(h.dtype)  # (B, T)
    else:
        m = torch.ones(h.shape[:2], dtype=h.dtype, device=h.device)
        m[:, : tower.num_prefix_tokens] = 0
    w = (g * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)  # (B, D)
    return torch.relu((h * w[:, None, :]).sum(-1)) * m  # (B, T)


@register_method
class GradCAM(Explainer):
    """Grad-CAM on the output of one block of each tower.

    Args:
        model: the dual encoder.
        layer: block whose output is used, for both towers (None: the last stage of a CNN image
            tower, as in the Grad-CAM paper; each other tower's ``default_layer()``, as a ViT's
            last block passes gradients only to its class token).
        image_layer / text_layer: per-tower overrides of ``layer``.
        smooth: None, or ``smoothgrad`` / ``smoothgrad_sq`` / ``vargrad`` over noisy inputs.
        n_samples: noisy copies per pair when smoothing (8).
        stdev: noise standard deviation as a fraction of the input's range (0.15).

    Paper: Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization. ICCV 2017.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="gradcam", layer=8)
    """

    name = "gradcam"
    summary = "gradient-weighted block activations (Grad-CAM)"
    paper = (
        "Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization. ICCV 2017"
    )

    def __init__(
        self,
        model,
        layer: int | None = None,
        image_layer: int | None = None,
        text_layer: int | None = None,
        smooth: Smooth | None = None,
        n_samples: int = 8,
        stdev: float = 0.15,
    ):
        super().__init__(model)
        check_smooth(self.name, smooth, n_samples, stdev)
        self.smooth, self.n_samples, self.stdev = smooth, n_samples, stdev
        self.layer = layer
        cnn_last = model.image.num_blocks - 1 if model.image.kind == "cnn" else None
        self.image_layer = check_layer(model.image, image_layer if image_layer is not None else layer, cnn_last)
        self.text_layer = check_layer(model.text, text_layer if text_layer is not None else layer)

    def _image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        h, g = block_output_and_grad(tower, batch.pixels, self.image_layer, lambda e: batch.target(e, batch.text_emb))
        cam = gradcam_scores(tower, h, g, batch.pixels)
        return cam if cam.dim() == 3 else tower.token_scores_to_grid(cam, h)

    def _text(self, batch: PairBatch) -> Tensor:
        tower = self.model.text
        h, g = block_output_and_grad(
            tower, batch.texts, self.text_layer, lambda e: batch.target(batch.image_emb, e), batch.text_embeds
        )
        return gradcam_scores(tower, h, g, batch.texts)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        return smoothed(self._image, batch, "image", self.model, self.smooth, self.n_samples, self.stdev)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        return smoothed(self._text, batch, "text", self.model, self.smooth, self.n_samples, self.stdev)
