"""Dataset-level evaluation of concept explanations (the DEAL paper's table, plus part metrics).

:func:`evaluate_concepts` reports, over a labelled dataset:

* zero-shot accuracy (top-1 / top-5) with standard prompts and with concept-based prompts;
* disentanglability (published form: from the per-image sum over concept pairs of the overlap)
  and the raw overlaps;
* localizability (insertion test, every channel, each map with its own image);
* with CUB part keypoints: concept pointing accuracy and the share of map energy inside the part
  (parts are matched to descriptors by keywords, e.g. "bill" -> beak; descriptors naming no part
  are left out; part masks are disks around the visible keypoints).

Concept maps are explained against each image's true class.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..data.classes import disk_mask, to_preprocessed
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
        blur_sigma: localizability baseline blur (see :func:`~.metrics.localizability`).
        progress: print one line per batch.

    Returns:
        A JSON-ready dict of metrics (accuracies in percent).
    """
    classes = list(dataset.classes)
    concepts = concepts.align(classes)
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    std = class_text_embeddings(model, classes, templates=templates)
    con = class_text_embeddings(model, classes, concepts, k=k, templates=templates)
    logits_s, logits_c, labels_all, overlaps, locs = [], [], [], [], []
    point, energy = [], []
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
        if getattr(dataset, "samples", None) is not None and getattr(dataset, "has_parts", False):
            p, e = _part_scores(model, dataset, idx, names, cm, concepts, k, part_radius)
            point += p
            energy += e
        if progress:
            print(f"evaluated {min(n, (bi + 1) * batch_size)}/{n} images", flush=True)
    model.train(model_was_training)
    return _summary(n, logits_s, logits_c, labels_all, overlaps, locs, point, energy, method)


def _part_scores(model, dataset, idx, names, cm, concepts, k, radius) -> tuple[list[float], list[float]]:
    size = tuple(model.input_size)
    point, energy = [], []
    for row, i in enumerate(idx):
        s = dataset.samples[i]
        if not s.parts:
            continue
        with Image.open(s.path) as im:
            wh = im.size
        for j, d in enumerate(concepts.descriptors(names[row], k)):
            pts = [to_preprocessed(s.parts[p], wh, size) for p in descriptor_parts(d) if p in s.parts]
            if not pts:
                continue
            mask = disk_mask(pts, size, radius * min(size)).to(cm.concepts.device)
            if not mask.any():
                continue
            m = cm.concepts[row, j][None]
            point.append(float(part_pointing(m, mask[None])[0]))
            energy.append(float(part_energy(m, mask[None])[0]))
    return point, energy


def _summary(n, logits_s, logits_c, labels_all, overlaps, locs, point, energy, method) -> dict[str, Any]:
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
        out["part_maps"] = len(point)
    return out


def format_report(metrics: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """One line per metric, for printing."""
    lines = []
    for k, v in metrics.items():
        if keys is not None and k not in keys:
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{a} {b:.2f}" for a, b in v.items())
        elif isinstance(v, float):
            v = f"{v:.4f}"
        lines.append(f"{k}: {v}")
    return "\n".join(lines)
