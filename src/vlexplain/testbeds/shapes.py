"""The shapes world: procedural scenes with exact ground truth for objects, parts and texts.

A scene is a background plus one to four objects drawn back to front (later objects occlude
earlier ones). Every object belongs to a category built from coloured parts (a house is walls, a
triangular roof and a door), and every part is drawn with one flat colour without anti-aliasing, so
the part masks equal the rendered pixels exactly. Texts come in three kinds:

* category captions: ``"a house"``;
* coloured captions: ``"a red house"`` (the colour of the category's main part);
* part descriptors in the style of DEAL concept sets: ``"a triangular roof"``, ``"a red roof"``.

Some descriptors are shared between categories (``"two round black wheels"`` on cars and buses,
``"a grey pole"`` on traffic lights and lamps). ``Scene.text_masks`` maps every text that is
true of a scene to the union of the pixels it refers to.

Example:
    >>> scene = render_scene(seed=3)
    >>> scene.image.shape
    (64, 64, 3)
    >>> masks = scene.text_masks()      # {"a house": bool (64, 64), "a triangular roof": ..., ...}
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from .shapes_categories import (
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLOURS,
    CategorySpec,
    Prim,
    category_caption,
    colour_descriptor,
)

# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------

BACKGROUNDS = ("flat", "gradient", "noise", "stripes")
MAX_PARTS = 16  # part labels of object i are 1 + i * MAX_PARTS + j
BADGE_LABEL = 255  # label of the pixels of a cue badge (shapes_cue)


@dataclass
class PartInfo:
    """A drawn part: its name, colour, pixel label and the descriptors true of it."""

    name: str
    colour: str
    rgb: tuple[int, int, int]
    label: int
    descriptors: list[str]


@dataclass
class ObjectInfo:
    """A drawn object (index = drawing order: later objects occlude earlier ones)."""

    index: int
    category: str
    colour: str
    flipped: bool
    frame: tuple[int, int, int, int]  # the box it was drawn in, before occlusion: x, y, w, h
    parts: list[PartInfo]

    def captions(self) -> list[str]:
        return [category_caption(self.category), category_caption(self.category, self.colour)]


@dataclass
class Scene:
    """A rendered scene with its ground truth.

    Attributes:
        seed: the seed it was drawn from (same seed and options -> identical scene).
        image: ``(S, S, 3)`` uint8 RGB.
        labels: ``(S, S)`` uint8 part labels (0 = background, see ``MAX_PARTS``).
        objects: the objects in drawing order.
        background: background kind.
        badge: the cue badge drawn on top, if any (``vlexplain.testbeds.shapes_cue``); its pixels
            carry the label ``BADGE_LABEL`` and belong to no object.
    """

    seed: int
    image: np.ndarray
    labels: np.ndarray
    objects: list[ObjectInfo]
    background: str
    badge: Any = None

    @property
    def badge_mask(self) -> np.ndarray:
        """Pixels of the badge (all False without one)."""
        return self.labels == BADGE_LABEL

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def categories(self) -> list[str]:
        """Categories present (sorted, no repeats)."""
        return sorted({o.category for o in self.objects})

    def pil(self) -> Image.Image:
        return Image.fromarray(self.image)

    def part_mask(self, obj: int, part: str) -> np.ndarray:
        """Visible pixels of one part of object ``obj``."""
        p = next((p for p in self.objects[obj].parts if p.name == part), None)
        if p is None:
            raise InputError(f"object {obj} ({self.objects[obj].category}) has no part {part!r}")
        return self.labels == p.label

    def object_mask(self, obj: int) -> np.ndarray:
        """Visible pixels of object ``obj`` (union of its parts)."""
        lo = 1 + obj * MAX_PARTS
        return (self.labels >= lo) & (self.labels < lo + MAX_PARTS)

    def object_texts(self, obj: int) -> list[str]:
        """Every text true of object ``obj``: captions, then part descriptors."""
        o = self.objects[obj]
        out = o.captions()
        for p in o.parts:
            out.extend(d for d in p.descriptors if d not in out)
        return out

    def texts(self) -> list[str]:
        """Every text true of the scene (sorted)."""
        return sorted({t for i in range(len(self.objects)) for t in self.object_texts(i)})

    def masks(self) -> dict[str, np.ndarray]:
        """Named masks: ``"object{i}"`` and ``"object{i}/{part}"``."""
        out: dict[str, np.ndarray] = {}
        for o in self.objects:
            out[f"object{o.index}"] = self.object_mask(o.index)
            for p in o.parts:
                out[f"object{o.index}/{p.name}"] = self.labels == p.label
        if self.badge is not None:
            out["badge"] = self.badge_mask
        return out

    def text_references(self) -> dict[str, list[str]]:
        """Text -> the names (keys of ``masks``) of the masks it refers to."""
        refs: dict[str, list[str]] = {}
        for o in self.objects:
            for t in o.captions():
                refs.setdefault(t, []).append(f"object{o.index}")
            for p in o.parts:
                for d in p.descriptors:
                    refs.setdefault(d, []).append(f"object{o.index}/{p.name}")
        return {t: refs[t] for t in sorted(refs)}

    def text_masks(self) -> dict[str, np.ndarray]:
        """Text -> union of the visible pixels it refers to."""
        named = self.masks()
        return {t: np.logical_or.reduce([named[k] for k in ks]) for t, ks in self.text_references().items()}

    def ground_truth(self) -> dict[str, Any]:
        """JSON-ready ground truth: objects with boxes ``[x, y, w, h]`` and parts, and text references."""
        named = self.masks()
        objs = []
        for o in self.objects:
            parts = [
                {
                    "name": p.name,
                    "colour": p.colour,
                    "mask": f"object{o.index}/{p.name}",
                    "box": mask_box(named[f"object{o.index}/{p.name}"]),
                    "descriptors": p.descriptors,
                }
                for p in o.parts
            ]
            objs.append(
                {
                    "category": o.category,
                    "colour": o.colour,
                    "mask": f"object{o.index}",
                    "box": mask_box(named[f"object{o.index}"]),
                    "captions": o.captions(),
                    "parts": parts,
                }
            )
        out = {
            "seed": self.seed,
            "size": self.size,
            "background": self.background,
            "objects": objs,
            "texts": self.text_references(),
        }
        if self.badge is not None:
            out["badge"] = {**self.badge.as_dict(), "mask": "badge", "box": mask_box(self.badge_mask)}
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``image.png``, ``masks.npz`` (named bool masks) and ``ground_truth.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.pil().save(d / "image.png")
        arrays: dict[str, Any] = {k.replace("/", "__"): v for k, v in self.masks().items()}
        np.savez_compressed(d / "masks.npz", **arrays)
        (d / "ground_truth.json").write_text(json.dumps(self.ground_truth(), indent=1) + "\n")
        return d


def mask_box(mask: np.ndarray) -> list[int]:
    """Bounding box ``[x, y, w, h]`` of a bool mask (``[0, 0, 0, 0]`` when empty)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _muted(rng: np.random.Generator) -> np.ndarray:
    c = rng.uniform(70, 190, 3)
    return c.mean() + (c - c.mean()) * rng.uniform(0.2, 0.7)


def _background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    a, b = _muted(rng), _muted(rng)
    if kind == "flat":
        img = np.broadcast_to(a, (size, size, 3))
    elif kind == "gradient":
        t = np.linspace(0.0, 1.0, size)
        ang = rng.uniform(0, 2 * np.pi)
        g = np.cos(ang) * t[None, :] + np.sin(ang) * t[:, None]
        g = (g - g.min()) / max(g.max() - g.min(), 1e-6)
        img = a + (b - a) * g[..., None]
    elif kind == "noise":
        img = a + rng.normal(0.0, rng.uniform(6, 16), (size, size, 1)) + rng.normal(0.0, 4, (size, size, 3))
    else:  # stripes
        period = int(rng.integers(4, 11)) * max(1, size // 64)
        yy, xx = np.mgrid[0:size, 0:size]
        coord = [xx, yy, xx + yy, xx - yy][int(rng.integers(4))]
        img = np.where(((coord // period) % 2 == 0)[..., None], a, a * 0.6 + b * 0.4)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _draw_prim(draw: ImageDraw.ImageDraw, prim: Prim, w: int, h: int, fill: int) -> None:
    kind, c = prim

    def px(x: float, y: float) -> tuple[int, int]:
        return (min(w - 1, max(0, round(x * w))), min(h - 1, max(0, round(y * h))))

    if kind == "polygon":
        draw.polygon([px(x, y) for x, y in c], fill=fill)
        return
    x0, y0 = px(c[0], c[1])
    x1, y1 = round(c[2] * w) - 1, round(c[3] * h) - 1
    x1, y1 = max(x0, x1), max(y0, y1)
    if kind == "rect":
        draw.rectangle((x0, y0, min(x1, w - 1), min(y1, h - 1)), fill=fill)
    elif kind == "ellipse":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif kind == "chord":
        draw.chord((x0, y0, x1, y1), 180, 360, fill=fill)
    else:
        raise ValueError(f"unknown primitive {kind}")


def _object_layer(spec: CategorySpec, w: int, h: int, flip: bool) -> tuple[np.ndarray, list[int]]:
    """(h, w) uint8: part j + 1 where part j is visible within the object, 0 elsewhere (read-only,
    shared between calls), and each part's pixel count."""
    return _cached_layer(spec.name, w, h, flip)


@lru_cache(maxsize=8192)  # frames take few distinct sizes: most scenes reuse drawn layers
def _cached_layer(category: str, w: int, h: int, flip: bool) -> tuple[np.ndarray, list[int]]:
    spec = CATEGORY_BY_NAME[category]
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    for j, part in enumerate(spec.parts):
        for prim in part.prims:
            _draw_prim(draw, prim, w, h, j + 1)
    if flip:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.array(layer)
    arr.setflags(write=False)
    return arr, np.bincount(arr.ravel(), minlength=len(spec.parts) + 1)[1:].tolist()


def _choose_colours(spec: CategorySpec, rng: np.random.Generator) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for p in spec.parts:
        options = [c for c in p.colours if c != chosen.get(p.differs_from)]
        chosen[p.name] = options[int(rng.integers(len(options)))]
    return chosen


def _frame(spec: CategorySpec, rng: np.random.Generator, size: int, single: bool) -> tuple[int, int, int, int]:
    long_side = size * (rng.uniform(0.45, 0.85) if single else rng.uniform(0.3, 0.55))
    if spec.aspect >= 1:
        w, h = long_side, long_side / spec.aspect
    else:
        w, h = long_side * spec.aspect, long_side
    w, h = max(8, min(size, round(w))), max(8, min(size, round(h)))
    x = int(rng.integers(0, size - w + 1))
    y = int(rng.integers(0, size - h + 1))
    return x, y, w, h


def _layout(rng, size, specs, min_visible) -> tuple[np.ndarray, list] | None:
    """Place objects back to front; None when some object or part ends up too occluded."""
    labels = np.zeros((size, size), dtype=np.uint8)
    placed = []
    for i, spec in enumerate(specs):
        frame = _frame(spec, rng, size, single=len(specs) == 1)
        flip = bool(rng.integers(2))
        layer, full = _object_layer(spec, frame[2], frame[3], flip)
        x, y, w, h = frame
        region = labels[y : y + h, x : x + w]
        inside = layer > 0
        region[inside] = (layer[inside] + i * MAX_PARTS).astype(np.uint8)
        placed.append((spec, frame, flip, full))
    counts = np.bincount(labels.ravel(), minlength=1 + len(placed) * MAX_PARTS)
    for i, (spec, _, _, full) in enumerate(placed):
        vis = [int(counts[1 + i * MAX_PARTS + j]) for j in range(len(spec.parts))]
        if sum(vis) < min_visible * sum(full) or any(f > 0 and v < 0.3 * f for v, f in zip(vis, full)):
            return None
        if any(f == 0 for f in full):
            return None
    return labels, placed


def render_scene(
    seed: int,
    size: int = 64,
    n_objects: int | None = None,
    categories: Sequence[str] | None = None,
    background: str | None = None,
    min_visible: float = 0.5,
) -> Scene:
    """Draw a scene, deterministically from ``seed``.

    Args:
        seed: seed of the numpy Generator that draws everything.
        size: image side in pixels (32..128).
        n_objects: number of objects (1..4); default: drawn (1: 40 %, 2: 25 %, 3: 20 %, 4: 15 %).
        categories: the objects' categories in drawing order (sets ``n_objects``); default: drawn.
        background: one of ``BACKGROUNDS``; default: drawn.
        min_visible: least visible fraction of every object after occlusion (every part keeps 30 %).

    Returns:
        The ``Scene``.
    """
    if not 32 <= size <= 128:
        raise InputError(f"scene size must be between 32 and 128 pixels, got {size}")
    if background is not None and background not in BACKGROUNDS:
        raise InputError(f"unknown background {background!r}; choose from {', '.join(BACKGROUNDS)}")
    if categories is not None:
        unknown = [c for c in categories if c not in CATEGORY_BY_NAME]
        if unknown or not 1 <= len(categories) <= 4:
            raise InputError(f"categories must be 1 to 4 of {', '.join(CATEGORY_BY_NAME)}; got {list(categories)}")
        n_objects = len(categories)
    rng = np.random.default_rng(seed)
    if n_objects is None:
        n_objects = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.25, 0.2, 0.15]))
    if not 1 <= n_objects <= 4:
        raise InputError(f"n_objects must be 1..4, got {n_objects}")
    bg_kind = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = _background(rng, size, bg_kind)
    n = n_objects
    while True:
        specs = (
            [CATEGORY_BY_NAME[c] for c in categories]
            if categories
            else [CATEGORIES[int(rng.integers(len(CATEGORIES)))] for _ in range(n)]
        )
        for _ in range(40):
            out = _layout(rng, size, specs, min_visible)
            if out is not None:
                return _paint(seed, image, out[0], out[1], rng, bg_kind)
        if categories is None and n > 1:
            n -= 1  # too crowded: drop an object
        elif categories is not None and min_visible > 0.05:
            min_visible *= 0.5
        else:
            raise InputError("cannot lay out the scene without hiding an object; use a larger size")


def _paint(seed, image, labels, placed, rng, bg_kind) -> Scene:
    image = image.copy()
    objects = []
    for i, (spec, frame, flip, _) in enumerate(placed):
        colours = _choose_colours(spec, rng)
        parts = []
        for j, p in enumerate(spec.parts):
            col = colours[p.name]
            descs = list(p.descriptors)
            if p.colour_descriptor:
                descs.append(colour_descriptor(p.colour_descriptor, col))
            label = 1 + i * MAX_PARTS + j
            parts.append(PartInfo(p.name, col, COLOURS[col], label, descs))
            image[labels == label] = COLOURS[col]
        objects.append(ObjectInfo(i, spec.name, colours[spec.main], flip, frame, parts))
    return Scene(seed, image, labels, objects, bg_kind)
