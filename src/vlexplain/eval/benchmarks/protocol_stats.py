"""The published protocols' per-image statistics and their dataset-level reductions.

Each protocol reduces a dataset by sums over images (pixel counts, intersections, unions, point
counts) before dividing, as the released evaluation code does; a per-image statistic is what one
image adds to those sums. The bootstrap resamples images and recomputes the dataset-level value.

* ImageNet-Segmentation (Chefer et al. 2021 ``imagenet_seg_eval.py``, reused by TextSpan and LeGrad):
  the map is min-max normalised, foreground is ``map > mean(map)``; pixel accuracy = correct /
  labelled pixels, mIoU = mean over {background, object} of summed intersection / summed union, mAP
  = mean over images of the average precision of the scores ``[1 - map, map]`` against the one-hot
  ground truth (both channels pooled).
* OpenImages V7 points (Benenson & Ferrari 2022, as GEM and LeGrad report it): the map is min-max
  normalised and thresholded at 0.5; per class, positive points inside are true positives, positive
  points outside false negatives, negative points inside false positives; p-mIoU = mean over
  classes of TP / (TP + FP + FN), counts summed over the dataset.
* Semantic segmentation (mmsegmentation's ``IoUMetric``): per class, summed intersection / summed
  union over the dataset; mIoU = mean over classes with a non-empty union.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


# --- ImageNet-Segmentation -----------------------------------------------------------------------
def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (scikit-learn's definition: sum over thresholds of recall step x precision;
    tied scores form one threshold); 0 when there is no positive (``nan_to_num`` of the released code)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    if y.sum() == 0:
        return 0.0
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # the last index of every distinct score
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def chefer_stats(heatmap: Tensor, target: Tensor, clamp_negative: bool = False) -> np.ndarray:
    """One image's statistics: [correct, labelled, inter_bg, inter_obj, union_bg, union_obj, ap].

    Args:
        heatmap: (H, W) raw map at the ground truth's resolution.
        target: (H, W) int: 1 object, 0 background, -1 ignored.
        clamp_negative: set negative values to 0 before normalising (TextSpan's variant).
    """
    import torch

    r = heatmap.double()
    if clamp_negative:
        r = r.clamp_min(0)
    r = (r - r.min()) / (r.max() - r.min())  # NaN for a constant map, as released
    fg = r > r.mean()  # NaN compares False: background everywhere
    lab = target >= 0
    t = target.clamp_min(0)
    pred = fg.long()
    correct = int(((pred == t) & lab).sum())
    inter = [int(((pred == c) & (t == c) & lab).sum()) for c in (0, 1)]
    union = [int(((pred == c) & lab).sum()) + int(((t == c) & lab).sum()) - inter[c] for c in (0, 1)]
    s = torch.nan_to_num(torch.stack([1 - r, r]), nan=0.0)[:, lab].flatten().cpu().numpy()
    y = torch.stack([t == 0, t == 1])[:, lab].flatten().cpu().numpy()
    return np.array([correct, int(lab.sum()), *inter, *union, average_precision(s, y)], dtype=np.float64)


def chefer_reduce(stats: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """(n, 7) per-image statistics, (n,) image weights -> pixel accuracy, mIoU, mAP (in %)."""
    s = (w[:, None] * stats).sum(0)
    iou = s[2:4] / np.maximum(s[4:6], 1e-12)
    return {
        "pixel_accuracy": 100 * float(s[0] / max(s[1], 1e-12)),
        "mIoU": 100 * float(iou.mean()),
        "mAP": 100 * float((w * stats[:, 6]).sum() / w.sum()),
    }


# --- OpenImages points ---------------------------------------------------------------------------
def point_stats(heatmap: Tensor, pos: np.ndarray, neg: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """[tp, fp, fn] of one (image, class): points (x, y) in [0, 1] read from the min-max normalised map
    (the pixel a point falls in; foreground is ``> threshold``)."""
    import torch

    H, W = heatmap.shape
    r = heatmap.double()
    r = torch.nan_to_num((r - r.min()) / (r.max() - r.min()), nan=0.0)

    def inside(pts: np.ndarray) -> np.ndarray:
        if len(pts) == 0:
            return np.zeros(0, bool)
        col = np.clip((pts[:, 0] * W).astype(np.int64), 0, W - 1)
        row = np.clip((pts[:, 1] * H).astype(np.int64), 0, H - 1)
        return (r[torch.as_tensor(row), torch.as_tensor(col)] > threshold).cpu().numpy()

    p, n = inside(pos), inside(neg)
    return np.array([p.sum(), n.sum(), (~p).sum()], dtype=np.float64)


def points_reduce(stats: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """(R, 4) rows [class id, tp, fp, fn] (one per image and class), (R,) weights -> p-mIoU (in %)
    over the classes with counts."""
    cls = stats[:, 0].astype(np.int64)
    s = np.stack([np.bincount(cls, weights=w * stats[:, j]) for j in (1, 2, 3)], -1)  # (C, 3)
    den = s.sum(-1)
    keep = den > 0
    return {"p-mIoU": 100 * float((s[keep, 0] / den[keep]).mean()) if keep.any() else float("nan")}


# --- semantic segmentation ------------------------------------------------------------------------
def confusion_stats(pred: Tensor, label: Tensor, num_classes: int, ignore: int = 255) -> np.ndarray:
    """(2, C) [intersection, union] per class of one image (pixels labelled ``ignore`` left out)."""
    import torch

    keep = label != ignore
    p, t = pred[keep].long(), label[keep].long()
    area_inter = torch.bincount(t[p == t], minlength=num_classes)[:num_classes]
    area_pred = torch.bincount(p, minlength=num_classes)[:num_classes]
    area_label = torch.bincount(t, minlength=num_classes)[:num_classes]
    return torch.stack([area_inter, area_pred + area_label - area_inter]).cpu().numpy().astype(np.float64)


def miou_reduce(stats: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """(n, 2, C) per-image [intersection, union], (n,) weights -> mIoU (in %) over classes with a
    non-empty union."""
    s = np.tensordot(w, stats, axes=1)
    keep = s[1] > 0
    return {"mIoU": 100 * float((s[0, keep] / s[1, keep]).mean()) if keep.any() else float("nan")}


# --- intervals ------------------------------------------------------------------------------------
def bootstrap(
    stats: np.ndarray, item: np.ndarray, n: int, reduce, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float, float]]:
    """{metric: (value, low, high)}: percentile bootstrap over images of a dataset-level reduction.

    ``stats`` has one row per (image, ...), ``item`` the image of each row (of ``n``); a resample
    weights every row by how often its image was drawn."""
    value = reduce(stats, np.ones(len(stats)))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in value}
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        got = reduce(stats, counts[item])
        for k, v in got.items():
            draws[k].append(v)
    a = (1 - level) / 2
    return {k: (v, *np.nanquantile(np.asarray(draws[k]), [a, 1 - a]).tolist()) for k, v in value.items()}
