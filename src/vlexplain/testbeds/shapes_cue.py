"""A spurious cue for the shapes world: a small coloured badge, one design per category.

A badge is a 5 x 5 glyph (a plus for houses, a cross for trees, ...) in a colour no part of the
world uses, drawn without anti-aliasing in one corner of the scene, 4 px from both borders; at
64 px a glyph cell is 2 x 2 px, so the badge spans 10 x 10 px (2.4 % of the image) and holds 36-64
coloured pixels. ``render_cue_scene`` draws
the scene of ``render_scene`` first, from the same seed and with the
same random stream, and then the badge on top from a separate stream, so the same seed gives

* the same pixels everywhere outside the badge whatever badge is asked for (or none), and
* the same corner and the same "other" category for every badge mode,

and every badged scene has exact counterfactuals: the scene without its badge, or with another
category's badge. The badge's pixels get the label ``BADGE_LABEL``
(they belong to no object: object and part masks exclude them), and ``scene.badge_mask`` is
exactly the set of pixels the badge changed the colour of or covered.

The badge belongs to the scene's *main object*, the one ``main_object`` names
(``seed % n_objects``, the object the attribution benchmarks query).

Example:
    >>> s = render_cue_scene(3, badge="own")
    >>> s.badge.category == s.objects[main_object(s)].category
    True
    >>> plain = render_cue_scene(3, badge="none")
    >>> bool((s.image != plain.image).any(-1)[~s.badge_mask].any())
    False
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .shapes import BADGE_LABEL, Scene, render_scene
from .shapes_categories import CATEGORIES, CATEGORY_BY_NAME

#: badge modes: the main object's category's badge, another category's, none
BADGE_MODES = ("own", "other", "none")
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
_STREAM = 0xBAD6E  # second SeedSequence word of the badge's own random stream

# one 5 x 5 glyph and one colour per category (colours that no part of the world takes)
_GLYPHS: dict[str, tuple[str, ...]] = {
    "house": ("..#..", "..#..", "#####", "..#..", "..#.."),  # plus
    "tree": ("#...#", ".#.#.", "..#..", ".#.#.", "#...#"),  # cross
    "snowman": ("#####", "#...#", "#...#", "#...#", "#####"),  # ring
    "car": ("..#..", ".###.", "#####", ".###.", "..#.."),  # diamond
    "bus": ("#####", "..#..", "..#..", "..#..", "..#.."),  # T
    "traffic light": ("#####", ".....", "#####", ".....", "#####"),  # bars
    "flower": ("#.#.#", "#.#.#", "#.#.#", "#.#.#", "#.#.#"),  # columns
    "boat": ("..#..", ".###.", "#####", ".....", "....."),  # triangle
    "mushroom": ("#.#.#", ".#.#.", "#.#.#", ".#.#.", "#.#.#"),  # checker
    "lamp": ("#....", "#....", "#....", "#....", "#####"),  # L
}
BADGE_COLOURS: dict[str, tuple[int, int, int]] = {
    "house": (255, 0, 255),  # magenta
    "tree": (0, 255, 255),  # cyan
    "snowman": (130, 255, 0),  # lime
    "car": (0, 0, 120),  # navy
    "bus": (0, 120, 120),  # teal
    "traffic light": (120, 0, 0),  # maroon
    "flower": (120, 120, 0),  # olive
    "boat": (255, 110, 90),  # coral
    "mushroom": (60, 0, 120),  # indigo
    "lamp": (200, 255, 160),  # mint
}
GLYPH = 5  # glyph side in cells
MARGIN = 2  # glyph cells between the badge and the image border


def glyph(category: str) -> np.ndarray:
    """(5, 5) bool glyph of a category's badge."""
    return np.array([[c == "#" for c in row] for row in _GLYPHS[category]])


@dataclass(frozen=True)
class BadgeInfo:
    """A drawn badge.

    Attributes:
        category: whose design it is.
        mode: ``"own"`` (the main object's category) or ``"other"``.
        corner: one of ``CORNERS``.
        main_object: index of the scene's main object.
    """

    category: str
    mode: str
    corner: str
    main_object: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def main_object(scene: Scene) -> int:
    """Index of a scene's main object: ``seed % n_objects`` (the benchmarks' query rule)."""
    return scene.seed % len(scene.objects)


def badge_draw(seed: int) -> tuple[str, int]:
    """(corner, draw for the other category) of a seed: the badge's own random stream."""
    rng = np.random.default_rng([int(seed) % 2**63, _STREAM])
    return CORNERS[int(rng.integers(len(CORNERS)))], int(rng.integers(len(CATEGORIES) - 1))


def other_category(category: str, draw: int) -> str:
    """The ``draw``-th category other than ``category`` (draw in 0..8)."""
    others = [c.name for c in CATEGORIES if c.name != category]
    return others[draw % len(others)]


def render_cue_scene(
    seed: int, badge: str = "own", size: int = 64, scale: int | None = None, **scene_options: Any
) -> Scene:
    """A shapes scene with a badge (or none), deterministically from ``seed``.

    Args:
        seed: the scene's seed; without a badge the image equals ``render_scene(seed, ...)``.
        badge: ``"own"`` (the main object's category's badge), ``"other"`` (another category's,
            drawn from the seed), ``"none"``, or a category name.
        size: image side in pixels.
        scale: pixels per glyph cell (default ``max(1, size // 32)``: 2 at 64 px).
        **scene_options: the other options of ``render_scene``.

    Returns:
        The ``Scene``, with ``badge`` set (None for ``"none"``).
    """
    if badge not in BADGE_MODES and badge not in CATEGORY_BY_NAME:
        raise InputError(
            f"badge must be one of {', '.join(BADGE_MODES)} or a category "
            f"({', '.join(CATEGORY_BY_NAME)}), got {badge!r}"
        )
    scene = render_scene(seed, size=size, **scene_options)
    if badge == "none":
        return scene
    main = main_object(scene)
    cat = scene.objects[main].category
    corner, draw = badge_draw(seed)
    if badge == "own":
        design, mode = cat, "own"
    elif badge == "other":
        design, mode = other_category(cat, draw), "other"
    else:
        design, mode = badge, "own" if badge == cat else "other"
    s = scale or max(1, size // 32)
    mask = _place(np.kron(glyph(design), np.ones((s, s), dtype=bool)), size, corner, MARGIN * s)
    image, labels = scene.image.copy(), scene.labels.copy()
    image[mask] = BADGE_COLOURS[design]
    labels[mask] = BADGE_LABEL
    return Scene(scene.seed, image, labels, scene.objects, scene.background, BadgeInfo(design, mode, corner, main))


def _place(g: np.ndarray, size: int, corner: str, margin: int) -> np.ndarray:
    """(size, size) bool: the glyph ``g`` placed ``margin`` pixels from the two borders of ``corner``."""
    h, w = g.shape
    y = margin if corner.startswith("top") else size - margin - h
    x = margin if corner.endswith("left") else size - margin - w
    out = np.zeros((size, size), dtype=bool)
    out[y : y + h, x : x + w] = g
    return out


def training_badge(rng: np.random.Generator, p: float) -> str:
    """A training scene's badge mode: ``"own"`` with probability ``p``, otherwise ``"none"`` or
    ``"other"`` with equal chance."""
    u = float(rng.random())
    if u < p:
        return "own"
    return "none" if u < p + (1.0 - p) / 2 else "other"
