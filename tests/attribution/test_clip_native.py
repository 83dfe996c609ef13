"""Grad-ECLIP, LeGrad, CLIP Surgery and MaskCLIP equal literal transcriptions of the released code.

The references below follow the authors' repositories line by line (Cyang-Zhao/Grad-Eclip:
``grad_eclip_image.ipynb``, ``grad_eclip_text.ipynb``, ``generate_emap.py``; WalBouss/LeGrad:
``legrad/wrapper.py``, ``legrad/utils.py``; xmed-lab/CLIP_Surgery: ``clip/clip_surgery_model.py``,
``clip/clip.py``, ``demo.py``), written against an OpenCLIP model (the OpenAI CLIP layout those
repositories use), one pair at a time (LeGrad's transcription is in ``test_legrad.py``). Only what the installed libraries force is changed: OpenCLIP 3
blocks are batch-first, so the blocks the released code runs unchanged are run batch-first and the
tokens are then put in the released (L, N, D) layout; fp16 casts are left out; the released
position-embedding resize is the identity at the model's own input size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vlexplain as vx
from tests.attribution.clip_native_support import TEXT, _embed_patches, _oc, _pixels, _text_emb
from tests.support.models import tiny_open_clip
from vlexplain.attribution.clip_surgery import NEUTRAL_PROMPTS, TEMPLATES
from vlexplain.errors import MethodError
from vlexplain.models.blocks import record_blocks


# ============================================================================================
# Grad-ECLIP (Cyang-Zhao/Grad-Eclip), transcribed
# ============================================================================================
def ref_attention_layer(q, k, v, num_heads=1, attn_mask=None):
    "Compute 'Scaled Dot Product Attention'"
    tgt_len, bsz, embed_dim = q.shape
    head_dim = embed_dim // num_heads
    scaling = float(head_dim) ** -0.5
    q = q * scaling
    q = q.contiguous().view(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
    k = k.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    attn_output_weights = torch.bmm(q, k.transpose(1, 2))
    if attn_mask is not None:
        attn_output_weights += attn_mask
    attn_output_weights = F.softmax(attn_output_weights, dim=-1)
    attn_output_heads = torch.bmm(attn_output_weights, v)
    assert list(attn_output_heads.size()) == [bsz * num_heads, tgt_len, head_dim]
    attn_output = attn_output_heads.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
    attn_output_weights = attn_output_weights.view(bsz, num_heads, tgt_len, -1)
    attn_output_weights = attn_output_weights.sum(dim=1) / num_heads
    return attn_output, attn_output_weights


def ref_clip_encode_dense(visual, x, n, num_heads):
    """grad_eclip_image.ipynb ``clip_encode_dense``; the released call passes ``num_heads=1``."""
    x, (feah, feaw) = _embed_patches(visual, x)
    for blk in visual.transformer.resblocks[:-n]:
        x = blk(x)  # OpenCLIP 3 blocks are batch-first
    x = x.permute(1, 0, 2)  # NLD -> LND
    attns, atten_outs, vs, qs, ks = [], [], [], [], []
    for TR in visual.transformer.resblocks[-n:]:
        x_in = x
        x = TR.ln_1(x_in)
        linear = torch._C._nn.linear
        q, k, v = linear(x, TR.attn.in_proj_weight, TR.attn.in_proj_bias).chunk(3, dim=-1)
        attn_output, attn = ref_attention_layer(q, k, v, num_heads)
        attns.append(attn)
        atten_outs.append(attn_output)
        vs.append(v)
        qs.append(q)
        ks.append(k)
        x_after_attn = linear(attn_output, TR.attn.out_proj.weight, TR.attn.out_proj.bias)
        x = x_after_attn + x_in
        x = x + TR.mlp(TR.ln_2(x))
    x = x.permute(1, 0, 2)  # LND -> NLD
    x = visual.ln_post(x)
    x = x @ visual.proj
    return x, x_in, vs, qs, ks, attns, atten_outs, (feah, feaw)


def ref_sim_qk(q, k):
    q_cls = F.normalize(q[:1, 0, :], dim=-1)
    k_patch = F.normalize(k[1:, 0, :], dim=-1)
    cosine_qk = (q_cls * k_patch).sum(-1)
    cosine_qk_max = cosine_qk.max(dim=-1, keepdim=True)[0]
    cosine_qk_min = cosine_qk.min(dim=-1, keepdim=True)[0]
    cosine_qk = (cosine_qk - cosine_qk_min) / (cosine_qk_max - cosine_qk_min)
    return cosine_qk


def ref_grad_eclip(c, qs, ks, vs, attn_outputs, map_size):
    ## gradient on last attention output
    tmp_maps = []
    for q, k, v, attn_output in zip(qs, ks, vs, attn_outputs):
        grad = torch.autograd.grad(c, attn_output, retain_graph=True)[0]
        grad_cls = grad[:1, 0, :]
        v_patch = v[1:, 0, :]
        cosine_qk = ref_sim_qk(q, k).reshape(-1)
        tmp_maps.append((grad_cls * v_patch * cosine_qk[:, None]).sum(-1))
    emap = F.relu_(torch.stack(tmp_maps, dim=0)).sum(0)
    return emap.reshape(*map_size)


def ref_grad_eclip_wo_ksim(c, v, att_output, map_size):
    """generate_emap.py ``grad_eclip(..., withksim=False)``."""
    grad = torch.autograd.grad(c, att_output, retain_graph=True)[0]
    grad = grad.detach()
    grad_cls = grad[:1, 0, :]
    emap_lastv = F.relu_((grad_cls * v[1:, 0, :]).detach().sum(-1))
    return emap_lastv.reshape(*map_size)


def ref_clip_encode_text_dense(clipmodel, text, n, num_heads):
    """grad_eclip_text.ipynb ``clip_encode_text_dense`` (the causal mask at the text's length)."""
    x = clipmodel.token_embedding(text)  # [batch_size, n_ctx, d_model]
    L = text.shape[1]
    attn_mask = clipmodel.attn_mask[:L, :L].to(dtype=x.dtype, device=x.device)
    x = x + clipmodel.positional_embedding[:L]
    for blk in clipmodel.transformer.resblocks[:-n]:
        x = blk(x, attn_mask=attn_mask)  # batch-first
    x = x.permute(1, 0, 2)  # NLD -> LND
    attns, atten_outs, vs, qs, ks = [], [], [], [], []
    for TR in clipmodel.transformer.resblocks[-n:]:
        x_in = x
        x = TR.ln_1(x_in)
        linear = torch._C._nn.linear
        q, k, v = linear(x, TR.attn.in_proj_weight, TR.attn.in_proj_bias).chunk(3, dim=-1)
        attn_output, attn = ref_attention_layer(q, k, v, num_heads, attn_mask=attn_mask)
        attns.append(attn)
        atten_outs.append(attn_output)
        vs.append(v)
        qs.append(q)
        ks.append(k)
        x_after_attn = linear(attn_output, TR.attn.out_proj.weight, TR.attn.out_proj.bias)
        x = x_after_attn + x_in
        x = x + TR.mlp(TR.ln_2(x))
    x = x.permute(1, 0, 2)  # LND -> NLD
    x = clipmodel.ln_final(x)
    x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ clipmodel.text_projection
    return x, (qs, ks, vs), attns, atten_outs


def ref_grad_eclip_text(c, qs, ks, vs, attn_outputs, eos_position):
    def sim_qk(q, k):
        q_cls = F.normalize(q[eos_position, 0, :], dim=-1)
        k_patch = F.normalize(k[:, 0, :], dim=-1)
        cosine_qk = (q_cls * k_patch).sum(-1)
        cosine_qk = (cosine_qk - cosine_qk.min()) / (cosine_qk.max() - cosine_qk.min())
        return cosine_qk

    tmp_maps = []
    for q, k, v, attn_output in zip(qs, ks, vs, attn_outputs):
        grad = torch.autograd.grad(c, attn_output, retain_graph=True)[0]
        grad_cls = grad[eos_position, 0, :]
        cosine_qk = sim_qk(q, k)
        tmp_maps.append((grad_cls * v[:, 0, :] * cosine_qk[:, None]).sum(-1))
    emap = F.relu_(torch.stack(tmp_maps, dim=0).sum(0))
    emap = emap[1:eos_position].flatten()
    emap = emap / emap.sum()
    return emap


def _image_cos(raw, outputs, text_embedding):
    img_embedding = F.normalize(outputs[:, 0], dim=-1)
    return (img_embedding @ text_embedding.T)[0]


@pytest.mark.parametrize("head_width,ref_heads", [(8, 4), (32, 1)])
def test_grad_eclip_image_matches_release(head_width: int, ref_heads: int) -> None:
    """The released code explains its last block with one head; on a one-head model that is literal."""
    raw = _oc(head_width=head_width)
    model = vx.load_model(raw)
    px, te = _pixels(), _text_emb(raw)
    outputs, _, vs, qs, ks, _, atten_outs, map_size = ref_clip_encode_dense(raw.visual, px, 1, ref_heads)
    c = _image_cos(raw, outputs, te)[0]
    ref = ref_grad_eclip(c, qs, ks, vs, atten_outs, map_size)
    ref_wo = ref_grad_eclip_wo_ksim(c, vs[0], atten_outs[0], map_size)
    ours = vx.explain(model, px, TEXT, method="grad_eclip", sides=["image"]).patch_map
    ours_wo = vx.explain(model, px, TEXT, method="grad_eclip", sides=["image"], withksim=False).patch_map
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(ours_wo, ref_wo, rtol=1e-4, atol=1e-7)
    # several blocks: per-block ReLU, then the sum (the notebook's n > 1)
    outputs, _, vs, qs, ks, _, atten_outs, map_size = ref_clip_encode_dense(raw.visual, px, 3, ref_heads)
    ref3 = ref_grad_eclip(_image_cos(raw, outputs, te)[0], qs, ks, vs, atten_outs, map_size)
    ours3 = vx.explain(model, px, TEXT, method="grad_eclip", sides=["image"], image_blocks=3).patch_map
    torch.testing.assert_close(ours3, ref3.detach(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("n", [2, 3])
def test_grad_eclip_text_matches_release(n: int) -> None:
    raw = _oc()
    model = vx.load_model(raw)
    px = _pixels()
    ids = model.tokenize([TEXT]).ids.cpu()
    eos = int(ids.argmax(-1))
    text = ids[:, : eos + 1]
    x, (qs, ks, vs), _, atten_outs = ref_clip_encode_text_dense(raw, text, n, 4)
    with torch.no_grad():
        img = F.normalize(raw.encode_image(px), dim=-1)
    cosine = img @ F.normalize(x, dim=-1).T
    ref = ref_grad_eclip_text(cosine[0, 0], qs, ks, vs, atten_outs, eos)
    e = vx.explain(model, px, TEXT, method="grad_eclip", sides=["text"], text_blocks=n)
    assert len(e.tokens) == eos - 1
    torch.testing.assert_close(e.token_scores / e.token_scores.sum(), ref.detach(), rtol=1e-4, atol=1e-7)


# ============================================================================================
# MaskCLIP: Grad-ECLIP's baseline (generate_emap.py clip_encode_dense / mask_clip), transcribed
# ============================================================================================
def ref_v_final(visual, x):
    x, map_size = _embed_patches(visual, x)
    for blk in visual.transformer.resblocks[:-1]:
        x = blk(x)
    x_in = x.permute(1, 0, 2)  # NLD -> LND
    targetTR = visual.transformer.resblocks[-1]
    x_before_attn = targetTR.ln_1(x_in)
    linear = torch._C._nn.linear
    q, k, v = linear(x_before_attn, targetTR.attn.in_proj_weight, targetTR.attn.in_proj_bias).chunk(3, dim=-1)
    with torch.no_grad():
        qkv = torch.stack((q, k, v), dim=0)
        qkv = linear(qkv, targetTR.attn.out_proj.weight, targetTR.attn.out_proj.bias)
        q_out, k_out, v_out = qkv[0], qkv[1], qkv[2]  # noqa: F841 (as released)
        v_final = v_out + x_in
        v_final = v_final + targetTR.mlp(targetTR.ln_2(v_final))
        v_final = v_final.permute(1, 0, 2)
        v_final = visual.ln_post(v_final)
        v_final = v_final @ visual.proj
    return v_final[:, 1:], k_out, map_size


def ref_mask_clip(txt_feats, v_final, k_out, map_size):
    ## similarity between text prompt and v_out
    v_final = F.normalize(v_final, dim=-1)
    cosine_v = (v_final @ txt_feats)[0].transpose(1, 0)
    k_cls = k_out[:1, 0, :]
    k_patch = k_out[1:, 0, :]
    k_cls = F.normalize(k_cls, dim=-1)
    k_patch = F.normalize(k_patch, dim=-1)
    cosine_qk = (k_cls * k_patch).sum(-1)
    sim_v = cosine_v * cosine_qk[None, :]
    return sim_v.detach().reshape(-1, *map_size)


def test_mask_clip_matches_release() -> None:
    raw = _oc()
    model = vx.load_model(raw)
    px, te = _pixels(), _text_emb(raw)
    v_final, k_out, map_size = ref_v_final(raw.visual, px)
    ref = ref_mask_clip(te.T, v_final, k_out, map_size)[0]
    # the baseline's extra class-key weight is not MaskCLIP's: ours times that weight is the baseline
    k_w = (F.normalize(k_out[:1, 0], dim=-1) * F.normalize(k_out[1:, 0], dim=-1)).sum(-1).reshape(map_size)
    ours = vx.explain(model, px, TEXT, method="mask_clip").patch_map
    torch.testing.assert_close(ours * k_w, ref, rtol=1e-4, atol=1e-6)


# ============================================================================================
# CLIP Surgery (xmed-lab/CLIP_Surgery), transcribed
# ============================================================================================
class RefAttention(nn.Module):
    """clip_surgery_model.py ``Attention`` (v-v self-attention beside the original path)."""

    def __init__(
        self, out_dim, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, settings=""
    ):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(out_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.settings = settings

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        # original self-attention for the original path
        attn_ori = (q @ k.transpose(-2, -1)) * self.scale
        attn_ori = attn_ori.softmax(dim=-1)
        attn_ori = self.attn_drop(attn_ori)
        # replace k & q by v
        k = v
        q = k
        # resnets have only one self-attention, norm and larger scale perform better
        if self.settings == "resnet":
            k = k / (k.norm(p=2, dim=-1, keepdim=True) + 1e-6)
            q = k
            scale = self.scale * 8
        else:
            scale = self.scale
        # self-attention, higher temperate for resnets performs better
        attn = (q @ k.transpose(-2, -1)) * scale
        attn = (attn).softmax(dim=-1)
        attn = self.attn_drop(attn)
        x_ori = (attn_ori @ v).transpose(1, 2).reshape(B, N, C)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)  # clip_surgery
        x = self.proj_drop(self.proj(x))
        x_ori = self.proj_drop(self.proj(x_ori))
        return [x, x_ori]


def ref_surgery_block(blk, attn, x):
    """clip_surgery_model.py ``ResidualAttentionBlock.forward`` once its ``attn`` is an Attention."""

    def attention(x):
        x = x.transpose(0, 1)
        x, x_ori = attn(x)
        return [x.transpose(0, 1), x_ori.transpose(0, 1)]

    # dual paths for blocks deeper than "d"
    if isinstance(x, list):
        x, x_ori = x
        x_res = attention(blk.ln_1(x_ori))
        x_res, x_ori_res = x_res
        x_ori += x_ori_res
        x_ori = x_ori + blk.mlp(blk.ln_2(x_ori))
        x += x_res  # skip ffn for the new path
        return [x, x_ori]
    # start of dual path
    else:
        x_res = attention(blk.ln_1(x))
        if isinstance(x_res, list):
            x_res, x_ori_res = x_res
            x_ori = x + x_ori_res
            x_ori = x_ori + blk.mlp(blk.ln_2(x_ori))
            x += x_res
            return [x, x_ori]


@torch.no_grad()
def ref_surgery_encode_image(visual, x, depth):
    """clip_surgery_model.py ``VisionTransformer.forward`` with the surgery on the last ``depth`` blocks."""
    blocks = visual.transformer.resblocks
    attns = {}
    for i in range(1, depth + 1):  # surgery 7, maskclip 2
        a = RefAttention(blocks[-i].attn.embed_dim, blocks[-i].attn.embed_dim, blocks[-i].attn.num_heads, True)
        a.qkv.weight.data = blocks[-i].attn.in_proj_weight.clone()
        a.qkv.bias.data = blocks[-i].attn.in_proj_bias.clone()
        a.proj.weight.data = blocks[-i].attn.out_proj.weight.clone()
        a.proj.bias.data = blocks[-i].attn.out_proj.bias.clone()
        attns[len(blocks) - i] = a
    x, _ = _embed_patches(visual, x)
    for blk in blocks[: len(blocks) - depth]:
        x = blk(x)  # unchanged blocks, batch-first
    x = x.permute(1, 0, 2)  # NLD -> LND
    for j in range(len(blocks) - depth, len(blocks)):
        x = ref_surgery_block(blocks[j], attns[j], x)
    x, x_ori = x
    x[0, :, :] = x_ori[0, :, :]  # clip_surgery
    x = x.permute(1, 0, 2)  # LND -> NLD
    x = visual.ln_post(x)
    x = x @ visual.proj
    return x


def ref_encode_text_with_prompt_ensemble(model, texts, prompt_templates):
    import open_clip

    text_features = []
    for t in texts:
        prompted_t = [template.format(t) for template in prompt_templates]
        prompted_t = open_clip.tokenize(prompted_t)
        class_embeddings = model.encode_text(prompted_t)
        class_embeddings /= class_embeddings.norm(dim=-1, keepdim=True)
        class_embedding = class_embeddings.mean(dim=0)
        class_embedding /= class_embedding.norm()
        text_features.append(class_embedding)
    text_features = torch.stack(text_features, dim=1).t()
    return text_features


def ref_clip_feature_surgery(image_features, text_features, redundant_feats=None, t=2):
    if redundant_feats != None:  # noqa: E711 (as released)
        similarity = image_features @ (text_features - redundant_feats).t()
    else:
        # weights to restrain influence of obvious classes on others
        prob = image_features[:, :1, :] @ text_features.t()
        prob = (prob * 2).softmax(-1)
        w = prob / prob.mean(-1, keepdim=True)
        # element-wise multiplied features
        b, n_t, n_i, c = (
            image_features.shape[0],
            text_features.shape[0],
            image_features.shape[1],
            image_features.shape[2],
        )
        feats = image_features.reshape(b, n_i, 1, c) * text_features.reshape(1, 1, n_t, c)
        feats *= w.reshape(1, 1, n_t, 1)
        redundant_feats = feats.mean(2, keepdim=True)  # along cls dim
        feats = feats - redundant_feats
        # sum the element-wise multiplied features as cosine similarity
        similarity = feats.sum(-1)
    return similarity


@pytest.mark.parametrize("depth", [2, 4])
def test_clip_surgery_matches_release(depth: int) -> None:
    raw = _oc(layers=4)
    model = vx.load_model(raw)
    px = _pixels()
    image_features = ref_surgery_encode_image(raw.visual, px, depth)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        # single text (demo.py): redundant features of the empty class name in every template
        text_features = ref_encode_text_with_prompt_ensemble(raw, [TEXT], ["{}"])  # the text as given
        redundant = ref_encode_text_with_prompt_ensemble(raw, [""], TEMPLATES)
        sim1 = ref_clip_feature_surgery(image_features, text_features, redundant)[0, 1:, 0]
        # several texts: the multi-class surgery
        others = ["a dog", "a red square on grass"]
        text_all = ref_encode_text_with_prompt_ensemble(raw, [TEXT, *others], ["{}"])
        simk = ref_clip_feature_surgery(image_features, text_all)[0, 1:, 0]
    one = vx.explain(model, px, TEXT, method="clip_surgery", blocks=depth).patch_map
    many = vx.explain(
        model, px, TEXT, method="clip_surgery", blocks=depth, target="softmax", candidates=others
    ).patch_map
    torch.testing.assert_close(one.flatten(), sim1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(many.flatten(), simk, rtol=1e-4, atol=1e-6)
    # the neutral set is the template list with an empty class name, and it can be replaced
    assert NEUTRAL_PROMPTS[0] == "a bad photo of a ." and len(NEUTRAL_PROMPTS) == 85
    own = vx.explain(model, px, TEXT, method="clip_surgery", blocks=depth, neutral_prompts=["a photo"]).patch_map
    with torch.no_grad():
        r2 = ref_encode_text_with_prompt_ensemble(raw, ["a photo"], ["{}"])
        sim2 = ref_clip_feature_surgery(image_features, text_features, r2)[0, 1:, 0]
    torch.testing.assert_close(own.flatten(), sim2, rtol=1e-4, atol=1e-6)


# ============================================================================================
# Plumbing: the recorder leaves the blocks unchanged; refusals
# ============================================================================================
def test_record_blocks_is_transparent() -> None:
    model = vx.load_model(tiny_open_clip())
    px = _pixels()
    with torch.no_grad():
        plain = model.image.encode(px, stop=model.image.num_blocks - 1)
        with record_blocks() as recs:
            rec = model.image.encode(px, stop=model.image.num_blocks - 1)
        again = model.image.encode(px)  # the context is closed: the pooled-row fast path is back
    assert torch.equal(plain, rec) and len(recs) == model.image.num_blocks
    r = recs[-1]
    assert r.q.shape == r.k.shape == r.v.shape == r.attn.shape == r.h.shape and r.probs is None
    # the block's output is recovered from the record
    mid = r.h + r.attn_branch(r.attn)
    torch.testing.assert_close(mid + r.mlp_branch(mid), rec)
    torch.testing.assert_close(again, model.image.encode(px))


def test_refusals(siglip, offline) -> None:
    px = torch.zeros(3, *siglip.input_size)
    for name in ("mask_clip", "clip_surgery", "grad_eclip"):
        with pytest.raises(MethodError, match="image tower"):
            vx.explain(siglip, px, "a cat", method=name, sides=["image"])
    assert vx.get_method("legrad").why_not(siglip, "image") is None  # its head pools with attention
    for name in ("mask_clip", "clip_surgery", "grad_eclip", "legrad"):
        assert "CNN" in vx.get_method(name).why_not(offline, "image")  # EfficientNet: no attention
    # the offline text tower (MiniLM) is mean-pooled: no pooled token for Grad-ECLIP; LeGrad reads its head
    assert "pools several tokens" in vx.get_method("grad_eclip").why_not(offline, "text")
    assert vx.get_method("legrad").why_not(offline, "text") is None
    oc = vx.load_model(tiny_open_clip())
    for bad, says in (
        ({"image_blocks": 0}, "image_blocks must be >= 1"),  # the shared option check
        ({"image_blocks": 9}, "last blocks in 1..3"),  # the model-dependent bound
        ({"text_blocks": True}, "text_blocks must be a whole number"),
    ):
        with pytest.raises(MethodError, match=says):
            vx.explain(oc, torch.zeros(3, 64, 64), "a cat", method="grad_eclip", **bad)
    with pytest.raises(MethodError, match="blocks"):
        vx.explain(oc, torch.zeros(3, 64, 64), "a cat", method="legrad", blocks=0)
    with pytest.raises(MethodError, match="neutral_prompts"):
        vx.explain(oc, torch.zeros(3, 64, 64), "a cat", method="clip_surgery", neutral_prompts=[])


def test_clip_surgery_neutral_feature_follows_weight_updates() -> None:
    raw = _oc()
    model = vx.load_model(raw)
    px = _pixels()
    first = vx.explain(model, px, TEXT, method="clip_surgery").patch_map
    cached = model.text.__dict__["_vx_neutral_feature"][1]
    assert torch.equal(vx.explain(model, px, TEXT, method="clip_surgery").patch_map, first)  # cached
    w = raw.ln_final.bias
    with torch.no_grad():
        w.add_(0.5)  # an in-place update, as an optimiser step makes
    try:
        with torch.no_grad():
            r = ref_encode_text_with_prompt_ensemble(raw, [""], TEMPLATES)[0]
        from vlexplain.attribution.clip_surgery import CLIPSurgery

        torch.testing.assert_close(CLIPSurgery(model).redundant_feature(), r, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(r, cached, atol=1e-3)  # the update did change the neutral feature
    finally:
        with torch.no_grad():
            w.sub_(0.5)


def test_hf_clip_through_its_own_forward() -> None:
    """On transformers' CLIPModel, Grad-ECLIP and MaskCLIP read the same q, k, v and attention output
    as the library's own forward (captured with hooks in this test only)."""
    from tests.support.models import tiny_hf_clip

    raw = tiny_hf_clip()
    model = vx.load_model(raw)
    px = _pixels()
    te = F.normalize(model.text.encode(model.tokenize([TEXT])), dim=-1).detach()
    last = raw.vision_model.encoder.layers[-1]
    at = last.self_attn
    got: dict[str, torch.Tensor] = {}
    hooks = [getattr(at, f"{n}_proj").register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o)) for n in "qkv"]

    def keep_input(m, args):
        got["a"] = args[0]

    hooks.append(at.out_proj.register_forward_pre_hook(keep_input))
    try:
        out = raw.vision_model(pixel_values=px, output_hidden_states=True)
        emb = raw.visual_projection(out.pooler_output)
        (g,) = torch.autograd.grad((F.normalize(emb, dim=-1) * te).sum(), got["a"])
    finally:
        for h in hooks:
            h.remove()
    q, k, v = got["q"].detach(), got["k"].detach(), got["v"].detach()
    cos = (F.normalize(q[0, :1], dim=-1) * F.normalize(k[0, 1:], dim=-1)).sum(-1)
    cos = (cos - cos.min()) / (cos.max() - cos.min())
    ref = ((g[0, :1] * v[0, 1:]).sum(-1) * cos).relu().reshape(4, 4)
    ours = vx.explain(model, px, TEXT, method="grad_eclip", sides=["image"]).patch_map
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)
    # MaskCLIP: the last block's input from the library's hidden states, attention replaced by identity
    h = out.hidden_states[-2].detach()
    with torch.no_grad():
        u = h + at.out_proj(at.v_proj(last.layer_norm1(h)))
        u = u + last.mlp(last.layer_norm2(u))
        f = F.normalize(raw.visual_projection(raw.vision_model.post_layernorm(u)), dim=-1)
    ref_mc = (f[0, 1:] @ te[0]).reshape(4, 4)
    torch.testing.assert_close(vx.explain(model, px, TEXT, method="mask_clip").patch_map, ref_mc, rtol=1e-4, atol=1e-6)


def test_grad_eclip_on_a_bert_text_tower_through_its_own_forward() -> None:
    """Post-norm BERT text towers (Chinese-CLIP here) are read at [CLS] from the library's own forward."""
    import warnings

    from vlexplain.models.families import get_family

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = get_family("hf-chinese-clip").tiny()
        model = vx.load_model(raw)
    px = torch.randn(1, 3, *model.input_size, generator=torch.Generator().manual_seed(1))
    batch = model.tokenize([TEXT])
    ie = F.normalize(model.image.encode(px), dim=-1).detach()
    layer = raw.text_model.encoder.layer[-1]
    sa = layer.attention.self
    got: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(sa, n).register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o))
        for n in ("query", "key", "value")
    ]
    hooks.append(layer.attention.output.dense.register_forward_pre_hook(lambda m, a: got.__setitem__("a", a[0])))
    try:
        out = raw.get_text_features(
            input_ids=batch.ids, attention_mask=batch.attention_mask, token_type_ids=torch.zeros_like(batch.ids)
        )
        te = getattr(out, "pooler_output", out)
        (g,) = torch.autograd.grad((F.normalize(te, dim=-1) * ie).sum(), got["a"])
    finally:
        for h in hooks:
            h.remove()
    q, k, v = got["query"].detach()[0], got["key"].detach()[0], got["value"].detach()[0]
    cos = (F.normalize(q[0], dim=-1) * F.normalize(k, dim=-1)).sum(-1)  # [CLS] query vs every key
    cos = (cos - cos.min()) / (cos.max() - cos.min())
    ref = ((g[0, 0] * v).sum(-1) * cos).relu()[batch.content_mask[0]]
    e = vx.explain(model, px, TEXT, method="grad_eclip", sides=["text"], text_blocks=1)
    assert ref.abs().max() > 0
    torch.testing.assert_close(e.token_scores, ref, rtol=1e-4, atol=1e-7)
