"""Gradient-weighted attention relevance (Chefer, Gur & Wolf, ICCV 2021).

"Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
Transformers": starting from ``R = I`` (T x T), for every block ``b`` (from ``start_layer`` on)
with attention probabilities ``A_b`` (B, heads, T, T) and their gradient ``G_b = dy/dA_b``::

    Abar_b = mean_heads(clamp(G_b * A_b, min=0))
    R = R + Abar_b @ R

The ``last_block_only`` variant (as used by DEAL) keeps only the last block: ``R = I + Abar @ I``.

Readout:

* image towers with a class token: ``R[CLS, patches]`` on the patch grid;
* image towers without one (SigLIP, which pools with an attention head): the mean over all query
  rows of ``R``, restricted to patch columns;
* text towers: the row of the pooled position (EOS for CLIP, the last token for SigLIP); for
  mean-pooled towers, the mean over the rows of real (non-padding) tokens.

CNN towers have no attention, so the method does not apply to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder, TextBatch, Tower
from .base import Explainer, PairBatch, register_method

TargetFn = Callable[[Tensor], Tensor]  # (B, d) un-normalised embedding -> (B,) scores


def require_attention(tower: Tower, method: str) -> None:
    """Raise MethodError if ``tower`` cannot report attention probabilities (CNN towers)."""
    if not tower.has_attention:
        raise MethodError(
            f"{method} needs attention probabilities; the {tower.modality} tower is a {tower.kind.upper()}"
        )


def check_start_layer(model: DualEncoder, start_layer: int, method: str) -> int:
    """Raise MethodError unless ``start_layer`` is a block index of every attention tower, at or
    before its last attention block."""
    for tower in (model.image, model.text):
        if not tower.has_attention:
            continue
        last = tower.attention_blocks[-1]
        if not (isinstance(start_layer, int) and not isinstance(start_layer, bool) and 0 <= start_layer <= last):
            where = "" if last == tower.num_blocks - 1 else f"; its last attention block is {last}"
            raise MethodError(
                f"{method}: start_layer {start_layer} is out of range for the {tower.modality} tower (0..{last}{where})"
            )
    return start_layer


def attention_keys(tower: Tower, first: int) -> list[int]:
    """The attention blocks of ``tower`` from block ``first`` on (hybrids: the conv blocks are skipped)."""
    return [i for i in tower.attention_blocks if i >= first]


def chefer_relevance(
    model: DualEncoder | None,
    tower: Tower,
    x: Any,
    target_fn: TargetFn,
    last_block_only: bool = False,
    create_graph: bool = False,
    start_layer: int = 0,
) -> Tensor:
    """Chefer et al.'s relevance matrix of one tower.

    Args:
        model: the dual encoder (unused; kept for a uniform signature).
        tower: a transformer tower; ``x`` its input batch (pixels or a TextBatch).
        target_fn: the score to explain from the tower's embedding; rows are summed before
            differentiation, so each row's relevance depends on that row only.
        last_block_only: use only the last block (``R = I + Abar_last``).
        create_graph: keep the graph of the gradients (to train through the relevance).
        start_layer: first block that contributes (ignored with ``last_block_only``).

    Returns:
        (B, T, T) relevance ``R``; row ``q`` is the relevance of every token for token ``q``.
    """
    require_attention(tower, "chefer")
    wanted = set(attention_keys(tower, tower.attention_blocks[-1] if last_block_only else start_layer))
    attns: dict[int, Tensor] = {}

    def on_block(i: int, h: Tensor, a: Tensor | None) -> None:
        if i in wanted:
            assert a is not None, "need_attn=True passes each attention block's attention"
            attns[i] = a  # (B, heads, T, T)

    with torch.enable_grad():
        h0 = tower.encode(x, stop=-1)
        if not h0.requires_grad:  # frozen model: differentiate from the stem's output on
            h0 = h0.detach().requires_grad_(True)
        emb = tower.encode(x, hidden=h0, on_block=on_block, need_attn=True)
        keys = sorted(attns)
        grads = torch.autograd.grad(target_fn(emb).sum(), [attns[i] for i in keys], create_graph=create_graph)
    A0 = attns[keys[0]]
    B, T = A0.shape[0], A0.shape[-1]
    R = torch.eye(T, device=A0.device, dtype=A0.dtype).expand(B, T, T)
    for i, G in zip(keys, grads):
        A = attns[i] if create_graph else attns[i].detach()
        abar = (G * A).clamp(min=0).mean(1)  # (B, T, T)
        R = R + abar @ R
    return R


def image_readout(tower: Tower, R: Tensor) -> Tensor:
    """(B, T, T) relevance -> (B, gh, gw): the CLS row, or the mean over rows without a CLS."""
    scores = R[:, 0, :] if tower.class_token_pooled else R.mean(1)  # (B, T)
    return tower.token_scores_to_grid(scores, R)


def text_readout(texts: TextBatch, R: Tensor) -> Tensor:
    """(B, T, T) relevance -> (B, T): the pooled position's row, or the mean over real tokens' rows."""
    B = R.shape[0]
    pool = texts.pool_index.to(R.device)
    row = R[torch.arange(B, device=R.device), pool.clamp_min(0)]  # (B, T)
    m = texts.attention_mask.to(R.device, R.dtype)  # (B, T)
    mean_rows = (R * m[:, :, None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
    return torch.where((pool >= 0)[:, None], row, mean_rows)


@register_method
class Chefer(Explainer):
    """Gradient-weighted attention relevance propagated through the blocks.

    Args:
        model: the dual encoder.
        last_block_only: only the last block (the variant DEAL trains with).
        start_layer: first block that contributes (0).

    Paper: Chefer, Gur, Wolf. Generic Attention-model Explainability for Interpreting Bi-Modal
    and Encoder-Decoder Transformers. ICCV 2021.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="chefer", last_block_only=True)
    """

    name = "chefer"
    contrast_form = "relevance from the gradient of the difference times attention, positive part"
    summary = "gradient-weighted attention relevance (Chefer et al. 2021)"
    paper = "Chefer, Gur & Wolf. Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers. ICCV 2021"
    needs_attention = True

    def __init__(self, model, last_block_only: bool = False, start_layer: int = 0):
        super().__init__(model)
        self.last_block_only = bool(last_block_only)
        self.start_layer = check_start_layer(model, start_layer, self.name)

    def _relevance(self, tower: Tower, x: Any, target_fn: TargetFn) -> Tensor:
        return chefer_relevance(self.model, tower, x, target_fn, self.last_block_only, start_layer=self.start_layer)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        R = self._relevance(tower, batch.pixels, batch.score_image)
        return image_readout(tower, R.detach())

    def attribute_text(self, batch: PairBatch) -> Tensor:
        R = self._relevance(self.model.text, batch.texts, batch.score_text)
        return text_readout(batch.texts, R.detach())
