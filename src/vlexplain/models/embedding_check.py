"""The check every loaded model passes: its two towers give embeddings of one size.

A model whose projection does not match its towers (an invalid configuration that the model's own
forward rejects too, e.g. a SigLIP text head of another width than the image tower) would otherwise
load and then fail inside every method with a raw shape error. ``check_embedding_sizes`` runs each
tower once on a dummy input and refuses such a model in one line.

Transformer blocks keep their input's shape, so on transformer towers the probe runs only the stem
and the head (the blocks would not change the embedding's size); convolutional and hybrid towers,
whose stages change the shape, run in full.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ModelLoadError
from .base import DualEncoder, Tower


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]


def _embedding_size(tower: Tower, x: object) -> int:
    """The size of ``tower``'s embedding of ``x`` (a shape probe; gradients off)."""
    if tower.kind in ("vit", "text"):
        try:
            h = tower.encode(x, stop=-1)  # the stem
            return int(tower.head(h, x).shape[-1])
        except (RuntimeError, ValueError, IndexError):
            pass  # the full run below names the error the model itself gives
    e: Tensor = tower.encode(x)
    return int(e.shape[-1])


def check_embedding_sizes(model: DualEncoder) -> None:
    """Refuse ``model`` (ModelLoadError, one line) when a tower fails on a dummy input or the image
    and text embeddings differ in size."""
    sizes: dict[str, int] = {}
    with torch.no_grad():
        for side in ("image", "text"):
            try:
                x = (
                    torch.zeros(1, 3, *model.input_size, device=model.device, dtype=model.dtype)
                    if side == "image"
                    else model.tokenize(["a photo"])
                )
                sizes[side] = _embedding_size(model.tower(side), x)
            except (RuntimeError, ValueError, IndexError) as e:
                raise ModelLoadError(
                    f"{model.name}: the {side} tower does not produce an embedding ({_first_line(e)}); "
                    "its projection does not match the tower (an invalid configuration)"
                ) from None
    if sizes["image"] != sizes["text"]:
        raise ModelLoadError(
            f"{model.name}: the image embedding has {sizes['image']} dimensions and the text embedding "
            f"{sizes['text']}: the projections do not match the towers (an invalid configuration that the "
            "model's own forward rejects too)"
        )
