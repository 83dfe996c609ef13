"""Decompose a ViT image embedding into the contributions of its components (TextSpan).

Gandelsman, Efros & Steinhardt, "Interpreting CLIP's Image Representation via Text-Based
Decomposition", ICLR 2024. The residual stream after the last block is the sum of what the
embeddings and every block's attention heads and MLP wrote into it::

    h_L = h_0 + sum_l (sum_h attn_{l,h} + mlp_l)          (+ the attention output biases)

and the head (final norm, pooling, projection) is linear in ``h_L`` once the norm's per-sample
scale is held at the value it takes on the real input (and an attention-pooling head's weights,
and a pooler activation's ratio ``f(y) / y``, too), so the embedding is the sum of the components' images through that linear map. Constant
terms (norm and projection biases, attention output biases) are spread equally over the parts, as
TextSpan spreads the final norm's bias; the MLP of an attention-pooling head (SigLIP's MAP head)
is a part of its own. Parts sum to ``model.image.encode`` (checked on every call; a tower whose
head is not linear in this sense is refused).

Per-patch contributions (``spatial=True``, towers whose head reads the class token): each head's
contribution split over the tokens it attends to (its attention at the class token times each
token's value vector), the other parts and the constants at the class token's position.

Example:
    >>> d = decompose(model, pixels)                      # doctest: +SKIP
    >>> d.parts.shape, d.names[:3]                        # doctest: +SKIP
    (torch.Size([8, 40, 512]), ['embeddings', 'layer 0 head 0', 'layer 0 head 1'])
    >>> contrib = d.score_parts(model.encode_text(model.tokenize(["a dog"])))   # (8, 40), sums to the cosine
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MethodError
from ..models import head_ops as ops_
from ..models.blocks import record_blocks

#: relative difference between the parts' sum and the model's embedding above which a tower is refused
CHECK_TOLERANCE = 1e-3


@dataclass
class Decomposition:
    """Components of image embeddings.

    Attributes:
        names: one per part: ``"embeddings"``, ``"layer L head H"``, ``"layer L mlp"`` (and
            ``"pool mlp"`` for attention-pooling heads).
        parts: (N, K, d) contributions; ``parts.sum(1)`` is the (un-normalised) embedding.
        embedding: (N, d) the model's own image embedding (``model.image.encode``).
        layers, heads: per part, its block and head index (None where it has none).
        spatial: (N, K, T, d) per-token contributions (``spatial=True``), summing over T to ``parts``.
    """

    names: list[str]
    parts: Tensor
    embedding: Tensor
    layers: list[int | None]
    heads: list[int | None]
    spatial: Tensor | None = None

    def head_parts(self) -> list[int]:
        """Indices of the attention-head parts."""
        return [k for k, h in enumerate(self.heads) if h is not None]

    def project(self, direction: Tensor) -> Tensor:
        """(N, K) each part's projection on a unit direction ((d,) or (N, d), normalised here)."""
        u = F.normalize(direction.to(self.parts).reshape(-1, self.parts.shape[-1]), dim=-1)
        return torch.einsum("nkd,nd->nk", self.parts, u.expand(self.parts.shape[0], -1))

    def score_parts(self, text_emb: Tensor) -> Tensor:
        """(N, K) each part's share of the cosine with a text embedding ((d,) or (N, d)): the
        projection over the embedding's norm, so that it sums over K to the cosine."""
        return self.project(text_emb) / self.embedding.norm(dim=-1, keepdim=True).to(self.parts)


def decompose(model: Any, images: Any, *, spatial: bool = False, batch_size: int = 16) -> Decomposition:
    """Decompose the image embeddings of ``images`` (paths, PIL images or preprocessed pixels).

    Args:
        model: a DualEncoder whose image tower is a ViT (attention heads).
        images: anything ``vlexplain.explain`` takes as images.
        spatial: also return per-token contributions (towers whose head reads the class token).
        batch_size: images decomposed together.

    Returns:
        A ``Decomposition``.

    Raises:
        MethodError: the tower has no attention heads, its blocks or head are not of a form the
            decomposition reads, or the parts do not sum to its embedding.
    """
    from ..attribution.api import prepare_images
    from ..models.base import frozen

    tower = model.image
    if tower.kind != "vit" or not tower.has_attention:
        raise MethodError(
            f"decompose needs a ViT image tower with attention heads; {getattr(model, 'name', 'this model')}'s "
            f"is a {tower.kind.upper()} ({type(tower).__name__})"
        )
    px = prepare_images(model, images)
    out = []
    with frozen(model), torch.no_grad():
        for a in range(0, px.shape[0], batch_size):
            out.append(_batch(tower, px[a : a + batch_size], spatial))
    first = out[0]
    return Decomposition(
        first.names,
        torch.cat([d.parts for d in out]),
        torch.cat([d.embedding for d in out]),
        first.layers,
        first.heads,
        torch.cat([d.spatial for d in out]) if spatial else None,  # type: ignore[misc]
    )


def _head_mask(H: int, D: int, like: Tensor) -> Tensor:
    """(H, D): row h is 1 on head h's channels."""
    return torch.kron(
        torch.eye(H, device=like.device, dtype=like.dtype), torch.ones(1, D // H, device=like.device, dtype=like.dtype)
    )


def _block(tower: Any, i: int, h: Tensor, x: Any, spatial: bool) -> tuple[Tensor, Tensor, Any, int, Any]:
    """Run block ``i``: (output, attention output before its projection, the map from it to the
    residual stream, heads, record or None)."""
    proj = tower.attention_projection(i)
    if proj is None:
        with record_blocks(probs=spatial) as recs:
            h_next, _ = tower.block(i, h, x)
        if len(recs) != 1 or not recs[0].complete:
            raise MethodError(
                f"block {i} of this image tower is not a pre-norm attention block the decomposition reads"
            )
        r = recs[0]
        return h_next, r.attn, r.attn_branch, r.num_heads, r
    module, post = proj
    store: list[Tensor] = []
    handle = module.register_forward_pre_hook(lambda m, args: store.append(args[0]))
    try:
        h_next, _ = tower.block(i, h, x)
    finally:
        handle.remove()
    heads = int(tower.block_modules()[i].attn.num_heads)
    return h_next, store[-1], (lambda a: post(module(a))), heads, None


def _stream(tower: Any, x: Tensor, spatial: bool) -> tuple[list[str], list[tuple], Tensor, Tensor, Tensor, list]:
    """The residual stream's parts (K, B, T, D), its constant (B, T, D) and the final hidden state."""
    h = tower.encode(x, stop=-1)
    names, parts = ["embeddings"], [h]
    where: list[tuple[int | None, int | None]] = [(None, None)]
    const = torch.zeros_like(h)
    records = []
    for i in range(tower.num_blocks):
        h_next, z, branch, H, rec = _block(tower, i, h, x, spatial)
        zero = branch(torch.zeros_like(z))  # the output bias, the same at every token
        mask = _head_mask(H, z.shape[-1], z)
        per_head = branch(z[None] * mask[:, None, None, :]) - zero  # (H, B, T, D)
        mlp = h_next - h - branch(z)
        parts += list(per_head) + [mlp]
        names += [f"layer {i} head {k}" for k in range(H)] + [f"layer {i} mlp"]
        where += [(i, k) for k in range(H)] + [(i, None)]
        const = const + zero
        records.append((rec, branch, H, mask))
        h = h_next
    return names, where, torch.stack(parts), const, h, records


def _scale(mod: nn.Module, ref: Tensor) -> tuple[Tensor, bool]:
    """The per-token scale of a norm on ``ref`` (held fixed) and whether it centres first."""
    eps = float(getattr(mod, "eps", getattr(mod, "variance_epsilon", 1e-6)))
    if isinstance(mod, nn.LayerNorm):
        return (ref.var(-1, unbiased=False, keepdim=True) + eps).sqrt(), True
    if "rmsnorm" in type(mod).__name__.lower():
        return (ref.pow(2).mean(-1, keepdim=True) + eps).sqrt(), False
    raise MethodError(f"the decomposition reads LayerNorm and RMSNorm heads, not {type(mod).__name__}")


def _linear_norm(mod: nn.Module, P: Tensor, s: Tensor, centred: bool) -> Tensor:
    """The norm's linear part on ``P`` (no bias) with the scale ``s`` held fixed."""
    P = (P - P.mean(-1, keepdim=True)) / s if centred else P / s
    w = getattr(mod, "weight", None)
    return P * w if w is not None else P


def _norm(mod: nn.Module, P: Tensor, c: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A per-token norm with the scale of ``ref`` held fixed: (parts, constant, the norm of ref)."""
    if isinstance(mod, nn.Identity):
        return P, c, ref
    s, centred = _scale(mod, ref)
    P, c = _linear_norm(mod, P, s, centred), _linear_norm(mod, c, s, centred)
    b = getattr(mod, "bias", None)
    return P, (c + b if b is not None else c), mod(ref)


def _values(P: Tensor, c: Tensor, w: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor]:
    return F.linear(P, w), F.linear(c, w, b)


def _pool(probs: Tensor, v: Tensor, H: int) -> Tensor:
    """(B, H, L, T) weights x (..., B, T, E) values -> (..., B, L, E), head by head."""
    *lead, B, T, E = v.shape
    vh = v.reshape(*lead, B, T, H, E // H)
    out = torch.einsum("bhlt,...bthd->...blhd", probs, vh)
    return out.reshape(*lead, B, probs.shape[2], E)


def _mha(op: ops_.MHAPool, P: Tensor, c: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mha = op.mha
    q = op.query(ref.shape[0]).to(ref)
    args = (q, ref, ref) if mha.batch_first else (q.transpose(0, 1), ref.transpose(0, 1), ref.transpose(0, 1))
    out, probs = mha(*args, key_padding_mask=op.key_padding_mask, need_weights=True, average_attn_weights=False)
    out = out if mha.batch_first else out.transpose(0, 1)
    E = mha.embed_dim
    wv = mha.in_proj_weight[2 * E :] if mha._qkv_same_embed_dim else mha.v_proj_weight
    bv = None if mha.in_proj_bias is None else mha.in_proj_bias[2 * E :]
    vP, vc = _values(P, c, wv, bv)
    o = mha.out_proj
    return (
        F.linear(_pool(probs, vP, mha.num_heads), o.weight),
        F.linear(_pool(probs, vc, mha.num_heads), o.weight, o.bias),
        out,
    )


def _latent(m: Any, P: Tensor, c: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """timm AttentionPoolLatent (attention and projection; its MLP is a ResidualMLP op)."""
    if m.pos_embed is not None:
        pe = m.pos_embed.unsqueeze(0).to(ref)
        c, ref = c + pe, ref + pe
    B, N, C = ref.shape
    H, dh = m.num_heads, m.head_dim
    q = m.q(m.latent.expand(B, -1, -1)).reshape(B, -1, H, dh).transpose(1, 2)
    w, b = m.kv.weight, m.kv.bias
    k = F.linear(ref, w[:C], None if b is None else b[:C]).reshape(B, N, H, dh).transpose(1, 2)
    q, k = m.q_norm(q), m.k_norm(k)
    probs = ((q * m.scale) @ k.transpose(-2, -1)).softmax(-1)  # (B, H, L, N)
    bv = None if b is None else b[C:]
    vP, vc = _values(P, c, w[C:], bv)
    pr = m.proj
    out_ref = pr(_pool(probs, F.linear(ref, w[C:], bv), H))
    return F.linear(_pool(probs, vP, H), pr.weight), pr(_pool(probs, vc, H)), out_ref


def _attention_pool(op: ops_.AttentionPool, P: Tensor, c: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Attention pooling with its weights held at their values on ``ref``."""
    probs = op.weights(ref)  # (B, H, L, T)
    H, v, o = probs.shape[1], op.value, op.out
    vP, vc = _values(P, c, v.weight, v.bias)
    out_ref = o(_pool(probs, v(ref), H))
    return F.linear(_pool(probs, vP, H), o.weight), o(_pool(probs, vc, H)), out_ref


def _ratio(op: ops_.Gate, y: Tensor) -> Tensor:
    """f(y) / y element-wise (the slope at 0 where y = 0)."""
    tiny = torch.full_like(y, 1e-4)
    return torch.where(y != 0, op.fn(y) / torch.where(y != 0, y, 1), op.fn(tiny) / tiny)


def _gate(op: ops_.Gate, P: Tensor, c: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """An element-wise activation held at its ratio f(y) / y on ``ref`` (the parts sum to ``ref``'s)."""
    r = _ratio(op, ref)
    return P * r, c * r, op.fn(ref)


def _run_head(ops: list[Any], P: Tensor, c: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, list[str]]:
    """Apply the head's operations to the parts (K, B, T, D) and the constant; extra part names."""
    extra: list[str] = []
    for op in ops:
        if isinstance(op, ops_.Norm):
            P, c, ref = _norm(op.module, P, c, ref)
        elif isinstance(op, ops_.Select):
            P, c, ref = P[:, :, op.index], c[:, op.index], ref[:, op.index]
        elif isinstance(op, ops_.Mean):
            P, c, ref = P[:, :, op.start :].mean(2), c[:, op.start :].mean(1), ref[:, op.start :].mean(1)
        elif isinstance(op, ops_.Tokens):
            P, c, ref = P[:, :, op.start :], c[:, op.start :], ref[:, op.start :]
        elif isinstance(op, ops_.Affine):
            zero = op.fn(torch.zeros_like(c))
            P, c, ref = op.fn(P) - zero, op.fn(c), op.fn(ref)
        elif isinstance(op, ops_.MHAPool):
            P, c, ref = _mha(op, P, c, ref)
        elif isinstance(op, ops_.AttentionPool):
            P, c, ref = _attention_pool(op, P, c, ref)
        elif isinstance(op, ops_.Gate):
            P, c, ref = _gate(op, P, c, ref)
        elif isinstance(op, ops_.LatentPool):
            P, c, ref = _latent(op.module, P, c, ref)
        elif isinstance(op, ops_.ResidualMLP):
            m = op.mlp(op.norm(ref))
            P, ref = torch.cat([P, m[None]]), ref + m
            extra.append(op.name)
        else:
            raise MethodError(f"unknown head operation {type(op).__name__}")
    return P, c, extra


def _spatial_head(ops: list[Any], Q: Tensor, ref: Tensor) -> Tensor:
    """Per-token parts (K, B, S, D) at the class token -> (K, B, S, d) through a class-token head."""
    kinds = {type(op) for op in ops}
    if not any(isinstance(op, ops_.Select) for op in ops) or not kinds <= {
        ops_.Select,
        ops_.Norm,
        ops_.Affine,
        ops_.Gate,
    }:
        raise MethodError("per-token contributions need a head that reads the class token (CLS pooling)")
    r0 = ref[:, next(op.index for op in ops if isinstance(op, ops_.Select))]  # (B, D): the row the head reads
    for op in ops:
        if isinstance(op, ops_.Norm) and not isinstance(op.module, nn.Identity):
            s, centred = _scale(op.module, r0)  # (B, 1)
            Q, r0 = _linear_norm(op.module, Q, s[:, None], centred), op.module(r0)
        elif isinstance(op, ops_.Affine):
            Q, r0 = op.fn(Q) - op.fn(torch.zeros_like(r0))[:, None], op.fn(r0)
        elif isinstance(op, ops_.Gate):
            Q, r0 = Q * _ratio(op, r0)[:, None], op.fn(r0)
    return Q


def _spatial_parts(parts: Tensor, records: list, ref_rows: int = 0) -> Tensor:
    """(K, B, T, D): head parts split over the tokens their class-token row attends to; other parts
    at the class token's position."""
    K, B, T, D = parts.shape
    Q = torch.zeros_like(parts)
    Q[:, :, ref_rows] = parts[:, :, ref_rows]  # embeddings and MLPs sit at the class token
    k = 1
    for rec, branch, H, mask in records:
        if rec is None or rec.probs is None:
            raise MethodError("per-token contributions need blocks whose attention and values are recorded")
        a = rec.probs[:, :, ref_rows]  # (B, H, T): the class token's attention
        v = rec.v  # (B, T, D), heads concatenated
        src = a.transpose(1, 2)[..., None] * v.view(B, T, H, D // H)  # (B, T, H, dh)
        src = src.permute(2, 0, 1, 3)  # (H, B, T, dh)
        full = src.repeat(1, 1, 1, H) * mask[:, None, None, :]  # head h's values on its own channels
        Q[k : k + H] = branch(full) - branch(torch.zeros_like(full))
        k += H + 1
    return Q


def _batch(tower: Any, x: Tensor, spatial: bool) -> Decomposition:
    try:
        head = tower.head_ops(x)
    except NotImplementedError as e:
        raise MethodError(f"cannot decompose this image tower: {e}") from None
    try:
        names, where, P, c, hL, records = _stream(tower, x, spatial)
    except NotImplementedError as e:
        raise MethodError(f"cannot decompose this image tower: {e}") from None
    emb = tower.head(hL, x)
    Q = _spatial_parts(P, records) if spatial else None
    parts, const, extra = _run_head(head, P, c, hL)
    K = parts.shape[0] + 0
    names += extra
    where += [(None, None)] * len(extra)
    parts = parts + const[None] / K
    total = parts.sum(0)
    err = float((total - emb).norm() / emb.norm().clamp_min(1e-12))
    if err > CHECK_TOLERANCE:
        raise MethodError(
            f"the parts of this image tower do not sum to its embedding (relative difference {err:.2g}): "
            "its head is not linear once its norms are held fixed"
        )
    sp = None
    if Q is not None:
        sp = _spatial_head(head, Q, hL)
        sp[:, :, 0] += const[None] / K  # the constants sit at the class token
        sp = sp.permute(1, 0, 2, 3)
    return Decomposition(names, parts.permute(1, 0, 2), emb, [w[0] for w in where], [w[1] for w in where], sp)
