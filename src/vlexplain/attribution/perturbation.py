"""Shared pieces of the perturbation methods (Kernel SHAP, RISE): baselines, feature masks and
batched, chunked scoring of perturbed images and texts.

Perturbed inputs of every pair in a batch are scored together in chunks, so a method makes
``ceil(total / chunk)`` forward passes. Scores are the batch's [`Target`][vlexplain.Target] of the perturbed
input against the other modality's fixed embedding.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder, TextBatch
from .base import PairBatch

Baseline = Literal["mean", "blur"]
BASELINES: tuple[Baseline, ...] = ("mean", "blur")


def check_choice(method: str, option: str, value: object, choices: tuple) -> None:
    """Raise a MethodError when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise MethodError(f"{method}: {option} must be one of {', '.join(map(str, choices))}, got {value!r}")


def gaussian_blur(pixels: Tensor, sigma: float) -> Tensor:
    """(B, C, H, W) separable Gaussian blur with reflect padding."""
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, device=pixels.device, dtype=pixels.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    C = pixels.shape[1]
    H, W = pixels.shape[-2:]
    r = min(r, H - 1, W - 1)  # reflect padding needs r < size
    k = k[(k.numel() // 2 - r) : (k.numel() // 2 + r + 1)]
    k = k / k.sum()
    out = F.pad(pixels, (r, r, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    out = F.pad(out, (0, 0, r, r), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def image_baseline(pixels: Tensor, kind: Baseline) -> Tensor:
    """What removed pixels are replaced by: ``mean`` = zeros in normalised space (the dataset
    mean colour), ``blur`` = the image blurred with sigma = 1/16 of its longer side."""
    if kind == "mean":
        return torch.zeros_like(pixels)
    return gaussian_blur(pixels, max(pixels.shape[-2:]) / 16.0)


def grid_feature_mask(size: tuple[int, int], grid: tuple[int, int], device: torch.device | str) -> Tensor:
    """(H, W) long tensor: index of the grid cell (row-major) each pixel falls in."""
    H, W = size
    gh, gw = grid
    rows = torch.arange(H, device=device) * gh // H
    cols = torch.arange(W, device=device) * gw // W
    return rows[:, None] * gw + cols[None, :]


def slic_feature_masks(model: DualEncoder, pixels: Tensor, n_segments: int, compactness: float) -> list[Tensor]:
    """One (H, W) long tensor of SLIC superpixel labels (0..M-1) per image."""
    from ..errors import require

    seg = require("skimage.segmentation", "viz")
    rgb = model.denormalize(pixels.float()).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for img in rgb:  # one segmentation per image (scikit-image is not batched)
        lab = seg.slic(img, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1)
        t = torch.as_tensor(lab, dtype=torch.long)
        _, t = torch.unique(t, return_inverse=True)  # labels 0..M-1 without gaps
        out.append(t.to(pixels.device))
    return out


@torch.no_grad()
def score_images(model: DualEncoder, batch: PairBatch, base: Tensor, pair: Tensor, masks: Tensor) -> Tensor:
    """Scores of perturbed images ``pixels[pair] * m + base[pair] * (1 - m)`` (one forward pass).

    Args:
        base: (B, 3, H, W) the baseline of every pair.
        pair: (k,) which pair each perturbed image belongs to.
        masks: (k, H, W) pixel masks in [0, 1] (1 = keep the image).

    Returns:
        (k,) target scores against each pair's text embedding.
    """
    m = masks.to(batch.pixels.dtype)[:, None]  # (k, 1, H, W)
    x = batch.pixels[pair] * m + base[pair] * (1 - m)
    return batch.score_image(model.image.encode(x), pair)


@torch.no_grad()
def score_texts(model: DualEncoder, batch: PairBatch, pair: Tensor, keep: Tensor) -> Tensor:
    """Scores of texts whose content tokens outside ``keep`` are replaced by the pad token (one pass).

    Args:
        pair: (k,) which pair each perturbed text belongs to.
        keep: (k, T) bool; positions that are not content tokens (SOS/EOS/padding) are always kept.

    Returns:
        (k,) target scores against each pair's image embedding.
    """
    tb = _perturbed_texts(batch.texts, pair, keep, model.pad_token_id)
    return batch.score_text(model.text.encode(tb), pair)


def content_positions(texts: TextBatch) -> tuple[Tensor, Tensor]:
    """Positions of each row's content tokens, in order.

    Returns:
        pos: (B, n_max) long, padded with T (one past the last position).
        n: (B,) number of content tokens per row.
    """
    cm = texts.content_mask
    B, T = cm.shape
    n = cm.sum(1)
    n_max = int(n.max()) if B else 0
    order = torch.argsort((~cm).to(torch.int8), dim=1, stable=True)[:, :n_max]
    valid = torch.arange(n_max, device=cm.device)[None, :] < n[:, None]
    return torch.where(valid, order, torch.full_like(order, T)), n


def keep_from_features(pos: Tensor, pair: Tensor, Z: Tensor, T: int) -> Tensor:
    """(k, n_max) per-row kept content features -> (k, T) bool kept positions (content only)."""
    keep = torch.zeros(pair.numel(), T + 1, dtype=torch.bool, device=Z.device)
    keep.scatter_(1, pos[pair], Z.bool())
    return keep[:, :T]


def _perturbed_texts(texts: TextBatch, p: Tensor, keep: Tensor, pad_id: int) -> TextBatch:
    cm = texts.content_mask[p]
    ids = torch.where(keep | ~cm, texts.ids[p], torch.full_like(texts.ids[p], pad_id))
    rows = p.tolist()
    return TextBatch(
        ids,
        texts.attention_mask[p],
        texts.pool_index[p],
        cm,
        [texts.tokens[i] for i in rows],
        [texts.texts[i] for i in rows],
    )


def scatter_content(texts: TextBatch, values: list[Tensor]) -> Tensor:
    """Per-pair content-token values (n_i,) -> (B, T), zeros at SOS/EOS/padding."""
    cm = texts.content_mask
    out = torch.zeros(cm.shape, dtype=values[0].dtype if values else torch.float32, device=cm.device)
    if values:
        out[cm] = torch.cat([v.to(cm.device) for v in values])
    return out
