"""The ``contrast`` target in ``explain``: versus texts and images, checked, broadcast and embedded.

"Why this text rather than that one" explains ``cos(image, text) - cos(image, versus)``; "why
image A ranks above image B for this text" explains ``cos(A, text) - cos(B, text)`` and gives a
map on each image. How each method kind explains a difference is the method's ``contrast_form``
(listed in the documentation's methods page).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..images import ImageLike
from ..models.base import DualEncoder
from .targets import Contrast

VersusText = str | Sequence[str]
VersusImage = ImageLike | Sequence[ImageLike]


def resolve_target(target: str | None, versus: Any, versus_image: Any) -> str:
    """The target kind ``explain`` runs (None: ``contrast`` when a versus is given, else ``cosine``);
    InputError for arguments that contradict each other."""
    has_text, has_image = versus is not None, versus_image is not None
    if has_text and has_image:
        raise InputError("give versus (a text) or versus_image (an image), not both: one contrast at a time")
    if target is None:
        return "contrast" if has_text or has_image else "cosine"
    if target == "contrast" and not (has_text or has_image):
        raise InputError(
            "target='contrast' needs versus='another text' (why this text rather than that one) "
            "or versus_image=... (why this image ranks above that one)"
        )
    if target != "contrast" and (has_text or has_image):
        raise InputError(f"versus / versus_image explain a difference of scores: use target='contrast', not {target!r}")
    return target


@dataclass
class Versus:
    """The other side of every pair's difference (after broadcasting).

    Attributes:
        kind: ``text`` (versus texts) or ``image`` (versus images).
        texts: one versus text per pair (``text``).
        pixels: (n_pairs, 3, H, W) one preprocessed versus image per pair (``image``).
        names: one label per pair: the versus text or the versus image's name.
    """

    kind: Literal["text", "image"]
    names: list[str]
    texts: list[str] | None = None
    pixels: Tensor | None = None

    def contrast(self, model: DualEncoder, chunk: list[int]) -> Contrast:
        """The [`Contrast`][vlexplain.attribution.targets.Contrast] of the pairs ``chunk`` (their versus embeddings)."""
        with torch.no_grad():
            if self.texts is not None:
                e = model.text.encode(model.tokenize([self.texts[k] for k in chunk]))
                return Contrast(versus_text=F.normalize(e, dim=-1))
            assert self.pixels is not None
            return Contrast(versus_image=F.normalize(model.image.encode(self.pixels[chunk]), dim=-1))


def bind_versus(
    model: DualEncoder,
    versus: VersusText | None,
    versus_image: VersusImage | None,
    pixels: Tensor,
    image_of: list[int],
    texts: list[str],
    prepare: Callable[[DualEncoder, Any], Tensor],
) -> Versus:
    """Check the versus texts or images against the pairs and broadcast them (one, or one per pair).

    Args:
        pixels: (N, 3, H, W) the explained images; ``image_of[k]`` is pair k's image.
        texts: the explained text of every pair.
        prepare: images -> (N, 3, H, W) preprocessed pixels (``explain``'s reader of images).
    """
    from ..textclean import clean_texts

    n = len(texts)
    if versus is not None:
        vt = [versus] if isinstance(versus, str) else list(versus)
        if not vt:
            raise InputError("versus: no texts given")
        try:
            vt = clean_texts(vt)
        except InputError as e:
            raise InputError(f"versus: {e}") from None
        per = _per_pair(vt, n, "versus texts")
        for v, t in zip(per, texts):
            if v.strip() == t.strip():
                raise InputError(f"the versus text {v!r} is the explained text: give another text to contrast with")
        return Versus("text", list(per), texts=list(per))
    assert versus_image is not None
    many = isinstance(versus_image, Sequence) and not isinstance(versus_image, (str, os.PathLike))
    items: list[Any] = list(versus_image) if many else [versus_image]  # type: ignore[arg-type]
    if not items:
        raise InputError("versus_image is empty: give an image to contrast with")
    vp = prepare(model, versus_image if isinstance(versus_image, Tensor) else items)
    idx = _per_pair(list(range(vp.shape[0])), n, "versus images")
    names = [_image_name(items[i] if len(items) == vp.shape[0] else None, i) for i in range(vp.shape[0])]
    for k, i in enumerate(idx):
        if torch.equal(vp[i], pixels[image_of[k]]):
            raise InputError(f"the versus image {names[i]} is the explained image: give another image to contrast with")
    return Versus("image", [names[i] for i in idx], pixels=vp[idx])


def _per_pair(values: list, n: int, what: str) -> list:
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise InputError(f"{len(values)} {what} for {n} image-text pairs: give one, or one per pair")
    return values


def _image_name(item: Any, i: int) -> str:
    """A versus image's name for titles: its file name, else ``the versus image`` (numbered when several)."""
    if isinstance(item, (str, os.PathLike)):
        return Path(item).name
    return "the versus image" if i == 0 else f"versus image {i + 1}"
