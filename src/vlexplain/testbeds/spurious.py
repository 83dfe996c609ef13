"""The spurious-cue testbed: group accuracies of a shapes-world model and the true reliance on the badge.

Held-out single-object scenes are rendered three times from the same seed
(``render_cue_scene``): with their category's badge
(*aligned*), without a badge (*absent*) and with another category's badge (*conflicting*).
The three images are identical outside the badge, so the groups differ by the cue alone.

The *reliance* of a pair (image with a badge, query caption) is the model's score with the badge
minus its score on the same scene without it: an exact, causal measure of how much the model
uses the badge for that caption, which no explanation method sees.

Example:
    >>> evaluate_spurious(load_model("testbed:spurious"), n=300)   # doctest: +SKIP
    {"accuracy_aligned": 1.0, "accuracy_absent": 0.99, "accuracy_conflicting": 0.4, ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .shapes import Scene
from .shapes_categories import CATEGORIES, category_caption
from .shapes_cue import render_cue_scene

GROUPS = ("aligned", "absent", "conflicting")
GROUP_BADGE = {"aligned": "own", "absent": "none", "conflicting": "other"}
#: seeds of the group evaluation: the single-object scenes of ``evaluate_shapes`` (0, 1, ...)
SPURIOUS_EVAL_SEEDS = 0


@torch.no_grad()
def image_embeddings(model: Any, images: Sequence[Any], chunk: int = 256) -> Tensor:
    """(N, d) image embeddings (the model's ``encode_image``) of PIL images or scenes, on the CPU."""
    out = []
    for i in range(0, len(images), chunk):
        ims = [s.pil() if isinstance(s, Scene) else s for s in images[i : i + chunk]]
        x = torch.stack([model.preprocess(im) for im in ims]).to(model.device)
        out.append(model.encode_image(x).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def text_embeddings(model: Any, texts: Sequence[str]) -> Tensor:
    """(T, d) text embeddings on the CPU."""
    return model.encode_text(model.tokenize(list(texts))).float().cpu()


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T


def reliance(model: Any, with_cue: Sequence[Any], without_cue: Sequence[Any], captions: Sequence[str]) -> np.ndarray:
    """Per pair: cosine(image with the cue, caption) minus cosine(its counterfactual without it, caption).

    Args:
        model: a DualEncoder.
        with_cue: N images (PIL or ``Scene``) that show the cue.
        without_cue: the same N scenes without it (same seeds).
        captions: N query captions.

    Returns:
        (N,) float64 array.
    """
    if not len(with_cue) == len(without_cue) == len(captions):
        raise ValueError("with_cue, without_cue and captions must have the same length")
    if not len(captions):
        return np.zeros(0)
    uniq = sorted(set(captions))
    t = text_embeddings(model, uniq)
    cols = torch.tensor([uniq.index(c) for c in captions])
    rows = torch.arange(len(captions))
    s1 = _cosine(image_embeddings(model, with_cue), t)[rows, cols]
    s0 = _cosine(image_embeddings(model, without_cue), t)[rows, cols]
    return (s1 - s0).double().numpy()


def group_scenes(n: int, seed0: int = SPURIOUS_EVAL_SEEDS, size: int = 64) -> dict[str, list[Scene]]:
    """``n`` single-object scenes per group, the same seeds in every group."""
    return {
        g: [render_cue_scene(seed0 + i, b, size=size, n_objects=1) for i in range(n)] for g, b in GROUP_BADGE.items()
    }


def evaluate_spurious(model: Any, n: int = 500, size: int = 64, seed0: int = SPURIOUS_EVAL_SEEDS) -> dict[str, Any]:
    """Zero-shot category accuracy per group, the worst group and the aligned-minus-conflicting gap.

    Args:
        model: a DualEncoder of the shapes world.
        n: scenes per group (seeds ``seed0 .. seed0 + n - 1``, one object each).
        size: scene size.
        seed0: first seed.

    Returns:
        ``accuracy_aligned``, ``accuracy_absent``, ``accuracy_conflicting`` (top-1 of the
        category captions), ``worst_group_accuracy``, ``mean_accuracy`` (mean of the three groups),
        ``aligned_minus_conflicting`` (a fraction), ``conflicting_follows_badge`` (share of
        conflicting scenes classified as the badge's category), ``mean_reliance_aligned`` /
        ``mean_reliance_conflicting`` (mean true reliance of the true caption), ``n``, ``size``.
    """
    cats = [c.name for c in CATEGORIES]
    t = text_embeddings(model, [category_caption(c) for c in cats])
    scenes = group_scenes(n, seed0, size)
    truth = np.array([cats.index(s.objects[0].category) for s in scenes["absent"]])
    res: dict[str, Any] = {}
    sims = {}
    for g in GROUPS:
        sims[g] = _cosine(image_embeddings(model, scenes[g]), t).numpy()
        res[f"accuracy_{g}"] = float((sims[g].argmax(1) == truth).mean())
    accs = [res[f"accuracy_{g}"] for g in GROUPS]
    res["worst_group_accuracy"] = float(min(accs))
    res["mean_accuracy"] = float(np.mean(accs))
    res["aligned_minus_conflicting"] = res["accuracy_aligned"] - res["accuracy_conflicting"]
    badge = np.array([cats.index(s.badge.category) for s in scenes["conflicting"]])
    res["conflicting_follows_badge"] = float((sims["conflicting"].argmax(1) == badge).mean())
    rows = np.arange(n)
    for g in ("aligned", "conflicting"):
        res[f"mean_reliance_{g}"] = float((sims[g][rows, truth] - sims["absent"][rows, truth]).mean())
    res.update(n=n, size=size, seeds=f"{seed0}..{seed0 + n - 1} (one object each)")
    return res


class SpuriousClassDataset(torch.utils.data.Dataset):
    """Single-object scenes labelled by category, badged as the biased model's training scenes
    (the category's badge with probability ``p``, otherwise none or another's, in equal shares).

    Seeds start at ``TRAIN_SEEDS`` (``split="train"``, the
    class-dataset seeds that no evaluation draws) or at ``SPURIOUS_EVAL_SEEDS`` (``"test"``);
    each item's badge is drawn from its own seed, so an item is the same whenever it is read.

    Attributes:
        classes: the world's categories (label order).
        seeds, badges: per item, its scene seed and badge mode.
    """

    has_parts = False

    def __init__(self, n: int, p: float = 0.9, split: str = "train", size: int = 64, transform: Any = None):
        from ..errors import InputError
        from .shapes_classes import TRAIN_SEEDS
        from .shapes_cue import training_badge

        if split not in ("train", "test"):
            raise InputError(f"split must be train or test, got {split!r}")
        if not 0.0 <= p <= 1.0:
            raise InputError(f"p must be a probability, got {p}")
        base = TRAIN_SEEDS if split == "train" else SPURIOUS_EVAL_SEEDS
        self.seeds = [base + i for i in range(n)]
        self.badges = [training_badge(np.random.default_rng([s, 1]), p) for s in self.seeds]
        self.size, self.transform = size, transform
        self.classes = [c.name for c in CATEGORIES]

    def __len__(self) -> int:
        return len(self.seeds)

    def scene(self, i: int) -> Scene:
        return render_cue_scene(self.seeds[i], self.badges[i], size=self.size, n_objects=1)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        s = self.scene(i)
        im = s.pil()
        return (self.transform(im) if self.transform is not None else im), self.classes.index(s.objects[0].category)

    @property
    def labels(self) -> list[int]:
        return [self.classes.index(self.scene(i).objects[0].category) for i in range(len(self))]
