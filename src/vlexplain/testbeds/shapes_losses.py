"""Losses and augmentation of the shapes-world CLIP's training (``vlexplain.testbeds.shapes_train``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def random_shift(x: Tensor, shift: int, gen: torch.Generator | None = None) -> Tensor:
    """Each image of ``x`` (B, C, H, W) moved by its own integer offset in [-shift, shift] on both
    axes; pixels moved in from outside repeat the border."""
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
    dy, dx = (torch.randint(0, 2 * shift + 1, (b, 1), generator=gen) for _ in range(2))
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)  # (B, H), (B, W)
    out = padded[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def multi_positive_loss(logits: Tensor, positives: Tensor) -> Tensor:
    """Cross-entropy of row-wise softmax ``logits`` against targets spread evenly over ``positives``."""
    target = positives.float() / positives.float().sum(-1, keepdim=True).clamp_min(1.0)
    return -(target * logits.log_softmax(-1)).sum(-1).mean()


def sigmoid_loss(logits: Tensor, positives: Tensor) -> Tensor:
    """Binary cross-entropy of every (scene, text) pair, summed over texts, mean over scenes."""
    return nn.functional.binary_cross_entropy_with_logits(logits, positives.to(logits.dtype), reduction="sum") / len(
        logits
    )


def ranking_loss(logits: Tensor, present: Tensor) -> Tensor:
    """Mean over (image, present class) of the cross-entropy of that class against the absent ones."""
    absent = logits.masked_fill(present, float("-inf")).logsumexp(-1, keepdim=True)  # (B, 1)
    per = torch.logaddexp(logits, absent) - logits  # (B, C)
    return per[present].mean()
