"""Shared plumbing of the CLIP-native methods (Grad-ECLIP, LeGrad, CLIP Surgery, MaskCLIP and the
training-free dense methods GEM, SCLIP, ClearCLIP, NACLIP).

These methods read a transformer block's internals (query, key, value, the attention output before
its projection) and the model's own head applied per token. Both come through the Tower protocol:
``record_blocks`` captures what every block computed (for towers whose
blocks run through ``prenorm_block``), and
[`project_tokens`][vlexplain.models.base.Tower.project_tokens] applies the final norm and projection to every
token. ``capabilities`` probes a tower once for both, so methods can refuse clearly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder, Tower
from ..models.blocks import BlockRecord, record_blocks
from .base import PairBatch, Side, usable_methods_hint


@dataclass(frozen=True)
class Capabilities:
    """What a tower offers the CLIP-native methods."""

    records: bool  # its blocks' q, k, v and attention output can be recorded (blocks.attention)
    parts: bool  # its blocks run through prenorm_block: block input, out_proj, MLP recorded too
    pooled: bool  # its head reads one token per row (CLS / EOS), so a "pooled token" exists
    projects: bool  # Tower.project_tokens is defined (final norm + projection per token)


def _dummy_input(model: DualEncoder, side: Side) -> Any:
    if side == "image":
        return torch.zeros(1, 3, *model.input_size, device=model.device, dtype=model.dtype)
    return model.tokenize(["a photo"])


def capabilities(model: DualEncoder, side: Side) -> Capabilities:
    """Probe one tower (cached on the tower): a stem and one block on a dummy input."""
    tower: Tower = model.tower(side)
    cached = tower.__dict__.get("_vx_native_caps")
    if cached is not None:
        return cached
    if not tower.has_attention or tower.num_blocks < 1:
        caps = Capabilities(False, False, False, False)
    else:
        x = _dummy_input(model, side)
        with torch.no_grad():
            h = tower.encode(x, stop=-1)
            with record_blocks() as recs:
                tower.encode(x, hidden=h, stop=0)
            try:
                tower.project_tokens(h, x)
                projects = True
            except NotImplementedError:
                projects = False
        ok = len(recs) == 1
        caps = Capabilities(ok, ok and recs[0].complete, tower.pooled_positions(x) is not None, projects)
    object.__setattr__(tower, "_vx_native_caps", caps)
    return caps


def why_not_native(
    name: str, model: DualEncoder, side: Side, *, pooled: bool = False, projects: bool = False, parts: bool = False
) -> str | None:
    """The reason a CLIP-native method cannot run on ``side`` of ``model`` (None: it can)."""
    tower = model.tower(side)
    caps = capabilities(model, side)
    if not caps.records:
        return (
            f"{name} reads query, key and value vectors inside the transformer blocks; "
            f"the {side} tower of this model ({tower.kind.upper()}, {type(tower).__name__}) does not expose them"
            f"{usable_methods_hint(model, side)}"
        )
    if parts and not caps.parts:
        return (
            f"{name} re-runs parts of a pre-norm transformer block (CLIP layout); "
            f"the {side} tower of this model ({type(tower).__name__}) has another block layout"
        )
    if pooled and not caps.pooled:
        return (
            f"{name} reads the one token the head pools (CLS / EOS); "
            f"the {side} tower of this model pools several tokens (attention or mean pooling)"
        )
    if projects and not caps.projects:
        return (
            f"{name} reads every token through the head's final norm and projection; "
            f"the {side} tower of this model has no such per-token projection"
        )
    return None


def run_tail(tower: Tower, x: Any, first: int, *, grad: bool, probs: bool = False) -> tuple[Tensor, list[BlockRecord]]:
    """Run blocks ``first`` .. last with recording; the blocks below run once without a graph.

    Returns the hidden state after the last block (B, T, D) and one record per block run. With
    ``grad`` the input of block ``first`` requires grad, so every recorded tensor is differentiable.
    """
    n = tower.num_blocks
    with torch.no_grad():
        h0 = tower.encode(x, stop=first - 1)
    if grad:
        h0 = h0.detach().requires_grad_(True)
    with record_blocks(probs=probs) as recs:
        h = tower.encode(x, start=first - 1, hidden=h0, stop=n - 1)
    if len(recs) != n - first:
        raise MethodError(f"the {tower.modality} tower recorded {len(recs)} of its last {n - first} blocks")
    return h, recs


def check_count(tower: Tower, value: Any, option: str, method: str) -> int:
    """A number of last blocks: an int in 1 .. num_blocks."""
    n = tower.num_blocks
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= n:
        raise MethodError(
            f"{method}: {option} must be a number of last blocks in 1..{n} for the {tower.modality} tower"
        )
    return value


def to_grid(tower: Tower, scores: Tensor) -> Tensor:
    """(B, T) per-token scores of an image tower -> (B, gh, gw), prefix tokens dropped."""
    return tower.token_scores_to_grid(scores, scores[..., None])


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, T, D) heads concatenated -> (B, heads, T, D / heads)."""
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, T, hd) -> (B, T, heads * hd)."""
    B, h, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, h * hd)


def last_block_features(
    tower: Tower, pixels: Tensor, mix: Callable[[BlockRecord], Tensor], *, residual: bool, mlp: bool
) -> Tensor:
    """(B, T, d) unit-norm token features with the last block's attention replaced.

    ``mix(record)`` returns the new attention output before the output projection (B, T, D),
    computed from the last block's recorded q, k, v; the block then adds it to its input when
    ``residual`` and runs its MLP when ``mlp``; the head's final norm and projection follow per token.
    """
    with torch.no_grad():
        _, recs = run_tail(tower, pixels, tower.num_blocks - 1, grad=False)
        r = recs[-1]
        assert r.h is not None, "why_not_native(parts=True) admits only pre-norm blocks"
        u = r.attn_branch(mix(r))
        if residual:
            u = r.h + u
        if mlp:
            u = u + r.mlp_branch(u)
        return F.normalize(tower.project_tokens(u, pixels), dim=-1)


def text_cosines(tower: Tower, feats: Tensor, text_emb: Tensor) -> Tensor:
    """(B, T, d) unit-norm token features, (B, d) text embeddings -> (B, gh, gw) patch cosines."""
    cos = (feats * F.normalize(text_emb, dim=-1)[:, None]).sum(-1)  # (B, T)
    return to_grid(tower, cos)


#: how the dense methods built on ``pair_cosines`` explain a contrast
PATCH_CONTRAST = "per patch, the difference of cosines: cos(f, t) - cos(f, v); -cos(f, t) on the lower-ranked image"


def pair_cosines(tower: Tower, feats: Tensor, batch: PairBatch) -> Tensor:
    """``text_cosines`` with the pairs' texts, or for the ``contrast`` target the difference per
    patch, ``sum_k c_k cos(f, o_k)`` (e.g. cos(f, t) - cos(f, v))."""
    if batch.contrast is None:
        return text_cosines(tower, feats, batch.text_emb)
    return torch.stack([c * text_cosines(tower, feats, o) for c, o in batch.terms("image")[0]]).sum(0)
