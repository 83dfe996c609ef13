"""Concept-level explanations: one map per (image, concept prompt), differentiable if asked.

DEAL (Li, Ma, Peng, ECCV 2024) explains an image of class ``c`` with a category map ``h_c`` (the
image against c's prompt) and concept maps ``h_1..h_K`` (the image against each descriptor's
prompt). The maps are the gradient-weighted attention relevance of Chefer et al. at the last
block of a ViT image tower::

    A = attention probabilities of the last block          (B, heads, T, T)
    G = d cos(image_emb, text_emb) / d A                   (B, heads, T, T)
    R = I + mean_heads(clamp(G * A, min=0)) @ I            (B, T, T)
    map = R[CLS, patches] on the patch grid, then min-max normalised per map

The score explained is the cosine similarity; the released code explains the logit
(``logit_scale * cosine``), which scales ``G`` by a positive constant and gives the same maps after
min-max normalisation.

``G`` is computed with ``torch.autograd.grad(..., create_graph=create_graph)``: with
``create_graph=True`` the maps stay in the autograd graph, so losses on them train the model
(the released DEAL code detaches them, so its explanation losses never reach the model).

Tower variants (documented choices):

* SigLIP-style ViT towers without a CLS token: the map is the mean over query rows of
  ``R[:, patches]``.
* CNN image towers (no attention): the differentiable analogue is Grad-CAM on the last block's
  feature map, ``relu(sum_c mean_xy(dS/dF_c) * F_c)``, with the same ``create_graph`` semantics.

Only the last block and the head run once per (image, text) pair; everything before the last
block runs once per image.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError, MethodError
from ..models.base import DualEncoder, TextBatch
from .sets import CATEGORY_TEMPLATE, CONCEPT_TEMPLATE

if TYPE_CHECKING:
    from .sets import ConceptSet

#: name of the built-in differentiable relevance (any registered vlexplain method name also works)
DEAL_RELEVANCE = "deal"


@dataclass(frozen=True)
class Templates:
    """Prompt templates. ``{class}`` is the class name, ``{descriptor}`` a concept descriptor."""

    category: str = CATEGORY_TEMPLATE  # prompt of the category map and of standard zero-shot
    concept: str = CONCEPT_TEMPLATE  # prompt of each concept map

    def category_prompt(self, cls: str) -> str:
        return self.category.format(**{"class": cls})

    def concept_prompt(self, cls: str, descriptor: str) -> str:
        return self.concept.format(**{"class": cls, "descriptor": descriptor})


#: the prompts of the released DEAL code: the bare class name and the bare descriptor
RELEASED_TEMPLATES = Templates("{class}", "{descriptor}")


def minmax(maps: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-map min-max normalisation over the last two dims: ``(h - min) / (max - min + eps)``."""
    flat = maps.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    hi = flat.max(-1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(maps)


def up(x: Tensor) -> Tensor:
    """Half-precision tensors -> fp32; fp32 and fp64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _unit(x: Tensor) -> Tensor:
    return F.normalize(up(x), dim=-1)


def relevance_from_embeddings(
    model: DualEncoder,
    pixels: Tensor,
    text_emb: Tensor,
    create_graph: bool = False,
    normalize: bool = True,
    return_image_emb: bool = False,
) -> tuple[Tensor, ...]:
    """DEAL relevance maps for each image against ``r`` text embeddings.

    Args:
        model: the dual encoder.
        pixels: (B, 3, H, W) preprocessed images.
        text_emb: (B * r, d) text embeddings; rows ``i*r .. i*r+r-1`` belong to image ``i``.
            Keep them in the graph to let losses reach the text tower.
        create_graph: keep the maps differentiable w.r.t. the model's parameters.
        normalize: min-max normalise each map.
        return_image_emb: also return the (B, d) un-normalised image embeddings (in the graph
            when ``create_graph``), e.g. for a prediction loss without a second forward pass.

    Returns:
        ``(maps (B*r, gh, gw), scores (B*r,))`` — scores are the cosine similarities explained —
        and the image embeddings if asked.
    """
    B, N = pixels.shape[0], text_emb.shape[0]
    if N % B:
        raise InputError(f"{N} texts for {B} images: each image needs the same number of texts")
    r = N // B
    tower = model.image
    last = tower.num_blocks - 1
    captured: dict[str, Tensor | None] = {}

    def grab(i: int, h: Tensor, attn: Tensor | None) -> None:
        if i == last:
            captured["a"] = attn if tower.kind == "vit" else h

    with torch.set_grad_enabled(create_graph):
        h = tower.encode(pixels, stop=last - 1)  # (B, T, D) or (B, C, h, w): once per image
    with torch.enable_grad():
        if not (create_graph and h.requires_grad):
            h = h.detach().requires_grad_(True)  # the attention must be in a graph
        if r > 1:
            h = h.repeat_interleave(r, 0)
            pixels = pixels.repeat_interleave(r, 0)
        emb = tower.encode(pixels, start=last - 1, hidden=h, on_block=grab, need_attn=tower.kind == "vit")
        scores = (_unit(emb) * _unit(text_emb)).sum(-1)  # (N,)
        a = captured["a"]
        if a is None:
            raise MethodError(f"the last block of this {tower.modality} tower gave no attention probabilities")
        (g,) = torch.autograd.grad(scores.sum(), a, create_graph=create_graph)
        if tower.kind == "vit":
            maps = _attention_relevance(tower, a, g, h)
        else:
            w = up(g).mean((2, 3), keepdim=True)  # (N, C, 1, 1)
            maps = (w * up(a)).sum(1).clamp(min=0)  # (N, h, w)
    if normalize:
        maps = minmax(maps)
    img = emb[::r]  # rows of one image are identical
    if not create_graph:
        maps, scores, img = maps.detach(), scores.detach(), img.detach()
    return (maps, scores, img) if return_image_emb else (maps, scores)


def _attention_relevance(tower, attn: Tensor, grad: Tensor, hidden: Tensor) -> Tensor:
    cam = (up(grad) * up(attn)).clamp(min=0).mean(1)  # (N, T, T)
    eye = torch.eye(cam.shape[-1], device=cam.device, dtype=cam.dtype)
    rel = eye + cam @ eye  # R = I + mean_h(clamp(G*A, 0)) @ I
    if tower.num_prefix_tokens > 0:
        row = rel[:, 0]  # the CLS token's relevance to every token: (N, T)
    else:
        row = rel.mean(1)  # no CLS: mean over query rows
    return tower.token_scores_to_grid(row, hidden)


def _as_textbatch(model: DualEncoder, texts: Sequence[str] | TextBatch) -> TextBatch:
    if isinstance(texts, TextBatch):
        return texts
    if isinstance(texts, str) or not len(texts):
        raise InputError("texts must be a non-empty list of strings (one or more per image)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overlong prompts are rejected when concept sets load
        return model.tokenize(list(texts))


def concept_maps(
    model: DualEncoder,
    pixels: Tensor,
    texts: Sequence[str] | TextBatch,
    create_graph: bool = False,
    *,
    method: str = DEAL_RELEVANCE,
    normalize: bool = True,
    **options,
) -> Tensor:
    """Explanation maps of image-text pairs, min-max normalised per map.

    Args:
        model: the dual encoder.
        pixels: (B, 3, H, W) preprocessed images.
        texts: B * r texts (list or TextBatch); image ``i`` is paired with texts ``i*r .. i*r+r-1``
            (r = 1: pairs are zipped).
        create_graph: ``method="deal"`` only: keep the maps differentiable w.r.t. the parameters.
        method: ``"deal"`` (last-block gradient-weighted attention relevance, differentiable) or the
            name of any registered vlexplain method (e.g. "chefer", "gradcam"; evaluation only).
        normalize: min-max normalise each map.
        **options: options of a registered method.

    Returns:
        (B * r, gh, gw) maps.

    Example:
        >>> h = concept_maps(model, pixels, ["a photo of a cardinal."] * len(pixels), create_graph=True)
    """
    if pixels.dim() != 4:
        raise InputError(f"pixels must be (B, 3, H, W), got {tuple(pixels.shape)}")
    tb = _as_textbatch(model, texts)
    if method == DEAL_RELEVANCE:
        if options:
            raise MethodError(f"unknown option(s) for {DEAL_RELEVANCE}: {', '.join(sorted(options))}")
        with torch.set_grad_enabled(create_graph):
            te = model.text.encode(tb)
        return relevance_from_embeddings(model, pixels, te, create_graph, normalize)[0]
    if create_graph:
        raise MethodError(f"create_graph=True needs method={DEAL_RELEVANCE!r}; {method!r} is for evaluation only")
    return _registered_maps(model, pixels, tb, method, normalize, **options)


def _registered_maps(
    model: DualEncoder, pixels: Tensor, tb: TextBatch, method: str, normalize: bool, **options
) -> Tensor:
    from ..attribution.api import explain

    B, N = pixels.shape[0], len(tb)
    if N % B:
        raise InputError(f"{N} texts for {B} images: each image needs the same number of texts")
    px = pixels.repeat_interleave(N // B, 0)
    exps = explain(model, px, list(tb.texts), method=method, sides=["image"], **options)
    exps = exps if isinstance(exps, list) else [exps]
    maps = torch.stack([e.patch_map for e in exps]).float()  # type: ignore[misc]
    return minmax(maps) if normalize else maps


@dataclass
class ConceptMaps:
    """Category and concept maps of a batch of images.

    Attributes:
        category: (B, gh, gw) maps of each image against its class prompt.
        concepts: (B, K, gh, gw) maps against each concept prompt (padding rows are zeros).
        mask: (B, K) True where a concept exists (classes may have fewer than K descriptors).
        scores: (B, 1 + K) cosine of each image with its class prompt, then its concept prompts.
        texts: per image, the class prompt followed by its concept prompts.
        image_emb: (B, d) un-normalised image embeddings (``method="deal"``; in the graph when
            ``create_graph``).
    """

    category: Tensor
    concepts: Tensor
    mask: Tensor
    scores: Tensor
    texts: list[list[str]]
    image_emb: Tensor | None = None


def deal_maps(
    model: DualEncoder,
    pixels: Tensor,
    classes: Sequence[str],
    concepts: ConceptSet,
    *,
    k: int | None = None,
    templates: Templates = Templates(),
    create_graph: bool = False,
    method: str = DEAL_RELEVANCE,
    **options,
) -> ConceptMaps:
    """Category map and K concept maps for every image, all (image, prompt) pairs in one batch.

    Args:
        model: the dual encoder.
        pixels: (B, 3, H, W) preprocessed images.
        classes: the class name of each image (keys of ``concepts``).
        concepts: the concept set.
        k: descriptors per class (default: all).
        templates: the prompt templates.
        create_graph: keep the maps differentiable (``method="deal"`` only).
        method: ``"deal"`` or a registered method name (evaluation only).

    Returns:
        A ``ConceptMaps``.
    """
    B = pixels.shape[0]
    if len(classes) != B:
        raise InputError(f"{B} images but {len(classes)} class names")
    descs = [concepts.descriptors(c, k) for c in classes]
    K = max(len(d) for d in descs)
    texts, mask = [], torch.zeros(B, K, dtype=torch.bool)
    for i, (c, ds) in enumerate(zip(classes, descs)):
        row = [templates.category_prompt(c)] + [templates.concept_prompt(c, d) for d in ds]
        mask[i, : len(ds)] = True
        texts.append(row)
    flat = [t for row in texts for t in row + [row[-1]] * (K + 1 - len(row))]  # pad to 1 + K per image
    uniq = list(dict.fromkeys(flat))
    pos = {t: j for j, t in enumerate(uniq)}
    if method == DEAL_RELEVANCE:
        if options:
            raise MethodError(f"unknown option(s) for {DEAL_RELEVANCE}: {', '.join(sorted(options))}")
        tb = _as_textbatch(model, uniq)
        with torch.set_grad_enabled(create_graph):
            te = model.text.encode(tb)  # each distinct prompt once
        te = te[torch.tensor([pos[t] for t in flat], device=te.device)]
        maps, scores, img = relevance_from_embeddings(model, pixels, te, create_graph, return_image_emb=True)
    else:
        img = None
        maps = concept_maps(model, pixels, flat, method=method, **options)
        with torch.no_grad():
            te = model.encode_text(_as_textbatch(model, flat))
            ie = model.encode_image(pixels).repeat_interleave(K + 1, 0)
            scores = (_unit(ie) * _unit(te)).sum(-1)
    maps = maps.view(B, K + 1, *maps.shape[-2:])
    m = mask.to(maps.device)
    conc = maps[:, 1:] * m[:, :, None, None].to(maps.dtype)
    return ConceptMaps(maps[:, 0], conc, m, scores.view(B, K + 1), texts, img)


def plot_concept_maps(
    rgb: Tensor,
    category: Tensor,
    concepts: Tensor,
    titles: Sequence[str],
    path: str | Path,
    alpha: float = 0.5,
) -> Path:
    """Save a figure: the image, the category map and each concept map, side by side.

    Args:
        rgb: (3, H, W) image in [0, 1] (``model.denormalize(pixels)``).
        category: (gh, gw) category map.
        concepts: (K, gh, gw) concept maps.
        titles: 1 + K titles (the category prompt, then the concept prompts).
        path: PNG file to write.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..viz.core import overlay

    maps = [category] + list(concepts)
    n = 1 + len(maps)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.9))
    axes[0].imshow(rgb.detach().float().cpu().permute(1, 2, 0).numpy())
    axes[0].set_title("image", fontsize=8)
    for ax, m, t in zip(axes[1:], maps, titles):
        ax.imshow(overlay(rgb, m.detach().float().cpu()))
        ax.set_title(_wrap(t), fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _wrap(text: str, width: int = 24) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:3])
