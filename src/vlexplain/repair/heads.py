"""Which attention heads carry a cue, and their mean-ablation.

``audit_heads`` decomposes every image of a ``CuePairs`` and its cue-free counterpart
(``vlexplain.repair.decompose``) and, for each head, takes the change of its part of the cosine
with the pair's caption when the cue is added: ``score_parts(with cue) - score_parts(without)``.
Heads are ranked by the mean change over the focus group (the ``aligned`` pairs of the testbed:
where the cue agrees with the caption), with a bootstrap interval; the change over every pair is
shown beside it.

``mean_ablate`` replaces chosen heads' outputs by their mean over reference images, in the weights:
the head's slice of the attention output projection is zeroed and its mean output (read at the
position the tower's head reads, the class token, or over all tokens for pooling heads) is moved
into the projection's bias. The model keeps its architecture, so it can be saved and loaded as any
model of its family (LTC, "Debiasing CLIP", 2025; TextSpan's mean-ablation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError, MethodError
from .data import CuePairs

Head = tuple[int, int]  # (layer, head)


@dataclass
class HeadRow:
    """One head: its mean change of score share with the cue, over the focus group and overall."""

    layer: int
    head: int
    focus: tuple[float, float, float]
    every: tuple[float, float, float]


@dataclass
class HeadAudit:
    """The result of ``audit_heads``: heads ranked, most cue-driven first."""

    rows: list[HeadRow]
    mlp: dict[str, float]  # mean change of each MLP part (and the embeddings) over the focus group
    model: str
    focus: str
    n: int
    source: str

    def top(self, k: int) -> list[Head]:
        return [(r.layer, r.head) for r in self.rows[:k]]

    def markdown(self, limit: int | None = None) -> str:
        rows = self.rows if limit is None else self.rows[:limit]
        lines = [
            f"Heads of `{self.model}` ranked by the mean change of their part of the cosine with the caption when "
            f"the cue is added ({self.n} pairs from {self.source}; focus: `{self.focus}` pairs; 95 % bootstrap "
            "intervals over pairs).",
            "",
            f"| rank | head | Δ score share, {self.focus} | Δ score share, every pair |",
            "|---:|:---|---:|---:|",
        ]
        for i, r in enumerate(rows, 1):
            lines.append(f"| {i} | layer {r.layer} head {r.head} | {_ci(r.focus)} | {_ci(r.every)} |")
        other = ", ".join(f"{k} {v:+.4f}" for k, v in self.mlp.items())
        lines += ["", f"Other parts (mean Δ, {self.focus}): {other}"]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "focus": self.focus,
            "n": self.n,
            "source": self.source,
            "rows": [vars(r) for r in self.rows],
            "other_parts": self.mlp,
        }


def _ci(v: tuple[float, float, float]) -> str:
    return f"{v[0]:+.4f} [{v[1]:+.4f}, {v[2]:+.4f}]"


def score_changes(model: Any, pairs: CuePairs, batch_size: int = 32) -> tuple[list[str], list, np.ndarray]:
    """(names, (layer, head) per part, (N, K) change of each part's share of the cosine with the
    caption when the cue is added)."""
    from .decompose import decompose

    with torch.no_grad():
        t = model.encode_text(model.tokenize(list(pairs.captions)))
    with_cue = decompose(model, pairs.pixels(model), batch_size=batch_size)
    without = decompose(model, pairs.pixels(model, clean=True), batch_size=batch_size)
    delta = with_cue.score_parts(t) - without.score_parts(t)
    where = list(zip(with_cue.layers, with_cue.heads))
    return with_cue.names, where, delta.float().cpu().numpy().astype(np.float64)


def audit_heads(model: Any, pairs: CuePairs, batch_size: int = 32) -> HeadAudit:
    """Rank the image tower's heads by how much their part of the score rises with the cue."""
    from ..eval.report import bootstrap_ci

    names, where, delta = score_changes(model, pairs, batch_size)
    focus = "aligned" if "aligned" in pairs.groups else pairs.groups[0]
    sel = np.array([g == focus for g in pairs.groups])
    rows, other = [], {}
    for k, (layer, head) in enumerate(where):
        if head is None:
            other[names[k]] = float(delta[sel, k].mean())
            continue
        rows.append(HeadRow(int(layer), int(head), bootstrap_ci(delta[sel, k]), bootstrap_ci(delta[:, k])))
    rows.sort(key=lambda r: -r.focus[0])
    return HeadAudit(rows, other, getattr(model, "name", "model"), focus, len(pairs), pairs.source)


# --- mean-ablation --------------------------------------------------------------------------------
def _projection(model: Any, layer: int) -> nn.Linear:
    """Block ``layer``'s attention output projection (a Linear whose input is the heads' outputs)."""
    from .decompose import _block

    tower = model.image
    proj = tower.attention_projection(layer)
    if proj is not None:
        out = proj[0]
    else:  # the projection a pre-norm block's record names
        x = torch.zeros(1, 3, *model.input_size, device=model.device, dtype=model.dtype)
        with torch.no_grad():
            h = tower.encode(x, stop=layer - 1)
            rec = _block(tower, layer, h, x, False)[4]
        out = rec.out_proj
    if not isinstance(out, nn.Linear):
        raise MethodError(f"block {layer}'s attention output projection is not a Linear module")
    return out


def head_means(model: Any, pixels: Tensor, heads: Sequence[Head], batch_size: int = 32) -> dict[Head, Tensor]:
    """Each head's mean output (before the output projection) over ``pixels``, at the position the
    tower's head reads (the class token) or over every token for pooling heads."""
    from .decompose import _block

    tower = model.image
    layers = sorted({h[0] for h in heads})
    sums: dict[int, Tensor] = {}
    count = 0
    with torch.no_grad():
        for a in range(0, pixels.shape[0], batch_size):
            x = pixels[a : a + batch_size]
            kind, at = read_position(tower.head_ops(x))
            h = tower.encode(x, stop=-1)
            for i in range(max(layers) + 1):
                h_next, z, _, H, _ = _block(tower, i, h, x, False)
                if i in layers:
                    zz = z[:, at] if kind == "row" else z[:, at:].mean(1)  # (B, D)
                    sums[i] = zz.sum(0) + sums[i] if i in sums else zz.sum(0)
                h = h_next
            count += x.shape[0]
    out = {}
    for layer, head in heads:
        H = _num_heads(tower, layer)
        D = sums[layer].shape[0]
        out[(layer, head)] = (sums[layer] / count)[head * (D // H) : (head + 1) * (D // H)]
    return out


def read_position(ops: Sequence[Any]) -> tuple[str, int]:
    """Where a tower's head reads the tokens: ``("row", i)`` (one token, e.g. the class token) or
    ``("mean", start)`` (pooled over tokens ``start ..``: average or attention pooling)."""
    from ..models.head_ops import AttentionPool, LatentPool, Mean, MHAPool, Select, Tokens

    start = 0
    for op in ops:
        if isinstance(op, Select):
            return "row", op.index
        if isinstance(op, Tokens):
            start += op.start
        if isinstance(op, Mean):
            return "mean", start + op.start
        if isinstance(op, (MHAPool, LatentPool, AttentionPool)):
            return "mean", start
    return "mean", start


def _num_heads(tower: Any, layer: int) -> int:
    blk = tower.block_modules()[layer]
    for mod in (getattr(blk, "self_attn", None), getattr(blk, "attn", None)):
        n = getattr(mod, "num_heads", None)
        if n is not None:
            return int(n)
    n = getattr(tower, "num_heads", None)
    if n is None:
        raise MethodError(f"cannot read the head count of block {layer}")
    return int(n)


def check_heads(model: Any, heads: Sequence[Head]) -> None:
    """One-line refusal for towers without heads or heads out of range."""
    tower = model.image
    if tower.kind != "vit" or not tower.has_attention:
        raise InputError(
            f"ablate_heads needs a ViT image tower with attention heads; {getattr(model, 'name', 'this model')}'s "
            f"is a {tower.kind.upper()} ({type(tower).__name__})"
        )
    for layer, head in heads:
        if not 0 <= layer < tower.num_blocks or not 0 <= head < _num_heads(tower, layer):
            raise InputError(f"no head {head} in layer {layer} of this image tower")


def mean_ablate(model: Any, means: dict[Head, Tensor]) -> None:
    """Replace each head's output by its mean, in place, in the weights (see the module's docstring)."""
    tower = model.image
    with torch.no_grad():
        for (layer, head), mu in means.items():
            lin = _projection(model, layer)
            if lin.bias is None:
                raise MethodError(f"block {layer}'s attention output projection has no bias to hold the mean")
            H = _num_heads(tower, layer)
            dh = lin.weight.shape[1] // H
            cols = slice(head * dh, (head + 1) * dh)
            lin.bias.add_(lin.weight[:, cols] @ mu.to(lin.weight))
            lin.weight[:, cols] = 0
