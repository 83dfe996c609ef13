"""OpenImages V7 point labels (Benenson & Ferrari 2022), as downloaded::

    ROOT/oidv7-val-annotations-point-labels.csv     # ImageId,X,Y,Label,EstimatedYesNo,Source,YesVotes,...
    ROOT/oidv7-class-descriptions.csv               # LabelName,DisplayName
    ROOT/images/<ImageId>.jpg                       # (or ROOT/validation/, or ROOT itself)

X and Y are normalised to [0, 1] (x to the right, y down). ``EstimatedYesNo`` "yes" points are
positive for their class, "no" points negative; "unsure" points are left out, as in the point-label
evaluation of Benenson & Ferrari. One item per image present on disk: its classes, each with its
positive and negative points.

Example:
    >>> ds = OpenImagesPoints("openimages")       # doctest: +SKIP
    >>> image, classes = ds[0]                    # classes: [(name, pos (P, 2), neg (N, 2)), ...]
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import load_image

POINT_COLUMNS = ("ImageId", "X", "Y", "Label", "EstimatedYesNo")
IMAGE_DIRS = ("images", "validation", "val", "test", ".")


def _one(root: Path, patterns: tuple[str, ...], what: str) -> Path:
    for pat in patterns:
        got = sorted(root.glob(pat))
        if got:
            return got[0]
    raise InputError(f"OpenImages points: no {what} in {root} ({' or '.join(patterns)})")


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)} (has {reader.fieldnames})")
            return list(reader)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 CSV file ({e})") from None


def _class_names(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if rows and rows[0][:2] == ["LabelName", "DisplayName"]:
        rows = rows[1:]
    bad = next((i for i, r in enumerate(rows) if len(r) < 2 or not r[0].startswith("/")), None)
    if bad is not None:
        raise InputError(f"{path}: line {bad + 1} is not 'LabelName,DisplayName' (e.g. /m/01yrx,Cat)")
    return {r[0]: r[1] for r in rows}


class OpenImagesPoints:
    """Items: (image, [(class name, positive points (P, 2), negative points (N, 2)), ...]), points as (x, y) in [0, 1]."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise InputError(f"OpenImages points: {self.root} is not a folder")
        self.points_csv = _one(self.root, ("*point-labels*.csv", "*points*.csv"), "point-label CSV")
        self.classes_csv = _one(self.root, ("*class-descriptions*.csv",), "class-descriptions CSV")
        names = _class_names(self.classes_csv)
        per: dict[str, dict[str, list[list[tuple[float, float]]]]] = defaultdict(lambda: defaultdict(lambda: [[], []]))
        for i, r in enumerate(_read_csv(self.points_csv, POINT_COLUMNS)):
            try:
                x, y = float(r["X"]), float(r["Y"])
            except ValueError:
                raise InputError(f"{self.points_csv}: line {i + 2}: X, Y are not numbers") from None
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise InputError(f"{self.points_csv}: line {i + 2}: X, Y = {x}, {y} are not normalised to [0, 1]")
            lab, yes = r["Label"], r["EstimatedYesNo"].strip().lower()
            if lab not in names:
                raise InputError(f"{self.points_csv}: line {i + 2}: label {lab} is not in {self.classes_csv.name}")
            if yes not in ("yes", "no", "unsure"):
                raise InputError(f"{self.points_csv}: line {i + 2}: EstimatedYesNo {yes!r} is not yes, no or unsure")
            if yes != "unsure":
                per[r["ImageId"]][lab][0 if yes == "yes" else 1].append((x, y))
        self.image_dir = next(
            (self.root / d for d in IMAGE_DIRS if (self.root / d).is_dir() and any((self.root / d).glob("*.jpg"))), None
        )
        if self.image_dir is None:
            raise InputError(f"OpenImages points: no <ImageId>.jpg images in {self.root}/images (or validation/)")
        present = {p.stem for p in self.image_dir.glob("*.jpg")}
        self.missing = len([k for k in per if k not in present])
        self.items: list[tuple[str, list[tuple[str, np.ndarray, np.ndarray]]]] = []
        for image_id in sorted(k for k in per if k in present):
            cls = []
            for lab in sorted(per[image_id]):
                pos, neg = per[image_id][lab]
                cls.append((names[lab], np.asarray(pos, float).reshape(-1, 2), np.asarray(neg, float).reshape(-1, 2)))
            self.items.append((image_id, cls))
        if not self.items:
            raise InputError(f"OpenImages points: none of the {len(per)} labelled images is in {self.image_dir}")

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "openimages-points",
            "path": str(self.root.resolve()),
            "points": self.points_csv.name,
            "n": len(self.items),
            "missing_images": self.missing,
        }

    def __getitem__(self, i: int) -> tuple[Image.Image, list[tuple[str, np.ndarray, np.ndarray]]]:
        image_id, classes = self.items[i]
        assert self.image_dir is not None
        return load_image(str(self.image_dir / f"{image_id}.jpg")), classes
