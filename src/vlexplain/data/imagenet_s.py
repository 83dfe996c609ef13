"""ImageNet-S (Gao et al., TPAMI 2022): ImageNet validation images with per-pixel masks of their class.

Layout as distributed (``ImageNetS50``, ``ImageNetS300`` or ``ImageNetS919``)::

    ROOT/validation/<wnid>/<name>.JPEG
    ROOT/validation-segmentation/<wnid>/<name>.png      # RGB; class id = R + 256 * G
    ROOT/../ImageNetS_categories_im50.txt                # optional: one wnid per line, class id = line + 1

Class id 0 is "others" (not among the subset's categories), 1000 is ignored. The object mask of an
image is the pixels of its own class (the id of its folder's wnid in the categories file; without that
file, every id in 1..999, as each image is annotated with its own category). Class names come from
the ImageNet-1k synset list (timm) and OpenCLIP's ImageNet class names.

Example:
    >>> ds = ImageNetS("ImageNetS50")     # doctest: +SKIP
    >>> image, mask, ignore, name = ds[0]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError, require
from ..images import load_image

IGNORE = 1000


def wnid_names() -> dict[str, str]:
    """ImageNet-1k wnid -> OpenCLIP class name (timm's sorted synset list gives the class order)."""
    meta = require("open_clip.zero_shot_metadata", "openclip")
    timm_info = require("timm.data", "offline")
    path = Path(timm_info.__file__).parent / "_info" / "imagenet_synsets.txt"
    wnids = path.read_text().split()
    return dict(zip(wnids, meta.IMAGENET_CLASSNAMES))


def decode_label(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 annotation -> (H, W) int class ids, R + 256 * G."""
    return rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1].astype(np.int64)


class ImageNetS:
    """Items: (image, object mask, ignore mask, class name) of ``ROOT/validation``."""

    def __init__(self, root: str | os.PathLike, split: str = "validation"):
        self.root = Path(root).expanduser()
        img_dir, seg_dir = self.root / split, self.root / f"{split}-segmentation"
        if not seg_dir.is_dir() or not img_dir.is_dir():
            raise InputError(f"ImageNet-S: {self.root} has no {split}/ and {split}-segmentation/ folders")
        self.items: list[tuple[Path, Path, str]] = []
        for png in sorted(seg_dir.glob("*/*.png")):
            wnid = png.parent.name
            jpg = img_dir / wnid / f"{png.stem}.JPEG"
            if not jpg.is_file():
                raise InputError(f"ImageNet-S: {png} has no image {jpg}")
            self.items.append((jpg, png, wnid))
        if not self.items:
            raise InputError(f"ImageNet-S: no masks in {seg_dir}/<wnid>/*.png")
        names = wnid_names()
        unknown = sorted({w for _, _, w in self.items} - set(names))
        if unknown:
            raise InputError(f"ImageNet-S: folder {unknown[0]} is not an ImageNet-1k wnid")
        self.names = names
        self.class_ids = self._categories()

    def _categories(self) -> dict[str, int] | None:
        for d in (self.root, self.root.parent):
            for f in sorted(d.glob("ImageNetS_categories_im*.txt")):
                wnids = f.read_text().split()
                return {w: i + 1 for i, w in enumerate(wnids)}
        return None

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict[str, Any]:
        return {"kind": "imagenet-s", "path": str(self.root.resolve()), "n": len(self.items)}

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray, np.ndarray, str]:
        jpg, png, wnid = self.items[i]
        image = load_image(str(jpg))
        with Image.open(png) as im:
            if im.mode != "RGB":
                raise InputError(f"ImageNet-S: {png} is a {im.mode} image; the annotations are RGB (id = R + 256 G)")
            label = decode_label(np.asarray(im))
        if label.shape != (image.height, image.width):
            raise InputError(f"ImageNet-S: {png} is {label.shape[::-1]} pixels, its image {image.size}")
        ignore = label == IGNORE
        if self.class_ids is not None:
            if wnid not in self.class_ids:
                raise InputError(f"ImageNet-S: {wnid} is not in the categories file")
            obj = label == self.class_ids[wnid]
        else:
            obj = (label > 0) & ~ignore
        return image, obj, ignore, self.names[wnid]
