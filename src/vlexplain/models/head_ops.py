"""A tower's head as a list of operations, for the decomposition of its embedding.

``Tower.head_ops`` describes the head (final norm, pooling, projection) as the operations below,
applied in order to the hidden state after the last block. Each is linear in the hidden state
once the norms' per-token scales and the pooling's attention weights are held at the values the
model computes on the real input (TextSpan's reading of a ViT), except ``ResidualMLP``, whose
output the decomposition keeps as a part of its own, and ``Gate``, an element-wise activation
held at its ratio ``f(y) / y`` on the real input (as a norm's scale is). ``vlexplain.repair.decompose`` interprets
them; a tower without ``head_ops`` cannot be decomposed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class Norm:
    """A per-token LayerNorm or RMSNorm over the last dimension (``nn.Identity``: nothing)."""

    module: nn.Module


@dataclass(frozen=True)
class Select:
    """Keep one token: (B, T, D) -> (B, D)."""

    index: int


@dataclass(frozen=True)
class Mean:
    """The mean of tokens ``start ..``: (B, T, D) -> (B, D)."""

    start: int


@dataclass(frozen=True)
class Tokens:
    """Keep tokens ``start ..``: (B, T, D) -> (B, T - start, D)."""

    start: int


@dataclass(frozen=True)
class Affine:
    """An affine map of the last dimension (a projection, with or without bias)."""

    fn: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class MHAPool:
    """``nn.MultiheadAttention`` pooling with fixed queries: (B, T, D) -> (B, Lq, D).

    Attributes:
        mha: the attention module (its value and output projections are used).
        query: builds the (B, Lq, D) queries for a batch of ``B``.
        key_padding_mask: (B, T) True where a key is ignored, or None.
    """

    mha: nn.MultiheadAttention
    query: Callable[[int], Tensor]
    key_padding_mask: Tensor | None = None


@dataclass(frozen=True)
class AttentionPool:
    """Attention pooling whose weights come from the hidden state (held at their values on the
    real input) over a linear value map: (B, T, D) -> (B, L, E), ``out`` applied to each row.

    Attributes:
        weights: (B, T, D) hidden state -> (B, heads, L, T) attention probabilities.
        value: the value projection (an ``nn.Linear``, heads concatenated on its output).
        out: the output projection (an ``nn.Linear``).
    """

    weights: Callable[[Tensor], Tensor]
    value: nn.Linear
    out: nn.Linear


@dataclass(frozen=True)
class Gate:
    """An element-wise activation ``f`` with ``f(0) = 0`` (e.g. a pooler's tanh), linear once its
    ratio ``f(y) / y`` is held at the value it takes on the real input (``f'(0)`` where ``y = 0``)."""

    fn: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class LatentPool:
    """timm's ``AttentionPoolLatent`` without its MLP and final pooling: (B, T, D) -> (B, L, D)."""

    module: Any


@dataclass(frozen=True)
class ResidualMLP:
    """``x + mlp(norm(x))``: the MLP's output becomes a part of its own, named ``name``."""

    norm: nn.Module
    mlp: nn.Module
    name: str = "pool mlp"


HeadOp = Norm | Select | Mean | Tokens | Affine | MHAPool | AttentionPool | Gate | LatentPool | ResidualMLP
