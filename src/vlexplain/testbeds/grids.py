"""Grids of real photos with a known answer: which cell a text is about.

The photos ship with scikit-image (``skimage.data``) and matplotlib (``grace_hopper.jpg``), so
nothing is downloaded. A grid puts ``rows x cols`` distinct photos (randomly cropped and flipped)
in cells; the queried cell's class text ("a cat") and its mask are the ground truth. An explanation
of (grid, text) should put its mass on that cell (chance: one cell's share of the area).

Example:
    >>> g = make_grid(seed=0, rows=2)
    >>> g.image.size, g.text, g.query          # doctest: +SKIP
    ((224, 224), 'a cup of coffee', 3)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError, require


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        data = require("skimage.data", "eval")
        return getattr(data, name)()

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


# name -> (loader, class text)
PHOTOS: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "chelsea": (_skimage("chelsea"), "a cat"),
    "coffee": (_skimage("coffee"), "a cup of coffee"),
    "rocket": (_skimage("rocket"), "a rocket"),
    "astronaut": (_skimage("astronaut"), "an astronaut"),
    "grace_hopper": (_grace_hopper, "a woman in uniform"),
    "camera": (_skimage("camera"), "a photographer with a camera"),
    "clock": (_skimage("clock"), "a clock"),
    "coins": (_skimage("coins"), "coins"),
    "hubble_deep_field": (_skimage("hubble_deep_field"), "galaxies in space"),
    "brick": (_skimage("brick"), "a brick wall"),
    "moon": (_skimage("moon"), "the surface of the moon"),
}

DEFAULT_PHOTOS: tuple[str, ...] = tuple(PHOTOS)


@functools.cache
def load_photo(name: str) -> Image.Image:
    """One of ``PHOTOS`` as an RGB image (cached)."""
    if name not in PHOTOS:
        raise InputError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    a = PHOTOS[name][0]()
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(a[..., :3]).astype(np.uint8), "RGB")


def photo_text(name: str) -> str:
    """The class text of a photo ("a cat")."""
    if name not in PHOTOS:
        raise InputError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    return PHOTOS[name][1]


@dataclass
class GridSample:
    """A grid of photos and its ground truth.

    Attributes:
        image: the grid, ``rows * cell_size`` by ``cols * cell_size`` pixels.
        rows, cols, cell_size: the layout.
        cells: photo name in every cell, row-major.
        query: index of the queried cell (row-major).
        text: the queried cell's class text.
        seed: the seed it was drawn from.
    """

    image: Image.Image
    rows: int
    cols: int
    cell_size: int
    cells: list[str]
    query: int
    text: str
    seed: int

    @property
    def texts(self) -> list[str]:
        """Class text of every cell, row-major."""
        return [photo_text(c) for c in self.cells]

    def cell_box(self, index: int) -> list[int]:
        """``[x, y, w, h]`` of a cell."""
        if not 0 <= index < self.rows * self.cols:
            raise InputError(f"cell {index} is outside a {self.rows}x{self.cols} grid")
        r, c = divmod(index, self.cols)
        return [c * self.cell_size, r * self.cell_size, self.cell_size, self.cell_size]

    def cell_mask(self, index: int | None = None) -> np.ndarray:
        """Bool ``(H, W)`` mask of a cell (default: the queried one)."""
        x, y, w, h = self.cell_box(self.query if index is None else index)
        m = np.zeros((self.rows * self.cell_size, self.cols * self.cell_size), dtype=bool)
        m[y : y + h, x : x + w] = True
        return m

    @property
    def mask(self) -> np.ndarray:
        """Mask of the queried cell."""
        return self.cell_mask()


def _cell(photo: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """Random square crop (60-100 % of the short side), random horizontal flip, resize."""
    w, h = photo.size
    side = int(round(min(w, h) * rng.uniform(0.6, 1.0)))
    x = int(rng.integers(0, w - side + 1))
    y = int(rng.integers(0, h - side + 1))
    im = photo.crop((x, y, x + side, y + side))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return im.resize((size, size), Image.Resampling.BILINEAR)


def make_grid(
    seed: int,
    rows: int = 2,
    cols: int | None = None,
    cell_size: int | None = None,
    photos: Sequence[str] | None = None,
    query: int | None = None,
) -> GridSample:
    """Draw a grid of distinct photos, deterministically from ``seed``.

    Args:
        seed: numpy Generator seed (photo choice, crops, flips, query).
        rows, cols: layout (``cols`` defaults to ``rows``).
        cell_size: cell side in pixels (default ``224 // rows``).
        photos: names to draw from (default: all of ``PHOTOS``); at least ``rows * cols``.
        query: queried cell (default: drawn).

    Returns:
        A ``GridSample``.
    """
    cols = rows if cols is None else cols
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise InputError(f"a grid needs at least two cells, got {rows}x{cols}")
    cell_size = cell_size or 224 // max(rows, cols)
    if cell_size < 8:
        raise InputError(f"cell size {cell_size} is too small (at least 8 pixels)")
    names = list(photos) if photos is not None else list(DEFAULT_PHOTOS)
    if len(set(names)) < rows * cols:
        raise InputError(f"a {rows}x{cols} grid needs {rows * cols} distinct photos, got {len(set(names))}")
    rng = np.random.default_rng(seed)
    chosen = [str(n) for n in rng.choice(sorted(set(names)), size=rows * cols, replace=False)]
    canvas = Image.new("RGB", (cols * cell_size, rows * cell_size))
    for i, name in enumerate(chosen):
        r, c = divmod(i, cols)
        canvas.paste(_cell(load_photo(name), cell_size, rng), (c * cell_size, r * cell_size))
    q = int(rng.integers(rows * cols)) if query is None else int(query)
    if not 0 <= q < rows * cols:
        raise InputError(f"query cell {q} is outside a {rows}x{cols} grid")
    return GridSample(canvas, rows, cols, cell_size, chosen, q, photo_text(chosen[q]), seed)


def grid_dataset(n: int, seed: int = 0, rows: int = 2, **kwargs) -> list[GridSample]:
    """``n`` grids with seeds ``seed, seed + 1, ...`` (keyword options as in ``make_grid``)."""
    return [make_grid(seed + i, rows=rows, **kwargs) for i in range(n)]
