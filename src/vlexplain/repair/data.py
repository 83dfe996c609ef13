"""What audits and repairs read: image-caption pairs that show a cue, with the cue's mask, a group
label and (where available) the same image without the cue.

Two sources:

* ``spurious`` / ``spurious:N``: the spurious-cue testbed (``vlexplain.testbeds.spurious``): ``N``
  held-out single-object scenes (default 64) rendered with their category's badge (group
  *aligned*) and with another category's (*conflicting*), each with its exact badge mask and its
  counterfactual without a badge (the same seed), queried with the main object's category caption.
  The scenes are those of ``benchmark spurious`` (seeds ``9 000 000 + 100 000 * seed``), apart from
  the group evaluation's (0 ..) and the training scenes.
* a JSONL pairs file, one row per pair: ``image``, ``caption``, ``cue_mask`` (a PNG of the image's
  size, white on the cue) or ``cue_boxes`` (COCO ``[x, y, w, h]`` boxes in the image's pixels, one
  or a list; the cue is their union), and optionally ``group`` (any label), ``clean_image`` (the same image
  without the cue), ``reliance`` (the model's score with the cue minus without it), ``label``
  (a class name). Paths are relative to the file. Without ``clean_image`` the cue-free image is
  made by filling the cue's pixels with the mean colour of a 3-pixel ring around them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import InputError

DEFAULT_AUDIT_N = 64  # testbed scenes per group


@dataclass
class CuePairs:
    """Pairs that show a cue.

    Attributes:
        images: the images with their cue.
        captions: the query caption of each pair.
        masks: per pair, an (h, w) bool mask of the cue at the image's size.
        groups: per pair, its group label (``"all"`` when the data has none).
        clean: per pair, the same image without the cue (given or made by filling the mask).
        clean_given: whether ``clean`` came with the data (exact counterfactuals).
        reliance: the data's own ``reliance`` column, if any.
        source: what was read.
    """

    images: list[Image.Image]
    captions: list[str]
    masks: list[np.ndarray]
    groups: list[str]
    clean: list[Image.Image]
    clean_given: bool
    reliance: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, model: Any, clean: bool = False) -> Tensor:
        """(N, 3, H, W) the images (or their cue-free versions) as the model sees them."""
        ims = self.clean if clean else self.images
        return torch.stack([model.preprocess(im) for im in ims]).to(model.device, model.dtype)

    def cue_masks(self, model: Any) -> Tensor:
        """(N, H, W) bool masks in the model's input frame (its resize and centre crop)."""
        return frame_masks(self.masks, tuple(model.input_size))

    def true_reliance(self, model: Any) -> np.ndarray:
        """Per pair, the model's score with the cue minus its score without it (the data's column
        when given, else measured on the cue-free images)."""
        if self.reliance is not None:
            return self.reliance
        from ..testbeds.spurious import reliance

        return reliance(model, self.images, self.clean, self.captions)


def frame_masks(masks: Sequence[np.ndarray], size: tuple[int, int]) -> Tensor:
    """(h, w) bool masks -> (N, H, W) in a model's input frame: shortest side resized to ``min(size)``
    (nearest), centre crop, as ``vlexplain.metrics.cue.load_cue_masks`` maps mask files."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    out = []
    for m in masks:
        im = Image.fromarray(np.asarray(m, dtype=np.uint8) * 255)
        im = TF.resize(im, min(size), interpolation=InterpolationMode.NEAREST)
        out.append(torch.from_numpy(np.asarray(TF.center_crop(im, list(size))) > 127))
    return torch.stack(out)


def fill_cue(image: Image.Image, mask: np.ndarray, ring: int = 3) -> Image.Image:
    """The image with the mask's pixels replaced by the mean colour of a ``ring``-pixel band around them."""
    from ..metrics.localization import dilate

    m = torch.from_numpy(np.asarray(mask, dtype=bool))[None]
    band = (dilate(m, ring) & ~m)[0].numpy()
    arr = np.asarray(image.convert("RGB")).copy()
    if band.any():
        arr[np.asarray(mask, dtype=bool)] = arr[band].mean(0).round().astype(np.uint8)
    return Image.fromarray(arr)


def parse_count(spec: str, name: str, default: int) -> int | None:
    """``name`` -> default, ``name:N`` -> N; None when ``spec`` is not of this form."""
    head, sep, tail = spec.partition(":")
    if head != name:
        return None
    if not sep:
        return default
    if not tail.isdigit() or int(tail) < 1:
        raise InputError(f"--data {spec}: expected {name} or {name}:N with N >= 1")
    return int(tail)


def audit_pairs(spec: str, seed: int = 0) -> CuePairs:
    """The pairs of an audit: ``spurious[:N]`` or a JSONL pairs file (see the module's docstring)."""
    n = parse_count(spec, "spurious", DEFAULT_AUDIT_N)
    if n is not None:
        return spurious_pairs(n, seed)
    return jsonl_pairs(Path(spec))


def spurious_pairs(n: int, seed: int = 0) -> CuePairs:
    """``n`` testbed scenes per group, aligned then conflicting, with their badge-free counterfactuals."""
    from ..eval.benchmarks.spurious import spurious_seeds
    from ..testbeds.shapes_categories import category_caption
    from ..testbeds.shapes_cue import main_object, render_cue_scene

    seeds = spurious_seeds(n, seed)
    ims, caps, masks, groups, clean = [], [], [], [], []
    for group, mode in (("aligned", "own"), ("conflicting", "other")):
        for s in seeds:
            scene = render_cue_scene(s, mode)
            assert scene.badge is not None and scene.badge_mask is not None
            ims.append(scene.pil())
            caps.append(category_caption(scene.objects[main_object(scene)].category))
            masks.append(scene.badge_mask)
            groups.append(group)
            clean.append(render_cue_scene(s, "none").pil())
    return CuePairs(ims, caps, masks, groups, clean, True, None, f"spurious:{n} (seed {seed})")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"--data {path}: not found (expected spurious[:N] or a JSONL pairs file)")
    rows = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise InputError(f"{path}:{k}: not a JSON object") from None
    if not rows:
        raise InputError(f"{path} has no rows")
    return rows


def jsonl_pairs(path: Path) -> CuePairs:
    """A JSONL pairs file with a ``cue_mask`` on every row (the module's docstring lists the columns)."""
    from ..images import load_image

    rows = _read_rows(path)
    missing = [i for i, r in enumerate(rows, 1) if not _has_cue(r) or "image" not in r or "caption" not in r]
    if missing:
        raise InputError(
            f"{path}: row {missing[0]} lacks image, caption or cue_mask / cue_boxes; an audit or a repair needs "
            "the cue's region on every pair"
        )
    base = path.parent
    ims, masks, clean = [], [], []
    given = all(r.get("clean_image") for r in rows)
    for i, r in enumerate(rows, 1):
        im = load_image(base / r["image"]).convert("RGB")
        mk = row_cue_mask(r, base, (im.size[1], im.size[0]), f"{path}: row {i}")
        if mk is None or not mk.any():
            raise InputError(f"{path}: row {i}: the cue's region covers no pixel of the image")
        ims.append(im)
        masks.append(mk)
        clean.append(load_image(base / r["clean_image"]).convert("RGB") if given else fill_cue(im, mk))
    rel = None
    if all(isinstance(r.get("reliance"), (int, float)) for r in rows):
        rel = np.array([float(r["reliance"]) for r in rows])
    groups = [str(r.get("group", "all")) for r in rows]
    return CuePairs(ims, [str(r["caption"]) for r in rows], masks, groups, clean, given, rel, str(path))


def _mask(path: Path) -> Image.Image:
    from ..data.pairs import _load_mask

    return _load_mask(path)


def _has_cue(row: dict[str, Any]) -> bool:
    return bool(row.get("cue_mask")) or row.get("cue_boxes") not in (None, "", [])


def row_cue_mask(row: dict[str, Any], base: Path, size: tuple[int, int], where: str) -> np.ndarray | None:
    """A row's cue region as an (h, w) bool mask of the image's ``size``: its ``cue_mask`` PNG, or the
    union of its ``cue_boxes`` (COCO ``[x, y, w, h]`` in pixels; a pixel is in a box when its centre
    is), or None when the row has neither."""
    from ..data.rows import check_boxes

    if row.get("cue_mask"):
        mk = np.asarray(_mask(base / row["cue_mask"])) > 127
        if mk.shape != size:
            raise InputError(
                f"{where}: cue_mask {row['cue_mask']} is {mk.shape[1]}x{mk.shape[0]} but the image is "
                f"{size[1]}x{size[0]}"
            )
        return mk
    boxes = check_boxes(row.get("cue_boxes"), where, key="cue_boxes")
    if not boxes:
        return None
    h, w = size
    ys, xs = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
    mk = np.zeros(size, dtype=bool)
    for x, y, bw, bh in boxes:
        mk |= (xs >= x) & (xs < x + bw) & (ys >= y) & (ys < y + bh)
    return mk


# --- training data of the fine-tuning repairs -----------------------------------------------------
class SpuriousTraining:
    """The spurious testbed's training scenes (``SpuriousClassDataset``) with their badge masks."""

    has_parts = False

    def __init__(self, n: int, p: float, transform: Any = None):
        from ..testbeds.spurious import SpuriousClassDataset

        self.ds = SpuriousClassDataset(n, p=p, split="train", transform=transform)
        self.classes = self.ds.classes
        self.p = p

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.ds[i]

    def cue_mask(self, i: int) -> np.ndarray | None:
        return self.ds.scene(i).badge_mask

    def describe(self) -> dict[str, Any]:
        return {"layout": "spurious testbed (train split)", "images": len(self), "badge_probability": self.p}


class JsonlTraining:
    """Labelled images from a JSONL file: ``image``, ``label`` (a class name), optional ``cue_mask`` or
    ``cue_boxes`` (as in a pairs file)."""

    has_parts = False

    def __init__(self, path: Path, transform: Any = None):
        from ..data.rows import check_boxes

        rows = _read_rows(path)
        bad = [i for i, r in enumerate(rows, 1) if "image" not in r or "label" not in r]
        if bad:
            raise InputError(
                f"{path}: row {bad[0]} lacks image or label (a class name); a fine-tuning repair needs both"
            )
        for i, r in enumerate(rows, 1):  # box syntax checked before anything runs
            check_boxes(r.get("cue_boxes"), f"{path}: row {i}", key="cue_boxes")
        self.base, self.rows, self.transform = path.parent, rows, transform
        self.classes = sorted({str(r["label"]) for r in rows})
        self.path = path

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from ..images import load_image

        r = self.rows[i]
        im = load_image(self.base / r["image"]).convert("RGB")
        return (self.transform(im) if self.transform is not None else im), self.classes.index(str(r["label"]))

    def has_masks(self) -> bool:
        return any(_has_cue(r) for r in self.rows)

    def cue_mask(self, i: int) -> np.ndarray | None:
        from ..images import load_image

        r = self.rows[i]
        if not _has_cue(r):
            return None
        w, h = load_image(self.base / r["image"]).size
        return row_cue_mask(r, self.base, (h, w), f"{self.path}: row {i + 1}")

    def describe(self) -> dict[str, Any]:
        return {"layout": "jsonl", "path": str(self.path), "images": len(self), "classes": len(self.classes)}


def training_data(spec: str, model: Any, p: float | None = None) -> SpuriousTraining | JsonlTraining:
    """The training images of a fine-tuning repair: ``spurious[:N]`` (default 3000 scenes, badge
    probability ``p``, default the model's own training value, else 1) or a JSONL file."""
    n = parse_count(spec, "spurious", 3000)
    if n is not None:
        return SpuriousTraining(n, training_badge_probability(model) if p is None else p, model.preprocess)
    return JsonlTraining(Path(spec), model.preprocess)


def training_badge_probability(model: Any) -> float:
    """The badge probability a shapes-world model was trained with (its ``train_config.json``), else 1."""
    from .checkpoint import _testbed_source

    src = _testbed_source(getattr(model, "name", ""))
    cfg = src / "train_config.json" if src is not None else None
    if cfg is not None and cfg.is_file():
        got = json.loads(cfg.read_text()).get("spurious")
        if got is not None:
            return float(got)
    return 1.0
