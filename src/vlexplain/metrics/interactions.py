"""Metrics of word x region interactions on exact ground truth (``vlexplain benchmark interactions``).

A pair's caption names K objects; word (span) k's region map is the sum of its tokens' rows of an
[`Interactions`][vlexplain.Interactions] matrix, and object k's mask is its visible pixels. Each
region (gh, gw) is compared with the masks at the masks' resolution, every cell standing for the
pixels it covers (nearest upsampling: a cell's value on all its pixels).

* ``pointing``: the second-order pointing game (FIxLIP): word k's region peaks inside object k.
  Ties as the pointing game treats them: the share of the tied maximal pixels inside the mask, so a
  constant map scores the object's share of the image.
* ``mass``: mass ratio: word k's positive interaction mass on object k over its positive mass on
  all K objects (1: everything on its own object; NaN where it puts none on any object).
* ``reverse``: the reverse direction: for object k's mask, the word that interacts most with it
  (sum over the mask's pixels) is word k; ties: 1 / (number of tied words) when word k is among them.

Chance levels: ``pointing`` the object's share of the image for a constant map, ``mass`` the
object's share of the objects' area for a uniform map, ``reverse`` 1 / K.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .localization import tied_max_share


def _upsample(regions: Tensor, size: tuple[int, int]) -> Tensor:
    """(K, gh, gw) -> (K, H, W): each cell's value on the pixels it covers."""
    return F.interpolate(regions[:, None].float(), size=size, mode="nearest")[:, 0]


def _check(regions: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if regions.dim() != 3 or masks.dim() != 3 or regions.shape[0] != masks.shape[0]:
        raise InputError(
            f"interaction metrics take (K, gh, gw) regions and (K, H, W) masks, got {tuple(regions.shape)} "
            f"and {tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool:
        raise InputError(f"object masks must be boolean, got {masks.dtype}")
    return _upsample(regions, (int(masks.shape[1]), int(masks.shape[2]))), masks.to(regions.device)


def second_order_pointing_game(regions: Tensor, masks: Tensor) -> Tensor:
    """(K,) in [0, 1]: word k's region (``regions[k]``, (gh, gw)) peaks inside object k (``masks[k]``).

    NaN for an empty mask.
    """
    up, m = _check(regions, masks)
    hit = tied_max_share(up, m)
    return torch.where(m.flatten(1).any(1), hit, torch.full_like(hit, float("nan")))


def interaction_mass_ratio(regions: Tensor, masks: Tensor) -> Tensor:
    """(K,) in [0, 1]: word k's positive mass on object k over its positive mass on all K objects.

    NaN where a word has no positive mass on any object.
    """
    up, m = _check(regions, masks)
    pos = up.clamp_min(0)  # (K, H, W)
    on = torch.einsum("khw,jhw->kj", pos, m.float())  # (K words, K objects) positive mass
    own, total = on.diagonal(), on.sum(1)
    return torch.where(total > 0, own / total.clamp_min(1e-30), torch.full_like(total, float("nan")))


def reverse_pointing(regions: Tensor, masks: Tensor) -> Tensor:
    """(K,) in [0, 1]: for object k, the word that interacts most with its mask is word k (ties shared)."""
    up, m = _check(regions, masks)
    score = torch.einsum("khw,jhw->jk", up, m.float())  # (K objects, K words): word k's sum on object j
    top = score == score.max(1, keepdim=True).values
    own = top.diagonal()
    return torch.where(own, 1.0 / top.sum(1).float(), torch.zeros_like(own, dtype=torch.float32))


@dataclass(frozen=True)
class InteractionMetric:
    """A metric of interactions: ``fn(regions (K, gh, gw), masks (K, H, W) bool) -> (K,)``.

    Attributes:
        name: registry name (a column of the interactions leaderboard).
        fn: the metric.
        summary: one line for the docs.
        higher_is_better: its direction.
    """

    name: str
    fn: Callable[[Tensor, Tensor], Tensor]
    summary: str
    higher_is_better: bool = True


INTERACTION_METRICS: dict[str, InteractionMetric] = {}


def register_interaction_metric(metric: InteractionMetric) -> InteractionMetric:
    """Add a metric of interactions (the benchmark and the docs read this registry)."""
    INTERACTION_METRICS[metric.name] = metric
    return metric


register_interaction_metric(
    InteractionMetric(
        "pointing",
        second_order_pointing_game,
        "second-order pointing game: a word's region peaks inside its own object (tied maxima shared)",
    )
)
register_interaction_metric(
    InteractionMetric(
        "mass",
        interaction_mass_ratio,
        "mass ratio: a word's positive mass on its own object over its positive mass on all named objects",
    )
)
register_interaction_metric(
    InteractionMetric(
        "reverse",
        reverse_pointing,
        "reverse direction: for an object's mask, the word that interacts most with it is its own word",
    )
)


def interaction_metrics(regions: Tensor, masks: Tensor, names: list[str] | None = None) -> dict[str, Tensor]:
    """Every (or the named) registered interaction metric of one pair: name -> (K,) values."""
    names = list(INTERACTION_METRICS) if names is None else names
    unknown = [n for n in names if n not in INTERACTION_METRICS]
    if unknown:
        raise InputError(f"unknown interaction metric {unknown[0]!r}; choose from {', '.join(INTERACTION_METRICS)}")
    return {n: INTERACTION_METRICS[n].fn(regions, masks) for n in names}
