"""``explain_similarity``: why two images (or two texts) embed close together.

Image search and de-duplication compare two inputs of one modality. Both go through the same
tower; integrated Jacobians (``paths``) give each input's contracted Jacobian ``C_a``, ``C_b``
(embedding dimension x position) and

    M[p, q] = sum_d C_a[d, p] * C_b[d, q] / (|e_a| |e_b|)

is the interaction of position ``p`` of ``a`` with position ``q`` of ``b`` (patch x patch for
images, token x token for texts), in cosine units. Each input's map is the sum of its rows
(``map_a[p] = sum_q M[p, q]``). Swapping ``a`` and ``b`` transposes ``M``; summed over every
position (class / start / end tokens included) ``M`` approximates
``(e_a - e(r_a)) . (e_b - e(r_b)) / (|e_a| |e_b|)`` for the references ``r``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attribution.api import _texts, prepare_images
from ..errors import InputError
from ..images import ImageLike
from ..models.base import DualEncoder, frozen
from .integrated_jacobians import (
    IMAGE_BASELINES,
    TEXT_BASELINES,
    check_block,
    image_reference,
    path_options,
    text_reference,
    to_grid,
)
from .paths import Mode, integrated_path

Modality = Literal["image", "text"]


@dataclass
class Similarity:
    """Position x position interactions of two inputs of one modality.

    Attributes:
        modality: ``image`` or ``text``.
        score: cosine similarity of the two embeddings.
        matrix: image: (gh, gw, gh, gw) patch x patch; text: (Ta, Tb) shown token x shown token;
            in cosine units.
        map_a / map_b: each input's map, the sum of its interactions with the other input
            (image: (gh, gw); text: (T,)).
        tokens_a / tokens_b: the shown tokens (texts only).
        texts: the two texts (texts only).
        pixels: the two preprocessed images (images only), for display.
        settings: the options, the layer and the model.
        extras: ``total`` (the sum over every position) and ``expected_total`` (completeness).
    """

    modality: Modality
    score: float
    matrix: Tensor
    map_a: Tensor
    map_b: Tensor
    settings: dict[str, Any]
    tokens_a: list[str] = field(default_factory=list)
    tokens_b: list[str] = field(default_factory=list)
    texts: tuple[str, str] = ("", "")
    pixels: Tensor | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    seconds: float = 0.0
    extras: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "score": self.score,
            "settings": self.settings,
            "tokens_a": self.tokens_a,
            "tokens_b": self.tokens_b,
            "texts": list(self.texts),
            "map_a": self.map_a.float().cpu().tolist(),
            "map_b": self.map_b.float().cpu().tolist(),
            "matrix": self.matrix.float().cpu().tolist(),
            "seconds": self.seconds,
            "extras": self.extras,
        }

    def save(self, path_prefix: str) -> list[str]:
        """Write ``PREFIX_similarity.png`` and ``PREFIX_similarity.json``."""
        from ..viz.interactions import save_similarity

        return save_similarity(self, path_prefix)


def _modality(a: Any, b: Any) -> Modality:
    def is_text(x: Any) -> bool:
        return isinstance(x, str) and not Path(x).is_file()

    if is_text(a) and is_text(b):
        return "text"
    if is_text(a) or is_text(b):
        raise InputError("explain_similarity compares two images or two texts; got one of each (pass modality=)")
    return "image"


def explain_similarity(
    model: DualEncoder,
    a: ImageLike | str,
    b: ImageLike | str,
    *,
    modality: Modality | None = None,
    layer: int | None = None,
    steps: int = 10,
    baseline: str | None = None,
    mode: Mode = "auto",
    chunk: int = 32,
) -> Similarity:
    """Why two images (or two texts) are similar: a map on each and their position x position interactions.

    Args:
        model: a [`DualEncoder`][vlexplain.DualEncoder].
        a: an image (a path, PIL image, array, (3, H, W) tensor) or a text.
        b: another input of the same modality.
        modality: ``image`` or ``text`` (None: texts when both are strings that name no file).
        layer: the block whose input the interactions are taken at (None: the last block).
        steps: points on each integrated-Jacobian path.
        baseline: the reference (images: ``zeros``, ``blur``, ``mean``; texts: ``one_token``, ``pad``).
        mode: how the Jacobians are batched (see ``integrated_jacobians``).
        chunk: Jacobian products per batched pass.

    Returns:
        A [`Similarity`][vlexplain.Similarity].

    Example:
        >>> sim = explain_similarity(model, "photo1.jpg", "photo2.jpg")
        >>> sim.map_a.shape, sim.matrix.shape   # (gh, gw), (gh, gw, gh, gw)
    """
    mod = modality or _modality(a, b)
    if mod not in ("image", "text"):
        raise InputError(f"modality must be image or text, got {mod!r}")
    tower = model.tower(mod)
    L = check_block(tower, layer, "layer")
    path_options(steps, mode, chunk)
    choices = IMAGE_BASELINES if mod == "image" else TEXT_BASELINES
    base = baseline or choices[0]
    if base not in choices:
        raise InputError(f"baseline for {mod}s must be one of {', '.join(choices)}, got {base!r}")
    t0 = time.perf_counter()
    with frozen(model):
        if mod == "image":
            x = torch.cat([prepare_images(model, a), prepare_images(model, b)])
            same = bool(torch.equal(x[0], x[1]))
            xi = x[:1] if same else x
            p = integrated_path(tower, xi, image_reference(xi, base), L, steps, mode, chunk)
        else:
            texts = _texts([a, b])  # type: ignore[list-item]
            tb = model.tokenize(texts)
            same = texts[0] == texts[1]
            xt = tb.select([0]) if same else tb
            p = integrated_path(tower, xt, text_reference(xt, base, model.pad_token_id), L, steps, mode, chunk)
    rows = [0, 0] if same else [0, 1]
    c, e, r = p.contracted[rows], p.embedding[rows], p.reference[rows]
    norms = e[0].norm() * e[1].norm()
    full = torch.einsum("dp,dq->pq", c[0], c[1]) / norms  # (P, P)
    extras = {"total": float(full.sum()), "expected_total": float(((e[0] - r[0]) * (e[1] - r[1])).sum() / norms)}
    score = float(F.cosine_similarity(e[0], e[1], dim=0))
    settings = {"layer": L, "steps": steps, "baseline": base, "mode": mode, "model": model.name}
    dt = time.perf_counter() - t0
    if mod == "text":
        keep = [tb.content_mask[i] for i in (0, 1)]
        m = full[keep[0]][:, keep[1]]
        return Similarity(
            "text", score, m, m.sum(1), m.sum(0), settings, tb.shown_tokens(0), tb.shown_tokens(1),
            (texts[0], texts[1]), seconds=dt, extras=extras,
        )  # fmt: skip
    rows_grid = to_grid(tower, full[None], p.hidden_shape)[0]  # (P, gh, gw): columns on b's grid
    gh, gw = rows_grid.shape[-2:]
    both = to_grid(tower, rows_grid.flatten(1).T[None], p.hidden_shape)[0]  # (gh*gw, gh, gw): rows on a's grid
    m4 = both.permute(1, 2, 0).reshape(gh, gw, gh, gw)  # [i, j] of a x [k, l] of b
    return Similarity(
        "image", score, m4, m4.sum((2, 3)), m4.sum((0, 1)), settings, pixels=x,
        mean=tuple(model.mean), std=tuple(model.std), seconds=dt, extras=extras,
    )  # fmt: skip
