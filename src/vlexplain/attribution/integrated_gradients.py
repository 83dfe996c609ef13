"""Integrated gradients (Sundararajan, Taly & Yan, ICML 2017), computed with captum.

``IG_i(x) = (x_i - x'_i) * integral_0^1 dy/dx_i (x' + a (x - x')) da`` for a baseline ``x'``; the
attributions sum to ``y(x) - y(x')`` (completeness) up to the quadrature error of ``steps`` points.

* Image: the integral runs over preprocessed pixels; the map sums attributions over colour
  channels -> (B, H, W). Baselines: ``black`` (the preprocessed value of a black image, i.e.
  ``(0 - mean) / std`` per channel), ``blur`` (the input blurred by a Gaussian of ``blur_sigma``
  pixels) or ``noise`` (uniform [0, 1] noise, preprocessed, drawn from each pair's own generator).
* Text: the integral runs over the token input embeddings; the baseline puts the pad token's
  embedding at every shown token and keeps the start/end tokens (and padding) as they are, so
  those positions get zero attribution. The map sums over embedding dimensions -> (B, T).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder, TextBatch
from .base import Explainer, PairBatch, register_method

Baseline = Literal["black", "blur", "noise"]
BASELINES: tuple[str, ...] = ("black", "blur", "noise")


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """(B, C, H, W) separable Gaussian blur with reflected borders."""
    if sigma <= 0:
        return x.clone()
    r = max(1, min(math.ceil(3 * sigma), x.shape[-1] - 1, x.shape[-2] - 1))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    y = F.pad(x, (r, r, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    y = F.pad(y, (0, 0, r, r), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def image_baseline(
    model: DualEncoder, pixels: Tensor, kind: str, generators: list[torch.Generator], blur_sigma: float
) -> Tensor:
    """(B, 3, H, W) preprocessed baseline images for ``pixels``."""
    mean = torch.tensor(model.mean, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(model.std, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    if kind == "black":
        return ((0 - mean) / std).expand_as(pixels).clone()
    if kind == "blur":
        return gaussian_blur(pixels, blur_sigma)
    if kind == "noise":
        u = torch.stack(
            [torch.rand(pixels.shape[1:], generator=g, device=pixels.device, dtype=pixels.dtype) for g in generators]
        )
        return (u - mean) / std
    raise MethodError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")


def text_baseline(model: DualEncoder, texts: TextBatch, embeds: Tensor) -> Tensor:
    """(B, T, D) the pad token's embedding at shown tokens, ``embeds`` elsewhere (SOS/EOS/padding)."""
    pad = torch.full_like(texts.ids[:1, :1], model.pad_token_id)
    pad_emb = model.text.token_embeddings(TextBatch(pad, torch.ones_like(pad), pad[:, 0], pad.bool(), [], []))
    return torch.where(texts.content_mask[..., None], pad_emb.to(embeds.dtype), embeds)


@register_method
class IntegratedGradients(Explainer):
    """Integrated gradients of the target along a straight path from a baseline.

    Args:
        model: the dual encoder.
        baseline: image baseline, ``black`` (default), ``blur`` or ``noise``.
        steps: quadrature points of the path integral (32).
        internal_batch_size: evaluations per forward pass (None: all ``steps`` at once).
        blur_sigma: Gaussian standard deviation in pixels for the ``blur`` baseline (10).

    Paper: Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="integrated_gradients", baseline="blur")
    """

    name = "integrated_gradients"
    contrast_form = "integrated gradients of the difference from the same baseline (linear: IG of s1 minus IG of s2; sums to d(x) - d(baseline))"
    summary = "integrated gradients from a baseline (attributions sum to the score difference)"
    paper = "Sundararajan, Taly & Yan. Axiomatic Attribution for Deep Networks. ICML 2017"

    def __init__(
        self,
        model,
        baseline: Baseline = "black",
        steps: int = 32,
        internal_batch_size: int | None = None,
        blur_sigma: float = 10.0,
    ):
        super().__init__(model)
        if baseline not in BASELINES:
            raise MethodError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
        if not isinstance(steps, int) or steps < 1:
            raise MethodError("integrated_gradients needs steps >= 1")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise MethodError("internal_batch_size must be >= 1")
        if blur_sigma < 0:
            raise MethodError("blur_sigma must be >= 0")
        self.baseline, self.steps = baseline, steps
        self.internal_batch_size, self.blur_sigma = internal_batch_size, blur_sigma

    def _ig(self, forward, x: Tensor, base: Tensor, args: tuple) -> Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        ibs = None if self.internal_batch_size is None else max(self.internal_batch_size, x.shape[0])
        with torch.enable_grad():
            return CaptumIG(forward).attribute(
                x, baselines=base, additional_forward_args=args, n_steps=self.steps, internal_batch_size=ibs
            )

    def image_attributions(self, batch: PairBatch) -> tuple[Tensor, Tensor]:
        """(attributions (B, 3, H, W), baseline (B, 3, H, W))."""
        model = self.model
        base = image_baseline(model, batch.pixels, self.baseline, batch.generators(), self.blur_sigma)

        def forward(px: Tensor, rows: Tensor) -> Tensor:  # (N, 3, H, W), (N,) pair of each row -> (N,)
            return batch.score_image(model.image.encode(px), rows)

        rows = torch.arange(len(batch), device=batch.pixels.device)  # repeated with the path points
        return self._ig(forward, batch.pixels.detach(), base, (rows,)), base

    def text_attributions(self, batch: PairBatch) -> tuple[Tensor, Tensor]:
        """(attributions (B, T, D), baseline embeddings (B, T, D))."""
        model, tb = self.model, batch.texts
        with torch.no_grad():
            emb = model.text.token_embeddings(tb)
            base = text_baseline(model, tb, emb)

        def forward(e: Tensor, ids: Tensor, am: Tensor, pool: Tensor, content: Tensor, rows: Tensor) -> Tensor:
            texts = TextBatch(ids, am, pool, content, [], [])  # the batch repeated for every path point
            return batch.score_text(model.text.encode(texts, inputs_embeds=e), rows)

        rows = torch.arange(len(batch), device=tb.ids.device)
        args = (tb.ids, tb.attention_mask, tb.pool_index, tb.content_mask, rows)
        return self._ig(forward, emb.detach(), base, args), base

    def attribute_image(self, batch: PairBatch) -> Tensor:
        return self.image_attributions(batch)[0].sum(1)  # (B, H, W)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        return self.text_attributions(batch)[0].sum(-1)  # (B, T)
