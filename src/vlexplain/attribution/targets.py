"""Targets: the scalar a gradient or perturbation method explains.

* ``cosine`` (default): cosine similarity of the image and text embeddings.
* ``logit``: the model's scaled logit, ``scale * cosine + bias``.
* ``softmax``: zero-shot classification probability of the pair's text among candidate texts,
  ``softmax(scale * cos(image, [text, candidates...]))[0]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

TargetKind = Literal["cosine", "logit", "softmax"]
TARGETS: tuple[TargetKind, ...] = ("cosine", "logit", "softmax")


@dataclass
class Target:
    """A differentiable score of (image embedding, text embedding) pairs.

    Attributes:
        kind: one of ``cosine``, ``logit``, ``softmax``.
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
        if self.kind == "cosine":
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
