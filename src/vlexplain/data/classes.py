"""Labelled image datasets: class folders (ImageFolder layout), split folders and CUB-200-2011.

* Class folders: ``root/<class>/<image>``; class names are the folder names with ``_`` read as a
  space ("golden_retriever" -> "golden retriever"). Such a folder has no split of its own, so one is
  made: per class, the images are ordered by a seeded hash of their path and the first
  ``test_fraction`` (and then ``val_fraction``) of them form the test (val) split, the rest the
  train split. The split is deterministic, per class (every class is in every split when it has
  enough images), stable when other classes or files are added, and never puts an image in two splits.
* Split folders (ImageNet style): ``root/train/<class>/…``, ``root/val/<class>/…``,
  ``root/test/<class>/…`` (any of them); the split is the folder. Labels are shared by all splits
  (classes: the sorted union of every split's class folders).
* CUB-200-2011: ``root/images.txt``, ``train_test_split.txt``, ``image_class_labels.txt``,
  ``classes.txt``, optional ``bounding_boxes.txt`` and ``parts/parts.txt`` +
  ``parts/part_locs.txt``; images under ``root/images/``. Class names drop the numeric prefix
  ("017.Cardinal" -> "Cardinal", "001.Black_footed_Albatross" -> "Black footed Albatross").

Hidden files and everything inside hidden folders (``.ipynb_checkpoints``, ``.DS_Store``…) are
ignored. Items are ``(image, label)``; the image is a PIL image, or the output of ``transform`` when
one is set (e.g. ``model.preprocess``). ``ClassDataset.describe`` says which layout and split were
read and how many images they hold (what run configurations record).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import InputError
from ..images import load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
Split = Literal["train", "val", "test", "all"]
SPLITS = ("train", "val", "test", "all")
#: folder names recognised as split folders (``root/<split>/<class>/…``) -> the split they hold
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
#: default share of each class's images in the test split of a flat class folder
DEFAULT_TEST_FRACTION = 0.2


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
        samples: the ``ClassSample`` of every item.
        transform: applied to each PIL image (None: items are PIL images).
        root: the folder the dataset was read from.
    """

    def __init__(
        self,
        samples: Sequence[ClassSample],
        classes: Sequence[str],
        transform: Callable[[Any], Any] | None = None,
        root: str | Path = "",
        info: dict[str, Any] | None = None,
    ):
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform
        self.root = Path(root)
        self.info = dict(info or {})  # layout, split and split rule (see describe)

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

    def subset(self, indices: Sequence[int]) -> ClassDataset:
        return ClassDataset(
            [self.samples[i] for i in indices], self.classes, self.transform, self.root, {**self.info, "subset": True}
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the folder, its layout, the split read and its image count (for run configs)."""
        return {
            "path": str(self.root.resolve()) if str(self.root) else "",
            **self.info,
            "images": len(self),
            "classes": len(self.classes),
        }


def _visible_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _class_dirs(root: Path) -> list[Path]:
    dirs = _visible_dirs(root)
    if not dirs:
        raise InputError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
    return dirs


def split_folders(root: str | Path) -> dict[str, Path] | None:
    """``{"train": root/train, "val": root/val, ...}`` when ``root`` holds split folders, else None.

    Every visible sub-folder must be a split name (train, val / valid / validation, test) holding
    class folders; a mix of split folders and other folders is refused (it is ambiguous).
    """
    root = Path(root)
    dirs = _visible_dirs(root) if root.is_dir() else []
    named = [d for d in dirs if d.name.lower() in SPLIT_FOLDERS]
    if not named or not any(_visible_dirs(d) for d in named):
        return None
    if len(named) != len(dirs):
        other = [d.name for d in dirs if d not in named]
        raise InputError(
            f"{root} mixes split folders ({', '.join(d.name for d in named)}) with other folders "
            f"({', '.join(other[:4])}); use root/<split>/<class>/<image> or root/<class>/<image>"
        )
    out: dict[str, Path] = {}
    for d in named:
        split = SPLIT_FOLDERS[d.name.lower()]
        if split in out:
            raise InputError(f"{root}: two folders hold the {split} split ({out[split].name}, {d.name})")
        out[split] = d
    return out


def folder_classes(root: str | Path) -> list[str]:
    """Class names of a ``root/<class>/<image>`` folder (or of split folders: the union of their
    class folders), sorted, ``_`` -> space."""
    root = Path(root)
    splits = split_folders(root)
    if splits is not None:
        return sorted({_dir_class(d) for s in splits.values() for d in _visible_dirs(s)}, key=_class_key)
    return [_dir_class(d) for d in _class_dirs(root)]


def _class_key(name: str) -> str:
    return name.replace(" ", "_")  # the folders' sort order


def _dir_class(d: Path) -> str:
    return d.name.replace("_", " ")


def _images_in(d: Path) -> list[Path]:
    """Image files under ``d`` (any depth), skipping hidden files and anything in hidden folders."""
    return sorted(
        f
        for f in d.rglob("*")
        if f.suffix.lower() in IMAGE_EXTENSIONS
        and f.is_file()
        and not any(part.startswith(".") for part in f.relative_to(d).parts)
    )


def split_counts(n: int, test_fraction: float, val_fraction: float = 0.0) -> tuple[int, int]:
    """(test, val) image counts of a class of ``n`` images: rounded shares, at least one each when the
    fraction is positive and the class can spare it, and always at least one image left to train on."""
    n_test = math.floor(n * test_fraction + 0.5)
    n_val = math.floor(n * val_fraction + 0.5)
    if test_fraction > 0 and n >= 2:
        n_test = max(n_test, 1)
    if val_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    while n_test + n_val > max(n - 1, 0):
        if n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_test, n_val


def _split_key(seed: int, rel: str) -> str:
    return hashlib.sha256(f"{seed}\0{rel}".encode()).hexdigest()


def _check_fractions(test_fraction: float, val_fraction: float) -> None:
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise InputError(
            f"split fractions must be >= 0 and leave images to train on (test {test_fraction}, val {val_fraction})"
        )


def image_folder(
    root: str | Path,
    transform: Callable[[Any], Any] | None = None,
    split: Split = "all",
    test_fraction: float = DEFAULT_TEST_FRACTION,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> ClassDataset:
    """Read ``root/<class>/<image>`` (sub-folders sorted by name; hidden files and folders ignored).

    Args:
        root: the folder of class folders.
        transform: applied to each PIL image.
        split: "all" (every image), or "train", "val", "test" of the seeded per-class split (see the
            module docstring).
        test_fraction, val_fraction: each class's share of test and val images.
        seed: the split's seed (another seed, another split).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
    _check_fractions(test_fraction, val_fraction)
    dirs = _class_dirs(root)
    classes = [_dir_class(d) for d in dirs]
    per_class = [_images_in(d) for d in dirs]
    empty = [c for c, files in zip(classes, per_class) if not files]
    if empty:
        raise InputError(f"class folder(s) without images in {root}: {', '.join(empty[:6])}")
    samples = []
    for label, files in enumerate(per_class):
        if split != "all":
            order = sorted(files, key=lambda f: _split_key(seed, f.relative_to(root).as_posix()))
            n_test, n_val = split_counts(len(files), test_fraction, val_fraction)
            part = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
            keep = set(part[split])
            files = [f for f in files if f in keep]
        samples += [ClassSample(f, label) for f in files]
    if not samples:
        raise InputError(
            f"the {split} split of {root} is empty (test fraction {test_fraction}, val fraction "
            f"{val_fraction}); use --split all or larger fractions"
        )
    info: dict[str, Any] = {"layout": "class folders", "split": split}
    if split != "all":
        info.update(test_fraction=test_fraction, val_fraction=val_fraction, split_seed=seed)
    return ClassDataset(samples, classes, transform, root, info)


def split_folder_dataset(root: str | Path, split: Split, transform: Callable[[Any], Any] | None = None) -> ClassDataset:
    """Read ImageNet-style ``root/<split>/<class>/<image>``; ``split`` "all" joins every split."""
    root = Path(root)
    splits = split_folders(root)
    if splits is None:
        raise InputError(f"{root} has no split folders (expected root/train/<class>/..., root/val/<class>/...)")
    if split != "all" and split not in splits:
        raise InputError(
            f"{root} has no {split!r} split folder (splits: {', '.join(splits)}); pass --split {' or '.join(splits)}"
        )
    classes = folder_classes(root)
    label = {c: i for i, c in enumerate(classes)}
    samples = []
    for name in list(splits) if split == "all" else [split]:
        for d in _visible_dirs(splits[name]):
            samples += [ClassSample(f, label[_dir_class(d)]) for f in _images_in(d)]
    if not samples:
        raise InputError(f"the {split} split of {root} has no images")
    info = {"layout": "split folders", "split": split, "split_folder": None if split == "all" else splits[split].name}
    return ClassDataset(samples, classes, transform, root, info)


def _table(path: Path, min_cols: int) -> list[list[str]]:
    if not path.is_file():
        raise InputError(f"CUB file missing: {path}")
    rows = []
    from ..files import read_text

    for n, line in enumerate(read_text(path, "CUB file").splitlines()):
        if not line.strip():
            continue
        cols = line.split()
        if len(cols) < min_cols:
            raise InputError(f"{path}, line {n + 1}: expected at least {min_cols} columns, got {len(cols)}")
        rows.append(cols)
    return rows


def cub_class_name(raw: str) -> str:
    """ "017.Cardinal" -> "Cardinal"; underscores become spaces."""
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
        raise InputError(f"unknown split {split!r}; CUB-200-2011 has train, test (or all)")
    names = {r[0]: r[1] for r in _table(root / "images.txt", 2)}
    is_train = {r[0]: r[1] == "1" for r in _table(root / "train_test_split.txt", 2)}
    labels = {r[0]: int(r[1]) for r in _table(root / "image_class_labels.txt", 2)}
    classes = cub_classes(root)
    boxes: dict[str, tuple[float, float, float, float]] = {}
    if (root / "bounding_boxes.txt").is_file():
        boxes = {
            r[0]: (float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in _table(root / "bounding_boxes.txt", 5)
        }
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
    return ClassDataset(samples, classes, transform, root, {"layout": "CUB-200-2011", "split": split})


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
    root: str | Path,
    split: Split = "train",
    transform: Callable[[Any], Any] | None = None,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    val_fraction: float = 0.0,
    split_seed: int = 0,
) -> ClassDataset:
    """A CUB-layout folder (has ``images.txt``), split folders, or class folders (seeded split).

    Args:
        root: the dataset folder.
        split: "train", "val", "test" or "all".
        transform: applied to each PIL image.
        test_fraction, val_fraction, split_seed: the split of flat class folders (ignored by the
            layouts that carry their own split).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
    if (root / "images.txt").is_file():
        return cub(root, split, transform)
    if (root / "CUB_200_2011" / "images.txt").is_file():
        return cub(root / "CUB_200_2011", split, transform)
    if split_folders(root) is not None:
        return split_folder_dataset(root, split, transform)
    return image_folder(root, transform, split, test_fraction, val_fraction, split_seed)


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
    yy, xx = torch.meshgrid(
        torch.arange(H, dtype=torch.float32) + 0.5, torch.arange(W, dtype=torch.float32) + 0.5, indexing="ij"
    )
    m = torch.zeros(H, W, dtype=torch.bool)
    for x, y in points:
        if math.isfinite(x) and math.isfinite(y):
            m |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return m
