"""Shared helpers of the metrics: scoring perturbed inputs, preparing maps, masking tokens.

Conventions used by every metric:

* ``pixels``: ``(B, 3, H, W)`` preprocessed images (the model's normalisation).
* ``texts``: a [`TextBatch`][vlexplain.models.base.TextBatch] with ``B`` rows.
* ``image_maps``: ``(B, H, W)`` raw maps (any other ``(B, h, w)`` size is upsampled bilinearly).
* ``token_maps``: ``(B, T)`` one score per token position of ``texts`` (0 at non-content
  positions); ``token_maps_from_explanations`` builds them from Explanation objects.
* The model score of a pair is the cosine of ``model.encode_image`` and ``model.encode_text``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..models.base import DualEncoder, TextBatch


def check_pairs(pixels: Tensor | None, texts: TextBatch | None) -> int:
    """Validate pixel / text shapes and return the batch size."""
    n = None
    if pixels is not None:
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise InputError(f"pixels must be (B, 3, H, W), got {tuple(pixels.shape)}")
        n = int(pixels.shape[0])
    if texts is not None:
        if n is not None and len(texts) != n:
            raise InputError(f"{n} images but {len(texts)} texts: metrics take zipped pairs")
        n = len(texts)
    if n is None:
        raise InputError("a metric needs pixels or texts")
    return n


def prepare_image_maps(maps: Tensor | None, size: tuple[int, int], n: int, device: torch.device) -> Tensor:
    """(B, h, w) maps -> float (B, H, W) on ``device``; other sizes are upsampled bilinearly."""
    if maps is None:
        raise InputError("this metric needs image maps (B, H, W)")
    if maps.dim() != 3 or maps.shape[0] != n:
        raise InputError(f"image maps must be (B, H, W) with B = {n}, got {tuple(maps.shape)}")
    maps = maps.to(device=device, dtype=torch.float32)
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return maps


def prepare_token_maps(maps: Tensor | None, texts: TextBatch) -> Tensor:
    """(B, T) token maps -> float on the texts' device, checked against ``texts``."""
    if maps is None:
        raise InputError("this metric needs token maps (B, T)")
    if tuple(maps.shape) != tuple(texts.ids.shape):
        raise InputError(
            f"token maps must be (B, T) = {tuple(texts.ids.shape)} like the token ids, got {tuple(maps.shape)}; "
            "use vlexplain.metrics.token_maps_from_explanations to place per-token scores"
        )
    return maps.to(device=texts.ids.device, dtype=torch.float32)


def minmax01(maps: Tensor) -> Tensor:
    """Per-sample min-max scaling of (B, ...) maps to [0, 1]; a constant map becomes all ones.

    Each sample is scaled by its own minimum and maximum (never another row's).
    """
    flat = maps.reshape(maps.shape[0], -1).float()
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    rng = hi - lo
    out = torch.where(rng > 0, (flat - lo) / rng.clamp_min(1e-30), torch.ones_like(flat))
    return out.reshape(maps.shape)


def to_rgb(model: DualEncoder, pixels: Tensor) -> Tensor:
    """Preprocessed pixels -> un-normalised RGB (no clamping, so the round trip is exact)."""
    m = torch.tensor(model.mean, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    s = torch.tensor(model.std, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return pixels * s + m


def from_rgb(model: DualEncoder, rgb: Tensor) -> Tensor:
    """Inverse of ``to_rgb``."""
    m = torch.tensor(model.mean, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    s = torch.tensor(model.std, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb - m) / s


@torch.no_grad()
def embed_images(model: DualEncoder, pixels: Tensor, batch_size: int = 32) -> Tensor:
    """(N, d) unit-norm image embeddings, computed in chunks."""
    pixels = pixels.to(model.device, model.dtype)
    return torch.cat([model.encode_image(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])


@torch.no_grad()
def embed_texts(model: DualEncoder, texts: TextBatch, batch_size: int = 32) -> Tensor:
    """(N, d) unit-norm text embeddings, computed in chunks."""
    n = len(texts)
    out = [model.encode_text(texts.select(list(range(i, min(n, i + batch_size))))) for i in range(0, n, batch_size)]
    return torch.cat(out)


@torch.no_grad()
def image_scores(model: DualEncoder, pixels: Tensor, text_emb: Tensor, batch_size: int = 32) -> Tensor:
    """(N,) cosine of each (perturbed) image with the text embedding of the same row."""
    e = embed_images(model, pixels, batch_size)
    return (e.float() * text_emb.to(e.device).float()).sum(-1)


@torch.no_grad()
def text_scores(model: DualEncoder, texts: TextBatch, image_emb: Tensor, batch_size: int = 32) -> Tensor:
    """(N,) cosine of each (perturbed) text with the image embedding of the same row."""
    e = embed_texts(model, texts, batch_size)
    return (e.float() * image_emb.to(e.device).float()).sum(-1)


def replace_tokens(texts: TextBatch, remove: Tensor, pad_id: int) -> TextBatch:
    """Replace the content tokens where ``remove`` is True by ``pad_id``.

    SOS/EOS/padding positions are never touched (``remove`` is and-ed with ``content_mask``);
    ``attention_mask`` and ``pool_index`` are kept, so causal towers still pool at the true EOS.
    """
    rm = remove.to(texts.ids.device).bool() & texts.content_mask.bool()
    ids = torch.where(rm, torch.full_like(texts.ids, pad_id), texts.ids)
    return TextBatch(
        ids, texts.attention_mask, texts.pool_index, texts.content_mask, texts.tokens, texts.texts, texts.truncated
    )


def repeat_texts(texts: TextBatch, times: int) -> TextBatch:
    """Stack ``times`` copies of the batch (copy-major: row ``k * B + i`` is row ``i``)."""
    idx = list(range(len(texts))) * times
    return texts.select(idx)


def rank_desc(values: Tensor, valid: Tensor | None = None) -> Tensor:
    """(B, N) -> (B, N) rank of every entry in descending order (0 = largest).

    Ties keep index order (stable sort). Entries where ``valid`` is False are ranked last.
    """
    v = values.float()
    if valid is not None:
        v = torch.where(valid.bool(), v, torch.full_like(v, float("-inf")))
    order = torch.sort(v, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ar = torch.arange(v.shape[1], device=v.device).expand_as(order)
    ranks.scatter_(1, order, ar)
    return ranks


def token_maps_from_explanations(explanations: Sequence, texts: TextBatch) -> Tensor:
    """Scatter each Explanation's ``token_scores`` (shown tokens only) back to (B, T) positions.

    Args:
        explanations: one [`Explanation`][vlexplain.attribution.base.Explanation] per row of ``texts``.
        texts: the TextBatch the metric will perturb (same texts, same tokenizer).

    Returns:
        ``(B, T)`` float tensor with each row's scores at its ``content_mask`` positions and 0 elsewhere.
    """
    if len(explanations) != len(texts):
        raise InputError(f"{len(explanations)} explanations for {len(texts)} texts")
    out = torch.zeros(texts.ids.shape, dtype=torch.float32, device=texts.ids.device)
    for i, e in enumerate(explanations):
        if e.token_scores is None:
            raise InputError(f"explanation {i} has no text side (token_scores is None)")
        cm = texts.content_mask[i].bool()
        if int(cm.sum()) != e.token_scores.numel():
            raise InputError(
                f"explanation {i} has {e.token_scores.numel()} token scores but the text has {int(cm.sum())} "
                "content tokens: tokenise the same text with the same model"
            )
        out[i, cm] = e.token_scores.to(out.device, torch.float32)
    return out


def image_maps_from_explanations(explanations: Sequence) -> Tensor:
    """Stack the Explanations' (H, W) ``image_map`` into (B, H, W)."""
    maps = []
    for i, e in enumerate(explanations):
        if e.image_map is None:
            raise InputError(f"explanation {i} has no image side (image_map is None)")
        maps.append(e.image_map.float())
    return torch.stack(maps)


def trapezoid_auc(curves: Tensor, x: Tensor | None = None) -> Tensor:
    """(B, K) curves -> (B,) area by the trapezoid rule (default x: K evenly spaced points on [0, 1])."""
    if x is None:
        x = torch.linspace(0, 1, curves.shape[1], device=curves.device, dtype=curves.dtype)
    return torch.trapezoid(curves, x=x.to(curves.device, curves.dtype), dim=1)
