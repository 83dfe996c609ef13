"""Labelled image datasets: class folders (ImageFolder layout) and the CUB-200-2011 layout.

* Class folders: ``root/<class>/<image>``; class names are the folder names with ``_`` read as a
  space ("golden_retriever" -> "golden retriever").
* CUB-200-2011: ``root/images.txt``, ``train_test_split.txt``, ``image_class_labels.txt``,
  ``classes.txt``, optional ``bounding_boxes.txt`` and ``parts/parts.txt`` +
  ``parts/part_locs.txt``; images under ``root/images/``. Class names drop the numeric prefix
  ("017.Cardinal" -> "Cardinal", "001.Black_footed_Albatross" -> "Black footed Albatross").

Items are ``(image, label)``; the image is a PIL image, or the output of ``transform`` when one is
set (e.g. ``model.preprocess``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ..images import load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
Split = Literal["train", "test", "all"]


@dataclass
class ClassSample:
    """One labelled image.

    Attributes:
        path: the image file.
        label: class index.
        bbox: (x, y, w, h) object box in original pixels, if known.
        parts: part name -> (x, y) visible keypoints in original pixels, if known.
    """

    path: Path
    label: int
    bbox: tuple[float, float, float, float] | None = None
    parts: dict[str, tuple[float, float]] = field(default_factory=dict)


class ClassDataset(torch.utils.data.Dataset):
    """A list of labelled images with class names.

    Attributes:
        classes: class names in label order.
        samples: the :class:`ClassSample` of every item.
        transform: applied to each PIL image (None: items are PIL images).
        root: the folder the dataset was read from.
    """

    def __init__(
        self, samples: Sequence[ClassSample], classes: Sequence[str], transform: Callable[[Any], Any] | None = None,
        root: str | Path = "",
    ):
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform
        self.root = Path(root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        s = self.samples[i]
        im = load_image(s.path)
        return (self.transform(im) if self.transform is not None else im), s.label

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    @property
    def has_parts(self) -> bool:
        return any(s.parts for s in self.samples)

    def subset(self, indices: Sequence[int]) -> "ClassDataset":
        return ClassDataset([self.samples[i] for i in indices], self.classes, self.transform, self.root)


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise InputError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
    return dirs


def folder_classes(root: str | Path) -> list[str]:
    """Class names of a ``root/<class>/<image>`` folder: its sub-folders, sorted, ``_`` -> space."""
    return [_dir_class(d) for d in _class_dirs(Path(root))]


def _dir_class(d: Path) -> str:
    return d.name.replace("_", " ")


def image_folder(root: str | Path, transform: Callable[[Any], Any] | None = None) -> ClassDataset:
    """Read ``root/<class>/<image>`` (sub-folders sorted by name; hidden files ignored)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    dirs = _class_dirs(root)
    classes = [_dir_class(d) for d in dirs]
    samples = []
    for label, d in enumerate(dirs):
        files = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        samples += [ClassSample(f, label) for f in files]
    have = {s.label for s in samples}
    empty = [c for label, c in enumerate(classes) if label not in have]
    if empty:
        raise InputError(f"class folder(s) without images in {root}: {', '.join(empty[:6])}")
    return ClassDataset(samples, classes, transform, root)


def _table(path: Path, min_cols: int) -> list[list[str]]:
    if not path.is_file():
        raise InputError(f"CUB file missing: {path}")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        cols = line.split()
        if len(cols) < min_cols:
            raise InputError(f"{path}, line {n + 1}: expected at least {min_cols} columns, got {len(cols)}")
        rows.append(cols)
    return rows


def cub_class_name(raw: str) -> str:
    """"017.Cardinal" -> "Cardinal"; underscores become spaces."""
    name = raw.split(".", 1)[1] if "." in raw and raw.split(".", 1)[0].isdigit() else raw
    return name.replace("_", " ")


def cub_classes(root: str | Path) -> list[str]:
    """Class names of a CUB-200-2011 folder, in class-id order (from ``classes.txt``)."""
    path = Path(root) / "classes.txt"
    class_rows = _table(path, 2)
    ids = []
    for r in class_rows:
        if not r[0].isdigit():
            raise InputError(f"{path}: expected '<id> <name>' lines, got {' '.join(r)!r}")
        ids.append(int(r[0]))
    if sorted(ids) != list(range(1, len(ids) + 1)):
        raise InputError(f"{path}: class ids must be 1..{len(ids)}")
    return [cub_class_name(" ".join(r[1:])) for r in sorted(class_rows, key=lambda r: int(r[0]))]


def cub(root: str | Path, split: Split = "train", transform: Callable[[Any], Any] | None = None) -> ClassDataset:
    """Read the CUB-200-2011 layout (see the module docstring).

    Args:
        root: the ``CUB_200_2011`` folder (the one holding ``images.txt``).
        split: "train", "test" or "all" (from ``train_test_split.txt``).
        transform: applied to each PIL image.
    """
    root = Path(root)
    if split not in ("train", "test", "all"):
        raise InputError(f"unknown split {split!r}; use train, test or all")
    names = {r[0]: r[1] for r in _table(root / "images.txt", 2)}
    is_train = {r[0]: r[1] == "1" for r in _table(root / "train_test_split.txt", 2)}
    labels = {r[0]: int(r[1]) for r in _table(root / "image_class_labels.txt", 2)}
    classes = cub_classes(root)
    boxes = {}
    if (root / "bounding_boxes.txt").is_file():
        boxes = {r[0]: tuple(float(v) for v in r[1:5]) for r in _table(root / "bounding_boxes.txt", 5)}
    parts = _cub_parts(root)
    missing = [i for i in names if i not in labels or i not in is_train]
    if missing:
        raise InputError(f"CUB image id(s) without a label or split entry: {', '.join(missing[:6])}")
    samples = []
    for iid, rel in names.items():
        if split != "all" and is_train[iid] != (split == "train"):
            continue
        if not 1 <= labels[iid] <= len(classes):
            raise InputError(f"CUB image {iid}: class id {labels[iid]} is not in classes.txt")
        samples.append(ClassSample(root / "images" / rel, labels[iid] - 1, boxes.get(iid), parts.get(iid, {})))
    return ClassDataset(samples, classes, transform, root)


def _cub_parts(root: Path) -> dict[str, dict[str, tuple[float, float]]]:
    locs, names_file = root / "parts" / "part_locs.txt", root / "parts" / "parts.txt"
    if not locs.is_file():
        return {}
    names = {r[0]: " ".join(r[1:]) for r in _table(names_file, 2)} if names_file.is_file() else {}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for r in _table(locs, 5):
        if r[4] == "1":  # visible
            out.setdefault(r[0], {})[names.get(r[1], r[1])] = (float(r[2]), float(r[3]))
    return out


def open_class_dataset(
    root: str | Path, split: Split = "train", transform: Callable[[Any], Any] | None = None
) -> ClassDataset:
    """A CUB-layout folder (has ``images.txt``) or class folders."""
    root = Path(root)
    if (root / "images.txt").is_file():
        return cub(root, split, transform)
    if (root / "CUB_200_2011" / "images.txt").is_file():
        return cub(root / "CUB_200_2011", split, transform)
    return image_folder(root, transform)


def to_preprocessed(xy: tuple[float, float], image_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, float]:
    """Map a point of the original image into the model's input (shortest-side resize + centre crop).

    Args:
        xy: (x, y) in original pixels.
        image_size: (width, height) of the original image.
        size: (H, W) model input size.
    """
    w, h = image_size
    s = min(size) / min(w, h)
    nw, nh = (min(size), int(min(size) * h / w)) if w <= h else (int(min(size) * w / h), min(size))
    left, top = int(round((nw - size[1]) / 2.0)), int(round((nh - size[0]) / 2.0))
    return xy[0] * s - left, xy[1] * s - top


def disk_mask(points: Sequence[tuple[float, float]], size: tuple[int, int], radius: float) -> Tensor:
    """(H, W) boolean mask: the union of disks of ``radius`` pixels around ``points`` (x, y)."""
    H, W = size
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32) + 0.5, torch.arange(W, dtype=torch.float32) + 0.5,
                            indexing="ij")
    m = torch.zeros(H, W, dtype=torch.bool)
    for x, y in points:
        if math.isfinite(x) and math.isfinite(y):
            m |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return m
