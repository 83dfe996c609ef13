"""The shapes world's categories: colours, part and category specifications, and the texts they produce.

``vlexplain.testbeds.shapes`` draws scenes from these definitions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# Colours and vocabulary
# ---------------------------------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (250, 140, 20),
    "yellow": (250, 220, 30),
    "green": (40, 160, 50),
    "blue": (35, 80, 225),
    "purple": (140, 50, 185),
    "pink": (250, 130, 190),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
    "brown": (125, 75, 30),
    "grey": (135, 135, 135),
    "light blue": (150, 210, 250),
}

# Primitive shapes in unit coordinates of the object's box: (kind, coords).
#   rect/ellipse: (x0, y0, x1, y1); polygon: ((x, y), ...); chord: (x0, y0, x1, y1) upper half.
Prim = tuple[str, Any]


@dataclass(frozen=True)
class PartSpec:
    """One part of a category.

    Attributes:
        name: the part's noun as used in colour descriptors ("roof" -> "a red roof").
        prims: the primitives that draw it, in unit box coordinates.
        colours: colours it may take (one is drawn per object).
        descriptors: fixed descriptors true of this part whatever its colour.
        colour_descriptor: template for a colour descriptor ("a {c} roof"), or "" for none.
        differs_from: name of a part whose colour this part must not share.
    """

    name: str
    prims: tuple[Prim, ...]
    colours: tuple[str, ...]
    descriptors: tuple[str, ...]
    colour_descriptor: str = ""
    differs_from: str = ""


@dataclass(frozen=True)
class CategorySpec:
    """A category: its name, aspect ratio (width / height), main part and parts (drawn in order)."""

    name: str
    aspect: float
    main: str
    parts: tuple[PartSpec, ...]


def _ellipses_ring(cx: float, cy: float, r: float, pr: float, n: int) -> tuple[Prim, ...]:
    out = []
    for k in range(n):
        a = 2 * np.pi * k / n - np.pi / 2
        x, y = cx + r * np.cos(a), cy + r * np.sin(a)
        out.append(("ellipse", (x - pr, y - pr, x + pr, y + pr)))
    return tuple(out)


_WALL_COLOURS = ("red", "blue", "yellow", "white", "orange", "pink", "grey")
_VEHICLE_COLOURS = ("red", "blue", "yellow", "green", "orange", "purple", "white")
_BLACK_WHEELS = PartSpec(
    "wheels",
    (("ellipse", (0.08, 0.62, 0.32, 1.0)), ("ellipse", (0.68, 0.62, 0.92, 1.0))),
    ("black",),
    ("two round black wheels",),
)

CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec(
        "house",
        1.0,
        "walls",
        (
            PartSpec("walls", (("rect", (0.1, 0.45, 0.9, 1.0)),), _WALL_COLOURS, ("square walls",), "{c} walls"),
            PartSpec(
                "roof",
                (("polygon", ((0.0, 0.47), (0.5, 0.02), (1.0, 0.47))),),
                ("brown", "red", "black", "grey", "blue"),
                ("a triangular roof",),
                "a {c} roof",
                "walls",
            ),
            PartSpec("door", (("rect", (0.4, 0.66, 0.6, 1.0)),), ("brown",), ("a small brown door",)),
        ),
    ),
    CategorySpec(
        "tree",
        0.75,
        "crown",
        (
            PartSpec("trunk", (("rect", (0.38, 0.5, 0.62, 1.0)),), ("brown",), ("a brown trunk",)),
            PartSpec(
                "crown",
                (("ellipse", (0.0, 0.0, 1.0, 0.68)),),
                ("green", "orange", "yellow"),
                ("a round leafy crown",),
                "a {c} crown",
            ),
        ),
    ),
    CategorySpec(
        "snowman",
        0.6,
        "body",
        (
            PartSpec(
                "body",
                (("ellipse", (0.02, 0.48, 0.98, 1.0)), ("ellipse", (0.18, 0.17, 0.82, 0.6))),
                ("white",),
                ("two stacked white balls",),
            ),
            PartSpec(
                "hat",
                (("rect", (0.3, 0.0, 0.7, 0.2)), ("rect", (0.15, 0.16, 0.85, 0.23))),
                ("black", "red", "blue"),
                ("a tall hat",),
                "a {c} hat",
            ),
        ),
    ),
    CategorySpec(
        "car",
        1.8,
        "body",
        (
            PartSpec(
                "body",
                (("rect", (0.0, 0.38, 1.0, 0.82)), ("polygon", ((0.18, 0.4), (0.3, 0.0), (0.7, 0.0), (0.82, 0.4)))),
                _VEHICLE_COLOURS,
                ("a short rounded body",),
                "a {c} body",
            ),
            PartSpec(
                "windows",
                (("polygon", ((0.29, 0.36), (0.36, 0.1), (0.64, 0.1), (0.71, 0.36))),),
                ("light blue",),
                ("light blue windows",),
            ),
            _BLACK_WHEELS,
        ),
    ),
    CategorySpec(
        "bus",
        2.3,
        "body",
        (
            PartSpec(
                "body",
                (("rect", (0.0, 0.0, 1.0, 0.82)),),
                ("yellow", "red", "blue", "green", "orange"),
                ("a long boxy body",),
                "a {c} body",
            ),
            PartSpec(
                "windows",
                tuple(("rect", (0.06 + 0.23 * k, 0.12, 0.23 + 0.23 * k, 0.45)) for k in range(4)),
                ("light blue",),
                ("light blue windows", "a row of square windows"),
            ),
            _BLACK_WHEELS,
        ),
    ),
    CategorySpec(
        "traffic light",
        0.45,
        "box",
        (
            PartSpec("pole", (("rect", (0.38, 0.7, 0.62, 1.0)),), ("grey",), ("a grey pole",)),
            PartSpec("box", (("rect", (0.0, 0.0, 1.0, 0.78)),), ("black",), ("a black box",)),
            PartSpec(
                "red light", (("ellipse", (0.17, 0.03, 0.83, 0.26)),), ("red",), ("a red light", "three round lights")
            ),
            PartSpec(
                "yellow light",
                (("ellipse", (0.17, 0.27, 0.83, 0.5)),),
                ("yellow",),
                ("a yellow light", "three round lights"),
            ),
            PartSpec(
                "green light",
                (("ellipse", (0.17, 0.51, 0.83, 0.74)),),
                ("green",),
                ("a green light", "three round lights"),
            ),
        ),
    ),
    CategorySpec(
        "flower",
        0.62,
        "petals",
        (
            PartSpec("stem", (("rect", (0.44, 0.5, 0.56, 1.0)),), ("green",), ("a thin green stem",)),
            PartSpec(
                "petals",
                _ellipses_ring(0.5, 0.3, 0.3, 0.2, 6),
                ("red", "pink", "purple", "blue", "white", "orange"),
                ("round petals",),
                "{c} petals",
            ),
            PartSpec(
                "centre",
                (("ellipse", (0.33, 0.14, 0.67, 0.46)),),
                ("yellow", "brown"),
                ("a round centre",),
                "a {c} centre",
                "petals",
            ),
        ),
    ),
    CategorySpec(
        "boat",
        1.3,
        "hull",
        (
            PartSpec("mast", (("rect", (0.45, 0.0, 0.51, 0.72)),), ("brown",), ("a thin mast",)),
            PartSpec(
                "sail",
                (("polygon", ((0.53, 0.02), (0.53, 0.66), (0.95, 0.66))),),
                ("white", "red", "yellow"),
                ("a triangular sail",),
                "a {c} sail",
            ),
            PartSpec(
                "hull",
                (("polygon", ((0.0, 0.7), (1.0, 0.7), (0.8, 1.0), (0.2, 1.0))),),
                ("brown", "red", "blue", "white", "black"),
                ("a wide hull",),
                "a {c} hull",
                "sail",
            ),
        ),
    ),
    CategorySpec(
        "mushroom",
        1.0,
        "cap",
        (
            PartSpec("stem", (("rect", (0.34, 0.45, 0.66, 1.0)),), ("white",), ("a short white stem",)),
            PartSpec(
                "cap",
                (("chord", (0.0, 0.0, 1.0, 1.1)),),
                ("red", "brown", "orange", "purple"),
                ("a dome-shaped cap",),
                "a {c} cap",
            ),
            PartSpec(
                "spots",
                (
                    ("ellipse", (0.2, 0.25, 0.34, 0.39)),
                    ("ellipse", (0.45, 0.1, 0.59, 0.24)),
                    ("ellipse", (0.66, 0.28, 0.8, 0.42)),
                ),
                ("white",),
                ("white spots",),
            ),
        ),
    ),
    CategorySpec(
        "lamp",
        0.6,
        "shade",
        (
            PartSpec("pole", (("rect", (0.44, 0.38, 0.56, 0.92)),), ("grey",), ("a grey pole",)),
            PartSpec("base", (("rect", (0.15, 0.9, 0.85, 1.0)),), ("black", "grey"), ("a flat base",)),
            PartSpec(
                "shade",
                (("polygon", ((0.25, 0.0), (0.75, 0.0), (1.0, 0.42), (0.0, 0.42))),),
                ("red", "blue", "yellow", "green", "white", "orange", "purple"),
                ("a cone-shaped shade",),
                "a {c} shade",
            ),
        ),
    ),
)

CATEGORY_BY_NAME: dict[str, CategorySpec] = {c.name: c for c in CATEGORIES}


def article(word: str) -> str:
    """``"a"`` or ``"an"`` for a following word."""
    return "an" if word[:1] in "aeiou" else "a"


def category_caption(category: str, colour: str | None = None) -> str:
    """``"a house"`` or ``"a red house"``."""
    head = f"{colour} {category}" if colour else category
    return f"{article(head)} {head}"


def colour_descriptor(template: str, colour: str) -> str:
    """Fill a colour-descriptor template, fixing the article (``"a {c} roof"`` -> ``"an orange roof"``)."""
    s = template.format(c=colour)
    if s.startswith("a "):
        s = f"{article(s[2:])} {s[2:]}"
    return s


def concept_set() -> dict[str, list[str]]:
    """Per category, its fixed part descriptors: the same format as DEAL concept JSON files."""
    out: dict[str, list[str]] = {}
    for c in CATEGORIES:
        ds: list[str] = []
        for p in c.parts:
            ds.extend(d for d in p.descriptors if d not in ds)
        out[c.name] = ds
    return out


def write_concept_set(path: str | os.PathLike) -> Path:
    """Write ``concept_set`` as JSON (``{"class": ["descriptor", ...]}``); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(concept_set(), indent=2) + "\n")
    return p


def all_texts() -> list[str]:
    """Every text the world can produce (captions, coloured captions, descriptors), sorted."""
    texts: set[str] = set()
    for c in CATEGORIES:
        texts.add(category_caption(c.name))
        main = next(p for p in c.parts if p.name == c.main)
        texts.update(category_caption(c.name, col) for col in main.colours)
        for p in c.parts:
            texts.update(p.descriptors)
            if p.colour_descriptor:
                texts.update(colour_descriptor(p.colour_descriptor, col) for col in p.colours)
    return sorted(texts)


def vocabulary() -> list[str]:
    """The words of ``all_texts``, sorted."""
    words: set[str] = set()
    for t in all_texts():
        words.update(tokenize_words(t))
    return sorted(words)


def tokenize_words(text: str) -> list[str]:
    """Lower-case words ("dome-shaped" stays one word; punctuation is dropped)."""
    import re

    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())
