"""Optimisers for training the testbed models on a CPU.

``Muon`` is the Muon update (momentum, then the update matrix orthogonalised by a quintic
Newton-Schulz iteration) with the conventions of ``torch.optim.Muon`` (Nesterov momentum
0.95, the same iteration coefficients, ``adjust_lr_fn="match_rms_adamw"`` learning-rate scaling,
decoupled weight decay). It differs in how the iteration runs: in float32, with all matrices of one
shape stacked into a single batched product. ``torch.optim.Muon`` runs it in bfloat16, one matrix
at a time, which on a CPU without native bfloat16 arithmetic cost about 10x more per step (214 ms
against 22 ms for the 36 block matrices of the shapes-world CLIP).

Example:
    >>> opt = Muon([p for p in model.parameters() if p.ndim == 2], lr=2e-3)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)  # torch.optim.Muon's (and the reference implementation's)


def orthogonalize(g: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximate ``U V^T`` of each matrix of ``g`` (..., m, n) by the quintic Newton-Schulz
    iteration (singular values end roughly in [0.5, 1.5], as in Muon)."""
    a, b, c = NS_COEFFICIENTS
    tall = g.shape[-2] > g.shape[-1]
    x = g.mT if tall else g
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp_min(eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D weight matrices (see the module docstring).

    Args:
        params: 2-D tensors only, or parameter groups of them (embeddings, biases and norms belong
            to another optimiser).
        lr: learning rate; each matrix's step is scaled by ``0.2 * sqrt(max(rows, cols))`` so that
            its RMS matches a typical AdamW step of the same ``lr``.
        weight_decay: decoupled weight decay (multiplied by ``lr``).
        momentum: momentum coefficient (Nesterov).
        ns_steps: Newton-Schulz iterations.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        ns_steps: int = 5,
    ):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, ns_steps=ns_steps))
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D matrices only, got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            by_shape: dict[tuple[int, int], list[Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(tuple(p.shape), []).append(p)
            lr, wd, mom = group["lr"], group["weight_decay"], group["momentum"]
            for shape, ps in by_shape.items():
                bufs = []
                for p in ps:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    bufs.append(state["momentum_buffer"])
                grads = [p.grad for p in ps]
                torch._foreach_lerp_(bufs, grads, 1 - mom)
                update = orthogonalize(torch.stack([g.lerp(b, mom) for g, b in zip(grads, bufs)]), group["ns_steps"])
                scaled = lr * 0.2 * math.sqrt(max(shape))
                for p, u in zip(ps, update.unbind(0)):
                    p.mul_(1 - lr * wd).add_(u.to(p.dtype), alpha=-scaled)
        return loss


class Optimizers:
    """Several optimisers stepped as one (e.g. Muon for a model's matrices, AdamW for the rest)."""

    def __init__(self, opts: list[torch.optim.Optimizer]):
        self.opts = opts

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.opts for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.opts:
            o.step()
