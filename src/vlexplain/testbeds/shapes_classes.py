"""The shapes world as a labelled class dataset with exact concept masks (for DEAL).

Every item is a single-object scene labelled by its category; the concept set is
``concept_set`` (each category's part descriptors), and
``ShapesClassDataset.concept_mask`` gives the pixels a descriptor refers to, so concept maps
can be scored against exact part masks. The ``test`` split is the held-out single-object scenes of
``evaluate_shapes`` (seeds 0, 1, ...); the ``train`` split uses
seeds from ``TRAIN_SEEDS``, which neither that evaluation, the attribution benchmark
(``vlexplain benchmark shapes``) nor the shapes CLIP's training draws.

On the command line: ``--data shapes:N`` (N scenes of the chosen split).

Example:
    >>> ds = shapes_classes(200, "test", transform=model.preprocess)   # doctest: +SKIP
    >>> ds.concept_mask(0, "a triangular roof", (64, 64))              # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .shapes import Scene, render_scene
from .shapes_categories import CATEGORIES
from .shapes_eval import SINGLE_SEEDS

#: first seed of the ``train`` split (below the shapes CLIP's training seeds, above its evaluation seeds)
TRAIN_SEEDS = 7_000_000
#: prompts that match the texts the shapes CLIP was trained on ("a house", "a triangular roof")
SHAPES_CATEGORY_TEMPLATE = "a {class}"
SHAPES_CONCEPT_TEMPLATE = "{descriptor}"
MAX_SCENES = 1_000_000
_SPEC = re.compile(r"^shapes:(\d+)$")


def is_shapes_spec(spec: str) -> bool:
    """True for a ``shapes:N`` data spec (or a malformed ``shapes:...``, which ``parse_shapes_spec`` rejects)."""
    return str(spec).startswith("shapes:")


def parse_shapes_spec(spec: str) -> int:
    """N from ``"shapes:N"`` (InputError for anything else)."""
    m = _SPEC.match(str(spec).strip())
    if m is None or not 1 <= int(m.group(1)) <= MAX_SCENES:
        raise InputError(f"--data {spec!r}: use shapes:N with N from 1 to {MAX_SCENES} (e.g. shapes:200)")
    return int(m.group(1))


class ShapesClassDataset(torch.utils.data.Dataset):
    """``n`` single-object shapes scenes, labelled by category (rendered on demand).

    Attributes:
        classes: the world's categories (label order).
        seeds: the scene seeds, one per item.
        size: scene side in pixels.
        transform: applied to each PIL image (None: items are PIL images).
        has_parts: True (every item has exact concept masks).
    """

    has_parts = True

    def __init__(self, n: int, split: str = "test", size: int = 64, transform: Callable[[Any], Any] | None = None):
        if split not in ("train", "test"):
            raise InputError(f"shapes data has the splits train and test, not {split!r}")
        if not 1 <= n <= MAX_SCENES:
            raise InputError(f"shapes scenes: n must be 1..{MAX_SCENES}, got {n}")
        base = TRAIN_SEEDS if split == "train" else SINGLE_SEEDS
        self.seeds = [base + i for i in range(n)]
        self.split, self.size, self.transform = split, size, transform
        self.classes = [c.name for c in CATEGORIES]

    def __len__(self) -> int:
        return len(self.seeds)

    def scene(self, i: int) -> Scene:
        """The scene of item ``i``."""
        return render_scene(self.seeds[i], size=self.size, n_objects=1)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        s = self.scene(i)
        im = s.pil()
        return (self.transform(im) if self.transform is not None else im), self.classes.index(s.objects[0].category)

    @property
    def labels(self) -> list[int]:
        return [self.classes.index(self.scene(i).objects[0].category) for i in range(len(self))]

    def concept_mask(self, i: int, descriptor: str, size: tuple[int, int]) -> Tensor | None:
        """(H, W) bool mask of the pixels ``descriptor`` refers to in item ``i``, in model-input coordinates.

        The scene is mapped like the model's preprocessing (shortest side resized to ``min(size)``,
        then centre-cropped; nearest neighbour). None when the descriptor is not true of the scene.
        """
        m = self.scene(i).text_masks().get(descriptor)
        if m is None:
            return None
        return _to_input(m, (size[0], size[1]))


def _to_input(mask: np.ndarray, size: tuple[int, int]) -> Tensor:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    t = torch.from_numpy(mask)[None].to(torch.uint8)  # (1, S, S)
    t = TF.resize(t, min(size), interpolation=InterpolationMode.NEAREST)
    return TF.center_crop(t, list(size))[0] > 0


def shapes_classes(
    n: int, split: str = "test", size: int = 64, transform: Callable[[Any], Any] | None = None
) -> ShapesClassDataset:
    """``n`` single-object shapes scenes as a class dataset (see ``ShapesClassDataset``).

    Args:
        n: number of scenes.
        split: ``"test"`` (held-out evaluation scenes) or ``"train"``.
        size: scene side in pixels (the shipped shapes CLIP takes 64).
        transform: applied to each PIL image (e.g. ``model.preprocess``).

    Returns:
        The dataset.
    """
    return ShapesClassDataset(n, split, size, transform)
