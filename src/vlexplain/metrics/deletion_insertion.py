"""Deletion and insertion curves and their AUC (Petsiuk et al., RISE, 2018), image and text.

Pixels (or content tokens) are ranked by the map, most relevant first (ties keep index order).
At step ``k = 0 .. n_steps`` the top ``round(k / n_steps * N)`` of them are

* deletion: replaced by the substrate, starting from the intact input;
* insertion: restored, starting from the fully substituted input.

The score at each step is the cosine with the pair's other embedding (divided by the original
score when ``normalize=True``, which is meaningful only for positive original scores); the AUC is the trapezoid rule over the fractions ``[0, 1]``.
Lower deletion AUC and higher insertion AUC are better.

Image substrates (defaults as in RISE: ``"zero"`` for deletion, ``"blur"`` for insertion):
``"zero"`` (black in RGB), ``"mean"`` (each image's own mean colour),
``"blur"`` (Gaussian blur of the image, ``blur_kernel`` x ``blur_kernel`` with ``blur_sigma``,
reflect padding; the defaults 11 / 5.0 follow the RISE code). Text substrate: the pad token id
(SOS/EOS kept, pooling at the true EOS).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..models.base import DualEncoder, TextBatch
from ._common import (
    check_pairs,
    embed_images,
    embed_texts,
    from_rgb,
    image_scores,
    prepare_image_maps,
    prepare_token_maps,
    rank_desc,
    replace_tokens,
    text_scores,
    to_rgb,
    trapezoid_auc,
)

Substrate = Literal["zero", "mean", "blur"]
Mode = Literal["deletion", "insertion"]


def gaussian_kernel1d(size: int, sigma: float, device=None, dtype=torch.float32) -> Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def blur(images: Tensor, kernel: int = 11, sigma: float = 5.0) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W) images with reflect padding."""
    c = images.shape[1]
    k = gaussian_kernel1d(kernel, sigma, images.device, images.dtype)
    p = kernel // 2
    x = F.pad(images, (p, p, p, p), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, kernel), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, kernel, 1), groups=c)


def make_substrate(
    model: DualEncoder, pixels: Tensor, substrate: Substrate, blur_kernel: int = 11, blur_sigma: float = 5.0
) -> Tensor:
    """The (B, 3, H, W) preprocessed image that removed pixels are taken from."""
    if substrate == "zero":
        return from_rgb(model, torch.zeros_like(pixels))
    if substrate == "mean":
        return pixels.mean(dim=(2, 3), keepdim=True).expand_as(pixels)
    if substrate == "blur":
        return from_rgb(model, blur(to_rgb(model, pixels), blur_kernel, blur_sigma))
    raise InputError(f"unknown substrate {substrate!r}; use 'zero', 'mean' or 'blur'")


def _counts(n_steps: int, totals: Tensor) -> Tensor:
    """(n_steps + 1, B) number of elements removed/inserted at each step."""
    if n_steps < 1:
        raise InputError("n_steps must be >= 1")
    frac = torch.arange(n_steps + 1, device=totals.device, dtype=torch.float64) / n_steps
    return torch.round(frac[:, None] * totals[None].double()).long()


def _finish(curve: Tensor, original: Tensor, normalize: bool) -> dict[str, Tensor]:
    if normalize:
        curve = curve / original[:, None]
    return {"auc": trapezoid_auc(curve), "curve": curve, "score": original}


@torch.no_grad()
def image_curve(
    model: DualEncoder,
    pixels: Tensor,
    texts: TextBatch,
    image_maps: Tensor,
    *,
    mode: Mode = "deletion",
    substrate: Substrate | None = None,
    n_steps: int = 16,
    normalize: bool = False,
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
    batch_size: int = 32,
) -> dict[str, Tensor]:
    """Image deletion or insertion curve.

    ``substrate`` None picks "zero" for deletion and "blur" for insertion.

    Returns:
        ``auc`` (B,), ``curve`` (B, n_steps + 1) at fractions ``k / n_steps``, ``score`` (B,) original.
    """
    if mode not in ("deletion", "insertion"):
        raise InputError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    n = check_pairs(pixels, texts)
    if substrate is None:
        substrate = "zero" if mode == "deletion" else "blur"
    pixels = pixels.to(model.device, model.dtype)
    h, w = pixels.shape[-2:]
    maps = prepare_image_maps(image_maps, (h, w), n, pixels.device)
    ranks = rank_desc(maps.reshape(n, -1)).reshape(n, 1, h, w)
    sub = make_substrate(model, pixels, substrate, blur_kernel, blur_sigma)
    t_emb = embed_texts(model, texts, batch_size)
    counts = _counts(n_steps, torch.full((n,), h * w, device=pixels.device))
    scores = []
    for k in range(n_steps + 1):
        chosen = ranks < counts[k].view(n, 1, 1, 1)
        x = torch.where(chosen, sub, pixels) if mode == "deletion" else torch.where(chosen, pixels, sub)
        scores.append(image_scores(model, x, t_emb, batch_size))
    original = image_scores(model, pixels, t_emb, batch_size)
    return _finish(torch.stack(scores, 1), original, normalize)


@torch.no_grad()
def text_curve(
    model: DualEncoder,
    pixels: Tensor,
    texts: TextBatch,
    token_maps: Tensor,
    *,
    mode: Mode = "deletion",
    n_steps: int = 16,
    normalize: bool = False,
    batch_size: int = 32,
) -> dict[str, Tensor]:
    """Text deletion or insertion curve over content tokens (pad-token substrate).

    Each text's content tokens are ranked by its map; at step ``k`` the top
    ``round(k / n_steps * n_content)`` are padded (deletion) or the only ones not padded (insertion).

    Returns:
        ``auc`` (B,), ``curve`` (B, n_steps + 1), ``score`` (B,) original.
    """
    if mode not in ("deletion", "insertion"):
        raise InputError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    check_pairs(pixels, texts)
    maps = prepare_token_maps(token_maps, texts)
    cm = texts.content_mask.bool()
    ranks = rank_desc(maps, cm)
    counts = _counts(n_steps, cm.sum(1))
    i_emb = embed_images(model, pixels, batch_size)
    pad = model.pad_token_id
    scores = []
    for k in range(n_steps + 1):
        chosen = cm & (ranks < counts[k][:, None])
        remove = chosen if mode == "deletion" else cm & ~chosen
        scores.append(text_scores(model, replace_tokens(texts, remove, pad), i_emb, batch_size))
    original = text_scores(model, texts, i_emb, batch_size)
    return _finish(torch.stack(scores, 1), original, normalize)


def deletion_image(model, pixels, texts, image_maps, **kw) -> dict[str, Tensor]:
    """Image deletion curve and AUC (lower is better); options as ``image_curve``."""
    return image_curve(model, pixels, texts, image_maps, mode="deletion", **kw)


def insertion_image(model, pixels, texts, image_maps, **kw) -> dict[str, Tensor]:
    """Image insertion curve and AUC (higher is better); options as ``image_curve``."""
    return image_curve(model, pixels, texts, image_maps, mode="insertion", **kw)


def deletion_text(model, pixels, texts, token_maps, **kw) -> dict[str, Tensor]:
    """Text deletion curve and AUC (lower is better); options as ``text_curve``."""
    return text_curve(model, pixels, texts, token_maps, mode="deletion", **kw)


def insertion_text(model, pixels, texts, token_maps, **kw) -> dict[str, Tensor]:
    """Text insertion curve and AUC (higher is better); options as ``text_curve``."""
    return text_curve(model, pixels, texts, token_maps, mode="insertion", **kw)
