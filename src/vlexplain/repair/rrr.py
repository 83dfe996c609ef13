"""Right for the right reasons: fine-tune with a penalty on explanation mass inside given masks.

Ross, Hughes & Doshi-Velez, "Right for the Right Reasons: Training Differentiable Models by
Constraining their Explanations", IJCAI 2017, penalise the input gradients on regions a person
marks as irrelevant. Here the explanation is DEAL's differentiable one
(``vlexplain.concepts.relevance``: the last block's gradient-weighted attention relevance of the
image against its class prompt, ``create_graph=True``), so the penalty trains the model through
the same machinery as DEAL's losses. Per image, the penalty is the share of the map's mass on the
marked region (each patch weighted by the fraction of its pixels inside the mask); the loss is

    total = prediction (cross-entropy over the class prompts) + lambda_rrr * mean penalty

Images without a mask contribute no penalty.

``explanation="gradient"`` is Ross et al.'s own explanation: the input gradient of the summed
log-probabilities over the class prompts, ``g = d sum_c log p_c / d x``; the penalty is the mean over
images of ``sum over masked pixels of g^2`` (summed over colour channels), also differentiable
(``create_graph=True``). It reaches every block, where the last block's relevance can be emptied
by moving the cue's information into earlier blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..concepts.losses import DealLosses, prediction_loss
from ..concepts.relevance import Templates, _as_textbatch, relevance_from_embeddings


def patch_fractions(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, H, W) bool masks -> (B, gh, gw): the fraction of each patch's pixels inside the mask."""
    return F.adaptive_avg_pool2d(masks.float()[:, None], (int(grid[0]), int(grid[1])))[:, 0]


def rrr_penalty(maps: Tensor, fractions: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean over images of the share of each (non-negative) map's mass on the marked patches."""
    m = maps.clamp_min(0).flatten(1)
    return ((m * fractions.flatten(1).to(m)).sum(1) / (m.sum(1) + eps)).mean()


class RRRLoss:
    """``losses_fn`` of ``vlexplain.concepts.train.deal_train``: prediction + lambda * penalty.

    Args:
        dataset: the training items; ``dataset.cue_mask(i)`` is item ``i``'s (h, w) bool mask (or None).
        classes: the class names in label order.
        lambda_rrr: the penalty's weight.
        templates: the class prompt (``templates.category``).
    """

    fields = ("rrr",)

    def __init__(
        self,
        dataset: Any,
        classes: Sequence[str],
        lambda_rrr: float,
        templates: Templates = Templates(),
        explanation: str = "relevance",
    ):
        from ..errors import InputError

        if explanation not in EXPLANATIONS:
            raise InputError(f"rrr explanation must be one of {', '.join(EXPLANATIONS)}, got {explanation!r}")
        self.dataset, self.classes, self.lam, self.templates = dataset, list(classes), float(lambda_rrr), templates
        self.explanation = explanation

    def masks(self, model: Any, idx: Sequence[int]) -> Tensor:
        from .data import frame_masks

        size = tuple(model.input_size)
        raw = [self.dataset.cue_mask(int(i)) for i in idx]
        empty = torch.zeros(size, dtype=torch.bool)
        framed = [frame_masks([m], size)[0] if m is not None else empty for m in raw]
        return torch.stack(framed)

    def __call__(self, model: Any, pixels: Tensor, labels: Tensor, idx: Sequence[int]) -> DealLosses:
        prompts = [self.templates.category_prompt(c) for c in self.classes]
        ce = model.text.encode(_as_textbatch(model, prompts))  # (C, d): the class prompts, in the graph
        if self.explanation == "gradient":
            return self._gradient(model, pixels, labels, idx, ce)
        maps, _, ie = relevance_from_embeddings(
            model, pixels, ce[labels.to(ce.device)], create_graph=True, normalize=False, return_image_emb=True
        )
        frac = patch_fractions(self.masks(model, idx).to(maps.device), (int(maps.shape[-2]), int(maps.shape[-1])))
        pen = rrr_penalty(maps, frac)
        pred = prediction_loss(model, ie, ce, labels.to(ie.device), "classes")
        zero = pred.new_zeros(())
        return DealLosses(pred + self.lam * pen, pred, zero, zero, {"rrr": pen})

    def _gradient(self, model: Any, pixels: Tensor, labels: Tensor, idx: Sequence[int], ce: Tensor) -> DealLosses:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from ..concepts.losses import class_logits

        x = pixels.detach().requires_grad_(True)
        with sdpa_kernel([SDPBackend.MATH]):  # the one attention kernel with a second derivative everywhere
            ie = model.image.encode(x)
        logits = class_logits(model, ie, ce)
        (g,) = torch.autograd.grad(logits.log_softmax(-1).sum(), x, create_graph=True)
        m = self.masks(model, idx).to(g.device)[:, None].to(g.dtype)  # (B, 1, H, W)
        pen = (g * m).pow(2).sum((1, 2, 3)).mean()
        pred = F.cross_entropy(logits, labels.to(logits.device))
        zero = pred.new_zeros(())
        return DealLosses(pred + self.lam * pen, pred, zero, zero, {"rrr": pen})


#: the explanations the penalty can read
EXPLANATIONS = ("relevance", "gradient")
