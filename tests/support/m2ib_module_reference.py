"""A literal M2IB reference for any block module: the released algorithm, one pair at a time.

Like ``reference_m2ib`` in test_m2ib.py (both full encoders re-run at every step, a forward hook
replaces the block's output with the bottleneck sample, capacity from the last forward pass), but
the hooked module is given directly, so it covers every tower kind: token states ``(B, T, D)``
(timm ViT / Eva blocks, OpenCLIP text blocks) and feature maps ``(B, C, H, W)`` (ModifiedResNet
Bottlenecks, ConvNeXt stages), where the bottleneck mask has the feature map's own shape.
Used by tests/models/test_families_open_clip.py and benchmarks/m2ib_speed.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def reference_m2ib_module(
    encode: Callable[[Tensor], Tensor],
    encode_other: Callable[[Tensor], Tensor],
    module: nn.Module,
    x: Tensor,
    x_other: Tensor,
    *,
    beta: float,
    steps: int,
    lr: float,
    S: int,
    seed: int,
    n_real: int | None = None,
) -> Tensor:
    """Per-position capacity of the released algorithm for one pair.

    Args:
        encode / encode_other: the model's own embedding functions of the explained modality / the other.
        module: the block whose output is bottlenecked.
        x / x_other: one input each (batch 1).
        n_real: text only: the real tokens (noise and the KL term cover them; padding gets no noise).

    Returns:
        (T,) nats per token for token states, (H, W) for feature maps.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        seen = {}
        h = module.register_forward_hook(lambda m, i, o: seen.setdefault("h", o))
        encode(x)
        h.remove()
    shape = seen["h"].shape[1:]
    tokens = len(shape) == 2
    alpha = torch.full((1, *shape), 5.0, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=lr)
    state: dict[str, Tensor] = {}

    def bottleneck(m: nn.Module, inp: tuple, out: Tensor) -> Tensor:
        lam = torch.sigmoid(alpha).expand(out.shape[0], *shape)
        mu = out * lam
        var = (1 - lam) ** 2
        state["cap"] = -0.5 * (1 + torch.log(var) - mu**2 - var)
        if tokens and n_real is not None:
            eps = torch.zeros_like(out)
            eps[:, :n_real] = torch.randn((S, n_real, shape[-1]), generator=g)
        else:
            eps = torch.randn((S, *shape), generator=g)
        return mu + var.sqrt() * eps

    for _ in range(steps):
        opt.zero_grad()
        hk = module.register_forward_hook(bottleneck)
        try:
            e = encode(x.expand(S, *x.shape[1:]))
        finally:
            hk.remove()
        t = encode_other(x_other.expand(S, *x_other.shape[1:]))
        fit = F.cosine_similarity(e, t, eps=1e-6).mean()
        cap = state["cap"]
        comp = cap[:, :n_real].mean() if tokens and n_real is not None else cap.mean()
        loss = beta * comp - fit
        loss.backward()
        opt.step()
    cap = state["cap"].mean(0).detach()
    return cap.sum(-1) if tokens else cap.sum(0)  # (T,) or (H, W)
