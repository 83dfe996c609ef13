"""Semantic-segmentation folders with PNG label maps, in the layouts the datasets are distributed in.

=============  ==============================================================  ===============================
layout         images / label maps (under ``--data``)                          classes (label ids)
=============  ==============================================================  ===============================
voc            ``JPEGImages/*.jpg``, ``SegmentationClass/*.png``,               21: 0 background, 1..20
               ``ImageSets/Segmentation/val.txt``
context        ``JPEGImages/*.jpg``, ``SegmentationClassContext/*.png``,        60: 0 background, 1..59
               ``ImageSets/SegmentationContext/val.txt``
coco-object    ``images/val2017/*.jpg``, ``annotations/val2017/*_instanceTrainIds.png``  81: 0 background, 1..80
ade20k         ``images/validation/*.jpg``, ``annotations/validation/*.png``     150: label 0 ("other") ignored
=============  ==============================================================  ===============================

Label 255 is ignored everywhere. ``background=False`` drops the background class of voc and context
as the papers' VOC20 / Context59 do (label 0 is then ignored and the others shift down by one, as
mmsegmentation's ``reduce_zero_label``). The class names are those of
[`semseg_classes`][vlexplain.data.semseg_classes] unless a class file is given: one line per label id, a
class's names separated by ", ".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import load_image
from . import semseg_classes as C

IGNORE = 255


@dataclass(frozen=True)
class Layout:
    """Where one distribution keeps its files and how its labels read."""

    images: str  # image folder under the root
    labels: str  # label-map folder under the root
    split: str | None  # file of image ids (None: every label map)
    label_suffix: str  # label file name = id + this
    reduce_zero: bool  # label 0 ignored, others minus 1 (no background class)
    classes: tuple[str, ...]  # names per label id (after reduction)
    classes_no_bg: tuple[str, ...] | None = None  # with background=False (None: no background to drop)


LAYOUTS: dict[str, Layout] = {
    "voc": Layout("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/val.txt", ".png", False, C.VOC21, C.VOC20),
    "context": Layout(
        "JPEGImages",
        "SegmentationClassContext",
        "ImageSets/SegmentationContext/val.txt",
        ".png",
        False,
        C.CONTEXT60,
        C.CONTEXT59,
    ),
    "coco-object": Layout("images/val2017", "annotations/val2017", None, "_instanceTrainIds.png", False, C.COCO_OBJECT),
    "ade20k": Layout("images/validation", "annotations/validation", None, ".png", True, C.ADE20K),
}


def read_class_file(path: str | os.PathLike) -> tuple[str, ...]:
    """One class per line, its names separated by ", " (the papers' ``cls_*.txt`` format)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"class file {p} not found")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    if not lines or any(not ln or not all(n.strip() for n in ln.split(",")) for ln in lines):
        raise InputError(f"{p}: every line must name a class (names separated by ', '), no empty lines")
    return tuple(lines)


class SemSegFolder:
    """Items: (image, (H, W) int64 label map with ``IGNORE`` = 255) of one layout's validation split."""

    def __init__(
        self,
        root: str | os.PathLike,
        layout: str,
        *,
        background: bool = True,
        classes: str | os.PathLike | None = None,
        check: bool = True,
    ):
        if layout not in LAYOUTS:
            raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        self.root, self.layout = Path(root).expanduser(), layout
        lay = LAYOUTS[layout]
        if not background and lay.classes_no_bg is None:
            raise InputError(f"layout {layout} has no background class to drop")
        self.reduce_zero = lay.reduce_zero or not background
        self.background = background and lay.classes_no_bg is not None
        default = lay.classes if background else lay.classes_no_bg
        assert default is not None
        self.classes = read_class_file(classes) if classes is not None else default
        img_dir, lab_dir = self.root / lay.images, self.root / lay.labels
        for d in (img_dir, lab_dir):
            if not d.is_dir():
                raise InputError(f"{layout} layout: {d} not found (is --data the dataset's root folder?)")
        if lay.split is not None:
            split = self.root / lay.split
            if not split.is_file():
                raise InputError(f"{layout} layout: split file {split} not found")
            ids = [ln.strip() for ln in split.read_text().splitlines() if ln.strip()]
        else:
            ids = sorted(p.name[: -len(lay.label_suffix)] for p in lab_dir.glob(f"*{lay.label_suffix}"))
        if not ids:
            raise InputError(f"{layout} layout: no images listed under {self.root}")
        self.items: list[tuple[Path, Path]] = []
        for i in ids:
            jpg, png = img_dir / f"{i}.jpg", lab_dir / f"{i}{lay.label_suffix}"
            for f in (jpg, png):
                if not f.is_file():
                    raise InputError(f"{layout} layout: {f} not found")
            self.items.append((jpg, png))
        if check:
            self.check_labels()

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": f"semseg:{self.layout}",
            "path": str(self.root.resolve()),
            "n": len(self.items),
            "background": self.background,
            "classes": list(self.classes),
        }

    def label(self, i: int) -> np.ndarray:
        """(H, W) int64 label ids, ``IGNORE`` where unlabelled."""
        png = self.items[i][1]
        try:
            with Image.open(png) as im:
                if im.mode not in ("P", "L", "I", "I;16"):
                    raise InputError(f"{png}: a {im.mode} image; label maps hold one class id per pixel (P or L)")
                lab = np.asarray(im).astype(np.int64)
        except OSError as e:
            raise InputError(f"{png}: not a readable PNG ({e})") from None
        if self.reduce_zero:
            lab = np.where(lab == 0, IGNORE, lab - 1)
            lab[lab == IGNORE - 1] = IGNORE
        return lab

    def check_labels(self) -> None:
        """Every label id must name a class of the class list (one line: the first map that does not)."""
        n = len(self.classes)
        for i in range(len(self.items)):
            lab = self.label(i)
            bad = np.unique(lab[(lab != IGNORE) & ((lab < 0) | (lab >= n))])
            if bad.size:
                raise InputError(
                    f"{self.items[i][1]}: label id {int(bad[0])} but the class list has {n} classes "
                    f"(0..{n - 1}); give the matching --layout / --classes"
                )

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        jpg, png = self.items[i]
        image, lab = load_image(str(jpg)), self.label(i)
        if lab.shape != (image.height, image.width):
            raise InputError(f"{png} is {lab.shape[1]}x{lab.shape[0]}, its image {image.width}x{image.height}")
        return image, lab
