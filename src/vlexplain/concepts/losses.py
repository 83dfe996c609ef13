"""DEAL training losses (Li, Ma, Peng, ECCV 2024).

With concept maps ``h_1..h_K`` and the category map ``h_c`` of an image (min-max normalised):

* disentangle = sum over concept pairs i > j of sum over pixels ``h_i * h_j``, mean over images;
* localize    = sum over pixels ``(sum_i h_i - h_c)^2``, mean over images;
* prediction  = cross-entropy of the image against all class prompts (``"classes"``, default) or
  the batch-contrastive CLIP loss (``"contrastive"``), or ``"none"``;
* total = prediction + lambda_sep * disentangle + lambda_con * localize.

The maps must come from ``deal_maps`` with
``create_graph=True`` for the two explanation losses to reach the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..models.base import DualEncoder
from .relevance import DEAL_RELEVANCE, Templates, _as_textbatch, deal_maps, up
from .sets import ConceptSet

PredictionLoss = Literal["classes", "contrastive", "none"]


def _masked(concepts: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return concepts
    return concepts * mask[:, :, None, None].to(concepts.dtype)


def disentangle_loss(concepts: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over images of ``sum_{i>j} sum_pixels h_i * h_j``.

    Args:
        concepts: (B, K, gh, gw) concept maps.
        mask: (B, K) True for real concepts (padding rows are ignored).
    """
    h = up(_masked(concepts, mask).flatten(2))  # (B, K, P)
    s = h.sum(1)  # (B, P)
    pair_sum = 0.5 * (s.pow(2) - h.pow(2).sum(1))  # sum_{i>j} h_i h_j per pixel
    return pair_sum.sum(-1).mean()


def localize_loss(concepts: Tensor, category: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over images of ``sum_pixels (sum_i h_i - h_c)^2``.

    Args:
        concepts: (B, K, gh, gw) concept maps.
        category: (B, gh, gw) category maps.
        mask: (B, K) True for real concepts.
    """
    s = up(_masked(concepts, mask)).sum(1)
    return (s - up(category)).pow(2).flatten(1).sum(-1).mean()


def class_logits(model: DualEncoder, image_emb: Tensor, class_emb: Tensor) -> Tensor:
    """(B, C) scaled cosine logits (plus the model's bias, SigLIP)."""
    logits = up(model.logit_scale) * F.normalize(up(image_emb), dim=-1) @ F.normalize(up(class_emb), dim=-1).T
    bias = model.logit_bias
    return logits if bias is None else logits + up(bias)


def prediction_loss(
    model: DualEncoder, image_emb: Tensor, class_emb: Tensor, labels: Tensor, mode: PredictionLoss = "classes"
) -> Tensor:
    """Classification or contrastive loss of images against class-prompt embeddings.

    Args:
        image_emb: (B, d) image embeddings.
        class_emb: (C, d) embeddings of every class prompt.
        labels: (B,) class index of each image.
        mode: ``"classes"``: cross-entropy over all C classes; ``"contrastive"``: the symmetric
            CLIP loss between the batch's images and the prompts of their classes (images of the
            same class count as positives of each other).
    """
    if mode == "none":
        return image_emb.new_zeros(())
    if mode == "classes":
        return F.cross_entropy(class_logits(model, image_emb, class_emb), labels)
    if mode != "contrastive":
        raise InputError(f"unknown prediction loss {mode!r}; use 'classes', 'contrastive' or 'none'")
    logits = class_logits(model, image_emb, class_emb[labels])  # (B, B)
    same = (labels[:, None] == labels[None, :]).to(logits.dtype)
    target = same / same.sum(1, keepdim=True)
    li = -(target * logits.log_softmax(1)).sum(1).mean()
    lt = -(target * logits.T.log_softmax(1)).sum(1).mean()
    return 0.5 * (li + lt)


@dataclass
class DealLosses:
    """The loss terms of one batch (all scalars; ``total`` is what is minimised)."""

    total: Tensor
    prediction: Tensor
    disentangle: Tensor
    localize: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)  # other terms of ``total`` (logged by name)

    def as_floats(self) -> dict[str, float]:
        out = {k: float(getattr(self, k).detach()) for k in ("total", "prediction", "disentangle", "localize")}
        return {**out, **{k: float(v.detach()) for k, v in self.extra.items()}}


def deal_losses(
    model: DualEncoder,
    pixels: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    concepts: ConceptSet,
    *,
    lambda_sep: float = 0.1,
    lambda_con: float = 0.01,
    prediction: PredictionLoss = "classes",
    k: int | None = None,
    templates: Templates = Templates(),
    detach_maps: bool = False,
) -> DealLosses:
    """All DEAL loss terms for one batch.

    Args:
        model: the dual encoder being trained.
        pixels: (B, 3, H, W) images; ``labels`` (B,) their class indices into ``class_names``.
        class_names: every class, in label order (keys of ``concepts``).
        concepts: the concept set.
        lambda_sep / lambda_con: weights of the disentangle and localize losses.
        prediction: the prediction loss (see ``prediction_loss``).
        k: descriptors per class.
        templates: prompt templates.
        detach_maps: detach the maps before the explanation losses (reproduces the released
            code's behaviour, in which these losses send no gradient to the model; for tests).
    """
    names = [class_names[int(i)] for i in labels]
    need_maps = lambda_sep != 0 or lambda_con != 0
    zero = pixels.new_zeros((), dtype=torch.float32)
    dis = loc = zero
    ie = None
    if need_maps:
        cm = deal_maps(
            model,
            pixels,
            names,
            concepts,
            k=k,
            templates=templates,
            create_graph=not detach_maps,
            method=DEAL_RELEVANCE,
        )
        conc, cat = cm.concepts, cm.category
        if detach_maps:
            conc, cat = conc.detach(), cat.detach()
        else:
            ie = cm.image_emb  # reuse the relevance pass's image embeddings for the prediction loss
        dis = disentangle_loss(conc, cm.mask)
        loc = localize_loss(conc, cat, cm.mask)
    pred = zero
    if prediction != "none":
        if ie is None:
            ie = model.image.encode(pixels)
        if prediction == "classes":
            ce = model.text.encode(_as_textbatch(model, [templates.category_prompt(c) for c in class_names]))
        else:
            uniq = sorted(set(int(i) for i in labels))
            ce = torch.zeros(len(class_names), ie.shape[-1], device=ie.device, dtype=ie.dtype)
            te = model.text.encode(_as_textbatch(model, [templates.category_prompt(class_names[i]) for i in uniq]))
            ce = ce.index_copy(0, torch.tensor(uniq, device=ie.device), te.to(ce.dtype))
        pred = prediction_loss(model, ie, ce, labels.to(ie.device), prediction)
    total = pred + lambda_sep * dis + lambda_con * loc
    return DealLosses(total, pred, dis, loc)
