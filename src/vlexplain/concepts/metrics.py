"""Metrics of concept-level explanations (DEAL, ECCV 2024) and zero-shot accuracy.

* ``disentanglability`` — published: ``sigmoid(10 * (0.2 - S / 100))`` where ``S`` is the
  disentangle loss: per image the sum over concept pairs i > j of ``sum_pixels h_i * h_j`` (maps
  min-max normalised, on the patch grid), averaged over images — this is what the released
  evaluation computes (its K = 5 concepts give 10 pairs). ``pairs="mean"`` uses the mean over
  pairs instead. The raw mean pairwise overlap is returned too.
* ``localizability`` — insertion test: the top 20/40/60/80/100 % pixels of a concept map
  (upsampled bicubically) are inserted (every channel) into a blurred copy of *the same* image;
  the score of a step is ``clamp(|s_ins - s_blur| / |s_orig - s_blur|, 0, 1)`` with ``s`` the
  cosine of the image and the concept prompt; averaged over steps, then over maps. The default
  blur is the released one (bilinear down-sampling to half size and back). (The released code
  inserted channel 0 only and paired most maps with the wrong image.)
* ``zero_shot_logits`` — standard prompts or concept-based prompts (the class score is the
  mean cosine over the class's concept prompts); ``topk_accuracy``.
* ``part_pointing`` / ``part_energy`` — with ground-truth part masks: whether a map's
  maximum falls inside the part, and the share of the map's mass inside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..models.base import DualEncoder
from .relevance import Templates, _as_textbatch, minmax
from .sets import ConceptSet

STEPS = (0.2, 0.4, 0.6, 0.8, 1.0)


def mean_pairwise_overlap(concepts: Tensor, mask: Tensor | None = None) -> Tensor:
    """(B,) mean over concept pairs i < j of ``sum_pixels h_i * h_j``.

    Args:
        concepts: (B, K, gh, gw) maps.
        mask: (B, K) True for real concepts; images with fewer than two give NaN.
    """
    B, K = concepts.shape[:2]
    h = concepts.flatten(2).float()
    m = torch.ones(B, K, dtype=torch.bool, device=h.device) if mask is None else mask.to(h.device)
    h = h * m[..., None]
    gram = h @ h.transpose(1, 2)  # (B, K, K)
    upper = torch.triu(torch.ones(K, K, dtype=torch.bool, device=h.device), 1)
    pair = upper & m[:, :, None] & m[:, None, :]
    n = pair.sum((1, 2)).float()
    return (gram * pair).sum((1, 2)) / n.where(n > 0, torch.full_like(n, math.nan))


def disentanglability_score(overlap: float) -> float:
    """The published squashing: ``sigmoid(10 * (0.2 - overlap / 100))``."""
    return 1.0 / (1.0 + math.exp(-10.0 * (0.2 - overlap / 100.0)))


def disentanglability(
    concepts: Tensor, mask: Tensor | None = None, pairs: Literal["sum", "mean"] = "sum"
) -> tuple[float, float]:
    """Published disentanglability and the raw mean pairwise overlap, averaged over images.

    Args:
        concepts: (B, K, gh, gw) min-max normalised concept maps.
        mask: (B, K) True for real concepts.
        pairs: "sum" (released evaluation: sum over concept pairs) or "mean" (mean over pairs).

    Returns:
        ``(sigmoid(10 * (0.2 - S / 100)), mean pairwise overlap)`` with ``S`` the per-image sum
        (or mean) over pairs, averaged over images with at least two concepts.
    """
    ov = mean_pairwise_overlap(concepts, mask)
    m = torch.ones(concepts.shape[:2], dtype=torch.bool) if mask is None else mask.cpu()
    n = m.sum(1).to(ov.device)
    keep = ~ov.isnan()
    if not bool(keep.any()):
        raise InputError("disentanglability needs at least two concepts per image")
    o = float(ov[keep].mean())
    per = ov[keep] * (n[keep] * (n[keep] - 1) / 2) if pairs == "sum" else ov[keep]
    return disentanglability_score(float(per.mean())), o


def gaussian_blur(pixels: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) images with reflect padding (kernel 2*ceil(3 sigma)+1)."""
    if sigma <= 0:
        return pixels
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, device=pixels.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(pixels.dtype)
    C = pixels.shape[1]
    p = F.pad(pixels, (r, r, r, r), mode="reflect" if r < min(pixels.shape[-2:]) else "replicate")
    p = F.conv2d(p, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(p, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def downsample_blur(pixels: Tensor, factor: float = 0.5) -> Tensor:
    """The released baseline: bilinear resize by ``factor`` and back to the original size."""
    small = F.interpolate(pixels, scale_factor=factor, mode="bilinear", align_corners=False)
    return F.interpolate(small, size=pixels.shape[-2:], mode="bilinear", align_corners=False)


def insertion_masks(maps: Tensor, size: tuple[int, int], fraction: float) -> Tensor:
    """(N, H, W) 0/1 masks of the top ``fraction`` pixels of each map (bicubically upsampled to ``size``)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        up = maps.float()
    else:
        up = F.interpolate(maps[:, None].float(), size=size, mode="bicubic", align_corners=False)[:, 0]
    flat = up.flatten(1)
    n = int(round(fraction * flat.shape[1]))
    out = torch.zeros_like(flat)
    if n > 0:
        idx = flat.topk(n, dim=1).indices  # ties broken by topk's order
        out.scatter_(1, idx, 1.0)
    return out.view_as(up)


@torch.no_grad()
def localizability(
    model: DualEncoder,
    pixels: Tensor,
    maps: Tensor,
    texts: Sequence[str] | Tensor,
    *,
    steps: Sequence[float] = STEPS,
    blur_sigma: float | None = None,
    blurred: Tensor | None = None,
    eps: float = 1e-8,
) -> tuple[float, Tensor]:
    """Insertion-test localizability of concept maps.

    Args:
        model: the dual encoder (``encode_image`` and, for texts, ``tokenize`` / ``encode_text``).
        pixels: (N, 3, H, W) preprocessed images; map ``n`` is tested on image ``n``.
        maps: (N, gh, gw) or (N, H, W) maps.
        texts: N concept prompts, or (N, d) text embeddings.
        steps: fractions of pixels inserted.
        blur_sigma: Gaussian blur of the baseline in pixels (default: the released baseline,
            ``downsample_blur``).
        blurred: the baseline images instead of blurring ``pixels``.

    Returns:
        ``(mean score, per-map scores (N,))``.
    """
    N = pixels.shape[0]
    if maps.shape[0] != N:
        raise InputError(f"{maps.shape[0]} maps for {N} images: localizability pairs map n with image n")
    if isinstance(texts, Tensor):
        te = F.normalize(texts.float(), dim=-1)
    else:
        if len(texts) != N:
            raise InputError(f"{len(texts)} texts for {N} maps")
        te = F.normalize(model.encode_text(_as_textbatch(model, list(texts))).float(), dim=-1)
    H, W = pixels.shape[-2:]
    if blurred is None:
        blurred = gaussian_blur(pixels, blur_sigma) if blur_sigma is not None else downsample_blur(pixels)

    def score(x: Tensor) -> Tensor:
        return (F.normalize(model.encode_image(x).float(), dim=-1) * te).sum(-1)

    s_orig, s_blur = score(pixels), score(blurred)
    denom = (s_orig - s_blur).abs()
    per = []
    for f in steps:
        m = insertion_masks(maps, (H, W), f)[:, None].to(pixels.dtype)  # (N, 1, H, W): every channel
        s_ins = score(m * pixels + (1 - m) * blurred)
        per.append(((s_ins - s_blur).abs() / (denom + eps)).clamp(0, 1))
    scores = torch.stack(per, 1).mean(1)
    return float(scores.mean()), scores


@torch.no_grad()
def class_text_embeddings(
    model: DualEncoder,
    class_names: Sequence[str],
    concepts: ConceptSet | None = None,
    *,
    k: int | None = None,
    templates: Templates = Templates(),
    batch_size: int = 256,
) -> Tensor:
    """(C, d) unit class embeddings: the standard prompt, or the mean of the unit embeddings of
    the class's concept prompts (renormalised) when ``concepts`` is given."""
    groups = []
    for c in class_names:
        if concepts is None:
            groups.append([templates.category_prompt(c)])
        else:
            groups.append([templates.concept_prompt(c, d) for d in concepts.descriptors(c, k)])
    flat = [t for g in groups for t in g]
    embs = []
    for s in range(0, len(flat), batch_size):
        embs.append(F.normalize(model.encode_text(_as_textbatch(model, flat[s : s + batch_size])).float(), dim=-1))
    e = torch.cat(embs)
    out, i = [], 0
    for g in groups:
        out.append(e[i : i + len(g)].mean(0))
        i += len(g)
    return F.normalize(torch.stack(out), dim=-1)


def topk_accuracy(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent (k larger than the class count counts every prediction)."""
    out = {}
    labels = labels.to(logits.device)
    for k in ks:
        kk = min(k, logits.shape[1])
        hit = (logits.topk(kk, dim=1).indices == labels[:, None]).any(1)
        out[f"top{k}"] = 100.0 * float(hit.float().mean())
    return out


def part_pointing(maps: Tensor, part_masks: Tensor) -> Tensor:
    """(N,) 1.0 where the maximum of each map (upsampled to the mask size) lies inside the part mask.

    Where several pixels tie at the maximum, the share of them inside the part mask (as
    ``vlexplain.metrics.localization.pointing_game`` scores ties).

    Args:
        maps: (N, gh, gw) or (N, H, W) maps.
        part_masks: (N, H, W) boolean masks of the part each map should point at.
    """
    from ..metrics.localization import tied_max_share

    return tied_max_share(_to_size(maps, part_masks.shape[-2:]), part_masks)


def part_energy(maps: Tensor, part_masks: Tensor, eps: float = 1e-8) -> Tensor:
    """(N,) share of each (min-max normalised, upsampled) map's mass that falls inside the part mask."""
    up = minmax(_to_size(maps, part_masks.shape[-2:]))
    m = part_masks.to(up.dtype)
    return (up * m).flatten(1).sum(1) / (up.flatten(1).sum(1) + eps)


def _to_size(maps: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.float()
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
