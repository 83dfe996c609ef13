"""Pieces the protocol benchmarks share: the methods to run, images in the model's frame, the maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ...errors import InputError, MethodError

if TYPE_CHECKING:
    from torch import Tensor

#: reference maps that ignore the model, always run beside the methods
REFERENCES = ("random", "center")


def select_methods(model: Any, names: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The methods to run on the image side: the named ones (a method the image tower cannot run is
    a one-line error) or every registered one that applies; the references are added."""
    from ...attribution.base import brief_reason, get_method, list_methods

    skipped: dict[str, str] = {}
    if names is None:
        chosen = []
        for n in list_methods():
            why = get_method(n).why_not(model, "image")
            if why is None:
                chosen.append(n)
            else:
                skipped[n] = brief_reason(why)
    else:
        chosen = list(dict.fromkeys(names))
        for n in chosen:
            why = get_method(n).why_not(model, "image")
            if why is not None:
                raise MethodError(why)
    return [*[n for n in chosen if n not in REFERENCES], *REFERENCES], skipped


def squash(
    model: Any,
    image: Image.Image,
    size: tuple[int, int] | None = None,
    resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> Tensor:
    """(3, H, W) normalised pixels of ``image`` resized to ``size`` (default: the model's input) without
    cropping, as the published protocols' ``Resize((H, W))``."""
    import torch

    h, w = size or tuple(model.input_size)
    x = torch.from_numpy(np.asarray(image.convert("RGB").resize((w, h), resample), dtype=np.float32) / 255.0)
    x = x.permute(2, 0, 1)
    mean = torch.tensor(model.mean).view(3, 1, 1)
    std = torch.tensor(model.std).view(3, 1, 1)
    return ((x - mean) / std).to(model.device, model.dtype)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer (H, W) array to ``size`` (H, W)."""
    im = Image.fromarray(mask.astype(np.int32), mode="I")
    return np.asarray(im.resize((size[1], size[0]), Image.Resampling.NEAREST)).astype(np.int64)


def image_maps(model: Any, pixels: Tensor, texts: list[str], method: str, seed: int, options: dict[str, Any]) -> Tensor:
    """(len(texts), H, W) image maps of one image (``pixels`` (3, H, W)) for each text."""
    import torch

    from ...attribution.api import explain

    if not texts:
        return torch.zeros(0, *pixels.shape[-2:])
    px = pixels[None].expand(len(texts), -1, -1, -1)
    exps = explain(model, px, texts, method=method, seed=[seed] * len(texts), sides=["image"], **options)
    exps = exps if isinstance(exps, list) else [exps]
    return torch.stack([e.image_map.float() for e in exps if e.image_map is not None])


def refuse_metrics(kind: str, metrics: Sequence[str] | None, metric_options: dict | None) -> None:
    """The protocols compute their own metrics: ``--metrics``, ``--sanity`` and ``--metric-options``
    are one-line errors (before anything is read or written)."""
    if metrics or metric_options:
        flag = "--metric-options" if metric_options and not metrics else "--metrics / --sanity"
        raise InputError(f"benchmark {kind} computes its published protocol's metrics; {flag} does not apply")


def require_model(model: Any, kind: str) -> Any:
    if model is None:
        raise InputError(f"benchmark {kind} needs --model (a model spec, e.g. open_clip:ViT-B-16)")
    return model
