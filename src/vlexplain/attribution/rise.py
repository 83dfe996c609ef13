"""RISE: randomized input sampling for explanation (Petsiuk, Das & Saenko, BMVC 2018).

Images: ``N`` random binary ``cell x cell`` grids (each cell kept with probability ``p_keep``) are
upsampled bilinearly to ``(cell + 1) * ceil(H / cell)`` pixels and cropped at a random shift to
``H x W``; the image is blended with a baseline through each mask and scored. The saliency is the
Monte Carlo estimate of ``E[score(M) * M] / p_keep``::

    saliency = sum_i score_i * mask_i / (N * p_keep)

Texts: each content token is kept with probability ``p_keep`` (removed tokens become the pad
token); the same estimator gives one score per token.

Every pair draws its masks from its own generator; the perturbed inputs of all pairs share batched
forward passes of ``chunk`` inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from .base import Explainer, PairBatch, register_method
from .perturbation import (
    BASELINES,
    check_choice,
    content_positions,
    image_baseline,
    keep_from_features,
    score_images,
    score_texts,
)


def draw_grids(
    n: int, cell: int, size: tuple[int, int], p_keep: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Random low-resolution grids and shifts of one pair.

    Returns:
        grids: (n, cell, cell) float 0/1. shifts: (n, 2) long, row shift in [0, ceil(H/cell)) and
        column shift in [0, ceil(W/cell)).
    """
    dev = generator.device
    H, W = size
    grids = (torch.rand(n, cell, cell, generator=generator, device=dev) < p_keep).float()
    dy = torch.randint(0, math.ceil(H / cell), (n,), generator=generator, device=dev)
    dx = torch.randint(0, math.ceil(W / cell), (n,), generator=generator, device=dev)
    return grids, torch.stack([dy, dx], 1)


def grids_to_masks(grids: Tensor, shifts: Tensor, size: tuple[int, int]) -> Tensor:
    """(n, cell, cell) grids and (n, 2) shifts -> (n, H, W) smooth masks in [0, 1].

    Each grid is upsampled bilinearly to ``(cell + 1) * ceil(H / cell)`` by
    ``(cell + 1) * ceil(W / cell)`` and cropped to ``H x W`` at its shift.
    """
    n, cell = grids.shape[0], grids.shape[-1]
    H, W = size
    up = F.interpolate(
        grids[:, None].float(),
        size=((cell + 1) * math.ceil(H / cell), (cell + 1) * math.ceil(W / cell)),
        mode="bilinear",
        align_corners=False,
    )[:, 0]  # (n, H', W')
    rows = shifts[:, :1] + torch.arange(H, device=grids.device)  # (n, H)
    cols = shifts[:, 1:] + torch.arange(W, device=grids.device)  # (n, W)
    idx = torch.arange(n, device=grids.device)[:, None, None]
    return up[idx, rows[:, :, None], cols[:, None, :]]


@register_method
class Rise(Explainer):
    """RISE saliency from randomly masked inputs (model-agnostic, no gradients).

    Args:
        model: the dual encoder.
        n_masks: masks per pair and side (1000).
        cell: grid cells per side of the low-resolution image masks (7).
        p_keep: probability that a cell / a token is kept (0.5).
        baseline: what masked pixels become: ``mean`` (zeros in normalised space) or ``blur``.
        chunk: perturbed inputs per forward pass (64).

    Paper: Petsiuk, Das, Saenko. RISE: Randomized Input Sampling for Explanation of Black-box
    Models. BMVC 2018.
    """

    name = "rise"
    contrast_form = "mask-weighted mean of the difference of masked scores (linear: RISE of s1 minus RISE of s2)"
    summary = "RISE: saliency from randomly masked inputs (no gradients)"
    paper = "Petsiuk, Das & Saenko. RISE: Randomized Input Sampling for Explanation of Black-box Models. BMVC 2018"
    needs_gradients = False
    web_limits = {"n_masks": 4000, "cell": 64, "chunk": 256}

    @classmethod
    def cost(cls, options: dict) -> float:
        return 2.0 * cls.option(options, "n_masks")  # n_masks masked inputs per side

    def __init__(
        self,
        model,
        n_masks: int = 1000,
        cell: int = 7,
        p_keep: float = 0.5,
        baseline: str = "mean",
        chunk: int = 64,
    ):
        super().__init__(model)
        check_choice(self.name, "baseline", baseline, BASELINES)
        if n_masks < 1 or cell < 1 or chunk < 1 or not 0 < p_keep <= 1:
            raise MethodError("rise needs n_masks >= 1, cell >= 1, chunk >= 1 and 0 < p_keep <= 1")
        self.n_masks, self.cell, self.p_keep, self.baseline, self.chunk = n_masks, cell, p_keep, baseline, chunk

    def attribute_image(self, batch: PairBatch) -> Tensor:
        B, (H, W) = len(batch), batch.pixels.shape[-2:]
        dev = batch.pixels.device
        drawn = [draw_grids(self.n_masks, self.cell, (H, W), self.p_keep, g) for g in batch.generators(dev)]
        grids = torch.cat([d[0] for d in drawn])  # (B*N, cell, cell), pair-major
        shifts = torch.cat([d[1] for d in drawn])
        pair = torch.arange(B, device=dev).repeat_interleave(self.n_masks)
        base = image_baseline(batch.pixels, self.baseline)  # type: ignore[arg-type]
        sal = torch.zeros(B, H, W, dtype=torch.float32, device=dev)
        for a in range(0, pair.numel(), self.chunk):
            p = pair[a : a + self.chunk]
            m = grids_to_masks(grids[a : a + self.chunk], shifts[a : a + self.chunk], (H, W))  # (k, H, W)
            s = score_images(self.model, batch, base, p, m).float()
            sal.index_add_(0, p, s[:, None, None] * m)
        return (sal / (self.n_masks * self.p_keep)).to(batch.pixels.dtype)

    def attribute_text(self, batch: PairBatch) -> Tensor:
        pos, n = content_positions(batch.texts)
        B, T = batch.texts.ids.shape
        dev = batch.image_emb.device
        n_max = pos.shape[1]
        feats = []
        for g, ni in zip(batch.generators(dev), n.tolist()):  # one generator per pair
            z = (torch.rand(self.n_masks, ni, generator=g, device=dev) < self.p_keep).float()
            feats.append(F.pad(z, (0, n_max - ni)))
        Z = torch.cat(feats)  # (B*N, n_max), pair-major
        pair = torch.arange(B, device=dev).repeat_interleave(self.n_masks)
        sal = torch.zeros(B, T, dtype=torch.float32, device=dev)
        for a in range(0, pair.numel(), self.chunk):
            p = pair[a : a + self.chunk]
            keep = keep_from_features(pos, p, Z[a : a + self.chunk], T)
            s = score_texts(self.model, batch, p, keep).float()
            sal.index_add_(0, p, s[:, None] * keep.float())
        return (sal / (self.n_masks * self.p_keep)).to(batch.image_emb.dtype)
