"""Does an explanation tell the truth about a shortcut? Metrics against a cue's region mask.

* ``cue_share``: the share of the map's positive mass inside the cue's mask (the energy
  pointing game with the cue as the target region). On a model that does not use the cue, a
  faithful map puts almost none there.
* ``cue_pointing``: whether the map's maximum falls on the cue (tied maxima count by their
  share, as in ``pointing_game``, with no tolerance).
* ``cue_reliance_rank``: over a dataset, Spearman's rank correlation between the per-pair cue
  share and the pair's true reliance on the cue (its score with the cue minus its score on the
  counterfactual without it; ``vlexplain.testbeds.spurious.reliance``). A faithful method puts
  mass on the cue where, and as much as, the model uses it.

In a pairs file the cue's mask is a ``cue_mask`` column (a PNG path, relative to the file, of the
image's size) and the reliance a ``reliance`` column (a number).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .localization import _prepare, energy_pointing_game, tied_max_share


def cue_share(maps: Tensor, cue_masks: Tensor) -> Tensor:
    """Share of each map's positive mass inside the cue's mask.

    Args:
        maps: (B, H, W) maps (other sizes are resized bilinearly to the masks').
        cue_masks: (B, H, W) bool masks of the cue.

    Returns:
        (B,) in [0, 1]; NaN where the mask is empty or the map has no positive mass.
    """
    return energy_pointing_game(maps, cue_masks)


def cue_pointing(maps: Tensor, cue_masks: Tensor) -> Tensor:
    """1.0 where the map's maximum lies on the cue, 0.0 where not (the share of tied maxima on it).

    Returns:
        (B,) in [0, 1]; NaN where the mask is empty.
    """
    maps, masks = _prepare(maps, cue_masks)
    hit = tied_max_share(maps, masks)
    return torch.where(masks.flatten(1).any(1), hit, torch.full_like(hit, float("nan")))


def average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks of ``v``, ties given the mean of the ranks they span."""
    v = np.asarray(v)
    order = np.argsort(v, kind="mergesort")
    inv = np.empty(len(v), dtype=np.int64)
    inv[order] = np.arange(len(v))
    sv = v[order]
    first = np.r_[True, sv[1:] != sv[:-1]]  # starts of runs of equal values
    run = np.cumsum(first)[inv]  # run number of each value (1-based)
    bounds = np.r_[np.nonzero(first)[0], len(v)]  # run k spans sorted positions bounds[k-1] .. bounds[k]-1
    return 0.5 * (bounds[run - 1] + bounds[run] + 1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties) of the pairs where both are finite;
    NaN with fewer than 3 such pairs or a constant side."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    rx, ry = average_ranks(x[ok]), average_ranks(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_ci(
    x: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(rho, low, high): Spearman's rho and its percentile bootstrap interval (pairs resampled)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    rho = spearman(x, y)
    if np.isnan(rho):
        return rho, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = np.array([spearman(x[i], y[i]) for i in rng.integers(0, len(x), size=(n_boot, len(x)))])
    boots = boots[~np.isnan(boots)]
    lo, hi = np.percentile(boots, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return rho, float(lo), float(hi)


def cue_reliance_rank(maps: Tensor, cue_masks: Tensor, reliance: Tensor | np.ndarray) -> dict[str, Any]:
    """Spearman's rho between the per-pair cue share and the true reliance on the cue.

    Args:
        maps: (B, H, W) maps.
        cue_masks: (B, H, W) bool cue masks (pairs with an empty mask are left out).
        reliance: (B,) true reliance of each pair.

    Returns:
        ``{"spearman": rho, "cue_share": (B,), "reliance": (B,)}`` (rho NaN with < 3 usable pairs).
    """
    share = cue_share(maps, cue_masks)
    rel = torch.as_tensor(reliance, dtype=torch.float32, device=share.device).reshape(-1)
    if rel.numel() == 1:  # one value shared by the batch
        rel = rel.expand(share.shape[0])
    rho = spearman(share.detach().cpu().numpy(), rel.cpu().numpy())
    return {"spearman": rho, "cue_share": share, "reliance": rel}


def load_cue_masks(paths: list[Any], size: tuple[int, int], image_sizes: list[tuple[int, int]] | None = None) -> Tensor:
    """(B, H, W) bool cue masks from PNG paths, mapped like a model's preprocessing (shortest side
    resized to ``min(size)`` by nearest neighbour, centre crop); an empty path gives an empty mask.
    With ``image_sizes`` (PIL ``(width, height)`` per pair) a mask of another size is refused."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    from ..data.pairs import _load_mask
    from ..errors import InputError

    out = []
    for j, p in enumerate(paths):
        if p is None or p == "":
            out.append(torch.zeros(size, dtype=torch.bool))
            continue
        raw = _load_mask(p)
        if image_sizes is not None and tuple(raw.size) != tuple(image_sizes[j]):
            w, h = image_sizes[j]
            raise InputError(f"cue_mask {p} is {raw.size[0]}x{raw.size[1]} but the image is {w}x{h}")
        m = F.resize(raw, min(size), interpolation=InterpolationMode.NEAREST)
        out.append(torch.from_numpy(np.asarray(F.center_crop(m, list(size))) > 127))
    return torch.stack(out)
