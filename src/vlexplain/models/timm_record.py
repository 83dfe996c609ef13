"""Reading what a timm attention module computes: q, k, v, the attention output and probabilities.

The CLIP-native methods (Grad-ECLIP) read a block's query, key and value vectors and its attention
output before the output projection, as ``blocks.record_blocks`` captures them for towers whose
blocks run through ``blocks.attention``. timm's blocks run timm's own attention modules, which
compute q, k and v inside ``forward`` (after their q/k norms and, for EVA / PE, rotary embeddings)
and hand them to ``F.scaled_dot_product_attention``. ``recording_attention`` reads exactly those:

* the module is switched to its fused path (``fused_attn = True``) and, within a torch function
  mode (thread-local), its call to ``scaled_dot_product_attention`` is computed explicitly, as
  ``softmax(q k^T * scale + mask) @ v``: the arguments are the q, k and v the module uses, and
  the probabilities are on the output's path (gradients with respect to them are exact);
* a forward pre-hook on the module's ``norm`` (its attention-output norm, an identity unless
  ``scale_norm``) takes the attention output (B, T, D) on its way to the projection, the tensor a
  method differentiates with respect to.

Both are removed on exit. Calls the explicit form does not cover (dropout in training, grouped
key / value heads) run the library's own kernel and are not recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .blocks import BlockRecord


def explicit_sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None] | None:
    """``F.scaled_dot_product_attention`` written out: (output, probabilities, additive mask), or
    None for the cases it does not cover (dropout, grouped key / value heads)."""
    if dropout_p or enable_gqa or q.shape[:-2] != k.shape[:-2] or k.shape != v.shape[:-1] + (k.shape[-1],):
        return None
    s = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * s  # (B, h, T, S)
    mask: Tensor | None = None
    T, S = logits.shape[-2:]
    if is_causal:
        mask = torch.zeros(T, S, dtype=logits.dtype, device=logits.device).masked_fill(
            torch.ones(T, S, dtype=torch.bool, device=logits.device).triu(1), float("-inf")
        )
    if attn_mask is not None:
        add = (
            torch.zeros(attn_mask.shape, dtype=logits.dtype, device=logits.device).masked_fill(
                ~attn_mask, float("-inf")
            )
            if attn_mask.dtype == torch.bool
            else attn_mask.to(logits.dtype)
        )
        mask = add if mask is None else mask + add
    probs = (logits if mask is None else logits + mask).softmax(-1)
    return probs @ v, probs, mask


class _Capture(TorchFunctionMode):
    """Computes ``scaled_dot_product_attention`` explicitly and keeps its q, k, v, probabilities, mask."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]] = []
        self.outputs: list[Tensor] = []  # the attention output (B, T, D) before the projection

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            got = explicit_sdpa(*args, **kwargs)
            if got is not None:
                out, probs, mask = got
                self.calls.append((args[0], args[1], args[2], probs, mask))
                return out
        return func(*args, **kwargs)

    def record(self) -> BlockRecord | None:
        """The block's record: q, k, v and the attention output (B, T, D), heads concatenated."""
        if len(self.calls) != 1 or len(self.outputs) != 1:
            return None
        q, k, v, probs, mask = self.calls[0]
        B, heads, T, _ = q.shape

        def flat(t: Tensor) -> Tensor:
            return t.transpose(1, 2).reshape(B, t.shape[2], -1)

        a = self.outputs[0]
        if a.shape[:2] != (B, T):
            return None
        return BlockRecord(None, flat(q), flat(k), flat(v), a, probs, heads, mask)


@contextlib.contextmanager
def recording_attention(attn: Any) -> Iterator[_Capture]:
    """Within the block, the timm attention module ``attn`` runs its fused path with the explicit
    ``scaled_dot_product_attention`` and reports what it computed (``_Capture.record()``)."""
    cap = _Capture()
    norm = getattr(attn, "norm", None)
    pool = type(attn).__name__ == "AttentionPoolLatent"  # its ``norm`` is the MLP's, after ``proj``
    target = norm if isinstance(norm, nn.Module) and not pool else attn.proj
    handle = target.register_forward_pre_hook(lambda m, args: cap.outputs.append(args[0]))
    prev = attn.fused_attn
    attn.fused_attn = True
    try:
        with cap:
            yield cap
    finally:
        attn.fused_attn = prev
        handle.remove()
