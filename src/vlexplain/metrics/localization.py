"""Localisation metrics against ground-truth masks: pointing game, energy pointing game, AUROC.

All functions take ``maps`` (B, H, W) raw attribution maps and ``masks`` (B, H, W) bool ground
truth of the same batch (maps of another size are resized bilinearly to the masks' size) and
return one value per sample; a value that is undefined for a sample is NaN (an empty mask, a
mask covering the whole image for AUROC, a map without positive mass for the energy game).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError


def _prepare(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if masks is None:
        raise InputError("this metric needs ground-truth masks (B, H, W)")
    if masks.dim() != 3 or maps.dim() != 3 or maps.shape[0] != masks.shape[0]:
        raise InputError(
            f"maps and masks must be (B, H, W) with equal B, got {tuple(maps.shape)} and {tuple(masks.shape)}"
        )
    masks = masks.to(maps.device).bool()
    maps = maps.float()
    if maps.shape[-2:] != masks.shape[-2:]:
        maps = F.interpolate(maps[:, None], size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return maps, masks


def disk(radius: int, device=None) -> Tensor:
    """(2r+1, 2r+1) bool disk: offsets with distance <= ``radius``."""
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def dilate(masks: Tensor, radius: int) -> Tensor:
    """Dilate (B, H, W) bool masks by a disk of ``radius`` pixels (pixels outside the image count as 0).

    A pixel is set when some mask pixel lies within Euclidean distance ``radius`` of it. The disk
    is split into rows: row ``dy`` of the disk is a horizontal run of half-width
    ``floor(sqrt(radius**2 - dy**2))``, so the dilation is the union over ``dy`` of a 1-D max-pool
    shifted by ``dy`` rows (O(radius) passes instead of a (2r+1)^2 convolution).
    """
    masks = masks.bool()
    if radius <= 0:
        return masks
    b, h, w = masks.shape
    x = masks.float().reshape(b * h, 1, w)
    out = torch.zeros_like(masks)
    for dy in range(0, min(radius, h - 1) + 1):
        half = int(math.isqrt(radius * radius - dy * dy))
        run = F.max_pool1d(x, 2 * half + 1, stride=1, padding=half).reshape(b, h, w) > 0.5 if half else masks
        if dy == 0:
            out |= run
        else:  # row y gets the runs of rows y - dy and y + dy
            out[:, dy:] |= run[:, :-dy]
            out[:, :-dy] |= run[:, dy:]
    return out


def tied_max_share(maps: Tensor, regions: Tensor) -> Tensor:
    """Share of each map's maximal pixels that lie in ``regions``: the expected hit of a pointing
    game that picks one of the tied maxima uniformly at random.

    Args:
        maps: (B, H, W) maps.
        regions: (B, H, W) bool, the pixels that count as a hit.

    Returns:
        (B,) in [0, 1]: 1.0 or 0.0 where the maximum is unique; k / n where k of the n pixels equal
        to the maximum lie in the region (a constant map scores the region's share of the image).
        A map with NaN values is scored on its other pixels.
    """
    flat = maps.reshape(maps.shape[0], -1).float()
    flat = torch.nan_to_num(flat, nan=float("-inf"))
    top = flat == flat.max(1, keepdim=True).values  # (B, H*W) the tied maxima (never empty)
    inside = (top & regions.reshape(regions.shape[0], -1).to(top.device)).sum(1)
    return inside.float() / top.sum(1).float()


def pointing_game(maps: Tensor, masks: Tensor, tolerance: int = 15) -> Tensor:
    """Pointing game (Zhang et al., 2016): 1.0 if the map's maximum lies within ``tolerance`` px of the mask.

    "Within" means inside the mask dilated by a disk of radius ``tolerance`` (Euclidean distance to
    the nearest mask pixel <= tolerance, computed exactly). Tolerance is in pixels of the masks'
    resolution. When several pixels tie at the maximum (plateaus, upsampled token grids), the
    score is the share of the tied maxima that lie within the tolerance: the expected hit of a
    uniformly random choice among them (neither the first in row-major order, a bias towards the
    top-left, nor "any tied maximum", which lets a constant map always hit).

    Returns:
        (B,) in [0, 1] (1.0 hit / 0.0 miss for a unique maximum), NaN for empty masks.
    """
    maps, masks = _prepare(maps, masks)
    hit = tied_max_share(maps, dilate(masks, tolerance))
    return torch.where(masks.flatten(1).any(1), hit, torch.full_like(hit, float("nan")))


def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM, 2020): share of the positive map mass inside the mask.

    Returns:
        (B,) in [0, 1]; NaN where the map has no positive mass or the mask is empty.
    """
    maps, masks = _prepare(maps, masks)
    pos = maps.clamp_min(0).reshape(maps.shape[0], -1)
    inside = (pos * masks.reshape(maps.shape[0], -1)).sum(1)
    total = pos.sum(1)
    ok = (total > 0) & masks.reshape(maps.shape[0], -1).any(1)
    return torch.where(ok, inside / total.clamp_min(1e-30), torch.full_like(total, float("nan")))


def average_ranks(values: Tensor) -> Tensor:
    """(B, N) -> (B, N) 1-based ranks within each row, ties given their average rank."""
    b, n = values.shape
    v, order = torch.sort(values.float(), dim=1, stable=True)
    new = torch.ones_like(v, dtype=torch.bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    gid = torch.cumsum(new.reshape(-1).long(), 0) - 1  # group ids, unique across rows (row starts are new)
    pos = torch.arange(1, n + 1, device=values.device, dtype=torch.float64).repeat(b)
    ng = int(gid[-1]) + 1
    sums = torch.zeros(ng, dtype=torch.float64, device=values.device).index_add_(0, gid, pos)
    cnts = torch.zeros(ng, dtype=torch.float64, device=values.device).index_add_(0, gid, torch.ones_like(pos))
    sorted_ranks = (sums / cnts)[gid].reshape(b, n)
    ranks = torch.empty_like(sorted_ranks)
    ranks.scatter_(1, order, sorted_ranks)
    return ranks


def auroc(maps: Tensor, masks: Tensor) -> Tensor:
    """Area under the ROC curve of the map's values as a pixel classifier of the mask.

    Rank-based (Mann-Whitney U), ties counted as one half, equal to
    ``sklearn.metrics.roc_auc_score(mask.ravel(), map.ravel())``.

    Returns:
        (B,) in [0, 1] (0.5 = chance); NaN where the mask is empty or covers everything.
    """
    maps, masks = _prepare(maps, masks)
    b = maps.shape[0]
    lab = masks.reshape(b, -1).double()
    r = average_ranks(maps.reshape(b, -1))
    npos = lab.sum(1)
    nneg = lab.shape[1] - npos
    u = (r * lab).sum(1) - npos * (npos + 1) / 2
    ok = (npos > 0) & (nneg > 0)
    out = u / (npos * nneg).clamp_min(1)
    return torch.where(ok, out, torch.full_like(out, float("nan"))).float()


def boxes_to_masks(
    boxes: Sequence[Sequence[Sequence[float]]],
    size: tuple[int, int],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    resize: str = "shortest_center_crop",
    device=None,
) -> Tensor:
    """COCO boxes ``[x, y, w, h]`` (pixels of the original image) -> (B, H, W) bool masks.

    Args:
        boxes: per sample, a list of boxes (the mask is their union; an empty list gives an empty mask).
        size: (H, W) of the masks (the model's input size).
        image_sizes: per sample, the original (height, width); None means boxes are already in
            ``size`` coordinates.
        resize: how the image was brought to ``size``: "shortest_center_crop" (the default CLIP
            preprocessing: shortest side resized, centre crop) or "stretch" (both sides resized).
        device: device of the result.

    A pixel (row i, column j) with centre (j + 0.5, i + 0.5) is inside a box if the centre lies
    within it.
    """
    H, W = size
    out = torch.zeros(len(boxes), H, W, dtype=torch.bool, device=device)
    cy = torch.arange(H, device=device, dtype=torch.float64) + 0.5
    cx = torch.arange(W, device=device, dtype=torch.float64) + 0.5
    for i, bl in enumerate(boxes):
        sx = sy = 1.0
        ox = oy = 0.0
        if image_sizes is not None:
            ih, iw = image_sizes[i]
            if resize == "stretch":
                sx, sy = W / iw, H / ih
            elif resize == "shortest_center_crop":
                s = min(H, W)
                nh, nw = (s, int(s * iw / ih)) if ih <= iw else (int(s * ih / iw), s)
                sx, sy = nw / iw, nh / ih
                oy, ox = int(round((nh - H) / 2.0)), int(round((nw - W) / 2.0))
            else:
                raise InputError(f"resize must be 'shortest_center_crop' or 'stretch', got {resize!r}")
        for box in bl:
            if len(box) != 4:
                raise InputError(f"a COCO box is [x, y, w, h], got {list(box)}")
            x, y, bw, bh = (float(v) for v in box)
            x0, x1 = x * sx - ox, (x + bw) * sx - ox
            y0, y1 = y * sy - oy, (y + bh) * sy - oy
            inside = ((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[None, :]
            out[i] |= inside
    return out
