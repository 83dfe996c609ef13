"""GEM, SCLIP, ClearCLIP and NACLIP equal the released code.

GEM is compared with the ``gem-torch`` package itself (``gem.GEMWrapper``, the authors' release on
PyPI) on a random OpenCLIP ViT. SCLIP (wangf3014/SCLIP ``clip/model.py``), ClearCLIP
(mc-lan/ClearCLIP ``open_clip/transformer.py``) and NACLIP (sinahmr/NACLIP ``clip/model.py``)
are literal transcriptions of their released ``VisionTransformer.forward`` / ``custom_attn``,
written against an OpenCLIP model (the OpenAI CLIP layout those repositories use), one image at a
time. Only what the installed libraries force is changed: OpenCLIP 3 blocks are batch-first, so the
blocks the released code runs unchanged are run batch-first and the tokens are then put in the
released (L, N, D) layout; the released position-embedding resize is the identity at the model's
own input size.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vlexplain as vx
from tests.support.models import tiny_open_clip
from vlexplain.errors import MethodError

CLS = "small cat"
TEXT = f"a photo of a {CLS}."  # what GEMWrapper.encode_text makes of the class name


def _oc(layers: int = 3, head_width: int = 8, seed: int = 0):
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 64, "patch_size": 16, "width": 32, "layers": layers, "head_width": head_width},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
    ).eval()


def _pixels(n: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _text_emb(raw) -> torch.Tensor:
    import open_clip

    with torch.no_grad():
        return F.normalize(raw.encode_text(open_clip.tokenize([TEXT])), dim=-1)


def _embed_patches(visual, x):
    """The released ViT stem (conv1, class token, positions, ln_pre); (N, L, D)."""
    x = visual.conv1(x)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1]).to(x), x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(x)


# ============================================================================================
# GEM: the gem-torch package
# ============================================================================================
class _LND(nn.Module):
    """An OpenCLIP 3 (batch-first) block run on the (L, N, D) tokens gem-torch's forward passes."""

    def __init__(self, blk: nn.Module):
        super().__init__()
        self.blk = blk

    def forward(self, x, attn_mask=None):
        return self.blk(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)


def _gem_wrapper(raw, **kw):
    import open_clip
    from gem import GEMWrapper

    wrapper = GEMWrapper(raw, open_clip.tokenize, **kw)
    blocks = raw.visual.transformer.resblocks
    for i, blk in enumerate(blocks):  # gem-torch wraps its own blocks; the others run as OpenCLIP 2 ran them
        if type(blk).__name__ != "GEMResidualBlock":
            blocks[i] = _LND(blk)
    return wrapper.eval()


@pytest.mark.parametrize(
    "layers,kw,ours",
    [
        (7, {}, {}),  # released defaults: depth 7 (last 6 blocks), 1 iteration, adaptive temperature
        (4, {"depth": 3, "ss_attn_iter": 3}, {"blocks": 2, "iterations": 3}),
        (3, {"depth": 4, "ss_attn_temp": 2.5}, {"blocks": 3, "temperature": 2.5}),
    ],
)
def test_gem_equals_gem_torch(layers: int, kw: dict, ours: dict) -> None:
    raw = _oc(layers=layers)
    model = vx.load_model(raw)
    px = _pixels(2)
    got = vx.explain(model, px, [TEXT, TEXT], method="gem", **ours)  # before the wrapper edits the model
    with torch.no_grad():
        ref = _gem_wrapper(_oc(layers=layers), **kw)(px[:1], [CLS], normalize=False)[0, 0]
        ref2 = _gem_wrapper(_oc(layers=layers), **kw).batched_forward(px, [[CLS], [CLS]], normalize=False)
    assert ref.std() > 1e-3  # a map that varies
    torch.testing.assert_close(got[0].image_map, ref, rtol=1e-4, atol=1e-6)
    # batched_forward scales by 100 (a logit); the second image alone, as the batch saw it
    torch.testing.assert_close(got[1].image_map * 100, ref2[1][0], rtol=1e-4, atol=1e-4)


# ============================================================================================
# SCLIP, ClearCLIP, NACLIP: the released custom_attn, transcribed
# ============================================================================================
def ref_sclip_custom_attn(attn_layer, x, csa=True):
    """SCLIP clip/model.py ``VisionTransformer.custom_attn`` (return_attn/with_attn left out)."""
    num_heads = attn_layer.num_heads
    _, bsz, embed_dim = x.size()
    head_dim = embed_dim // num_heads
    scale = head_dim**-0.5
    q, k, v = F.linear(x, attn_layer.in_proj_weight, attn_layer.in_proj_bias).chunk(3, dim=-1)
    q = q.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    k = k.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    if csa:
        q_attn = torch.bmm(q, q.transpose(1, 2)) * scale
        k_attn = torch.bmm(k, k.transpose(1, 2)) * scale
        attn_weights = F.softmax(q_attn, dim=-1) + F.softmax(k_attn, dim=-1)
    else:
        attn_weights = torch.bmm(q * scale, k.transpose(1, 2))
        attn_weights = F.softmax(attn_weights, dim=-1)
    attn_output = torch.bmm(attn_weights, v)
    attn_output = attn_output.transpose(0, 1).contiguous().view(-1, bsz, embed_dim)
    attn_output = attn_layer.out_proj(attn_output)
    return attn_output


@torch.no_grad()
def ref_sclip_forward(visual, x):
    """SCLIP ``VisionTransformer.forward(x, return_all=True, csa=True)``."""
    x = _embed_patches(visual, x)
    for blk in visual.transformer.resblocks[:-1]:
        x = blk(x)  # batch-first
    x = x.permute(1, 0, 2)  # NLD -> LND
    for blk in visual.transformer.resblocks[-1:]:
        x = x + ref_sclip_custom_attn(blk.attn, blk.ln_1(x), csa=True)
        x = x + blk.mlp(blk.ln_2(x))
    x = x.permute(1, 0, 2)  # LND -> NLD
    return visual.ln_post(x) @ visual.proj


def ref_clearclip_custom_attn(attn_layer, x, model_type="ClearCLIP"):
    """ClearCLIP open_clip/transformer.py ``VisionTransformer.custom_attn``."""
    num_heads = attn_layer.num_heads
    _, bsz, embed_dim = x.size()
    head_dim = embed_dim // num_heads
    scale = head_dim**-0.5
    q, k, v = F.linear(x, attn_layer.in_proj_weight, attn_layer.in_proj_bias).chunk(3, dim=-1)
    q = q.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    k = k.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    if model_type == "SCLIP":
        qq_attn = torch.bmm(q, q.transpose(1, 2)) * scale
        kk_attn = torch.bmm(k, k.transpose(1, 2)) * scale
        attn_weights = F.softmax(qq_attn, dim=-1) + F.softmax(kk_attn, dim=-1)
    elif model_type == "ClearCLIP":
        qq_attn = torch.bmm(q, q.transpose(1, 2)) * scale
        attn_weights = F.softmax(qq_attn, dim=-1)
    attn_output = torch.bmm(attn_weights, v)
    attn_output = attn_output.transpose(0, 1).contiguous().view(-1, bsz, embed_dim)
    attn_output = attn_layer.out_proj(attn_output)
    return attn_output


@torch.no_grad()
def ref_clearclip_forward(visual, x, model_type="ClearCLIP", ignore_residual=True, last_n_layers=1):
    """ClearCLIP ``VisionTransformer.forward``: the tokens through ln_post and proj (no attention pool)."""
    x = _embed_patches(visual, x)
    x = x.permute(1, 0, 2)  # NLD -> LND
    for blk in visual.transformer.resblocks[:-last_n_layers]:
        x = blk(x.transpose(0, 1)).transpose(0, 1)  # batch-first blocks
    output = 0
    for blk in visual.transformer.resblocks[-last_n_layers:]:
        if ignore_residual:
            output += ref_clearclip_custom_attn(blk.attn, blk.ln_1(x), model_type=model_type)
            x = blk(x.transpose(0, 1)).transpose(0, 1)
        else:
            x_out = x + ref_clearclip_custom_attn(blk.attn, blk.ln_1(x), model_type=model_type)
            x_out = x_out + blk.mlp(blk.ln_2(x_out))
            output += x_out
            x = blk(x.transpose(0, 1)).transpose(0, 1)
    x = output.permute(1, 0, 2)  # LND -> NLD
    x = visual.ln_post(x)
    return x @ visual.proj


def ref_gaussian_window(dim1, dim2, std=1.0):
    """NACLIP ``VisionTransformer.gaussian_window``."""
    constant = 1 / (std * math.sqrt(2))
    ks = list()
    for dim in [dim1, dim2]:
        start = -(dim - 1) / 2.0
        k = torch.linspace(start=start * constant, end=(start + (dim - 1)) * constant, steps=dim, dtype=torch.float)
        ks.append(k)
    dist_square_to_mu = (torch.stack(torch.meshgrid(*ks, indexing="ij")) ** 2).sum(0)
    return torch.exp(-dist_square_to_mu)


def ref_get_attention_addition(dim1, dim2, window, adjust_for_cls=True):
    """NACLIP ``VisionTransformer.get_attention_addition``."""
    m = torch.einsum("ij,kl->ijkl", torch.eye(dim1), torch.eye(dim2))
    m = m.permute((0, 3, 1, 2)).contiguous()  # m[ijkl] = 1 iff (i, j) == (k, l)
    out = F.conv2d(m.view(-1, dim1, dim2).unsqueeze(1), window.unsqueeze(0).unsqueeze(1), padding="same").squeeze(1)
    out = out.view(dim1 * dim2, dim1 * dim2)
    if adjust_for_cls:
        v_adjusted = torch.vstack([torch.zeros((1, dim1 * dim2)), out])
        out = torch.hstack([torch.zeros((dim1 * dim2 + 1, 1)), v_adjusted])
    return out


def ref_naclip_custom_attn(attn_layer, x, n_patches, gaussian_std):
    """NACLIP ``VisionTransformer.custom_attn`` with ``attn_strategy='naclip'``."""
    num_heads = attn_layer.num_heads
    num_tokens, bsz, embed_dim = x.size()
    head_dim = embed_dim // num_heads
    scale = head_dim**-0.5
    q, k, v = F.linear(x, attn_layer.in_proj_weight, attn_layer.in_proj_bias).chunk(3, dim=-1)
    q = q.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    k = k.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    window_size = [side * 2 - 1 for side in n_patches]
    window = ref_gaussian_window(*window_size, std=gaussian_std)
    addition = ref_get_attention_addition(*n_patches, window).unsqueeze(0).to(x.dtype).to(x.device)
    attn_weights = torch.bmm(k, k.transpose(1, 2)) * scale
    omega = addition
    attn_weights += omega
    attn_weights = F.softmax(attn_weights, dim=-1)
    attn_output = torch.bmm(attn_weights, v)
    attn_output = attn_output.transpose(0, 1).contiguous().view(-1, bsz, embed_dim)
    attn_output = attn_layer.out_proj(attn_output)
    return attn_output


@torch.no_grad()
def ref_naclip_forward(visual, x, gaussian_std=5.0):
    """NACLIP ``VisionTransformer.forward(x, return_all=True)`` with ``arch='reduced'``."""
    B, nc, w, h = x.shape
    n_patches = (w // visual.patch_size[0], h // visual.patch_size[1])
    x = _embed_patches(visual, x)
    x = x.permute(1, 0, 2)  # NLD -> LND
    for blk in visual.transformer.resblocks[:-1]:
        x = blk(x.transpose(0, 1)).transpose(0, 1)  # batch-first blocks
    blk = visual.transformer.resblocks[-1]
    x = ref_naclip_custom_attn(blk.attn, blk.ln_1(x), n_patches, gaussian_std)
    x = x.permute(1, 0, 2)  # LND -> NLD
    return visual.ln_post(x) @ visual.proj


def _ref_map(feats, te):
    """The segmentors' ``forward_feature``: unit-norm patch features times the text, on the grid."""
    f = feats[:, 1:]
    f = f / f.norm(dim=-1, keepdim=True)
    return (f @ te.T)[0, :, 0].reshape(4, 4)


@pytest.mark.parametrize(
    "name,ref,opts",
    [
        ("sclip", ref_sclip_forward, {}),
        ("clearclip", ref_clearclip_forward, {}),
        ("naclip", ref_naclip_forward, {}),
        ("naclip", lambda v, x: ref_naclip_forward(v, x, gaussian_std=1.5), {"std": 1.5}),
    ],
)
@pytest.mark.parametrize("head_width", [8, 32])
def test_matches_release(name: str, ref, opts: dict, head_width: int) -> None:
    raw = _oc(head_width=head_width)
    model = vx.load_model(raw)
    px, te = _pixels(), _text_emb(raw)
    expected = _ref_map(ref(raw.visual, px), te)
    got = vx.explain(model, px, TEXT, method=name, **opts).patch_map
    assert expected.std() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_the_dense_methods_differ() -> None:
    """Four different attentions: no two maps are the same (a wiring slip would make two equal)."""
    model = vx.load_model(_oc())
    px = _pixels()
    maps = {n: vx.explain(model, px, TEXT, method=n).patch_map for n in ("gem", "sclip", "clearclip", "naclip")}
    names = list(maps)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(maps[a], maps[b], atol=1e-3), (a, b)


def test_naclip_bias_by_hand() -> None:
    from vlexplain.attribution.naclip import neighbourhood_bias

    b = neighbourhood_bias((2, 3), 1, 2.0)
    assert b.shape == (7, 7) and b[0].abs().sum() == 0 and b[:, 0].abs().sum() == 0
    # patches (0, 0) and (1, 2): squared distance 1 + 4 = 5
    assert math.isclose(float(b[1, 6]), math.exp(-5 / 8), rel_tol=1e-12)
    assert float(b[3, 3]) == 1.0


def test_refusals(siglip, offline) -> None:
    px = torch.zeros(3, *siglip.input_size)
    for name in ("gem", "sclip", "clearclip", "naclip"):
        with pytest.raises(MethodError, match="image tower"):
            vx.explain(siglip, px, "a cat", method=name)
        assert "CNN" in vx.get_method(name).why_not(offline, "image")
        assert "no text side" in vx.get_method(name).why_not(offline, "text")
    oc = vx.load_model(tiny_open_clip())
    with pytest.raises(MethodError, match="last blocks"):
        vx.explain(oc, torch.zeros(3, 64, 64), "a cat", method="gem", blocks=4)
    for bad in ({"iterations": -1}, {"temperature": "hot"}):
        with pytest.raises(MethodError, match="gem"):
            vx.explain(oc, torch.zeros(3, 64, 64), "a cat", method="gem", **bad)
    with pytest.raises(MethodError, match="std"):
        vx.explain(oc, torch.zeros(3, 64, 64), "a cat", method="naclip", std=0)
