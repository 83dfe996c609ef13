"""The [`Interactions`][vlexplain.Interactions] result: which words go with which image regions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .spans import Span, content_words, span_tokens

Box = tuple[float, float, float, float]


@dataclass
class Interactions:
    """Token x image-region interactions of one image-text pair.

    Attributes:
        tokens: the shown tokens, exactly as [`Explanation.tokens`][vlexplain.Explanation] (no start/end/padding).
        matrix: (T, gh, gw) one image map per token, in the score's units (cosine), rows in the
            order of ``tokens``; the grid is the method's (the image tower's patch grid, a CNN
            stage's feature map, or the cells a perturbation method masks).
        score: cosine similarity of the pair.
        method: the interaction method's registry name.
        settings: the method's options, the seed and the model.
        text: the text that was explained.
        pixels: (3, H, W) the preprocessed image, for display.
        mean, std: the normalisation of ``pixels``.
        seconds: wall-clock time spent on this pair (batch time / batch size).
        extras: method-specific values (e.g. the reference scores of integrated Jacobians).

    Example:
        >>> inter = vx.interactions(model, "bus.jpg", "a red bus next to a tree")
        >>> inter.region("red bus").shape      # (gh, gw)
        >>> inter.words((0, 0, 112, 224))       # (T,) the words of the left half
    """

    tokens: list[str]
    matrix: Tensor
    score: float
    method: str
    settings: dict[str, Any]
    text: str = ""
    pixels: Tensor | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    seconds: float = 0.0
    input_size: tuple[int, int] = (224, 224)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        """(gh, gw) of ``matrix``."""
        return int(self.matrix.shape[1]), int(self.matrix.shape[2])

    def span(self, span: Span) -> list[int]:
        """Token indices of ``span`` (a substring of the text, or token indices)."""
        return span_tokens(self.text, self.tokens, span)

    def region(self, span: Span) -> Tensor:
        """(gh, gw) the span's region map: the sum of its tokens' rows."""
        return self.matrix[self.span(span)].sum(0)

    def image_region(self, span: Span) -> Tensor:
        """(H, W) the span's region map at the model's input resolution (bilinear; values per cell)."""
        r = self.region(span)
        up = F.interpolate(r[None, None].float(), size=self.input_size, mode="bilinear", align_corners=False)
        return up[0, 0].to(r.dtype)

    def words(self, box: Box | Sequence[float] | Tensor | np.ndarray) -> Tensor:
        """(T,) how much each token interacts with a part of the image.

        Args:
            box: ``(x0, y0, x1, y1)`` in the model's input pixels (x to the right, y down), or a
                boolean mask of shape (H, W) (input pixels) or (gh, gw) (the matrix's grid).
                A cell that the box covers in part counts with the covered share of its area.
        """
        cover = self._coverage(box).to(self.matrix.device, self.matrix.dtype)
        return (self.matrix * cover).sum((1, 2))

    def _coverage(self, box: Any) -> Tensor:
        """(gh, gw) share of each cell inside ``box``."""
        H, W = self.input_size
        gh, gw = self.grid
        if isinstance(box, (Tensor, np.ndarray)) and np.ndim(box) == 2:
            m = torch.as_tensor(np.asarray(box) if isinstance(box, np.ndarray) else box)
            if m.dtype != torch.bool:
                raise InputError(f"a region mask must be boolean, got {m.dtype}")
            if not m.any():
                raise InputError("the region mask selects no pixel")
            if tuple(m.shape) == (gh, gw):
                return m.float()
            if tuple(m.shape) != (H, W):
                raise InputError(
                    f"a region mask must be {H}x{W} (input pixels) or {gh}x{gw} (cells), got {tuple(m.shape)}"
                )
            return F.adaptive_avg_pool2d(m.float()[None, None], (gh, gw))[0, 0]
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise InputError(f"a box is (x0, y0, x1, y1) in input pixels or a boolean mask, got {box!r}") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
            raise InputError(
                f"box {(x0, y0, x1, y1)} is outside the {W}x{H} input image or empty; "
                f"give 0 <= x0 < x1 <= {W} and 0 <= y0 < y1 <= {H}"
            )
        return torch.outer(_overlap(y0, y1, H, gh), _overlap(x0, x1, W, gw))

    def word_maps(self) -> list[tuple[str, list[int], Tensor]]:
        """(word, token indices, (gh, gw) region) for each content word of the text, in order."""
        return [(w, idx, self.matrix[idx].sum(0)) for w, idx in content_words(self.text, self.tokens)]

    def image_rgb(self) -> Tensor:
        """(3, H, W) the image in [0, 1] as the model saw it."""
        from ..images import denormalize

        assert self.pixels is not None
        return denormalize(self.pixels, self.mean, self.std)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the matrix as nested lists (T x gh x gw), the content words and their token indices."""
        return {
            "method": self.method,
            "text": self.text,
            "score": self.score,
            "seconds": self.seconds,
            "settings": self.settings,
            "tokens": self.tokens,
            "grid": list(self.grid),
            "input_size": list(self.input_size),
            "matrix": self.matrix.float().cpu().tolist(),
            "words": [{"word": w, "tokens": idx} for w, idx in content_words(self.text, self.tokens)],
            "extras": {k: v for k, v in self.extras.items() if isinstance(v, (int, float, str, bool, list))},
        }

    # display lives in vlexplain.viz (imported on use, as for Explanation)
    def save(self, path_prefix: str, spans: Sequence[Span] = ()) -> list[str]:
        """Write ``PREFIX_interactions.png``, ``PREFIX_interactions.html`` and ``PREFIX_interactions.json``.

        Args:
            path_prefix: where to write (the suffixes are added).
            spans: parts of the text whose regions are shown first (checked before anything is written).
        """
        from ..viz.interactions import save_interactions

        extra = [
            (s if isinstance(s, str) else " ".join(self.tokens[i] for i in self.span(s)), self.region(s)) for s in spans
        ]
        return save_interactions(self, path_prefix, extra)

    def to_html(self) -> str:
        from ..viz.interactions import interactions_html

        return interactions_html(self)

    def _repr_html_(self) -> str:  # notebooks
        return self.to_html()


def _overlap(lo: float, hi: float, size: int, cells: int) -> Tensor:
    """(cells,) share of each of ``cells`` equal intervals of [0, size) inside [lo, hi)."""
    edges = torch.arange(cells + 1, dtype=torch.float64) * size / cells
    inside = (torch.minimum(edges[1:], torch.tensor(hi)) - torch.maximum(edges[:-1], torch.tensor(lo))).clamp_min(0)
    return (inside / (edges[1:] - edges[:-1])).float()
