"""``interactions``: the public entry point for token x region interactions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..attribution.api import TextLike, _broadcast, _is_multi_image, _pair_seeds, _texts, prepare_images
from ..errors import InputError
from ..images import ImageLike
from ..models.base import DualEncoder, frozen
from .base import InteractionBatch, get_interaction_method
from .result import Interactions


def interactions(
    model: DualEncoder,
    images: ImageLike | Sequence[ImageLike],
    texts: TextLike,
    method: str = "integrated_jacobians",
    *,
    seed: int | Sequence[int] | None = 0,
    batch_size: int = 8,
    **options: Any,
) -> Interactions | list[Interactions]:
    """Which words of a text go with which regions of an image.

    Args:
        model: a [`DualEncoder`][vlexplain.DualEncoder] from [`vlexplain.load_model`][vlexplain.load_model].
        images: a path, PIL image, array, (3,H,W) or (N,3,H,W) preprocessed tensor, or a list.
        texts: a string or a list of strings. Pairs are zipped; one image or one text broadcasts.
        method: a name from [`vlexplain.list_interaction_methods`][vlexplain.list_interaction_methods].
        seed: one int for every pair, or one per pair (stochastic methods and references).
        batch_size: pairs per batch (a pair's result does not depend on the batch).
        **options: the method's options (e.g. ``steps``, ``image_layer`` for integrated Jacobians).

    Returns:
        One [`Interactions`][vlexplain.Interactions] for one image and one text, else a list (one per pair).

    Example:
        >>> inter = interactions(model, "bus.jpg", "a red bus next to a tree", seed=0)
        >>> inter.region("bus")  # (gh, gw)
    """
    single = isinstance(texts, str) and not _is_multi_image(images)
    cls = get_interaction_method(method)
    inst = cls.create(model, **options)  # unknown method / option / family: one line, before any work
    tlist = _texts(texts)  # empty text: InputError
    pixels = prepare_images(model, images)
    ii, ti = _broadcast(pixels.shape[0], len(tlist))
    seeds = _pair_seeds(seed, len(ii))
    first = {t: k for k, t in reversed(list(enumerate(tlist)))}
    ti_same = [first[tlist[t]] for t in ti]  # pairs with equal texts share the text's work
    for t in sorted(set(tlist)):
        n_tokens = int(model.tokenize([t]).content_mask.sum())
        if not n_tokens:
            raise InputError(f"the text {t!r} has no token to explain")
        inst.check_text(n_tokens)
    results: list[Interactions] = []
    settings = {**inst.settings(), "model": model.name}
    for start in range(0, len(ii), batch_size):
        chunk = list(range(start, min(start + batch_size, len(ii))))
        px = pixels[[ii[k] for k in chunk]]
        tb = model.tokenize([tlist[ti[k]] for k in chunk])
        t0 = time.perf_counter()
        with frozen(model):
            with torch.no_grad():
                ie = F.normalize(model.image.encode(px), dim=-1)
                te = F.normalize(model.text.encode(tb), dim=-1)
            batch = InteractionBatch(
                px, tb, ie, te, [seeds[k] for k in chunk], [ii[k] for k in chunk], [ti_same[k] for k in chunk],
                [tlist[ti[k]] for k in chunk],
            )  # fmt: skip
            inst.last_extras = []
            mat = inst.interact(batch).detach()  # (B, T, gh, gw)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / len(chunk)
        score = (ie * te).sum(-1)
        extras = inst.last_extras if len(inst.last_extras) == len(chunk) else [{} for _ in chunk]
        for j, k in enumerate(chunk):
            results.append(
                Interactions(
                    tokens=tb.shown_tokens(j),
                    matrix=mat[j][tb.content_mask[j]],
                    score=float(score[j]),
                    method=cls.name,
                    settings={**settings, "seed": seeds[k]},
                    text=tlist[ti[k]],
                    pixels=px[j],
                    mean=tuple(model.mean),
                    std=tuple(model.std),
                    seconds=dt,
                    input_size=tuple(model.input_size),  # type: ignore[arg-type]
                    extras=extras[j],
                )
            )
    return results[0] if single and len(results) == 1 else results
