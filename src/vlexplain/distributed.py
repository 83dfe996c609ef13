"""Helpers shared by the data-parallel training loops (DEAL fine-tuning, the shapes-world CLIP)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: gradient elements per all-reduce
BUCKET = 1 << 24


def average_gradients(
    params: Sequence[torch.nn.Parameter], mean: Callable[[Tensor], Tensor], bucket: int = BUCKET
) -> None:
    """Replace every parameter's gradient by its mean over processes, in place.

    Gradients are flattened into buckets of one dtype and at most about ``bucket`` elements, so a
    model costs a few collective calls rather than one per parameter. A missing gradient counts as
    zeros (every process must send the same buckets).

    Args:
        params: the parameters, in the same order on every process.
        mean: the collective: a flat tensor in, its element-wise mean over processes out (may
            work in place), e.g. accelerate's ``reduce(t, reduction="mean")``.
        bucket: elements per bucket.
    """
    grads: list[Tensor] = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    buckets: list[list[Tensor]] = []
    size = 0
    for g in grads:
        if not buckets or g.dtype != buckets[-1][0].dtype or size >= bucket:
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += g.numel()
    for group in buckets:
        flat = mean(torch.cat([g.reshape(-1) for g in group]))
        for g, part in zip(group, flat.split([g.numel() for g in group])):
            g.copy_(part.view_as(g))
