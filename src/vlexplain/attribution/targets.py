"""Targets: the scalar a gradient or perturbation method explains.

* ``cosine`` (default): cosine similarity of the image and text embeddings.
* ``logit``: the model's scaled logit, ``scale * cosine + bias``.
* ``softmax``: zero-shot classification probability of the pair's text among candidate texts,
  ``softmax(scale * cos(image, [text, candidates...]))[0]``.
* ``contrast``: a difference of two cosines. "Why this text rather than that one":
  ``cos(image, text) - cos(image, versus)``; "why image A ranks above image B for this text":
  ``cos(A, text) - cos(B, text)``, explained on both images. The pair batch carries what is
  subtracted ([`Contrast`][vlexplain.attribution.targets.Contrast]); a method scores an input it varies
  with [`PairBatch.score_image`][vlexplain.attribution.base.PairBatch.score_image] /
  [`score_text`][vlexplain.attribution.base.PairBatch.score_text], or reads the difference as a weighted
  sum of cosines with fixed embeddings ([`Contrast.terms`][vlexplain.attribution.targets.Contrast.terms]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

TargetKind = Literal["cosine", "logit", "softmax", "contrast"]
TARGETS: tuple[TargetKind, ...] = ("cosine", "logit", "softmax", "contrast")
Side = Literal["image", "text"]


@dataclass
class Target:
    """A differentiable score of (image embedding, text embedding) pairs.

    Attributes:
        kind: one of ``cosine``, ``logit``, ``softmax``, ``contrast`` (whose terms are cosines).
        scale, bias: the model's logit scale and bias.
        candidates: (K, d) unit-norm embeddings of the other candidate texts (softmax only).
    """

    kind: TargetKind = "cosine"
    scale: float = 100.0
    bias: float = 0.0
    candidates: Tensor | None = None

    def __call__(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        """(N, d), (N, d) un-normalised embeddings -> (N,) scores."""
        i = F.normalize(image_emb, dim=-1)
        t = F.normalize(text_emb, dim=-1)
        cos = (i * t).sum(-1)
        if self.kind in ("cosine", "contrast"):
            return cos
        if self.kind == "logit":
            return self.scale * cos + self.bias
        if self.candidates is None or self.candidates.shape[0] == 0:
            raise ValueError("the softmax target needs candidate texts (at least one other text)")
        others = i @ self.candidates.to(i.dtype).T  # (N, K)
        logits = self.scale * torch.cat([cos[:, None], others], dim=1) + self.bias
        return logits.softmax(-1)[:, 0]


def make_target(model, kind: str = "cosine", candidates: list[str] | None = None, exclude: str | None = None) -> Target:
    """Build a Target for ``model``; ``candidates`` are texts (the explained text is excluded)."""
    if kind not in TARGETS:
        from ..errors import MethodError

        raise MethodError(f"unknown target {kind!r}; choose one of {', '.join(TARGETS)}")
    if kind == "contrast":
        return Target("contrast", 1.0, 0.0, None)
    scale = float(model.logit_scale.detach())
    bias = 0.0 if model.logit_bias is None else float(model.logit_bias.detach())
    cand = None
    if kind == "softmax":
        texts = [c for c in (candidates or []) if c != exclude]
        if not texts:
            from ..errors import MethodError

            raise MethodError("the softmax target needs at least one candidate text other than the explained one")
        with torch.no_grad():
            cand = F.normalize(model.text.encode(model.tokenize(texts)), dim=-1)
    return Target(kind, scale, bias, cand)


#: (coefficient, (B, d) unit-norm embedding of the other modality): one cosine of a weighted sum
Term = tuple[float, Tensor]


@dataclass
class Contrast:
    """What the ``contrast`` target subtracts, for the B pairs of one batch.

    For the batch's pair (image ``i``, text ``t``) the explained score ``d`` is

    * ``versus_text`` = ``v``: ``d = cos(i, t) - cos(i, v)`` ("why t rather than v");
    * ``versus_image`` = ``w``: ``d = cos(i, t) - cos(w, t)`` ("why i ranks above w for t"), or with
      ``lower``: ``d = cos(w, t) - cos(i, t)``: the same difference seen from the lower-ranked
      image ``i`` (``w`` is then the higher one), which is how its map is made.

    Attributes:
        versus_text: (B, d) unit-norm embeddings of the versus texts, or None.
        versus_image: (B, d) unit-norm embeddings of the versus images, or None.
        lower: the batch's image is the subtracted one (``versus_image`` contrasts only).
    """

    versus_text: Tensor | None = None
    versus_image: Tensor | None = None
    lower: bool = False

    def __post_init__(self) -> None:
        if (self.versus_text is None) == (self.versus_image is None):
            raise ValueError("a Contrast has either versus texts or versus images")
        if self.lower and self.versus_image is None:
            raise ValueError("lower applies to versus images only")

    def terms(self, side: Side, image_emb: Tensor, text_emb: Tensor) -> tuple[list[Term], Tensor]:
        """``d`` as a function of the embedding ``e`` of ``side`` (the other side held fixed):
        ``d = sum_k c_k cos(e, o_k) + offset`` -> (terms ``[(c_k, o_k (B, d))]``, offset (B,)).

        Args:
            side: the side whose embedding varies.
            image_emb: (B, d) unit-norm image embeddings of the batch's pairs.
            text_emb: (B, d) unit-norm text embeddings of the batch's pairs.
        """
        zero = torch.zeros(image_emb.shape[0], dtype=image_emb.dtype, device=image_emb.device)
        if self.versus_text is not None:
            v = self.versus_text.to(text_emb)
            if side == "image":  # cos(e, t) - cos(e, v)
                return [(1.0, text_emb), (-1.0, v)], zero
            return [(1.0, image_emb)], -(image_emb * v).sum(-1)  # cos(i, e) - cos(i, v)
        assert self.versus_image is not None
        w = self.versus_image.to(image_emb)
        sign = -1.0 if self.lower else 1.0  # the batch's image enters d with this sign
        if side == "image":  # sign * (cos(e, t) - cos(w, t))
            return [(sign, text_emb)], -sign * (w * text_emb).sum(-1)
        return [(sign, image_emb), (-sign, w)], zero  # sign * (cos(i, e) - cos(w, e))

    def select(self, i: int) -> Contrast:
        """The contrast of pair ``i`` alone (a batch of one)."""
        vt = None if self.versus_text is None else self.versus_text[i : i + 1]
        vi = None if self.versus_image is None else self.versus_image[i : i + 1]
        return Contrast(vt, vi, self.lower)

    def versus_scores(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        """(B,) the cosine of the other pair of the difference: ``cos(i, v)``, or ``cos(w, t)``."""
        if self.versus_text is not None:
            return (image_emb * self.versus_text.to(image_emb)).sum(-1)
        assert self.versus_image is not None
        return (self.versus_image.to(text_emb) * text_emb).sum(-1)
