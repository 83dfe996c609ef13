"""LeGrad equals a literal transcription of the released code (WalBouss/LeGrad: ``legrad/wrapper.py``,
``legrad/utils.py``) on an OpenCLIP model, one pair at a time, and ``torchcam.methods.LeGrad``;
its text side is checked by hand. (The conventions of the transcriptions are those of
``test_clip_native.py``.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vlexplain as vx
from tests.attribution.clip_native_support import TEXT, _embed_patches, _oc, _pixels, _text_emb
from vlexplain.models.blocks import record_blocks


# ============================================================================================
# LeGrad (WalBouss/LeGrad), transcribed for an OpenCLIP ViT without attentional pooling
# ============================================================================================
class _Hooked:
    """What the released hooks store on a block: ``attention_maps`` and ``feat_post_mlp``."""


def ref_hooked_attention(attn_mod, x, store):
    """legrad/utils.py ``hooked_attention_forward`` (the same per-head probabilities as its MHA hook)."""
    L, N, C = x.shape
    q, k, v = F.linear(x, attn_mod.in_proj_weight, attn_mod.in_proj_bias).chunk(3, dim=-1)
    q = q.contiguous().view(L, N * attn_mod.num_heads, -1).transpose(0, 1)
    k = k.contiguous().view(L, N * attn_mod.num_heads, -1).transpose(0, 1)
    v = v.contiguous().view(L, N * attn_mod.num_heads, -1).transpose(0, 1)
    head_dim = q.shape[-1]
    scale = float(head_dim) ** -0.5
    q = q * scale
    attn = torch.bmm(q, k.transpose(-1, -2))
    attn = attn.softmax(dim=-1)
    # Hook for attention maps
    store.attention_maps = attn
    x = torch.bmm(attn, v)
    x = x.transpose(0, 1).reshape(L, N, C)
    x = attn_mod.out_proj(x)
    return x


def ref_hooked_resblock(blk, q_x, store):
    """legrad/utils.py ``hooked_resblock_forward``."""
    x = q_x + blk.ls_1(ref_hooked_attention(blk.attn, blk.ln_1(q_x), store))
    store.feat_post_attn = x
    x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    store.feat_post_mlp = x
    return x


def ref_compute_legrad_clip(visual, text_embedding, image, layer_index=-2):
    """legrad/wrapper.py ``LeWrapper.compute_legrad_clip`` (before upsampling to pixels); einops'
    ``rearrange`` written as the reshape it performs."""
    blocks = visual.transformer.resblocks
    starting_depth = layer_index if layer_index >= 0 else len(blocks) + layer_index
    stores = [_Hooked() for _ in blocks]
    num_prompts = text_embedding.shape[0]
    image = image.repeat(num_prompts, 1, 1, 1)
    x, _ = _embed_patches(visual, image)
    for blk in blocks[:starting_depth]:
        x = blk(x)
    x = x.permute(1, 0, 2)  # NLD -> LND
    for layer in range(starting_depth, len(blocks)):
        x = ref_hooked_resblock(blocks[layer], x, stores[layer])

    image_features_list = []
    for layer in range(starting_depth, len(blocks)):
        intermediate_feat = stores[layer].feat_post_mlp  # [num_patch, batch, dim]
        intermediate_feat = visual.ln_post(intermediate_feat.mean(dim=0)) @ visual.proj
        intermediate_feat = F.normalize(intermediate_feat, dim=-1)
        image_features_list.append(intermediate_feat)

    num_tokens = stores[-1].feat_post_mlp.shape[0] - 1
    w = h = int(num_tokens**0.5)
    accum_expl_map = 0
    for layer, img_feat in enumerate(image_features_list):
        sim = text_embedding @ img_feat.transpose(-1, -2)  # [1, 1]
        one_hot = F.one_hot(torch.arange(0, num_prompts)).float().requires_grad_(True).to(text_embedding.device)
        one_hot = torch.sum(one_hot * sim)
        attn_map = stores[starting_depth + layer].attention_maps  # [b, num_heads, N, N]
        grad = torch.autograd.grad(one_hot, [attn_map], retain_graph=True, create_graph=True)[0]
        grad = grad.reshape(num_prompts, -1, *grad.shape[-2:])  # '(b h) n m -> b h n m': separate batch and heads
        grad = torch.clamp(grad, min=0.0)
        image_relevance = grad.mean(dim=1).mean(dim=1)[:, 1:]  # average attn over [CLS] + patch tokens
        expl_map = image_relevance.reshape(1, -1, w, h)  # 'b (w h) -> 1 b w h'
        accum_expl_map += expl_map
    return accum_expl_map[0, 0]


def _minmax(m):
    return (m - m.min()) / (m.max() - m.min())


@pytest.mark.parametrize("blocks", [2, 3])
def test_legrad_matches_release(blocks: int) -> None:
    raw = _oc()
    model = vx.load_model(raw)
    px, te = _pixels(), _text_emb(raw)
    ref = ref_compute_legrad_clip(raw.visual, te, px, layer_index=-blocks).detach()
    ours = vx.explain(model, px, TEXT, method="legrad", blocks=blocks).patch_map
    assert ref.max() > ref.min()
    # released: sum over blocks, then min-max; ours: the mean over blocks (same map up to a factor)
    torch.testing.assert_close(ours * blocks, ref, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(_minmax(ours), _minmax(ref), rtol=1e-4, atol=1e-6)


class _TorchcamBlock(nn.Module):
    """An OpenCLIP block seen as torchcam expects: a ``self_attention`` child (batch-first MHA)."""

    def __init__(self, blk: nn.Module):
        super().__init__()
        self.blk = blk
        self.self_attention = blk.attn

    def forward(self, x):
        return self.blk(x)


class _TorchcamViT(nn.Module):
    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.layers = nn.ModuleList(_TorchcamBlock(b) for b in visual.transformer.resblocks)

    def forward(self, x):
        x, _ = _embed_patches(self.visual, x)
        for blk in self.layers:
            x = blk(x)
        return x


@pytest.mark.parametrize("blocks", [1, 2])
def test_legrad_matches_torchcam(blocks: int) -> None:
    tc = pytest.importorskip("torchcam.methods")
    raw = _oc()
    model = vx.load_model(raw)
    px, te = _pixels(), _text_emb(raw)
    view = _TorchcamViT(raw.visual).eval()

    def score_projection(tokens):  # the block's tokens read through the model's head (mean pooling)
        return F.normalize(raw.visual.ln_post(tokens.mean(dim=1)) @ raw.visual.proj, dim=-1) @ te.T

    with tc.LeGrad(view, list(view.layers)[-blocks:], score_projection=score_projection) as cam:
        view(px)
        ref = cam(class_idx=0, normalized=False)[0][0]
    ours = vx.explain(model, px, TEXT, method="legrad", blocks=blocks).patch_map
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-8)


def test_legrad_text_side_by_hand() -> None:
    """Text side: per block, the EOS read-out's gradient w.r.t. that block's attention, relu, means."""
    raw = _oc()
    model = vx.load_model(raw)
    px = _pixels()
    batch = model.tokenize([TEXT])
    ie = F.normalize(model.image.encode(px), dim=-1).detach()
    tower = model.text
    n = tower.num_blocks
    with torch.no_grad():
        h = tower.encode(batch, stop=n - 3)
    h = h.detach().requires_grad_(True)
    maps = []
    for i in (n - 2, n - 1):
        with record_blocks(probs=True) as recs:
            hi = tower.encode(batch, start=n - 3, hidden=h, stop=i)
        e = tower.head(hi, batch)
        (g,) = torch.autograd.grad((F.normalize(e, dim=-1) * ie).sum(), recs[-1].probs)
        maps.append(g.relu().mean(1).mean(1)[0])  # one text, no padding: every row is a real query
    ref = torch.stack(maps).mean(0)[1:-1]  # SOS and EOS are not shown
    e = vx.explain(model, px, TEXT, method="legrad", sides=["text"], blocks=2)
    torch.testing.assert_close(e.token_scores, ref, rtol=1e-4, atol=1e-8)
