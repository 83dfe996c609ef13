"""Zero-shot evaluation of a shapes-world model on held-out scenes (``evaluate_shapes``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .shapes import Scene, render_scene
from .shapes_categories import CATEGORIES, category_caption, concept_set

# ---------------------------------------------------------------------------------------------
# Evaluation on held-out scenes
# ---------------------------------------------------------------------------------------------

SINGLE_SEEDS = 0  # single-object evaluation scenes: seeds 0, 1, ...
MULTI_SEEDS = 1_000_000  # multi-object evaluation scenes: seeds 1_000_000, ...


@torch.no_grad()
def _scores(model, scenes: list[Scene], texts: list[str], chunk: int = 256) -> Tensor:
    """(N scenes, T texts) cosine similarities through the DualEncoder API."""
    t = model.encode_text(model.tokenize(texts))
    out = []
    for i in range(0, len(scenes), chunk):
        x = torch.stack([model.preprocess(s.pil()) for s in scenes[i : i + chunk]]).to(model.device)
        out.append(model.encode_image(x) @ t.T)
    return torch.cat(out).cpu()


def _average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    rel = relevant[order]
    hits = np.cumsum(rel)
    return float((hits[rel] / (np.nonzero(rel)[0] + 1)).mean()) if rel.any() else float("nan")


def evaluate_shapes(model, n_single: int = 500, n_multi: int = 500, size: int = 64) -> dict[str, float]:
    """Zero-shot bars of a shapes-world model on held-out scenes.

    Args:
        model: a [`DualEncoder`][vlexplain.models.base.DualEncoder] (e.g. ``load_model("testbed:shapes")``).
        n_single: single-object scenes (seeds ``SINGLE_SEEDS ...``).
        n_multi: scenes with 2-4 objects (seeds ``MULTI_SEEDS ...``).
        size: scene size.

    Returns:
        ``category_accuracy`` (top-1 of "a {category}" on single-object scenes),
        ``multi_ranking`` (fraction of multi-object scenes where every present category's caption
        scores above every absent one's), ``multi_top1`` (the best caption is a present category),
        ``descriptor_top1`` (single-object scenes: the best concept-set descriptor is true of the
        object), ``descriptor_map`` (mean over descriptors of the average precision of retrieving the
        single-object scenes whose object has that part), ``descriptor_class_accuracy`` (category
        = the class whose descriptors score highest on average, DEAL-style).
    """
    cats = [c.name for c in CATEGORIES]
    captions = [category_caption(c) for c in cats]
    concepts = concept_set()
    descs = sorted({d for ds in concepts.values() for d in ds})
    single = [render_scene(SINGLE_SEEDS + i, size=size, n_objects=1) for i in range(n_single)]
    multi = [render_scene(MULTI_SEEDS + i, size=size, n_objects=2 + i % 3) for i in range(n_multi)]
    s1 = _scores(model, single, captions + descs).numpy()
    truth1 = np.array([cats.index(s.objects[0].category) for s in single])
    res: dict[str, float] = {"category_accuracy": float((s1[:, : len(cats)].argmax(1) == truth1).mean())}
    sd = s1[:, len(cats) :]
    has = np.array([[d in s.object_texts(0) for d in descs] for s in single])
    res["descriptor_top1"] = float(has[np.arange(len(single)), sd.argmax(1)].mean())
    aps = [_average_precision(sd[:, j], has[:, j]) for j in range(len(descs)) if has[:, j].any()]
    res["descriptor_map"] = float(np.mean(aps))
    by_class = np.stack([sd[:, [descs.index(d) for d in concepts[c]]].mean(1) for c in cats], 1)
    res["descriptor_class_accuracy"] = float((by_class.argmax(1) == truth1).mean())
    res.update(n_single=n_single, n_multi=n_multi, size=size)
    if not multi:
        return res
    sm = _scores(model, multi, captions).numpy()
    present = np.array([[c in s.categories for c in cats] for s in multi])
    ok = [
        sm[i][present[i]].min() > sm[i][~present[i]].max() if (~present[i]).any() else True for i in range(len(multi))
    ]
    res["multi_ranking"] = float(np.mean(ok))
    res["multi_top1"] = float(present[np.arange(len(multi)), sm.argmax(1)].mean())
    return res
