"""``span_first_order``: first-order maps per word, the cheap reference of interaction methods.

Without any second-order computation, "which region goes with this word?" can be answered with
an ordinary attribution map of the image against the word alone (``variant="alone"``), or as the
difference of the caption's map and the map of the caption with the word removed
(``variant="removed"``). Each content word's map is shared equally by the word's tokens, so its
region (the sum of its rows) is exactly that map; function words ("a", "the", "of") get zero rows.
Interaction methods should beat this.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from ..attribution.base import image_grid_size, pool_to_grid
from ..errors import MethodError
from ..models.base import DualEncoder
from .base import InteractionBatch, InteractionMethod, register_interaction
from .spans import content_words, token_offsets, words

Variant = Literal["alone", "removed"]
VARIANTS: tuple[Variant, ...] = ("alone", "removed")


@register_interaction
class SpanFirstOrder(InteractionMethod):
    """A first-order image map per word: against the word alone, or the caption less the caption without it.

    Args:
        model: the dual encoder.
        base: the attribution method that makes the maps (a name from ``vlexplain.list_methods()``).
        variant: ``alone`` (the word's text alone) or ``removed`` (caption map minus the map of
            the caption without the word).
        base_options: options passed to ``base``.

    Example:
        >>> vx.interactions(model, "bus.jpg", "a red bus", method="span_first_order", base="gradcam")
    """

    name = "span_first_order"
    summary = "reference: a first-order map per word (the word alone, or the caption less the caption without it)"
    reference = True
    needs_gradients = True  # its default base, gradcam

    def __init__(
        self,
        model: DualEncoder,
        base: str = "gradcam",
        variant: Variant = "alone",
        base_options: dict[str, Any] | None = None,
    ):
        super().__init__(model)
        from ..attribution.base import get_method

        cls = get_method(base)  # unknown: one line naming the methods
        why = cls.why_not(model, "image")
        if why is not None:
            raise MethodError(f"span_first_order: base method {base!r} has no image side here ({why})")
        if variant not in VARIANTS:
            raise MethodError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        cls.create(model, **(base_options or {}))  # bad base options: one line now
        self.base, self.variant, self.base_options = base, variant, dict(base_options or {})

    @classmethod
    def why_not(cls, model: DualEncoder) -> str | None:
        from ..attribution.base import brief_reason, get_method

        why = get_method("gradcam").why_not(model, "image")
        return None if why is None else f"span_first_order's default base gradcam: {brief_reason(why)} (pass base=)"

    def interact(self, batch: InteractionBatch) -> Tensor:
        from ..attribution.api import explain

        plan: list[tuple[int, str]] = []  # (pair, text to explain)
        rows: list[tuple[int, list[int], int, int | None]] = []  # (pair, token rows, plus, minus)
        for j in range(len(batch)):
            text = batch.strings[j]
            shown = batch.texts.shown_tokens(j)
            ws = content_words(text, shown) or words(text, shown)  # function words get no region
            pos = batch.texts.content_mask[j].nonzero()[:, 0].tolist()
            if self.variant == "removed":
                plan.append((j, text))
                whole = len(plan) - 1
            offs = token_offsets(text, shown)
            for w, idx in ws:
                at = [pos[i] for i in idx]
                if self.variant == "alone":
                    plan.append((j, w))
                    rows.append((j, at, len(plan) - 1, None))
                    continue
                lo, hi = offs[idx[0]][0], offs[idx[-1]][1]
                rest = " ".join((text[:lo] + " " + text[hi:]).split())  # the caption without the word
                if rest:
                    plan.append((j, rest))
                rows.append((j, at, whole, len(plan) - 1 if rest else None))
        exps = explain(
            self.model,
            batch.pixels[[j for j, _ in plan]],
            [t for _, t in plan],
            method=self.base,
            seed=[batch.seeds[j] for j, _ in plan],
            sides=["image"],
            **self.base_options,
        )
        exps = exps if isinstance(exps, list) else [exps]
        grid = image_grid_size(self.model)
        maps = pool_to_grid(torch.stack([e.image_map for e in exps if e.image_map is not None]), grid)
        T = batch.texts.ids.shape[1]
        out = torch.zeros(len(batch), T, *grid, dtype=maps.dtype, device=maps.device)
        for j, at, plus, minus in rows:
            m = maps[plus] - (maps[minus] if minus is not None else 0)
            out[j, at] = m / len(at)
        return out
