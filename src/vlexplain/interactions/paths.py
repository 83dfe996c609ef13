"""Integrated Jacobians of a tower, computed in batches (the engine of ``integrated_jacobians`` and
of [`vlexplain.explain_similarity`][vlexplain.explain_similarity]).

For a tower with hidden state ``h(x)`` at the input of block ``L`` and a reference ``h(r)``, the
path ``g_n = h(r) + a_n (h(x) - h(r))``, ``a_n = (N - n) / N`` for ``n = 0 .. N-1`` (the released
exCLIP points ``1, 1 - 1/N, ..., 1/N``), and the embedding ``e(g)`` computed from there:

    C[d, p] = 1/N sum_n sum_k de_d/dg[p, k] (g_n) * (h(x) - h(r))[p, k]

is the integrated Jacobian contracted with the path's direction at each token position ``p``
(CNN feature maps: each spatial position). Summed over positions it approximates
``e(h(x)) - e(h(r))`` (a Riemann sum: the error shrinks as ``1/N``). The released code takes one
backward pass per embedding dimension; here either

* ``reverse``: vector-Jacobian products for ``chunk`` embedding dimensions at once (one batched
  backward pass, ``torch.autograd.grad(..., is_grads_batched=True)``), or
* ``forward``: Jacobian-vector products for ``chunk`` token positions at once (forward-mode AD on a
  batch that repeats the path once per position),

and ``auto`` picks the one with fewer products (positions vs embedding dimensions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from ..models.base import TextBatch, Tower, TowerInput

Mode = Literal["auto", "forward", "reverse"]
MODES: tuple[Mode, ...] = ("auto", "forward", "reverse")


@dataclass
class TowerPath:
    """The integrated Jacobian of one tower for U inputs.

    Attributes:
        contracted: (U, d, P) ``C`` above, per embedding dimension and position.
        embedding: (U, d) un-normalised embedding of each input.
        reference: (U, d) embedding of the reference hidden state, read out as the input's
            (pooled at the input's position): the path's other end.
        hidden_shape: shape of one input's hidden state at the layer ((T, D) or (C, H, W)).
    """

    contracted: Tensor
    embedding: Tensor
    reference: Tensor
    hidden_shape: tuple[int, ...]


def select_rows(x: TowerInput, index: list[int]) -> TowerInput:
    """Rows ``index`` of a tower input (pixels or a TextBatch), repeats allowed."""
    if isinstance(x, TextBatch):
        return x.select(index)
    return x[index]


def positions(t: Tensor, hidden_dims: int) -> Tensor:
    """Sum over channels: (..., T, D) -> (..., T); (..., C, H, W) -> (..., H * W)."""
    if hidden_dims == 2:
        return t.sum(-1)
    return t.sum(-3).flatten(-2)


def _position_masks(idx: Tensor, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """(c, *shape) masks that are 1 at position idx[i] (all channels) and 0 elsewhere."""
    n_pos = shape[0] if len(shape) == 2 else shape[1] * shape[2]
    onehot = torch.zeros(idx.numel(), n_pos, dtype=like.dtype, device=like.device)
    onehot[torch.arange(idx.numel()), idx] = 1
    if len(shape) == 2:
        return onehot[:, :, None].expand(-1, *shape)
    return onehot.view(-1, 1, shape[1], shape[2]).expand(-1, *shape)


@contextlib.contextmanager
def _math_attention() -> Iterator[None]:
    """Scaled dot-product attention through its math kernel (the fused CPU kernels have no forward AD)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: the default kernels
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


def _reverse(run: Callable[[Tensor, list[int]], Tensor], g: Tensor, delta: Tensor, chunk: int) -> Tensor:
    """(U, d, P) by batched vector-Jacobian products over embedding dimensions."""
    U, N = g.shape[:2]
    shape = tuple(g.shape[2:])
    rows = [u for u in range(U) for _ in range(N)]
    with torch.enable_grad():
        flat = g.reshape(U * N, *shape).detach().requires_grad_(True)
        e = run(flat, rows)  # (U * N, d)
        d = e.shape[-1]
        out = []
        for c0 in range(0, d, chunk):
            c = min(chunk, d - c0)
            cot = torch.zeros(c, *e.shape, dtype=e.dtype, device=e.device)
            cot[torch.arange(c), :, c0 + torch.arange(c)] = 1  # (c, U * N, d): one dimension each
            (grad,) = torch.autograd.grad(e, flat, cot, is_grads_batched=True, retain_graph=c0 + c < d)
            summed = grad.view(c, U, N, *shape).sum(2)  # (c, U, *shape): summed over the path
            out.append(positions(summed * delta, len(shape)))  # (c, U, P)
    return torch.cat(out).permute(1, 0, 2) / N


def _forward(run: Callable[[Tensor, list[int]], Tensor], g: Tensor, delta: Tensor, chunk: int) -> Tensor:
    """(U, d, P) by batched Jacobian-vector products over token positions."""
    U, N = g.shape[:2]
    shape = tuple(g.shape[2:])
    n_pos = shape[0] if len(shape) == 2 else shape[1] * shape[2]
    out = []
    for p0 in range(0, n_pos, chunk):
        idx = torch.arange(p0, min(p0 + chunk, n_pos), device=g.device)
        c = idx.numel()
        masks = _position_masks(idx, shape, g)  # (c, *shape)
        tangent = (masks[:, None, None] * delta[None, :, None]).expand(c, U, N, *shape).reshape(c * U * N, *shape)
        primal = g[None].expand(c, U, N, *shape).reshape(c * U * N, *shape)
        rows = [u for _ in range(c) for u in range(U) for _ in range(N)]
        with torch.no_grad(), _math_attention(), fwAD.dual_level():
            e = run(fwAD.make_dual(primal.contiguous(), tangent.contiguous()), rows)
            jt = fwAD.unpack_dual(e).tangent  # (c * U * N, d)
        out.append(jt.view(c, U, N, -1).sum(2))  # (c, U, d)
    return torch.cat(out).permute(1, 2, 0) / N


def integrated_path(
    tower: Tower, x: TowerInput, ref: TowerInput, layer: int, steps: int, mode: Mode = "auto", chunk: int = 32
) -> TowerPath:
    """The integrated Jacobian of ``tower`` at the input of block ``layer`` for inputs ``x`` against
    references ``ref`` (the same number of rows). See the module docstring."""
    start = layer - 1  # the hidden state after block layer - 1 is the input of block layer
    with torch.no_grad():
        hx = tower.encode(x, stop=start)
        hr = tower.encode(ref, stop=start)
        ex = tower.encode(x, start=start, hidden=hx)
        er = tower.encode(x, start=start, hidden=hr)  # the reference read out as the input
    delta = hx - hr  # (U, *shape)
    a = (steps - torch.arange(steps, device=hx.device, dtype=hx.dtype)) / steps  # 1, 1 - 1/N, ..., 1/N
    a = a.view(1, steps, *([1] * (hx.dim() - 1)))
    g = hr[:, None] + a * delta[:, None]  # (U, N, *shape)

    def run(h: Tensor, rows: list[int]) -> Tensor:
        return tower.encode(select_rows(x, rows), start=start, hidden=h)

    n_pos = hx.shape[1] if hx.dim() == 3 else hx.shape[2] * hx.shape[3]
    use = mode if mode != "auto" else ("forward" if n_pos <= ex.shape[-1] else "reverse")
    contracted = (_forward if use == "forward" else _reverse)(run, g, delta, chunk)
    return TowerPath(contracted.detach(), ex, er, tuple(hx.shape[1:]))
