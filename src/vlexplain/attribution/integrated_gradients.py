"""Integrated gradients (Sundararajan, Taly & Yan, ICML 2017).

``IG_i(x) = (x_i - x'_i) * integral_0^1 dy/dx_i (x' + a (x - x')) da`` for a baseline ``x'``; the
attributions sum to ``y(x) - y(x')`` (completeness) up to the quadrature error of ``steps`` points.
The integral is a Gauss-Legendre quadrature of ``steps`` points (Captum's default rule; the
bridge's ``captum:IntegratedGradients`` gives the same attributions, which a test checks), its
path points evaluated in chunks of ``internal_batch_size`` rows.

* Image: the integral runs over preprocessed pixels; the map sums attributions over colour
  channels -> (B, H, W). Baselines: ``black`` (the preprocessed value of a black image, i.e.
  ``(0 - mean) / std`` per channel), ``blur`` (the input blurred by a Gaussian of ``blur_sigma``
  pixels) or ``noise`` (uniform [0, 1] noise, preprocessed, drawn from each pair's own generator).
* Text: the integral runs over the token input embeddings; the baseline puts the pad token's
  embedding at every shown token and keeps the start/end tokens (and padding) as they are, so
  those positions get zero attribution. The map sums over embedding dimensions -> (B, T).

``smooth`` (with ``n_samples`` and ``stdev``) averages the maps over noisy copies of the input
(``vlexplain.attribution.smooth``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder, TextBatch
from .base import Explainer, PairBatch, register_method
from .smooth import Smooth, check_smooth, smoothed

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


def gauss_legendre(n: int) -> tuple[list[float], list[float]]:
    """(path positions in (0, 1), weights summing to 1) of the ``n``-point Gauss-Legendre rule."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (0.5 * (1 + x)).tolist(), (0.5 * w).tolist()


def integrated_gradients(
    forward: Callable[..., Tensor], x: Tensor, base: Tensor, args: tuple, steps: int, chunk: int | None
) -> Tensor:
    """``(x - base) * sum_k w_k dF/dx (base + a_k (x - base))`` for ``F = forward(inputs, *args)`` (N,).

    Args:
        forward: batched scores; ``args`` are per-row tensors repeated along with the path points.
        x / base: (B, ...) inputs and baselines.
        steps: quadrature points.
        chunk: rows per forward pass (None: every point at once); at least B.

    Returns:
        (B, ...) attributions (float32 accumulation, the input's dtype).
    """
    alphas, weights = gauss_legendre(steps)
    B = x.shape[0]
    per = steps if chunk is None else max(1, chunk // B)  # path points per pass
    total = torch.zeros_like(x, dtype=torch.float32)
    diff = (x - base).detach()
    for a0 in range(0, steps, per):
        al = torch.tensor(alphas[a0 : a0 + per], dtype=x.dtype, device=x.device)
        wt = torch.tensor(weights[a0 : a0 + per], dtype=torch.float32, device=x.device)
        k = al.numel()
        shape = (k,) + (1,) * x.dim()
        pts = (base[None] + al.view(shape) * diff[None]).reshape(k * B, *x.shape[1:]).requires_grad_(True)
        rep = tuple(t.repeat(k, *([1] * (t.dim() - 1))) if isinstance(t, Tensor) else t for t in args)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(forward(pts, *rep).sum(), pts)
        total += (g.float().view(k, *x.shape) * wt.view(shape)).sum(0)
    return (total * diff.float()).to(x.dtype)


@register_method
class IntegratedGradients(Explainer):
    """Integrated gradients of the target along a straight path from a baseline.

    Args:
        model: the dual encoder.
        baseline: image baseline, ``black`` (default), ``blur`` or ``noise``.
        steps: quadrature points of the path integral (32).
        internal_batch_size: evaluations per forward pass (None: all ``steps`` at once).
        blur_sigma: Gaussian standard deviation in pixels for the ``blur`` baseline (10).
        smooth: None, or ``smoothgrad`` / ``smoothgrad_sq`` / ``vargrad`` over noisy inputs.
        n_samples: noisy copies per pair when smoothing (8).
        stdev: noise standard deviation as a fraction of the input's range (0.15).

    Paper: Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="integrated_gradients", baseline="blur")
    """

    name = "integrated_gradients"
    summary = "integrated gradients from a baseline (attributions sum to the score difference)"
    paper = "Sundararajan, Taly & Yan. Axiomatic Attribution for Deep Networks. ICML 2017"

    def __init__(
        self,
        model,
        baseline: Baseline = "black",
        steps: int = 32,
        internal_batch_size: int | None = None,
        blur_sigma: float = 10.0,
        smooth: Smooth | None = None,
        n_samples: int = 8,
        stdev: float = 0.15,
    ):
        super().__init__(model)
        check_smooth(self.name, smooth, n_samples, stdev)
        self.smooth, self.n_samples, self.stdev = smooth, n_samples, stdev
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
        return integrated_gradients(forward, x.detach(), base, args, self.steps, self.internal_batch_size)

    def image_attributions(self, batch: PairBatch) -> tuple[Tensor, Tensor]:
        """(attributions (B, 3, H, W), baseline (B, 3, H, W))."""
        model = self.model
        base = image_baseline(model, batch.pixels, self.baseline, batch.generators(), self.blur_sigma)

        def forward(px: Tensor, other: Tensor) -> Tensor:  # (N, 3, H, W), (N, d) -> (N,)
            return batch.target(model.image.encode(px), other)

        return self._ig(forward, batch.pixels.detach(), base, (batch.text_emb,)), base

    def text_attributions(self, batch: PairBatch) -> tuple[Tensor, Tensor]:
        """(attributions (B, T, D), baseline embeddings (B, T, D))."""
        model, tb = self.model, batch.texts
        emb = batch.token_embeddings(model.text)
        with torch.no_grad():
            base = text_baseline(model, tb, emb)

        def forward(e: Tensor, ids: Tensor, am: Tensor, pool: Tensor, content: Tensor, other: Tensor) -> Tensor:
            rows = TextBatch(ids, am, pool, content, [], [])  # the batch repeated for every path point
            return batch.target(other, model.text.encode(rows, inputs_embeds=e))

        args = (tb.ids, tb.attention_mask, tb.pool_index, tb.content_mask, batch.image_emb)
        return self._ig(forward, emb.detach(), base, args), base

    def attribute_image(self, batch: PairBatch) -> Tensor:
        fn = lambda b: self.image_attributions(b)[0].sum(1)  # (B, H, W)
        return smoothed(fn, batch, "image", self.model, self.smooth, self.n_samples, self.stdev)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        fn = lambda b: self.text_attributions(b)[0].sum(-1)  # (B, T)
        return smoothed(fn, batch, "text", self.model, self.smooth, self.n_samples, self.stdev)
