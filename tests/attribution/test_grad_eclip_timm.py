"""Grad-ECLIP on OpenCLIP's timm trunks (EVA02 with rotary positions, a class-token timm ViT, a
relative-position ViT, SigLIP's MAP head): the map equals a literal re-implementation written on
the timm model's own modules (q / k / v from the attention's own projection, norms and rotary
embedding, the block's residual structure by hand; for the MAP head its learned query, key / value
projection and MLP). Trunks that pool several tokens otherwise (average pooling) have no pooled
token and are refused with that reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlexplain as vx
from vlexplain.errors import MethodError
from vlexplain.models.open_clip_timm import _VIT, _tiny_custom

TEXT = "a photo of a small cat"


def tiny_eva8(seed: int = 0):
    """EVA02-B-16's wiring with 8-px patches (a 4 x 4 grid at 32 px)."""
    vision = dict(timm_model_name="eva02_base_patch16_clip_224", timm_pool="token", timm_proj=None, image_size=32)
    return _tiny_custom(vision, dict(_VIT, patch_size=8), seed=seed)


def tiny_cls_vit(seed: int = 0):
    """A class-token timm ViT pooled at its class token, with 8-px patches."""
    vision = dict(timm_model_name="vit_base_patch16_224", timm_pool="token", timm_proj="linear", image_size=32)
    return _tiny_custom(vision, dict(_VIT, patch_size=8), seed=seed)


def tiny_relpos8(seed: int = 0):
    """vit_relpos_medium_patch16_cls_224's wiring (relative-position biases) with 8-px patches."""
    from vlexplain.models.open_clip_timm import tiny_relpos

    return tiny_relpos(seed)


def _qkv(at, u):
    """q, k, v (B, heads, N, hd) as timm's attention module computes them, before its norms."""
    B, N, _ = u.shape
    if getattr(at, "qkv", None) is None:  # Eva with separate projections
        return [p(u).reshape(B, N, at.num_heads, -1).transpose(1, 2) for p in (at.q_proj, at.k_proj, at.v_proj)]
    bias = at.qkv.bias
    if getattr(at, "q_bias", None) is not None:  # Eva: q / v biases, no k bias
        bias = torch.cat((at.q_bias, at.k_bias, at.v_bias))
    qkv = F.linear(u, at.qkv.weight, bias).reshape(B, N, 3, at.num_heads, -1).permute(2, 0, 3, 1, 4)
    return list(qkv.unbind(0))


def reference_map(model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Grad-ECLIP of the last block, written out on the timm trunk's modules: (B, gh, gw)."""
    from timm.layers import apply_rot_embed_cat
    from timm.models.eva import Eva

    trunk = model.visual.trunk
    eva = isinstance(trunk, Eva)
    relpos = hasattr(trunk, "shared_rel_pos")
    kw: dict = {}
    with torch.no_grad():
        h = trunk.patch_embed(x)
        if relpos:  # no absolute positions: the class token, then biases inside every block
            h = torch.cat([trunk.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
            shared = trunk.shared_rel_pos.get_bias() if trunk.shared_rel_pos is not None else None
            kw = {"shared_rel_pos": shared}
        else:
            h, rope = trunk._pos_embed(h) if eva else (trunk._pos_embed(h), None)
            h = trunk.norm_pre(h)
            kw = {"rope": rope} if eva else {}
        for blk in trunk.blocks[:-1]:
            h = blk(h, **kw)
    rope = kw.get("rope")
    blk = trunk.blocks[-1]
    at = blk.attn
    q, k, v = _qkv(at, blk.norm1(h))
    q, k = at.q_norm(q), at.k_norm(k)
    npt = trunk.num_prefix_tokens
    if rope is not None:
        half = getattr(at, "rotate_half", False)
        q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2)
        k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2)
    logits = (q @ k.transpose(-2, -1)) * at.scale
    if relpos:
        logits = logits + (at.rel_pos.get_bias() if at.rel_pos is not None else kw["shared_rel_pos"])
    probs = logits.softmax(-1)
    B, H, N, hd = q.shape
    a = (probs @ v).transpose(1, 2).reshape(B, N, H * hd).detach().requires_grad_(True)
    out = at.proj(at.norm(a) if hasattr(at, "norm") else a)
    if eva:
        h1 = h + (out if blk.gamma_1 is None else blk.gamma_1 * out)
        m = blk.mlp(blk.norm2(h1))
        h2 = h1 + (m if blk.gamma_2 is None else blk.gamma_2 * m)
    else:
        h1 = h + blk.ls1(out)
        h2 = h1 + blk.ls2(blk.mlp(blk.norm2(h1)))
    with torch.no_grad():  # the hand-written block is the module's own forward
        own = blk(h, **kw)
        torch.testing.assert_close(h2, own, rtol=1e-5, atol=1e-5)
    e = model.visual.head(trunk.forward_head(trunk.norm(h2)))
    score = F.cosine_similarity(e, t, dim=-1)
    g = torch.autograd.grad(score.sum(), a)[0][:, 0]  # (B, D) at the class token
    flat = lambda z: z.transpose(1, 2).reshape(B, N, -1).detach()
    vf, qf, kf = flat(v), flat(q), flat(k)
    cos = F.cosine_similarity(qf[:, :1], kf, dim=-1)[:, npt:]  # (B, patches)
    lam = (cos - cos.amin(-1, keepdim=True)) / (cos.amax(-1, keepdim=True) - cos.amin(-1, keepdim=True))
    m_b = (g[:, None, :] * vf).sum(-1)[:, npt:] * lam
    gh, gw = trunk.patch_embed.grid_size
    return m_b.relu().reshape(B, gh, gw)


def tiny_siglip8(seed: int = 0):
    """ViT-B-16-SigLIP's wiring (MAP head, no class token) with 8-px patches."""
    vision = dict(timm_model_name="vit_base_patch16_siglip_224", timm_pool="map", timm_proj="none", image_size=32)
    text = dict(context_length=16, no_causal_mask=True, proj_bias=True, pool_type="last")
    return _tiny_custom(vision, dict(_VIT, patch_size=8), embed_dim=32, text_cfg=text, seed=seed)


def tiny_pe_core8(seed: int = 0):
    """PE-Core-B-16's wiring (timm Eva: class token, rotary positions, a MAP head) with 8-px patches."""
    vision = dict(timm_model_name="vit_pe_core_base_patch16_224", timm_pool="map", timm_proj=None, image_size=32)
    return _tiny_custom(vision, dict(_VIT, patch_size=8, attn_pool_num_heads=2), seed=seed)


def reference_map_pool_head(model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Grad-ECLIP at the MAP head, written out on timm's AttentionPoolLatent: (B, gh, gw)."""
    trunk = model.visual.trunk
    pool = trunk.attn_pool
    with torch.no_grad():
        z = trunk.forward_features(x)  # (B, N, C) after the last block and the final norm
    B, N, C = z.shape
    H, hd = pool.num_heads, pool.head_dim
    q = pool.q(pool.latent.expand(B, -1, -1)).reshape(B, 1, H, hd).transpose(1, 2)
    k, v = pool.kv(z).reshape(B, N, 2, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = pool.q_norm(q), pool.k_norm(k)
    probs = ((q @ k.transpose(-2, -1)) * pool.scale).softmax(-1)  # (B, H, 1, N)
    a = (probs @ v).transpose(1, 2).reshape(B, 1, C).detach().requires_grad_(True)
    y = pool.proj(a)
    pooled = (y + pool.mlp(pool.norm(y)))[:, 0]
    e = model.visual.head(trunk.head(trunk.fc_norm(pooled)))
    with torch.no_grad():  # the hand-written head is the model's own
        torch.testing.assert_close(e, model.encode_image(x, normalize=False), rtol=1e-5, atol=1e-6)
    g = torch.autograd.grad(F.cosine_similarity(e, t, dim=-1).sum(), a)[0][:, 0]  # (B, C) at the query
    flat = lambda u: u.transpose(1, 2).reshape(B, u.shape[2], C).detach()
    npt = trunk.num_prefix_tokens  # PE-Core's class token is keyed too, but not a patch
    cos = F.cosine_similarity(flat(q), flat(k), dim=-1)[:, npt:]  # (B, patches)
    lam = (cos - cos.amin(-1, keepdim=True)) / (cos.amax(-1, keepdim=True) - cos.amin(-1, keepdim=True))
    m = (g[:, None, :] * flat(v)).sum(-1)[:, npt:] * lam
    gh, gw = trunk.patch_embed.grid_size
    return m.relu().reshape(B, gh, gw)


@pytest.mark.parametrize(
    "build",
    [tiny_eva8, tiny_cls_vit, tiny_relpos8, tiny_siglip8, tiny_pe_core8],
    ids=["eva02", "cls-vit", "relpos", "siglip-map", "pe-core-map"],
)
def test_grad_eclip_on_timm_trunks_equals_the_literal_reference(build):
    model = build()
    dual = vx.load_model(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t = dual.encode_text(dual.tokenize([TEXT, TEXT]), normalize=False)
    pool_head = build in (tiny_siglip8, tiny_pe_core8)
    ref = (reference_map_pool_head if pool_head else reference_map)(model, x, t)
    got = vx.explain(dual, x, [TEXT, TEXT], method="grad_eclip", sides=["image"], batch_size=2)
    for i in range(2):
        assert float(ref[i].abs().max()) > 0  # a map that can fail
        torch.testing.assert_close(got[i].patch_map, ref[i], rtol=1e-4, atol=1e-5 * float(ref[i].abs().max()))
    assert sum(1 for mm in model.modules() if mm._forward_pre_hooks or mm._forward_hooks) == 0
    assert all(getattr(b.attn, "fused_attn", True) == b.attn.fused_attn for b in model.visual.trunk.blocks)


def test_grad_eclip_at_the_map_head_is_one_block():
    dual = vx.load_model(tiny_siglip8())
    with pytest.raises(MethodError, match="image_blocks must be 1"):
        vx.explain(dual, torch.zeros(3, 32, 32), TEXT, method="grad_eclip", image_blocks=2)
    assert not [mm for mm in dual.model.modules() if mm._forward_pre_hooks or mm._forward_hooks]


@pytest.mark.parametrize("key", ["open_clip-timm-vit", "open_clip-vitamin", "hf-siglip"])
def test_grad_eclip_refuses_timm_trunks_without_a_pooled_token(key, family_model):
    m = family_model(key)
    with pytest.raises(MethodError, match="pools several tokens"):
        vx.explain(m, torch.zeros(3, *m.input_size), TEXT, method="grad_eclip", sides=["image"])
