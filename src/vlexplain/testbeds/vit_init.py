"""Initialise a small vision transformer so that it learns fast from scratch.

Used by the shapes-world CLIP (``vlexplain.testbeds.shapes_train.build_model``); works on any
transformers CLIP image tower (``CLIPModel.vision_model``).

Example:
    >>> from vlexplain.testbeds.shapes_train import ShapesCLIPConfig, build_model
    >>> model = build_model(ShapesCLIPConfig(init="default"), vocab_size=50, seed=0)
    >>> structured_init(model.vision_model)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def sincos_2d(grid: int, dim: int, temperature: float = 10_000.0) -> Tensor:
    """(grid*grid, dim) fixed 2-D sine-cosine position codes, row-major over the patch grid."""
    if dim % 4:
        raise ValueError(f"2-D sine-cosine codes need a width divisible by 4, got {dim}")
    q = dim // 4
    omega = temperature ** -(torch.arange(q, dtype=torch.float64) / max(1, q - 1))
    y, x = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    ax, ay = x.reshape(-1, 1) * omega, y.reshape(-1, 1) * omega
    return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], 1).float()


def low_rank_factors(m: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``(L, R)`` of shapes (d, rank), (rank, d) with ``L @ R`` the best rank-``rank`` approximation of ``m``."""
    u, s, vh = torch.linalg.svd(m)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


@torch.no_grad()
def structured_init(vision: Any, qk: tuple[float, float] = (0.7, 0.7), vo: tuple[float, float] = (0.4, 0.4)) -> None:
    """Start a CLIP image tower the way small vision transformers learn fastest from scratch.

    - position embeddings: fixed 2-D sine-cosine codes (the class token's: zero), still trained;
    - patch embedding: LeCun-normal, so patch content and position codes start on the same scale;
    - attention (mimetic initialisation, Trockman & Kolter, ICML 2023): every head's
      ``W_q^T W_k`` is the best rank-``head_dim`` approximation of ``alpha Z + beta I`` and the
      layer's ``W_o W_v`` equals ``alpha Z - beta I`` (``Z`` Gaussian with variance ``1/d``), so
      tokens start out attending to tokens like themselves, i.e. to their neighbours.

    On the shapes world this halves the training needed for a given accuracy (benchmarks/RESULTS.md).
    Draws from torch's global generator (seeded by ``build_model``).
    """
    emb = vision.embeddings
    pos = emb.position_embedding.weight
    pos[0] = 0.0
    pos[1:] = sincos_2d(int(round((pos.shape[0] - 1) ** 0.5)), pos.shape[1])
    w = emb.patch_embedding.weight
    nn.init.normal_(w, 0.0, w[0].numel() ** -0.5)
    for layer in vision.encoder.layers:
        att = layer.self_attn
        d, k = att.embed_dim, att.head_dim
        for h in range(att.num_heads):
            left, right = low_rank_factors(qk[0] * torch.randn(d, d) / d**0.5 + qk[1] * torch.eye(d), k)
            att.q_proj.weight[h * k : (h + 1) * k] = left.T
            att.k_proj.weight[h * k : (h + 1) * k] = right
        left, right = low_rank_factors(vo[0] * torch.randn(d, d) / d**0.5 - vo[1] * torch.eye(d), d)
        att.out_proj.weight.copy_(left)
        att.v_proj.weight.copy_(right)
