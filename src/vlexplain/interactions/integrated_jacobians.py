"""``integrated_jacobians``: exCLIP's second-order token x patch interactions.

For a text hidden state ``t`` at the input of text block ``text_layer`` and an image hidden state
``v`` at the input of image block ``image_layer``, each with a reference (``r_t``, ``r_v``) and the
straight path between them, the interaction of token ``i`` with patch ``j`` is

    A[i, j] = sum_d Ct[d, i] * Cv[d, j] / (|e_t| |e_v|)

where ``C[d, p]`` is the tower's integrated Jacobian contracted with the path's direction at
position ``p`` (see ``paths``) and ``e_t``, ``e_v`` the two embeddings. Summed over every token
and patch (start/end tokens and the class token included) ``A`` approximates
``(e_t - e_t(r_t)) . (e_v - e_v(r_v)) / (|e_t| |e_v|)``: the cosine less the two reference
terms plus the reference-reference term (completeness; recorded in each result's ``extras``).

Reference choices as released: the image reference is an all-zero preprocessed image; the text
reference keeps the start token(s), puts one token of id 0 where the text was and the end token(s)
after it, then padding. Each tower's Jacobian depends only on its own input, so pairs that share an
image or a text compute it once.

Paper: Möller, Tilli, Vu, Padó. Explaining Caption-Image Interactions in CLIP Models with
Second-Order Attributions. TMLR 2025 (released as the ``exclip`` package).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..attribution.perturbation import gaussian_blur
from ..errors import MethodError
from ..models.base import DualEncoder, TextBatch, Tower
from .base import InteractionBatch, InteractionMethod, register_interaction
from .paths import MODES, Mode, TowerPath, integrated_path

ImageBaseline = Literal["zeros", "blur", "mean"]
TextBaseline = Literal["one_token", "pad"]
IMAGE_BASELINES: tuple[ImageBaseline, ...] = ("zeros", "blur", "mean")
TEXT_BASELINES: tuple[TextBaseline, ...] = ("one_token", "pad")


def image_reference(pixels: Tensor, kind: str) -> Tensor:
    """(B, 3, H, W) reference images: ``zeros`` (all-zero preprocessed tensor, the dataset mean
    colour), ``mean`` (each image's own mean colour) or ``blur`` (Gaussian, sigma = 1/16 of the
    longer side)."""
    if kind == "zeros":
        return torch.zeros_like(pixels)
    if kind == "mean":
        return pixels.mean((2, 3), keepdim=True).expand_as(pixels).clone()
    return gaussian_blur(pixels, max(pixels.shape[-2:]) / 16.0)


def text_reference(texts: TextBatch, kind: str, pad_id: int) -> TextBatch:
    """The reference of each text, laid out as the tower reads it.

    ``pad``: every shown token replaced by the pad token (same positions). ``one_token``: the
    start token(s), one token of id 0, the end token(s), then padding to the same length; the
    pooled position moves with the end token (a fixed position in the padding stays).
    """
    if kind == "pad":
        ids = torch.where(texts.content_mask, torch.full_like(texts.ids, pad_id), texts.ids)
        return TextBatch(ids, texts.attention_mask, texts.pool_index, texts.content_mask, texts.tokens, texts.texts)
    B, T = texts.ids.shape
    ids = torch.full_like(texts.ids, pad_id)
    am = torch.zeros_like(texts.attention_mask)
    cm = torch.zeros_like(texts.content_mask)
    pool = texts.pool_index.clone()
    for r in range(B):  # one row per text: a handful of index moves
        pos = texts.content_mask[r].nonzero()[:, 0]
        a, b = int(pos[0]), int(pos[-1]) + 1
        rest = T - b
        row_ids, row_am = texts.ids[r], texts.attention_mask[r]
        ids[r, :a], am[r, :a] = row_ids[:a], row_am[:a]
        ids[r, a], am[r, a], cm[r, a] = 0, 1, True
        ids[r, a + 1 : a + 1 + rest], am[r, a + 1 : a + 1 + rest] = row_ids[b:], row_am[b:]
        fill = int(row_am[-1]) if int(row_ids[-1]) == pad_id else 0  # padding as the text's padding
        am[r, a + 1 + rest :] = fill
        p = int(texts.pool_index[r])
        if a <= p < b:
            pool[r] = a
        elif p >= b and int(row_ids[p]) != pad_id:  # an end token: it moved
            pool[r] = p - (b - a - 1)
    return TextBatch(ids, am, pool, cm, texts.tokens, texts.texts)


def check_block(tower: Tower, layer: int | None, what: str) -> int:
    """Resolve a block index whose input is taken (None: the last block); MethodError if out of range."""
    n = tower.num_blocks
    if layer is None:
        return n - 1
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise MethodError(f"{what} {layer!r} is out of range for the {tower.modality} tower (0..{n - 1})")
    return layer


def path_options(steps: int, mode: str, chunk: int) -> None:
    """Check the options shared by the integrated-Jacobian methods (one-line MethodError)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MethodError(f"steps must be an integer >= 1, got {steps!r}")
    if mode not in MODES:
        raise MethodError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise MethodError(f"chunk must be an integer >= 1, got {chunk!r}")


def to_grid(tower: Tower, scores: Tensor, hidden_shape: tuple[int, ...]) -> Tensor:
    """(B, R, P) scores over an image tower's positions -> (B, R, gh, gw) (prefix tokens dropped)."""
    B, R, P = scores.shape
    if len(hidden_shape) == 3:  # a (C, H, W) feature map
        return scores.view(B, R, hidden_shape[1], hidden_shape[2])
    s = scores[..., tower.num_prefix_tokens :]
    try:
        gh, gw = tower.grid_size(s.shape[-1])
    except ValueError as e:
        raise MethodError(f"the image tower's tokens at this layer do not form its patch grid ({e})") from None
    return s.reshape(B, R, gh, gw)


@register_interaction
class IntegratedJacobians(InteractionMethod):
    """exCLIP's integrated Jacobians: second-order token x patch interactions of the cosine.

    Args:
        model: the dual encoder.
        image_layer: image block whose input the interaction is taken at (0-based; None: the
            last block, the released default for 12-block towers).
        text_layer: likewise for the text tower.
        steps: points on each path (10, as released).
        image_baseline: ``zeros`` (released), ``blur`` or ``mean``.
        text_baseline: ``one_token`` (released: start token, one token of id 0, end token) or ``pad``.
        mode: ``auto``, ``forward`` or ``reverse`` (how the Jacobians are batched; same result).
        chunk: Jacobian products per batched pass (memory vs speed).

    Paper: Möller et al. Explaining Caption-Image Interactions in CLIP Models with Second-Order
    Attributions. TMLR 2025.

    Example:
        >>> vx.interactions(model, "bus.jpg", "a red bus", method="integrated_jacobians", steps=20)
    """

    name = "integrated_jacobians"
    summary = "exCLIP integrated Jacobians: token x patch second-order attributions of the cosine"
    paper = (
        "Möller et al. Explaining Caption-Image Interactions in CLIP Models with Second-Order Attributions. TMLR 2025"
    )
    needs_gradients = True

    def __init__(
        self,
        model: DualEncoder,
        image_layer: int | None = None,
        text_layer: int | None = None,
        steps: int = 10,
        image_baseline: ImageBaseline = "zeros",
        text_baseline: TextBaseline = "one_token",
        mode: Mode = "auto",
        chunk: int = 32,
    ):
        super().__init__(model)
        self.image_layer = check_block(model.image, image_layer, "image_layer")
        self.text_layer = check_block(model.text, text_layer, "text_layer")
        path_options(steps, mode, chunk)
        if image_baseline not in IMAGE_BASELINES:
            raise MethodError(f"image_baseline must be one of {', '.join(IMAGE_BASELINES)}, got {image_baseline!r}")
        if text_baseline not in TEXT_BASELINES:
            raise MethodError(f"text_baseline must be one of {', '.join(TEXT_BASELINES)}, got {text_baseline!r}")
        self.steps, self.mode, self.chunk = steps, mode, chunk
        self.image_baseline, self.text_baseline = image_baseline, text_baseline

    def paths(self, batch: InteractionBatch) -> tuple[TowerPath, list[int], TowerPath, list[int]]:
        """Each tower's integrated Jacobian for its distinct inputs, and each pair's input row."""
        m = self.model
        img_first, img_of = batch.distinct("image")
        txt_first, txt_of = batch.distinct("text")
        px = batch.pixels[img_first]
        tb = batch.texts.select(txt_first)
        ip = integrated_path(
            m.image, px, image_reference(px, self.image_baseline), self.image_layer, self.steps, self.mode, self.chunk
        )
        ref = text_reference(tb, self.text_baseline, m.pad_token_id)
        tp = integrated_path(m.text, tb, ref, self.text_layer, self.steps, self.mode, self.chunk)
        return ip, img_of, tp, txt_of

    def full_matrix(self, batch: InteractionBatch) -> tuple[Tensor, list[dict[str, float]]]:
        """(B, T, P) over every token position and image position, and each pair's completeness terms."""
        ip, img_of, tp, txt_of = self.paths(batch)
        ci, ct = ip.contracted[img_of], tp.contracted[txt_of]  # (B, d, P), (B, d, T)
        ei, et = ip.embedding[img_of], tp.embedding[txt_of]
        norms = ei.norm(dim=-1) * et.norm(dim=-1)  # (B,)
        full = torch.einsum("bdt,bdp->btp", ct, ci) / norms[:, None, None]
        expected = ((et - tp.reference[txt_of]) * (ei - ip.reference[img_of])).sum(-1) / norms
        extras = [{"total": float(full[j].sum()), "expected_total": float(expected[j])} for j in range(full.shape[0])]
        self.hidden_shape = ip.hidden_shape
        return full, extras

    def interact(self, batch: InteractionBatch) -> Tensor:
        full, self.last_extras = self.full_matrix(batch)
        return to_grid(self.model.image, full, self.hidden_shape)
