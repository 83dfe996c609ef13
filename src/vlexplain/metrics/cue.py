"""Does an explanation tell the truth about a shortcut? Metrics against a cue's region mask.

Maps are read at their own resolution (a patch-level map as its patch grid, a pixel-level map as
its pixels), so that methods of different resolutions are compared fairly:

* ``cue_share``: the share of the map's positive mass inside the cue's mask (the energy
  pointing game with the cue as the target region), with the map upsampled bilinearly to the
  mask's pixels as it is shown. Beside it, its ``ceiling``: the most any non-negative map of that
  resolution can put inside this mask (1 for a pixel map; for a patch map, the best single
  patch's share after upsampling, since a share is a ratio of two linear forms of the patch
  values), the ``normalised`` share (share / ceiling, in [0, 1] for every resolution), and
  ``no_mass`` (1 where the map has no positive mass and the share is undefined: NaN, counted).
* ``cue_pointing``: whether the map's maximum falls on the cue, at the map's resolution: a patch
  counts as on the cue when it overlaps the mask (at least one of its pixels is on it); tied
  maxima count by their share, as in ``pointing_game``. ``tolerance`` (pixels, default 0)
  dilates the mask first.
* ``cue_reliance_rank``: over a dataset, Spearman's rank correlation between the per-pair cue
  share and the pair's true reliance on the cue (its score with the cue minus its score on the
  counterfactual without it; ``vlexplain.testbeds.spurious.reliance``), pooled over all pairs. A
  faithful method puts mass on the cue where, and as much as, the model uses it.
* ``cue_reliance_rank_within``: the same within each group of a ``group`` column (e.g. aligned
  and conflicting cues), averaged with the groups' pair counts as weights, so that a method is not
  rewarded for telling the groups apart alone (``spearman_within``).

In a pairs file the cue's mask is a ``cue_mask`` column (a PNG path, relative to the file, of the
image's size), the reliance a ``reliance`` column (a number) and the group a ``group`` column.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .localization import _prepare, dilate, energy_pointing_game, tied_max_share


def _check(maps: Tensor, cue_masks: Tensor) -> tuple[Tensor, Tensor]:
    from ..errors import InputError

    if cue_masks is None:
        raise InputError("this metric needs cue masks (B, H, W)")
    if maps.dim() != 3 or cue_masks.dim() != 3 or maps.shape[0] != cue_masks.shape[0]:
        raise InputError(
            f"maps and cue masks must be (B, h, w) and (B, H, W) with equal B, got {tuple(maps.shape)} "
            f"and {tuple(cue_masks.shape)}"
        )
    return maps.float(), cue_masks.to(maps.device).bool()


def cue_share(maps: Tensor, cue_masks: Tensor) -> Tensor:
    """Share of each map's positive mass inside the cue's mask.

    Args:
        maps: (B, h, w) maps (other sizes are resized bilinearly to the masks').
        cue_masks: (B, H, W) bool masks of the cue.

    Returns:
        (B,) in [0, 1]; NaN where the mask is empty or the map has no positive mass.
    """
    return energy_pointing_game(maps, cue_masks)


def cue_share_ceiling(grid: tuple[int, int], cue_masks: Tensor) -> Tensor:
    """The largest ``cue_share`` a non-negative map on a ``grid`` can reach against each mask.

    A (gh, gw) map is upsampled bilinearly (``U``) to the masks' (H, W) before its share is taken;
    the share of map ``z`` is ``<U z, m> / <U z, 1>``, a ratio of two linear forms with
    non-negative coefficients, whose maximum over ``z >= 0`` is reached by a single patch:
    ``max_p (U^T m)_p / (U^T 1)_p``. ``U^T`` is computed exactly as the gradient of ``<U z, m>``.

    Args:
        grid: (gh, gw) of the maps; the masks' own size gives a ceiling of 1.
        cue_masks: (B, H, W) bool masks.

    Returns:
        (B,) in [0, 1]; NaN for empty masks.
    """
    m = cue_masks.float()
    B, H, W = m.shape
    nonempty = m.flatten(1).any(1)
    if tuple(grid) == (H, W):
        return torch.where(nonempty, torch.ones(B, device=m.device), torch.full((B,), float("nan"), device=m.device))
    with torch.enable_grad():
        z = torch.zeros(B + 1, 1, *grid, device=m.device, requires_grad=True)
        up = F.interpolate(z, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        target = torch.cat([m, torch.ones(1, H, W, device=m.device)])  # the masks, then the whole image
        (g,) = torch.autograd.grad((up * target).sum(), z)
    inside, total = g[:B, 0].flatten(1), g[B:, 0].flatten(1)  # (U^T m), (U^T 1)
    ceil = (inside / total.clamp_min(1e-30)).amax(1)
    return torch.where(nonempty, ceil, torch.full_like(ceil, float("nan")))


def cue_share_report(maps: Tensor, cue_masks: Tensor) -> dict[str, Tensor]:
    """``cue_share`` with its ceiling for the maps' resolution, the normalised share and the
    undefined pairs.

    Returns:
        ``cue_share``, ``ceiling``, ``normalised`` (share / ceiling), each (B,) with NaN where
        undefined, and ``no_mass`` (B,): 1.0 where the mask is not empty but the map has no
        positive mass (the share is NaN: such pairs are counted, not dropped silently), 0.0
        where the share is defined, NaN for an empty mask.
    """
    maps, masks = _check(maps, cue_masks)
    share = cue_share(maps, masks)
    ceil = cue_share_ceiling((int(maps.shape[-2]), int(maps.shape[-1])), masks)
    nonempty = masks.flatten(1).any(1)
    no_mass = torch.where(nonempty, torch.isnan(share).float(), torch.full_like(share, float("nan")))
    return {"cue_share": share, "ceiling": ceil, "normalised": share / ceil, "no_mass": no_mass}


def cell_masks(cue_masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, H, W) bool masks -> (B, gh, gw): a cell is on the cue when one of its pixels is.

    Cells cover pixel rows ``floor(i H / gh) .. ceil((i + 1) H / gh) - 1`` (the windows of
    ``adaptive_max_pool2d``; exact patches when the size is a multiple of the grid).
    """
    return F.adaptive_max_pool2d(cue_masks.float()[:, None], tuple(grid))[:, 0] > 0.5


def cue_pointing(maps: Tensor, cue_masks: Tensor, tolerance: int = 0) -> Tensor:
    """The share of the map's tied maxima on the cue, at the map's own resolution.

    Args:
        maps: (B, h, w): a pixel map at the masks' size, or a patch map on its grid.
        cue_masks: (B, H, W) bool masks.
        tolerance: dilate the mask by this many pixels (of the masks) first.

    Returns:
        (B,) in [0, 1] (1.0 / 0.0 for a unique maximum on / off the cue); NaN where the mask is empty.
    """
    maps, masks = _check(maps, cue_masks)
    nonempty = masks.flatten(1).any(1)
    if tolerance:
        masks = dilate(masks, int(tolerance))
    grid = (int(maps.shape[-2]), int(maps.shape[-1]))
    if grid == tuple(masks.shape[-2:]):
        maps, masks = _prepare(maps, masks)
    else:
        masks = cell_masks(masks, grid)
    hit = tied_max_share(maps, masks)
    return torch.where(nonempty, hit, torch.full_like(hit, float("nan")))


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


def spearman_within(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """Spearman's rho within each group, averaged with the groups' usable pair counts as weights
    (groups whose rho is undefined, e.g. fewer than 3 usable pairs, are left out); NaN if none."""
    x, y, g = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), np.asarray(groups)
    ok = np.isfinite(x) & np.isfinite(y)
    rhos, weights = [], []
    for k in np.unique(g[ok]):
        sel = ok & (g == k)
        r = spearman(x[sel], y[sel])
        if not np.isnan(r):
            rhos.append(r)
            weights.append(sel.sum())
    return float(np.average(rhos, weights=weights)) if rhos else float("nan")


def _percentile_interval(boots: np.ndarray, level: float) -> tuple[float, float]:
    boots = boots[~np.isnan(boots)]
    if not boots.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(boots, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def spearman_ci(
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """(rho, low, high): Spearman's rho and its percentile bootstrap interval (pairs resampled).

    With ``groups``: ``spearman_within``, pairs resampled within each group (stratified)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    rng = np.random.default_rng(seed)
    if groups is None:
        rho = spearman(x, y)
        if np.isnan(rho):
            return rho, float("nan"), float("nan")
        boots = np.array([spearman(x[i], y[i]) for i in rng.integers(0, len(x), size=(n_boot, len(x)))])
        return (rho, *_percentile_interval(boots, level))
    g = np.asarray(groups)[ok]
    rho = spearman_within(x, y, g)
    if np.isnan(rho):
        return rho, float("nan"), float("nan")
    members = [np.nonzero(g == k)[0] for k in np.unique(g)]
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members])
        boots[b] = spearman_within(x[idx], y[idx], g[idx])
    return (rho, *_percentile_interval(boots, level))


def group_codes(groups: Sequence[Any] | Tensor | Any, n: int) -> Tensor:
    """(n,) float codes of group labels: numbers as they are, strings as a 24-bit CRC-32 (exact in
    float32, so labels survive the results table); one label shared by the batch is repeated."""
    if isinstance(groups, Tensor):
        g = groups.reshape(-1).float()
        return g.expand(n) if g.numel() == 1 else g
    vals = list(groups) if isinstance(groups, (list, tuple)) else [groups] * n
    return torch.tensor(
        [float(v) if isinstance(v, (int, float)) else float(zlib.crc32(str(v).encode()) & 0xFFFFFF) for v in vals]
    )


def cue_reliance_rank(
    maps: Tensor, cue_masks: Tensor, reliance: Tensor | np.ndarray, groups: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Spearman's rho between the per-pair cue share and the true reliance on the cue.

    Args:
        maps: (B, h, w) maps.
        cue_masks: (B, H, W) bool cue masks (pairs with an empty mask are left out).
        reliance: (B,) true reliance of each pair.
        groups: (B,) group labels: also the within-group rho (``spearman_within``).

    Returns:
        ``{"spearman": rho, "cue_share": (B,), "reliance": (B,), "no_mass": (B,)}`` (rho NaN with
        < 3 usable pairs); with ``groups`` also ``"spearman_within"`` and ``"group"`` (codes).
        Pairs whose share is undefined (``no_mass`` 1) are left out of rho and counted.
    """
    rep = cue_share_report(maps, cue_masks)
    share = rep["cue_share"]
    rel = torch.as_tensor(reliance, dtype=torch.float32, device=share.device).reshape(-1)
    if rel.numel() == 1:  # one value shared by the batch
        rel = rel.expand(share.shape[0])
    x, y = share.detach().cpu().numpy(), rel.cpu().numpy()
    out: dict[str, Any] = {"spearman": spearman(x, y), "cue_share": share, "reliance": rel, "no_mass": rep["no_mass"]}
    if groups is not None:
        codes = group_codes(groups, share.shape[0]).to(share.device)
        out["group"] = codes
        out["spearman_within"] = spearman_within(x, y, codes.cpu().numpy())
    return out


def load_cue_masks(paths: list[Any], size: tuple[int, int], image_sizes: list[tuple[int, int]] | None = None) -> Tensor:
    """(B, H, W) bool cue masks from PNG paths, mapped like a model's preprocessing (shortest side
    resized to ``min(size)`` by nearest neighbour, centre crop); an empty path gives an empty mask.
    With ``image_sizes`` (PIL ``(width, height)`` per pair) a mask of another size is refused."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

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
        m = TF.resize(raw, min(size), interpolation=InterpolationMode.NEAREST)
        out.append(torch.from_numpy(np.asarray(TF.center_crop(m, list(size))) > 127))
    return torch.stack(out)
