"""NACLIP: neighbourhood-aware attention in the last block (Hajimiri, Ben Ayed & Dolz, WACV 2025).

The last block's output is replaced by its attention branch alone ("reduced" architecture: no
residual, no MLP), with key-key attention plus a Gaussian bias that makes every patch attend to
its spatial neighbours; the final norm and projection give one embedding per patch::

    omega[p, p'] = exp(-|pos_p - pos_p'|^2 / (2 std^2))     # patch grid positions; 0 for prefix tokens
    u   = out_proj(softmax(k k^T / sqrt(d_head) + omega) v)
    map = cos(proj(ln_post(u_j)), text embedding)

as the released ``custom_attn`` with ``arch='reduced'``, ``attn_strategy='naclip'`` and
``gaussian_std=5`` (sinahmr/NACLIP ``clip/model.py``). The released evaluation also refines the
dense logits with PAMR; that is post-processing of a segmentation, not part of the map.
Training-free and gradient-free; image side of CLIP ViTs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder
from ..models.blocks import BlockRecord
from .base import Explainer, PairBatch, Side, register_method
from .clip_native import PATCH_CONTRAST, last_block_features, merge_heads, pair_cosines, split_heads, why_not_native


def neighbourhood_bias(grid: tuple[int, int], prefix: int, std: float) -> Tensor:
    """(T, T) Gaussian of the grid distance between patch tokens; rows and columns of prefix tokens 0."""
    gh, gw = grid
    yy, xx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], -1).double()  # (P, 2) row-major
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    g = torch.exp(-d2 / (2 * std**2))
    out = torch.zeros(prefix + gh * gw, prefix + gh * gw, dtype=torch.float64)
    out[prefix:, prefix:] = g
    return out


@register_method
class NACLIP(Explainer):
    """NACLIP: key-key attention with a Gaussian neighbourhood bias, the last block's branch alone.

    Args:
        model: the dual encoder.
        std: the Gaussian's standard deviation in patches (released: 5).

    Paper: Hajimiri, Ben Ayed, Dolz. Pay Attention to Your Neighbours: Training-Free
    Open-Vocabulary Semantic Segmentation. WACV 2025.

    Example:
        >>> vx.explain(model, "cat.jpg", "a cat", method="naclip")
    """

    name = "naclip"
    paper = "Hajimiri, Ben Ayed, Dolz. Pay Attention to Your Neighbours: Training-Free Open-Vocabulary Semantic Segmentation. WACV 2025"
    summary = "key-key attention + Gaussian neighbourhood bias, no residual / MLP in the last block (Hajimiri et al., WACV 2025)"
    needs_attention = True
    needs_gradients = False
    sides = ("image",)
    contrast_form = PATCH_CONTRAST

    def __init__(self, model, std: float = 5.0):
        super().__init__(model)
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0:
            raise MethodError(f"naclip: std must be a positive number of patches, got {std!r}")
        self.std = float(std)

    @classmethod
    def why_not(cls, model: DualEncoder, side: Side) -> str | None:
        return super().why_not(model, side) or why_not_native(cls.name, model, side, projects=True, parts=True)

    def mix(self, r: BlockRecord) -> Tensor:
        k, v = split_heads(r.k, r.num_heads), split_heads(r.v, r.num_heads)  # (B, h, T, hd)
        tower = self.model.image
        assert tower.grid is not None, "ViT image towers declare their patch grid"
        omega = neighbourhood_bias(tower.grid, tower.num_prefix_tokens, self.std).to(k)
        a = ((k @ k.transpose(-1, -2)) * k.shape[-1] ** -0.5 + omega).softmax(-1)
        return merge_heads(a @ v)

    def attribute_image(self, batch: PairBatch) -> Tensor:
        tower = self.model.image
        f = last_block_features(tower, batch.pixels, self.mix, residual=False, mlp=False)
        return pair_cosines(tower, f, batch)
