"""Correctness of gradcam, saliency, gradient_x_input, integrated_gradients, chefer and
attention_rollout against axioms, plain reference computations and reference libraries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vlexplain as vx
from vlexplain.attribution.attention_rollout import AttentionRollout
from vlexplain.attribution.base import PairBatch
from vlexplain.attribution.chefer import Chefer
from vlexplain.attribution.gradcam import GradCAM
from vlexplain.attribution.gradient_x_input import GradientXInput
from vlexplain.attribution.integrated_gradients import IntegratedGradients, image_baseline, text_baseline
from vlexplain.attribution.saliency import Saliency
from vlexplain.attribution.targets import make_target
from vlexplain.errors import MethodError
from vlexplain.models.base import frozen

TEXTS = ["a red cat on a mat", "two dogs"]  # different lengths: the second row is padded


def make_batch(model, pixels, texts=TEXTS, target="cosine", seeds=(0, 1)) -> PairBatch:
    tb = model.tokenize(list(texts))
    with torch.no_grad():
        ie = F.normalize(model.image.encode(pixels), dim=-1)
        te = F.normalize(model.text.encode(tb), dim=-1)
    return PairBatch(pixels, tb, ie, te, make_target(model, target), list(seeds)[: len(texts)])


@pytest.fixture(scope="module")
def pixels():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def image_fn(batch):
    return lambda e: batch.target(e, batch.text_emb)


def text_fn(batch):
    return lambda e: batch.target(batch.image_emb, e)


# --- integrated gradients: completeness ---------------------------------------------------------


@pytest.mark.parametrize(
    "kind, baseline",
    [("hf_clip", "black"), ("hf_clip", "blur"), ("hf_clip", "noise"), ("oc_clip", "black"), ("siglip", "black")],
)
def test_ig_completeness_image(request, kind, baseline, pixels):
    model = request.getfixturevalue(kind)
    with frozen(model):
        batch = make_batch(model, pixels[:1], texts=TEXTS[:1], target="logit")
        # the black image is far from these inputs on the tiny SigLIP: the path integral needs more points
        steps = 256 if (kind, baseline) == ("siglip", "black") else 64
        ig = IntegratedGradients(model, baseline=baseline, steps=steps, internal_batch_size=64, blur_sigma=3.0)
        attr = ig.attribute_image(batch)  # (B, H, W)
        base = image_baseline(model, batch.pixels, baseline, batch.generators(), 3.0)
        assert not torch.equal(base, batch.pixels)
        with torch.no_grad():
            diff = batch.target(model.image.encode(batch.pixels), batch.text_emb) - batch.target(
                model.image.encode(base), batch.text_emb
            )
    assert attr.shape == (1, 64, 64)
    total = attr.flatten(1).sum(1)
    assert diff.abs().min() > 1e-3  # the check below is meaningful
    torch.testing.assert_close(total, diff, rtol=1e-2, atol=1e-2 * float(diff.abs().min()))


def test_ig_image_baselines(hf_clip):
    px = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor(hf_clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(hf_clip.std).view(1, 3, 1, 1)
    base = image_baseline(hf_clip, px, "black", [], 1.0)
    torch.testing.assert_close(base * std + mean, torch.zeros_like(px), atol=1e-6, rtol=0)
    # blur: a normalised kernel keeps a constant image and smooths noise
    const = torch.full((1, 3, 64, 64), 0.3)
    torch.testing.assert_close(image_baseline(hf_clip, const, "blur", [], 2.0), const)
    blurred = image_baseline(hf_clip, px, "blur", [], 2.0)
    assert blurred.std() < 0.5 * px.std()
    torch.testing.assert_close(blurred.mean(), px.mean(), atol=1e-2, rtol=0)
    # noise: uniform [0, 1] before normalisation, one generator per pair
    gens = [torch.Generator().manual_seed(s) for s in (5, 5)]
    noise = image_baseline(hf_clip, px, "noise", gens, 1.0) * std + mean
    assert noise.min() >= -1e-6 and noise.max() <= 1 + 1e-6
    torch.testing.assert_close(noise[0], noise[1])
    with pytest.raises(MethodError, match="baseline"):
        IntegratedGradients(hf_clip, baseline="white")


@pytest.mark.parametrize("kind", ["hf_clip", "oc_clip", "siglip"])
def test_ig_completeness_text(request, kind, pixels):
    model = request.getfixturevalue(kind)
    with frozen(model):
        batch = make_batch(model, pixels, target="logit")
        ig = IntegratedGradients(model, steps=64)
        attr = ig.attribute_text(batch)  # (B, T)
        tb = batch.texts
        with torch.no_grad():
            emb = model.text.token_embeddings(tb)
            base = text_baseline(model, tb, emb)
            diff = batch.target(batch.image_emb, model.text.encode(tb)) - batch.target(
                batch.image_emb, model.text.encode(tb, inputs_embeds=base)
            )
    # SOS / EOS / padding keep their embeddings: zero attribution there
    assert torch.all(attr[~tb.content_mask] == 0)
    assert torch.all(attr[tb.content_mask] != 0)
    pad = model.text.token_embeddings(tb)[tb.ids == model.pad_token_id]
    if pad.numel():
        assert torch.allclose(base[tb.content_mask], pad[:1].expand(int(tb.content_mask.sum()), -1))
    assert diff.abs().min() > 1e-3
    torch.testing.assert_close(attr.sum(1), diff, rtol=1e-2, atol=1e-2 * float(diff.abs().min()))


# --- grad-cam ------------------------------------------------------------------------------------


def _manual_block_grad(tower, x, layer, target_fn):
    """Run the blocks one by one; differentiate the target w.r.t. block ``layer``'s output."""
    with torch.enable_grad():
        h = tower.stem(x)
        H = None
        for i in range(tower.num_blocks):
            h, _ = tower.block(i, h, x)
            if i == layer:
                H = h = h.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(target_fn(tower.head(h, x)).sum(), H)
    return H.detach(), g


@pytest.mark.parametrize("kind", ["hf_clip", "siglip"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_gradcam_matches_hand_computation(request, kind, layer, pixels):
    model = request.getfixturevalue(kind)
    with frozen(model):
        batch = make_batch(model, pixels)
        gc = GradCAM(model, layer=layer)
        img = gc.attribute_image(batch)
        txt = gc.attribute_text(batch)
        tower = model.image
        H, G = _manual_block_grad(tower, batch.pixels, layer, image_fn(batch))
        P = tower.num_prefix_tokens
        expected = torch.zeros(2, 4, 4)
        for b in range(2):
            hp, gp = H[b, P:], G[b, P:]  # (16, D) patch tokens
            w = gp.sum(0) / gp.shape[0]  # channel weights
            cam = torch.clamp(hp @ w, min=0)
            expected[b] = cam.reshape(4, 4)
        H, G = _manual_block_grad(model.text, batch.texts, layer, text_fn(batch))
        expected_t = torch.zeros(txt.shape)
        for b in range(2):
            n = int(batch.texts.attention_mask[b].sum())
            w = G[b, :n].sum(0) / n
            expected_t[b, :n] = torch.clamp(H[b, :n] @ w, min=0)
    torch.testing.assert_close(img, expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(txt, expected_t, rtol=1e-4, atol=1e-7)


def test_gradcam_vit_matches_pytorch_grad_cam(hf_clip, pixels):
    from pytorch_grad_cam import GradCAM as RefGradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image

    model, layer = hf_clip, 1
    tower = model.image

    class Wrapper(nn.Module):
        def __init__(self, text_emb, target):
            super().__init__()
            self.tower, self.mark, self.text_emb, self.target = tower, nn.Identity(), text_emb, target

        def forward(self, px):
            e = self.tower.encode(px, on_block=lambda i, h, a: self.mark(h) if i == layer else None)
            return self.target(e, self.text_emb)  # (B,)

    def reshape(t):  # (B, 1 + 16, D) -> (B, D, 4, 4), CLS dropped
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[-1]).permute(0, 3, 1, 2)

    with frozen(model):
        batch = make_batch(model, pixels)
        ours = GradCAM(model, layer=layer).attribute_image(batch)
        wrapper = Wrapper(batch.text_emb, batch.target)
        targets = [lambda o: o] * 2
        with RefGradCAM(wrapper, [wrapper.mark], reshape_transform=reshape) as cam:
            ref = cam(batch.pixels.clone().requires_grad_(True), targets=targets)
            acts = cam.activations_and_grads.activations[0]
            grads = cam.activations_and_grads.gradients[0]
            raw = np.maximum(cam.get_cam_image(batch.pixels, wrapper.mark, targets, acts, grads.numpy()), 0)
    assert float(ours.max()) > 0
    np.testing.assert_allclose(ours.numpy(), raw, rtol=1e-4, atol=1e-8)
    # the library scales per layer (min-max, resize) and again after aggregating the layers
    np.testing.assert_allclose(scale_cam_image(scale_cam_image(ours.numpy(), (64, 64))), ref, rtol=1e-4, atol=1e-5)


def test_gradcam_cnn_matches_captum(offline):
    from captum.attr import LayerGradCam

    model, layer = offline, 4
    tower = model.image
    px = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with frozen(model):
        batch = make_batch(model, px, texts=["a photo of a dog"], seeds=[0])
        ours = GradCAM(model, image_layer=layer).attribute_image(batch)  # (1, 8, 8)

        class Wrapper(nn.Module):
            def forward(self, x):
                return batch.target(tower.encode(x), batch.text_emb)

        ref = LayerGradCam(Wrapper(), tower.net.blocks[layer]).attribute(
            px, relu_attributions=True, attr_dim_summation=True
        )[:, 0]
    assert ours.shape == (1, 8, 8) and float(ours.max()) > 0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6 * float(ref.detach().abs().max()))


def test_gradcam_default_layers(hf_clip, offline):
    """CNN image tower: the last stage (the Grad-CAM paper's last convolutional layer); a ViT's last
    block would pass gradients to its class token only, so ViTs and text towers keep default_layer()."""
    assert GradCAM(offline).image_layer == offline.image.num_blocks - 1 == 6
    assert GradCAM(offline).text_layer == offline.text.default_layer()
    assert GradCAM(offline, layer=2).image_layer == 2 and GradCAM(offline, image_layer=3).image_layer == 3
    assert GradCAM(hf_clip).image_layer == hf_clip.image.default_layer() < hf_clip.image.num_blocks - 1
    assert GradCAM(hf_clip).text_layer == hf_clip.text.default_layer()


def test_gradcam_bad_layer(hf_clip):
    with pytest.raises(MethodError, match="out of range"):
        GradCAM(hf_clip, layer=3)
    with pytest.raises(MethodError, match="out of range"):
        vx.explain(hf_clip, torch.rand(1, 3, 64, 64), "a cat", method="gradcam", text_layer=-1)


# --- saliency / gradient x input ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hf_clip", "oc_clip", "siglip"])
def test_saliency_and_gxi_equal_direct_gradients(request, kind, pixels):
    model = request.getfixturevalue(kind)
    with frozen(model):
        batch = make_batch(model, pixels, target="logit")
        sal_i, sal_t = Saliency(model).attribute_image(batch), Saliency(model).attribute_text(batch)
        gxi_i, gxi_t = GradientXInput(model).attribute_image(batch), GradientXInput(model).attribute_text(batch)
        x = pixels.clone().requires_grad_(True)
        y = model.logit_scale.detach() * F.cosine_similarity(model.image.encode(x), batch.text_emb, dim=-1)
        (gx,) = torch.autograd.grad(y.sum(), x)
        e = model.text.token_embeddings(batch.texts).detach().requires_grad_(True)
        t = model.text.encode(batch.texts, inputs_embeds=e)
        y = model.logit_scale.detach() * F.cosine_similarity(batch.image_emb, t, dim=-1)
        (ge,) = torch.autograd.grad(y.sum(), e)
    assert not pixels.requires_grad
    torch.testing.assert_close(sal_i, gx.abs().max(dim=1).values)
    torch.testing.assert_close(sal_t, ge.pow(2).sum(-1).sqrt())
    torch.testing.assert_close(gxi_i, (gx * pixels).sum(1))
    torch.testing.assert_close(gxi_t, (ge * e.detach()).sum(-1))


def test_saliency_pairs_are_independent(hf_clip, pixels):
    with frozen(hf_clip):
        both = Saliency(hf_clip).attribute_image(make_batch(hf_clip, pixels))
        one = Saliency(hf_clip).attribute_image(make_batch(hf_clip, pixels[1:], texts=TEXTS[1:], seeds=[1]))
    torch.testing.assert_close(both[1:], one)


# --- chefer / rollout: literal block-by-block references ------------------------------------------


def _literal_attention(tower, x, target_fn):
    """Attention probabilities of every block and their gradients, computed block by block."""
    with torch.enable_grad():
        h = tower.stem(x).detach().requires_grad_(True)
        attns = []
        for i in range(tower.num_blocks):
            h, a = tower.block(i, h, x, need_attn=True)
            attns.append(a)
        grads = torch.autograd.grad(target_fn(tower.head(h, x)).sum(), attns)
    return [a.detach() for a in attns], list(grads)


def _literal_chefer(attns, grads, b, last_only):
    T = attns[0].shape[-1]
    R = torch.eye(T)
    blocks = [len(attns) - 1] if last_only else range(len(attns))
    for i in blocks:
        cam = torch.zeros(T, T)
        heads = attns[i].shape[1]
        for hd in range(heads):
            cam += torch.clamp(grads[i][b, hd] * attns[i][b, hd], min=0)
        cam = cam / heads
        R = R + cam @ R
    return R


def _literal_rollout(attns, b):
    T = attns[0].shape[-1]
    R = torch.eye(T)
    for A in attns:
        a = 0.5 * A[b].mean(0) + 0.5 * torch.eye(T)
        for q in range(T):
            a[q] = a[q] / a[q].sum()
        R = a @ R
    return R


def _image_readout(tower, R):
    if tower.num_prefix_tokens:  # CLS row, patch columns
        return R[0, 1:].reshape(4, 4)
    return R.mean(0).reshape(4, 4)  # SigLIP: mean over rows


def _text_readout(tb, R, b):
    p = int(tb.pool_index[b])
    if p >= 0:
        return R[p]
    n = int(tb.attention_mask[b].sum())  # mean-pooled: real tokens' rows (padding at the end)
    return R[:n].mean(0)


@pytest.mark.parametrize("kind", ["hf_clip", "siglip"])
@pytest.mark.parametrize("last_only", [False, True])
def test_chefer_matches_literal(request, kind, last_only, pixels):
    model = request.getfixturevalue(kind)
    with frozen(model):
        batch = make_batch(model, pixels, target="logit")
        ch = Chefer(model, last_block_only=last_only)
        img, txt = ch.attribute_image(batch), ch.attribute_text(batch)
        ai, gi = _literal_attention(model.image, batch.pixels, image_fn(batch))
        at, gt = _literal_attention(model.text, batch.texts, text_fn(batch))
    for b in range(2):
        Ri = _literal_chefer(ai, gi, b, last_only)
        torch.testing.assert_close(img[b], _image_readout(model.image, Ri), rtol=1e-4, atol=1e-6)
        Rt = _literal_chefer(at, gt, b, last_only)
        torch.testing.assert_close(txt[b], _text_readout(batch.texts, Rt, b), rtol=1e-4, atol=1e-6)
    # relevance beyond the identity is present (the check above is not trivially I vs I)
    assert float((txt - F.one_hot(batch.texts.pool_index.clamp_min(0), txt.shape[1])).abs().max()) > 1e-5


@pytest.mark.parametrize("kind", ["hf_clip", "siglip"])
def test_rollout_matches_literal(request, kind, pixels):
    model = request.getfixturevalue(kind)
    with frozen(model):
        batch = make_batch(model, pixels)
        ro = AttentionRollout(model)
        img, txt = ro.attribute_image(batch), ro.attribute_text(batch)
        ai, _ = _literal_attention(model.image, batch.pixels, image_fn(batch))
        at, _ = _literal_attention(model.text, batch.texts, text_fn(batch))
    for b in range(2):
        torch.testing.assert_close(img[b], _image_readout(model.image, _literal_rollout(ai, b)), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(txt[b], _text_readout(batch.texts, _literal_rollout(at, b), b), rtol=1e-4, atol=1e-6)


def test_chefer_start_layer_and_create_graph(hf_clip, pixels):
    from vlexplain.attribution.chefer import chefer_relevance

    with frozen(hf_clip):
        batch = make_batch(hf_clip, pixels)
        R2 = chefer_relevance(hf_clip, hf_clip.image, batch.pixels, image_fn(batch), start_layer=2)
        Rl = chefer_relevance(hf_clip, hf_clip.image, batch.pixels, image_fn(batch), last_block_only=True)
    torch.testing.assert_close(R2, Rl)  # 3 blocks: starting at block 2 is the last block only
    # with trainable parameters the relevance is differentiable w.r.t. them
    tower = hf_clip.image
    R = chefer_relevance(hf_clip, tower, batch.pixels, image_fn(batch), last_block_only=True, create_graph=True)
    w = tower.vm.encoder.layers[-1].self_attn.q_proj.weight
    (g,) = torch.autograd.grad(R[:, 0, 1:].sum(), w)
    assert g.abs().sum() > 0
    with pytest.raises(MethodError, match="start_layer"):
        Chefer(hf_clip, start_layer=5)


# --- the offline model: CNN image tower, mean-pooled BERT text tower -------------------------------


@pytest.mark.parametrize("method", ["chefer", "attention_rollout"])
def test_attention_methods_on_offline(offline, method):
    img = torch.rand(1, 3, 224, 224)
    with pytest.raises(MethodError, match="attention"):
        vx.explain(offline, img, "a dog", method=method, sides=["image"])
    e = vx.explain(offline, img, "a dog on the grass", method=method)
    assert e.patch_map is None and e.token_scores is not None
    assert e.token_scores.shape == (len(e.tokens),) and torch.isfinite(e.token_scores).all()


def test_attention_methods_offline_text_literal(offline):
    """Mean-pooled readout with padding, against the literal references."""
    model = offline
    tb = model.tokenize(["a small brown dog on the grass", "a cat"])
    ie = F.normalize(torch.randn(2, 384, generator=torch.Generator().manual_seed(0)), dim=-1)
    with frozen(model):
        with torch.no_grad():
            te = F.normalize(model.text.encode(tb), dim=-1)
        batch = PairBatch(torch.zeros(2, 3, 8, 8), tb, ie, te, make_target(model, "cosine"), [0, 0])
        ch = Chefer(model).attribute_text(batch)
        ro = AttentionRollout(model).attribute_text(batch)
        at, gt = _literal_attention(model.text, tb, text_fn(batch))
    assert int(tb.attention_mask[1].sum()) < tb.ids.shape[1]  # the second row is padded
    for b in range(2):
        torch.testing.assert_close(ch[b], _text_readout(tb, _literal_chefer(at, gt, b, False), b), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ro[b], _text_readout(tb, _literal_rollout(at, b), b), rtol=1e-4, atol=1e-6)
