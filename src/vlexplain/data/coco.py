"""COCO as it is downloaded: ``annotations/captions_<split>.json`` + the ``<split>/`` image folder, with
``annotations/instances_<split>.json`` for ground truth.

Pairs follow the ``images`` list of the captions file; each image gives its first caption (or, with
``all_captions``, one pair per caption, in file order). With an instances file, the ground truth of
a pair is, with ``match="caption"``, the objects whose category the caption names (whole words,
plural ``s`` / ``es`` accepted; "person" also answers to people, man, woman, boy, girl, child and
their plurals), or with ``match="all"`` every object of the image; as ``boxes`` (``bbox``, pixels of
the original image) or ``masks`` (the ``segmentation`` polygons or RLE, rasterised at pixel centres).
A pair whose caption names none of its image's categories has no ground truth (counted in
``CocoReader.describe``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError
from .rows import Captions, Columns, PairRow

#: extra words a category answers to (COCO's most frequent category is rarely called "person")
ALIASES = {
    "person": (
        "people",
        "man",
        "men",
        "woman",
        "women",
        "boy",
        "boys",
        "girl",
        "girls",
        "child",
        "children",
        "kid",
        "kids",
        "guy",
        "guys",
        "lady",
        "ladies",
        "player",
        "players",
    )
}


def _load(path: Path, what: str) -> dict[str, Any]:
    from ..files import check_input_file, utf8_errors

    if not Path(path).exists() and not Path(path).is_symlink():
        raise InputError(f"{what} not found: {path}")
    check_input_file(path, what)
    try:
        with open(path, encoding="utf-8") as f, utf8_errors(path, what):
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("images"), list)
        or not isinstance(obj.get("annotations"), list)
    ):
        raise InputError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations' lists)")
    return obj


def _split_name(file: Path) -> str | None:
    m = re.match(r"^(?:captions|instances)_(.+)\.json$", file.name)
    return m.group(1) if m else None


class CocoReader:
    """Rows of a COCO captions file (see the module docstring)."""

    def __init__(
        self,
        file: Path,
        images: Any,
        instances: Any,
        ground_truth: str = "boxes",
        match: str = "caption",
        columns: Columns | None = None,
    ):
        if ground_truth not in ("boxes", "masks"):
            raise InputError(f"COCO ground truth must be 'boxes' or 'masks', got {ground_truth!r}")
        if match not in ("caption", "all"):
            raise InputError(f"COCO box matching must be 'caption' or 'all', got {match!r}")
        self.file, self.gt, self.match = Path(file), ground_truth, match
        doc = _load(self.file, "COCO captions file")
        if not any("caption" in a for a in doc["annotations"][:50]):
            raise InputError(
                f"{file}: a COCO file without captions (an instances file?); pass captions_<split>.json "
                "as --data and this one as --instances"
            )
        self.split = _split_name(self.file)
        self.images_dir = self._images_dir(images)
        self.images = [im for im in doc["images"] if "id" in im and "file_name" in im]
        self.caps: dict[Any, list[str]] = {}
        for a in doc["annotations"]:
            if "image_id" in a and isinstance(a.get("caption"), str):
                self.caps.setdefault(a["image_id"], []).append(a["caption"].strip())
        self.objects: dict[Any, list[dict[str, Any]]] = {}
        self.categories: dict[Any, str] = {}
        self.instances = Path(instances) if instances is not None else None
        if self.instances is not None:
            inst = _load(self.instances, "COCO instances file")
            self.categories = {c["id"]: str(c["name"]) for c in inst.get("categories", []) if "id" in c and "name" in c}
            for a in inst["annotations"]:
                if "image_id" in a and "bbox" in a:
                    self.objects.setdefault(a["image_id"], []).append(a)
        self.stats = {"images": 0, "pairs": 0, "without_ground_truth": 0}

    def _images_dir(self, images: Any) -> Path:
        if images is not None:
            d = Path(images).expanduser()
            if not d.is_dir():
                raise InputError(f"--images {d}: not a folder")
            return d
        name = self.split
        for d in [self.file.parent.parent / name, self.file.parent / name] if name else []:
            if d.is_dir():
                return d
        raise InputError(f"{self.file}: where are its images? pass --images FOLDER (e.g. val2017/)")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"images_dir": str(self.images_dir.resolve()), "coco": dict(self.stats)}
        if self.split:
            out["split"] = self.split
        if self.instances is not None:
            out.update(instances=str(self.instances.resolve()), ground_truth=self.gt, match=self.match)
        return out

    def rows(self, captions: Captions) -> Iterator[PairRow]:
        self.stats = {"images": 0, "pairs": 0, "without_ground_truth": 0}
        i = 0
        for im in self.images:
            caps = self.caps.get(im["id"])
            if not caps:
                continue
            where = f"{self.file}:image {im['id']}"
            self.stats["images"] += 1
            for j, cap in enumerate(captions(caps, where, "caption")):
                objs = self._objects(im["id"], cap)
                boxes = mask = None
                if objs is not None and self.gt == "boxes":
                    boxes = [[float(v) for v in o["bbox"]] for o in objs]
                elif objs is not None:
                    mask = _MaskBuilder(objs, int(im.get("height", 0)), int(im.get("width", 0)))
                if self.instances is not None and objs is None:
                    self.stats["without_ground_truth"] += 1
                extras = {"image_id": im["id"]}
                if objs is not None:
                    extras["categories"] = sorted({self.categories.get(o.get("category_id"), "?") for o in objs})
                if len(caps) > 1 and captions.all:
                    extras["caption_index"] = j
                yield PairRow(i, cap, str(self.images_dir / im["file_name"]), where, boxes, mask, extras)
                self.stats["pairs"] += 1
                i += 1

    def _objects(self, image_id: Any, caption: str) -> list[dict[str, Any]] | None:
        """The image's objects that are this caption's ground truth, or None (no instances / no match)."""
        if self.instances is None:
            return None
        objs = self.objects.get(image_id, [])
        if self.match == "caption":
            named = {cid for cid, name in self.categories.items() if names_category(caption, name)}
            objs = [o for o in objs if o.get("category_id") in named]
        return objs or None


def names_category(caption: str, category: str) -> bool:
    """Whether a caption names a category: its words (plural s / es accepted) or an alias."""
    words = [re.escape(w) for w in category.lower().split()]
    pattern = r"\s+".join(words) + r"(?:s|es)?"
    alts = [pattern] + [re.escape(a) for a in ALIASES.get(category.lower(), ())]
    return re.search(r"\b(?:" + "|".join(alts) + r")\b", caption.lower()) is not None


class _MaskBuilder:
    """Builds the union mask of some objects' segmentations when the pair is loaded (PIL "L")."""

    def __init__(self, objs: list[dict[str, Any]], height: int, width: int):
        self.objs, self.h, self.w = objs, height, width

    def __call__(self) -> Image.Image:
        m = np.zeros((self.h, self.w), bool)
        for o in self.objs:
            m |= segmentation_mask(o.get("segmentation"), self.h, self.w)
        return Image.fromarray(m.astype(np.uint8) * 255, "L")


def segmentation_mask(seg: Any, h: int, w: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) -> (h, w) bool mask.

    A pixel belongs to a polygon when its centre (x + 0.5, y + 0.5) lies inside it.
    """
    if isinstance(seg, dict):
        counts = seg.get("counts")
        rh, rw = seg.get("size", (h, w))
        if isinstance(counts, str):
            counts = rle_from_string(counts)
        if not isinstance(counts, list):
            raise InputError(f"unsupported COCO segmentation: {str(seg)[:60]}")
        flat = np.zeros(int(rh) * int(rw), bool)
        pos, val = 0, False
        for c in counts:
            if val:
                flat[pos : pos + c] = True
            pos += c
            val = not val
        return flat.reshape(int(rw), int(rh)).T  # column-major
    m = np.zeros((h, w), bool)
    if not isinstance(seg, list):
        return m
    from matplotlib.path import Path as MPath

    for poly in seg:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(xy) < 3:
            continue
        x0, y0 = max(int(np.floor(xy[:, 0].min())), 0), max(int(np.floor(xy[:, 1].min())), 0)
        x1, y1 = min(int(np.ceil(xy[:, 0].max())) + 1, w), min(int(np.ceil(xy[:, 1].max())) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        pts = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
        inside = MPath(xy).contains_points(pts).reshape(y1 - y0, x1 - x0)
        m[y0:y1, x0:x1] |= inside
    return m


def rle_from_string(s: str) -> list[int]:
    """COCO's compressed RLE string -> run lengths (the inverse of pycocotools' ``rleToString``)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts
