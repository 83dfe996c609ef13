"""SmoothGrad, SmoothGrad-squared and VarGrad: the NoiseTunnel option of the gradient methods.

``smooth="smoothgrad"`` averages a method's map over ``n_samples`` copies of the input with
Gaussian noise added (Smilkov et al., 2017); ``"smoothgrad_sq"`` averages the squared maps and
``"vargrad"`` takes their variance (Adebayo et al., 2018), as Captum's ``NoiseTunnel`` does. The
noise acts on the input the method differentiates: the preprocessed pixels on the image side, the
token input embeddings on the text side. Its standard deviation is ``stdev`` times the range
(max - min) of that pair's input, the noise level of the SmoothGrad paper.

Each pair draws its noise from a generator seeded from its own seed, so a pair's smoothed map does
not depend on the rest of the batch and the same seed gives the same map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import MethodError

Smooth = Literal["smoothgrad", "smoothgrad_sq", "vargrad"]
SMOOTH_KINDS: tuple[str, ...] = ("smoothgrad", "smoothgrad_sq", "vargrad")
#: stream of the noise generators: apart from the seed's own stream (baselines, masks)
_NOISE_STREAM = 0x5EED


def check_smooth(method: str, smooth: str | None, n_samples: int, stdev: float) -> None:
    """Raise a MethodError for a bad ``smooth`` / ``n_samples`` / ``stdev`` option."""
    if smooth is not None and smooth not in SMOOTH_KINDS:
        raise MethodError(f"{method}: smooth must be one of {', '.join(SMOOTH_KINDS)} (or unset), got {smooth!r}")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise MethodError(f"{method}: n_samples must be an integer >= 1, got {n_samples!r}")
    if not isinstance(stdev, (int, float)) or isinstance(stdev, bool) or not stdev >= 0:
        raise MethodError(f"{method}: stdev must be a number >= 0 (a fraction of the input's range), got {stdev!r}")


def noise_seed(seed: int) -> int:
    """The seed of a pair's SmoothGrad noise, derived from the pair's seed."""
    return int(np.random.SeedSequence([int(seed) % 2**63, _NOISE_STREAM]).generate_state(1)[0])


def pair_noise(x: Tensor, stdev: float, generators: list[torch.Generator]) -> Tensor:
    """(B, ...) Gaussian noise, row i drawn from ``generators[i]`` (CPU) with standard deviation
    ``stdev * (max(x_i) - min(x_i))``."""
    out = []
    for xi, g in zip(x, generators):  # one generator per pair: batch-independent draws
        scale = float(xi.max() - xi.min()) * stdev
        out.append(torch.randn(xi.shape, generator=g, dtype=torch.float32) * scale)
    return torch.stack(out).to(device=x.device, dtype=x.dtype)


def combine(maps: list[Tensor], smooth: str) -> Tensor:
    """Mean, mean of squares, or variance of the per-sample maps (float32)."""
    m = torch.stack([t.float() for t in maps])
    if smooth == "smoothgrad":
        return m.mean(0)
    if smooth == "smoothgrad_sq":
        return (m * m).mean(0)
    return ((m * m).mean(0) - m.mean(0) ** 2).clamp_min(0)


def smoothed(
    fn: Callable[..., Tensor], batch, side: str, model, smooth: str | None, n_samples: int, stdev: float
) -> Tensor:
    """``fn(batch)`` (a method's ``attribute_image`` / ``attribute_text`` body), smoothed over noisy
    copies of the side's input when ``smooth`` is set.

    Args:
        fn: the method's map of a [`PairBatch`][vlexplain.attribution.base.PairBatch].
        batch: the PairBatch.
        side: "image" (noise on ``batch.pixels``) or "text" (noise on the token input embeddings,
            passed on as ``batch.text_embeds``).
        model: the dual encoder.
        smooth / n_samples / stdev: the options (``smooth`` None: ``fn(batch)`` unchanged).
    """
    if smooth is None:
        return fn(batch)
    gens = [torch.Generator().manual_seed(noise_seed(s)) for s in batch.seeds]
    x = batch.pixels if side == "image" else batch.token_embeddings(model.text)
    maps = []
    for _ in range(n_samples):
        noisy = x + pair_noise(x, stdev, gens)
        if side == "image":
            nb = dataclasses.replace(batch, pixels=noisy, hidden={})
        else:
            nb = dataclasses.replace(batch, text_embeds=noisy, hidden={})
        maps.append(fn(nb))
    return combine(maps, smooth).to(maps[0].dtype)
