"""CLIP Surgery: v-v attention on a dual path and feature surgery (Li et al., 2023).

Architecture surgery: from block ``n - blocks`` on, a second path runs beside the model. At each of
those blocks, with ``v`` the value vectors of the block's input on the original path, the new path
adds the block's attention branch evaluated with *v-v* self-attention (queries and keys replaced by
the values, per head) and skips the MLP; the original path is the model itself::

    x_new = h_{n-blocks-1} + sum_b out_proj_b( softmax(v_b v_b^T / sqrt(d_head)) v_b )
    f_j   = normalize(proj(ln_post(x_new_j)))             # per patch token

Feature surgery removes what the patch features share with every text:

* with candidate texts (the ``softmax`` target): the released multi-text surgery over
  ``[text, candidates...]`` — per channel products ``f_j * t_c``, weighted by
  ``w_c = p_c / mean(p)`` with ``p = softmax(2 * cos(image, t))``, minus their mean over the texts,
  summed over channels; the explained text's column is the map;
* with one text: ``f_j . (t - r)``, where ``r`` is the redundant feature of a neutral prompt set,
  as in the released single-text demo: the normalised mean embedding of the 85 prompt templates
  with an empty class name (``neutral_prompts`` replaces that set).

The released code also encodes the explained text with the 85-template ensemble; we explain the
text as given. Image side of towers whose head reads the class token through a norm and a
projection (CLIP ViTs). Training-free and gradient-free; the ``cosine`` and ``logit`` targets give
the same map (single-text surgery), ``softmax`` the multi-text one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder
from .base import Explainer, PairBatch, Side, register_method
from .clip_native import check_count, run_tail, to_grid, why_not_native

#: the prompt templates of the released prompt ensemble (CLIP's ImageNet set and five scene prompts)
TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)
#: the neutral prompt set: the templates with an empty class name
NEUTRAL_PROMPTS: tuple[str, ...] = tuple(t.format("") for t in TEMPLATES)


def vv_attention(v: Tensor, num_heads: int) -> Tensor:
    """(B, T, D) values -> (B, T, D) output of v-v self-attention per head (heads concatenated)."""
    B, T, D = v.shape
    vh = v.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # (B, h, T, hd)
    a = ((vh @ vh.transpose(-1, -2)) * (D // num_heads) ** -0.5).softmax(-1)
    return (a @ vh).transpose(1, 2).reshape(B, T, D)


def surgery_features(tower, pixels: Tensor, blocks: int) -> Tensor:
    """(B, T, d) unit-norm token features of the v-v path through the head."""
    n = tower.num_blocks
    _, recs = run_tail(tower, pixels, n - blocks, grad=False)
    x = recs[0].h
    assert x is not None, "why_not_native(parts=True) admits only pre-norm blocks"
    for r in recs:
        x = x + r.attn_branch(vv_attention(r.v, r.num_heads))
    return F.normalize(tower.project_tokens(x, pixels), dim=-1)


def feature_surgery(feats: Tensor, texts: Tensor, image_emb: Tensor) -> Tensor:
    """Multi-text surgery. feats (B, T, d) unit norm; texts (B, C, d) unit norm per row; image_emb (B, d)
    unit norm. Returns (B, T, C)."""
    p = (2 * torch.einsum("bd,bcd->bc", image_emb, texts)).softmax(-1)  # (B, C)
    w = p / p.mean(-1, keepdim=True)
    f = feats[:, :, None, :] * texts[:, None, :, :] * w[:, None, :, None]  # (B, T, C, d)
    return (f - f.mean(2, keepdim=True)).sum(-1)


@register_method
class CLIPSurgery(Explainer):
    """CLIP Surgery: v-v attention on a second path, minus the features shared across texts.

    Args:
        model: the dual encoder.
        blocks: how many last blocks get the v-v path (None: half of them, 6 of 12 as released).
        neutral_prompts: texts whose mean embedding is the redundant feature for a single text
            (None: the released 85 prompt templates with an empty class name). Models with their
            own small vocabulary need prompts in it (on the shapes model: ``["a"]``).

    With the ``softmax`` target the candidate texts take part in the multi-text feature surgery;
    other targets use the single-text surgery against the neutral prompts.

    Paper: Li, Wang, Yang, Sun, Zhu, Zhang, Li. CLIP Surgery for Better Explainability with
    Enhancement in Open-Vocabulary Tasks. arXiv 2304.05653, 2023 (Pattern Recognition 2025).

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="clip_surgery")
    """

    name = "clip_surgery"
    paper = "Li et al. CLIP Surgery for Better Explainability with Enhancement in Open-Vocabulary Tasks. arXiv 2304.05653, 2023"
    summary = "v-v attention dual path + feature surgery against redundant text features (Li et al. 2023)"
    needs_attention = True
    needs_gradients = False
    sides = ("image",)
    contrast_form = (
        "single-text surgery of the difference: f.(t - v) (the redundant feature cancels); "
        "-f.(t - r) on the lower-ranked image"
    )

    def __init__(self, model, blocks: int | None = None, neutral_prompts: Sequence[str] | None = None):
        super().__init__(model)
        self.blocks = blocks
        self.neutral_prompts = None if neutral_prompts is None else list(neutral_prompts)
        if self.neutral_prompts is not None and not (
            self.neutral_prompts and all(isinstance(t, str) for t in self.neutral_prompts)
        ):
            raise MethodError("clip_surgery: neutral_prompts must be a non-empty list of texts")
        if type(self).why_not(model, "image") is None:
            n = model.image.num_blocks
            self.blocks = check_count(model.image, (n + 1) // 2 if blocks is None else blocks, "blocks", self.name)

    @classmethod
    def why_not(cls, model: DualEncoder, side: Side) -> str | None:
        return super().why_not(model, side) or why_not_native(cls.name, model, side, projects=True, parts=True)

    def redundant_feature(self) -> Tensor:
        """(d,) unit-norm mean embedding of the neutral prompts.

        Cached on the text tower, keyed by the prompts and the parameters' in-place version
        counters, so it is recomputed after any update of the text tower's weights.
        """
        prompts = tuple(self.neutral_prompts or NEUTRAL_PROMPTS)
        tower = self.model.text
        key = (prompts, tuple((id(p), p._version) for p in tower.parameters()))
        cached = tower.__dict__.get("_vx_neutral_feature")
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.no_grad():
            e = F.normalize(tower.encode(self.model.tokenize(list(prompts))), dim=-1)
        r = F.normalize(e.mean(0), dim=-1)
        object.__setattr__(tower, "_vx_neutral_feature", (key, r))
        return r

    def attribute_image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        t = F.normalize(batch.text_emb, dim=-1)  # (B, d)
        with torch.no_grad():
            assert self.blocks is not None, "resolved in __init__ when the image side applies"
            f = surgery_features(tower, batch.pixels, self.blocks)  # (B, T, d)
            cands = batch.target.candidates if batch.target.kind == "softmax" else None
            if cands is not None and cands.shape[0] > 0:
                texts = torch.cat([t[:, None], cands.to(t)[None].expand(t.shape[0], -1, -1)], 1)  # (B, C, d)
                sim = feature_surgery(f, texts, F.normalize(batch.image_emb, dim=-1))[..., 0]
            elif batch.contrast is None:
                sim = f @ (t - self.redundant_feature().to(t))[:, :, None]  # (B, T, 1)
                sim = sim[..., 0]
            else:  # single-text surgery of each term: sum_k c_k f.(o_k - r); r cancels in t - v
                r = self.redundant_feature().to(t)
                sim = torch.stack([c * (f @ (o - r)[:, :, None])[..., 0] for c, o in batch.terms("image")[0]]).sum(0)
        return to_grid(tower, sim)
