"""Dataset-level evaluation of concept explanations (the DEAL paper's table, plus part metrics).

``evaluate_concepts`` reports, over a labelled dataset:

* zero-shot accuracy (top-1 / top-5) with standard prompts and with concept-based prompts;
* disentanglability (published form: from the per-image sum over concept pairs of the overlap)
  and the raw overlaps;
* localizability (insertion test, every channel, each map with its own image);
* with ground truth: concept pointing accuracy, the share of map energy inside the part, and
  the mean part area (what a map without information scores on both). CUB part keypoints are
  matched to descriptors by keywords ("bill" -> beak; descriptors naming no part are left out)
  and part masks are disks around the visible keypoints; shapes-world datasets give exact masks
  (``concept_mask``).

Concept maps are explained against each image's true class. ``concept_gallery`` returns the
maps of a few images for a report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.classes import disk_mask, to_preprocessed
from ..images import image_size
from ..models.base import DualEncoder
from .metrics import (
    class_text_embeddings,
    disentanglability_score,
    localizability,
    mean_pairwise_overlap,
    part_energy,
    part_pointing,
    topk_accuracy,
)
from .relevance import DEAL_RELEVANCE, Templates, deal_maps
from .sets import ConceptSet

#: CUB part name -> words in a descriptor that refer to it
PART_WORDS: dict[str, tuple[str, ...]] = {
    "beak": ("beak", "bill", "beaks", "bills"),
    "crown": ("crown", "crest", "cap", "head"),
    "forehead": ("forehead", "head"),
    "nape": ("nape", "neck"),
    "left eye": ("eye", "eyes", "eyering", "eyebrow", "eyestripe"),
    "right eye": ("eye", "eyes", "eyering", "eyebrow", "eyestripe"),
    "left wing": ("wing", "wings", "wingbar", "wingbars"),
    "right wing": ("wing", "wings", "wingbar", "wingbars"),
    "tail": ("tail", "tails"),
    "left leg": ("leg", "legs", "feet", "foot", "claws", "talons"),
    "right leg": ("leg", "legs", "feet", "foot", "claws", "talons"),
    "breast": ("breast", "chest"),
    "belly": ("belly", "underparts", "abdomen"),
    "back": ("back", "mantle"),
    "throat": ("throat", "chin"),
}


def descriptor_parts(descriptor: str) -> list[str]:
    """The CUB parts a descriptor names ("Yellow bill with black tip" -> ["beak"])."""
    words = set(re.findall(r"[a-z]+", descriptor.lower().replace("eye-ring", "eyering")))
    return [p for p, kws in PART_WORDS.items() if words & set(kws)]


def _batches(n: int, bs: int):
    for s in range(0, n, bs):
        yield list(range(s, min(n, s + bs)))


def evaluate_concepts(
    model: DualEncoder,
    dataset: Any,
    concepts: ConceptSet,
    *,
    k: int | None = 5,
    templates: Templates = Templates(),
    method: str = DEAL_RELEVANCE,
    batch_size: int = 16,
    max_images: int | None = None,
    part_radius: float = 0.08,
    blur_sigma: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy and concept-explanation metrics over ``dataset``.

    Args:
        model: the dual encoder.
        dataset: items ``(image, label)`` with ``.classes`` (and ``.samples[i].parts`` for parts).
        concepts: the concept set (aligned to ``dataset.classes`` here).
        k: descriptors per class.
        templates: prompt templates.
        method: ``"deal"`` or a registered vlexplain method for the maps.
        batch_size: images per batch.
        max_images: evaluate the first N images only.
        part_radius: part disk radius as a fraction of the input side.
        blur_sigma: localizability baseline blur (see ``localizability``).
        progress: print one line per batch.

    Returns:
        A dict of metrics (accuracies in percent), JSON-ready except ``per_item``: for each averaged
        metric, ``{"values", "image"}`` numpy arrays of its items (images, or concept maps) and the
        image each item belongs to, for paired comparisons (``paired_interval``).
    """
    classes = list(dataset.classes)
    concepts = concepts.align(classes)
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    std = class_text_embeddings(model, classes, templates=templates)
    con = class_text_embeddings(model, classes, concepts, k=k, templates=templates)
    logits_s, logits_c, labels_all, overlaps, locs, loc_img = [], [], [], [], [], []
    point, energy, area, part_img = [], [], [], []
    model_was_training = model.training
    model.eval()
    for bi, idx in enumerate(_batches(n, batch_size)):
        items = [dataset[i] for i in idx]
        px = torch.stack([im if isinstance(im, torch.Tensor) else model.preprocess(im) for im, _ in items])
        px = px.to(model.device, model.dtype)
        labels = torch.tensor([int(y) for _, y in items])
        with torch.no_grad():
            ie = F.normalize(model.encode_image(px).float(), dim=-1)
        logits_s.append((ie @ std.T).cpu())
        logits_c.append((ie @ con.T).cpu())
        labels_all.append(labels)
        names = [classes[int(y)] for y in labels]
        cm = deal_maps(model, px, names, concepts, k=k, templates=templates, method=method)
        nk = cm.mask.sum(1).float().cpu()
        overlaps.append((mean_pairwise_overlap(cm.concepts, cm.mask).cpu(), nk * (nk - 1) / 2))
        b, K = cm.mask.nonzero(as_tuple=True)
        texts = [cm.texts[int(i)][1 + int(j)] for i, j in zip(b, K)]
        _, per = localizability(model, px[b], cm.concepts[b, K], texts, blur_sigma=blur_sigma)
        locs.append(per.cpu())
        loc_img.append(torch.tensor(idx)[b.cpu()])
        if getattr(dataset, "has_parts", False):
            p, e, a, g = _part_scores(model, dataset, idx, names, cm, concepts, k, part_radius)
            point += p
            energy += e
            area += a
            part_img += g
        if progress:
            print(f"evaluated {min(n, (bi + 1) * batch_size)}/{n} images", flush=True)
    model.train(model_was_training)
    out = _summary(n, logits_s, logits_c, labels_all, overlaps, locs, point, energy, area, method)
    out["per_item"] = _per_item(logits_s, logits_c, labels_all, overlaps, locs, loc_img, point, energy, part_img)
    return out


def truth_mask(dataset: Any, i: int, descriptor: str, size: tuple[int, int], radius: float = 0.08) -> Tensor | None:
    """The ground-truth mask of what ``descriptor`` refers to in item ``i``, if the dataset knows it.

    Args:
        dataset: a dataset with ``concept_mask(i, descriptor, size)`` (exact masks, shapes world)
            or with ``samples[i].parts`` keypoints (CUB).
        i: the item.
        descriptor: the concept's descriptor.
        size: (H, W) model input size.
        radius: CUB part disk radius as a fraction of the input side.

    Returns:
        An (H, W) bool mask in model-input coordinates, or None (no ground truth, or empty).
    """
    if hasattr(dataset, "concept_mask"):
        mask = dataset.concept_mask(i, descriptor, size)
    else:
        samples = getattr(dataset, "samples", None)
        s = samples[i] if samples is not None else None
        if s is None:
            return None
        names = [p for p in descriptor_parts(descriptor) if p in s.parts]
        if not names:
            return None
        wh = image_size(s.path)
        mask = disk_mask([to_preprocessed(s.parts[p], wh, size) for p in names], size, radius * min(size))
    return mask if mask is not None and bool(mask.any()) else None


def _part_scores(model, dataset, idx, names, cm, concepts, k, radius) -> tuple[list[float], ...]:
    size = tuple(model.input_size)
    point, energy, area, image = [], [], [], []
    for row, i in enumerate(idx):
        for j, d in enumerate(concepts.descriptors(names[row], k)):
            mask = truth_mask(dataset, i, d, size, radius)
            if mask is None:
                continue
            mask = mask.to(cm.concepts.device)
            m = cm.concepts[row, j][None]
            point.append(float(part_pointing(m, mask[None])[0]))
            energy.append(float(part_energy(m, mask[None])[0]))
            area.append(float(mask.float().mean()))
            image.append(i)
    return point, energy, area, image


def _summary(n, logits_s, logits_c, labels_all, overlaps, locs, point, energy, area, method) -> dict[str, Any]:
    labels = torch.cat(labels_all)
    ov, npairs = torch.cat([o for o, _ in overlaps]), torch.cat([p for _, p in overlaps])
    keep = ~ov.isnan()
    ov, npairs = ov[keep], npairs[keep]
    o = float(ov.mean()) if ov.numel() else float("nan")
    s = float((ov * npairs).mean()) if ov.numel() else float("nan")
    out: dict[str, Any] = {
        "images": n,
        "method": method,
        "accuracy_standard": topk_accuracy(torch.cat(logits_s), labels),
        "accuracy_concepts": topk_accuracy(torch.cat(logits_c), labels),
        "disentanglability": disentanglability_score(s) if ov.numel() else float("nan"),
        "pairwise_overlap_sum": s,
        "mean_pairwise_overlap": o,
        "localizability": float(torch.cat(locs).mean()),
    }
    if point:
        out["part_pointing"] = 100.0 * sum(point) / len(point)
        out["part_energy"] = sum(energy) / len(energy)
        out["part_area"] = sum(area) / len(area)
        out["part_maps"] = len(point)
    return out


def _per_item(logits_s, logits_c, labels_all, overlaps, locs, loc_img, point, energy, part_img) -> dict[str, Any]:
    """Each averaged metric's per-item values with the image each belongs to (for paired intervals)."""
    labels = torch.cat(labels_all)
    images = torch.arange(len(labels))
    ov = torch.cat([o for o, _ in overlaps])
    keep = ~ov.isnan()
    out = {
        "accuracy_standard.top1": (100.0 * (torch.cat(logits_s).argmax(1) == labels).double(), images),
        "accuracy_concepts.top1": (100.0 * (torch.cat(logits_c).argmax(1) == labels).double(), images),
        "mean_pairwise_overlap": (ov[keep].double(), images[keep]),
        "localizability": (torch.cat(locs).double(), torch.cat(loc_img)),
    }
    if point:
        out["part_pointing"] = (100.0 * torch.tensor(point, dtype=torch.float64), torch.tensor(part_img))
        out["part_energy"] = (torch.tensor(energy, dtype=torch.float64), torch.tensor(part_img))
    return {k: {"values": v.numpy(), "image": g.long().numpy()} for k, (v, g) in out.items()}


def paired_interval(
    before: Mapping[str, Any], after: Mapping[str, Any], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``mean(after) - mean(before)`` over paired items.

    Items are resampled by image (every item of a drawn image comes along), since the maps of one
    image are not independent. Both sides must hold the same items (same data, same order).

    Args:
        before, after: ``{"values": (N,), "image": (N,)}`` per-item values of one metric.

    Returns:
        (low, high), or None when the items do not pair up.
    """
    from ..eval.report import bootstrap_ci

    a, b = np.asarray(after["values"], float), np.asarray(before["values"], float)
    ga, gb = np.asarray(after["image"]), np.asarray(before["image"])
    if a.shape != b.shape or not np.array_equal(ga, gb) or a.size == 0:
        return None
    _, lo, hi = bootstrap_ci(a - b, n_boot=resamples, seed=seed, level=level, groups=ga)
    return lo, hi


def format_report(metrics: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """One line per metric, for printing."""
    lines = []
    for k, v in metrics.items():
        if (keys is not None and k not in keys) or k == "per_item":
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{a} {b:.2f}" for a, b in v.items())
        elif isinstance(v, float):
            v = f"{v:.4f}"
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


def concept_gallery(
    model: DualEncoder,
    dataset: Any,
    concepts: ConceptSet,
    indices: Sequence[int],
    *,
    k: int | None = 5,
    templates: Templates = Templates(),
    method: str = DEAL_RELEVANCE,
    part_radius: float = 0.08,
) -> list[dict[str, Any]]:
    """The category and concept maps of a few images (for a report), explained against their true class.

    Args:
        model: the dual encoder.
        dataset: items ``(image, label)`` with ``.classes``.
        concepts: the concept set.
        indices: the items to show.
        k, templates, method, part_radius: as in ``evaluate_concepts``.

    Returns:
        One dict per image: ``index``, ``label`` (class name), ``predicted`` (top-1 class with the
        category prompts), ``image`` ((H, W, 3) uint8 model input), ``texts`` (category prompt, then
        concept prompts), ``maps`` ((1 + K, gh, gw) float32: category map, then concept maps) and
        ``part_energy`` (per concept: share of its map inside the ground-truth mask, or None).
    """
    classes = list(dataset.classes)
    concepts = concepts.align(classes)
    std = class_text_embeddings(model, classes, templates=templates)
    size = (int(model.input_size[0]), int(model.input_size[1]))
    out = []
    for i in indices:
        x, y = dataset[int(i)]
        px = (x if isinstance(x, torch.Tensor) else model.preprocess(x))[None].to(model.device, model.dtype)
        name = classes[int(y)]
        cm = deal_maps(model, px, [name], concepts, k=k, templates=templates, method=method)
        n_k = int(cm.mask[0].sum())
        with torch.no_grad():
            ie = F.normalize(model.encode_image(px).float(), dim=-1)
            rgb = model.denormalize(px[0]).float().clamp(0, 1)
        energy: list[float | None] = []
        for j, d in enumerate(concepts.descriptors(name, k)):
            mask = truth_mask(dataset, int(i), d, size, part_radius)
            energy.append(
                None
                if mask is None
                else float(part_energy(cm.concepts[0, j][None].float(), mask[None].to(cm.concepts.device))[0])
            )
        maps = torch.cat([cm.category[:1], cm.concepts[0, :n_k]]).detach().float().cpu()
        out.append(
            {
                "index": int(i),
                "label": name,
                "predicted": classes[int((ie @ std.T).argmax())],
                "image": (rgb.permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8"),
                "texts": list(cm.texts[0][: 1 + n_k]),
                "maps": maps.numpy(),
                "part_energy": energy,
            }
        )
    return out
