"""Confidence drop / increase (Chattopadhay et al., Grad-CAM++, 2018) for images and texts.

For a pair with original score ``Y`` (cosine of the embeddings) and score ``O`` after keeping
only what the map marks as relevant:

* ``confidence_drop``     = ``100 * max(0, Y - O) / Y``  (per pair; the dataset value is the mean).
  Undefined (NaN) where ``Y <= 0``: the normalisation assumes a positive score.
* ``confidence_increase`` = ``100 * [O > Y]``  (per pair; the mean is the percentage of pairs).
* ``m2ib_drop``           = ``100 * max(0, Y - O)``  — the un-normalised drop reported by the M2IB
  evaluation (pytorch-grad-cam's ``DropInConfidence`` times 100). It is a different quantity from
  ``confidence_drop`` and is kept under its own name.

Perturbations. The M2IB evaluation script passes one 2-D map where a batch is expected (every
image is masked with its map's first row), multiplies the normalised tensor, and for texts drops
SOS/EOS, multiplies the token ids by a 0/1 mask (id 0 is a real token) and so pools at the wrong
position. None of that is reproduced here:

* Image: each sample's own map is min-max scaled to [0, 1] (a constant map becomes all ones) and
  multiplies the un-normalised [0, 1] image, which is then normalised again
  (``multiply_in="rgb"``). ``multiply_in="input"`` multiplies the preprocessed tensor instead,
  as pytorch-grad-cam's ``CamMultImageConfidenceChange`` does (masked pixels become the dataset
  mean colour rather than black).
* Text: content tokens whose map value is below the median of that text's content-token values
  (linear interpolation, like ``numpy.percentile(., 50)``) are replaced by the pad token id
  (tokens equal to the median stay, so a constant map changes nothing);
  SOS/EOS are kept and the tower pools at the true EOS (``pool_index`` unchanged;
  ``attention_mask`` unchanged, so mean-pooled towers see the pad tokens).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import InputError
from ..models.base import DualEncoder, TextBatch
from ._common import (
    check_pairs,
    embed_images,
    embed_texts,
    image_scores,
    minmax01,
    prepare_image_maps,
    prepare_token_maps,
    replace_tokens,
    text_scores,
    to_rgb,
)


def confidence_from_scores(original: Tensor, perturbed: Tensor) -> dict[str, Tensor]:
    """Per-pair confidence metrics from original scores ``Y`` and perturbed scores ``O`` (both (B,))."""
    y, o = original.float(), perturbed.float()
    gap = (y - o).clamp_min(0)
    drop = torch.where(y > 0, 100 * gap / y.clamp_min(1e-12), torch.full_like(y, float("nan")))
    return {
        "confidence_drop": drop,
        "confidence_increase": 100 * (o > y).float(),
        "m2ib_drop": 100 * gap,
        "score": y,
        "perturbed_score": o,
    }


def mask_image(
    model: DualEncoder, pixels: Tensor, image_maps: Tensor, multiply_in: Literal["rgb", "input"] = "rgb"
) -> Tensor:
    """Multiply each image by its own map scaled to [0, 1] (see the module docstring)."""
    m = minmax01(image_maps)[:, None].to(pixels.dtype)
    if multiply_in == "rgb":
        # from_rgb(rgb * m) written as pixels - (1 - m) * rgb / std: exact where m == 1
        std = torch.tensor(model.std, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        return pixels - (1 - m) * to_rgb(model, pixels) / std
    if multiply_in == "input":
        return pixels * m
    raise InputError(f"multiply_in must be 'rgb' or 'input', got {multiply_in!r}")


def median_token_mask(texts: TextBatch, token_maps: Tensor, pad_id: int) -> TextBatch:
    """Replace content tokens whose map value is below their text's content-token median by ``pad_id``."""
    cm = texts.content_mask.bool()
    if bool((cm.sum(1) == 0).any()):
        raise InputError("a text has no content tokens to perturb")
    vals = torch.where(cm, token_maps.float(), torch.full_like(token_maps, float("nan"), dtype=torch.float32))
    med = torch.nanquantile(vals, 0.5, dim=1, keepdim=True)
    return replace_tokens(texts, cm & (token_maps.float() < med), pad_id)


@torch.no_grad()
def confidence_image(
    model: DualEncoder,
    pixels: Tensor,
    texts: TextBatch,
    image_maps: Tensor,
    *,
    multiply_in: Literal["rgb", "input"] = "rgb",
    batch_size: int = 32,
) -> dict[str, Tensor]:
    """Image-side confidence drop / increase.

    Args:
        model: the dual encoder.
        pixels: (B, 3, H, W) preprocessed images.
        texts: B texts (the pair partners).
        image_maps: (B, H, W) raw maps (other sizes are upsampled).
        multiply_in: "rgb" (default) or "input" (see the module docstring).
        batch_size: images per forward pass.

    Returns:
        dict of (B,) tensors: ``confidence_drop``, ``confidence_increase``, ``m2ib_drop`` (all in %),
        ``score`` (Y) and ``perturbed_score`` (O).
    """
    n = check_pairs(pixels, texts)
    pixels = pixels.to(model.device, model.dtype)
    maps = prepare_image_maps(image_maps, (pixels.shape[-2], pixels.shape[-1]), n, pixels.device)
    t_emb = embed_texts(model, texts, batch_size)
    y = image_scores(model, pixels, t_emb, batch_size)
    o = image_scores(model, mask_image(model, pixels, maps, multiply_in), t_emb, batch_size)
    return confidence_from_scores(y, o)


@torch.no_grad()
def confidence_text(
    model: DualEncoder,
    pixels: Tensor,
    texts: TextBatch,
    token_maps: Tensor,
    *,
    batch_size: int = 32,
) -> dict[str, Tensor]:
    """Text-side confidence drop / increase (tokens below the median replaced by the pad token).

    Args:
        model: the dual encoder.
        pixels: (B, 3, H, W) preprocessed images (the pair partners).
        texts: B tokenised texts.
        token_maps: (B, T) scores per token position (0 at non-content positions).
        batch_size: texts per forward pass.

    Returns:
        the same keys as ``confidence_image``.
    """
    check_pairs(pixels, texts)
    maps = prepare_token_maps(token_maps, texts)
    i_emb = embed_images(model, pixels, batch_size)
    y = text_scores(model, texts, i_emb, batch_size)
    o = text_scores(model, median_token_mask(texts, maps, model.pad_token_id), i_emb, batch_size)
    return confidence_from_scores(y, o)
