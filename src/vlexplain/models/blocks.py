"""Transformer block arithmetic shared by the adapters.

The adapters run a model's own parameters through these functions so that attention
probabilities are available to methods (Chefer relevance, rollout) without hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def attention(
    q: Tensor, k: Tensor, v: Tensor, num_heads: int, mask: Tensor | None, need_attn: bool
) -> tuple[Tensor, Tensor | None]:
    """Multi-head attention on (B, T, D) projections.

    Args:
        mask: additive mask broadcastable to (B, heads, T, S), or None.
        need_attn: compute explicit softmax probabilities (B, heads, T, S) and return them.

    Under ``record_blocks``, a full self-attention call (as many queries as keys) appends a
    ``BlockRecord`` of its projections and output.
    """
    records = _RECORDS.get()
    if records is not None:
        need_attn = need_attn or _RECORD_PROBS.get()
    q0, k0, v0 = q, k, v
    B, T, D = q.shape
    S = k.shape[1]
    hd = D // num_heads
    q = q.view(B, T, num_heads, hd).transpose(1, 2)  # (B, h, T, hd)
    k = k.view(B, S, num_heads, hd).transpose(1, 2)
    v = v.view(B, S, num_heads, hd).transpose(1, 2)
    if need_attn:
        logits = (q @ k.transpose(-1, -2)) * hd**-0.5  # (B, h, T, S)
        if mask is not None:
            logits = logits + mask
        probs = logits.softmax(-1)
        out = probs @ v
    else:
        probs = None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = out.transpose(1, 2).reshape(B, T, D)
    if records is not None and T == S:
        records.append(BlockRecord(None, q0, k0, v0, out, probs, num_heads, mask))
    return out, probs


def prenorm_block(
    h: Tensor,
    *,
    ln1: Callable[[Tensor], Tensor],
    qkv: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
    out_proj: Callable[[Tensor], Tensor],
    ln2: Callable[[Tensor], Tensor],
    mlp: Callable[[Tensor], Tensor],
    num_heads: int,
    mask: Tensor | None,
    need_attn: bool,
    ls1: Callable[[Tensor], Tensor] | None = None,
    ls2: Callable[[Tensor], Tensor] | None = None,
    rows: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """x + attn(ln1(x)); x + mlp(ln2(x)) — the CLIP / OpenCLIP / SigLIP block.

    ``rows`` (B,) computes the block's output only at one query position per row (keys and values
    still come from every token): (B, 1, D). Used for the last block when the head reads only
    that position (CLS / EOS pooling).
    """
    x = ln1(h)
    q, k, v = qkv(x)
    if rows is not None:
        ar = torch.arange(h.shape[0], device=h.device)
        q, h = q[ar, rows][:, None], h[ar, rows][:, None]
        if mask is not None:
            mask = mask[rows][:, None, None, :] if mask.dim() == 2 else mask[ar, ..., rows, :][:, :, None]
    records = _RECORDS.get()
    n_before = -1 if records is None else len(records)
    a, probs = attention(q, k, v, num_heads, mask, need_attn)
    if records is not None and len(records) > n_before:  # complete attention()'s record
        r = records[-1]
        r.h, r.ln1, r.out_proj, r.ls1, r.ln2, r.mlp, r.ls2 = h, ln1, out_proj, ls1, ln2, mlp, ls2
    a = out_proj(a)
    if ls1 is not None:
        a = ls1(a)
    h = h + a
    m = mlp(ln2(h))
    if ls2 is not None:
        m = ls2(m)
    return h + m, probs


@dataclass
class BlockRecord:
    """What one block's attention saw, captured under ``record_blocks``.

    Every ``attention`` call records q, k, v and its output; blocks that run through
    ``prenorm_block`` also record their input and their own parts (``complete``), which
    ``attn_branch`` and ``mlp_branch`` need.

    Attributes:
        h: (B, T, D) the block's input (residual stream); None outside prenorm_block.
        q, k, v: (B, T, D) the projections of ``ln1(h)``, heads concatenated.
        attn: (B, T, D) the attention output before the output projection (heads concatenated).
        probs: (B, heads, T, S) attention probabilities (None unless asked for).
        num_heads: the block's head count. mask: the additive attention mask it used.
        ln1: the block's first norm (``q, k, v`` are projections of ``ln1(h)``); None outside prenorm_block.
    """

    h: Tensor | None
    q: Tensor
    k: Tensor
    v: Tensor
    attn: Tensor
    probs: Tensor | None
    num_heads: int
    mask: Tensor | None
    ln1: Callable[[Tensor], Tensor] | None = None
    out_proj: Callable[[Tensor], Tensor] | None = None
    ls1: Callable[[Tensor], Tensor] | None = None
    ln2: Callable[[Tensor], Tensor] | None = None
    mlp: Callable[[Tensor], Tensor] | None = None
    ls2: Callable[[Tensor], Tensor] | None = None

    @property
    def complete(self) -> bool:
        """Whether the block's input and parts were recorded (a pre-norm block)."""
        return self.h is not None and self.out_proj is not None

    def attn_branch(self, a: Tensor) -> Tensor:
        """(B, T, D) attention output before out_proj -> what the block adds to the residual stream."""
        assert self.out_proj is not None, "not a pre-norm block's record"
        a = self.out_proj(a)
        return a if self.ls1 is None else self.ls1(a)

    def mlp_branch(self, h: Tensor) -> Tensor:
        """(B, T, D) residual stream after attention -> what the MLP adds to it."""
        assert self.mlp is not None and self.ln2 is not None, "not a pre-norm block's record"
        m = self.mlp(self.ln2(h))
        return m if self.ls2 is None else self.ls2(m)


_RECORDS: ContextVar[list[BlockRecord] | None] = ContextVar("vlexplain_block_records", default=None)
_RECORD_PROBS: ContextVar[bool] = ContextVar("vlexplain_block_record_probs", default=False)


@contextlib.contextmanager
def record_blocks(probs: bool = False) -> Iterator[list[BlockRecord]]:
    """Capture a ``BlockRecord`` of every full self-attention call in this context.

    Records are appended in call order (block ``i`` of a run from the stem is ``records[i]``); calls
    that compute only the pooled rows (``rows``) are not recorded. ``probs``: also compute explicit
    attention probabilities. Outside the context the blocks run exactly as before.
    """
    records: list[BlockRecord] = []
    t1, t2 = _RECORDS.set(records), _RECORD_PROBS.set(probs)
    try:
        yield records
    finally:
        _RECORDS.reset(t1)
        _RECORD_PROBS.reset(t2)


def active_records() -> list[BlockRecord] | None:
    """The record list of the enclosing ``record_blocks`` (None outside one): towers whose blocks
    run a library's own attention module (timm) append their ``BlockRecord`` to it themselves."""
    return _RECORDS.get()


def records_want_probs() -> bool:
    """Whether the enclosing ``record_blocks`` asked for attention probabilities."""
    return _RECORD_PROBS.get()


def causal_mask(T: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(T, T) additive mask: 0 on and below the diagonal, -inf above."""
    return torch.full((T, T), float("-inf"), device=device, dtype=dtype).triu(1)


def padding_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, T) 1/0 mask -> (B, 1, 1, T) additive key mask."""
    m = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    m = m.masked_fill(attention_mask == 0, torch.finfo(dtype).min)
    return m[:, None, None, :]
