"""M2IB: the fast batched implementation equals a literal reference of the released algorithm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlexplain as vx
from tests.support.models import tiny_hf_clip, tiny_open_clip
from vlexplain.attribution.m2ib import M2IB
from vlexplain.errors import MethodError


# --------------------------------------------------------------------------------------------
# Literal reference: one pair at a time, both full encoders re-run at every step, a forward hook
# replaces the output of block L with the bottleneck sample, capacity from the last forward pass.
# --------------------------------------------------------------------------------------------
def _features(raw, kind, modality, x):
    if kind == "hf":
        out = raw.get_image_features(pixel_values=x) if modality == "image" else raw.get_text_features(input_ids=x)
        return getattr(out, "pooler_output", out)
    return raw.encode_image(x) if modality == "image" else raw.encode_text(x)


def _layer_module(raw, kind, modality, layer):
    if kind == "hf":
        tower = raw.vision_model if modality == "image" else raw.text_model
        return tower.encoder.layers[layer]
    tower = raw.visual.transformer if modality == "image" else raw.transformer
    return tower.resblocks[layer]


def _hook(raw, kind, modality, layer, fn):
    """Replace the output of block ``layer`` (or, for -1, the input of block 0) by ``fn(it)``."""
    if layer >= 0:

        def post(m, inp, out):
            return (fn(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) else fn(out)

        return _layer_module(raw, kind, modality, layer).register_forward_hook(post)

    def pre(m, args, kwargs):
        if args:
            return (fn(args[0]),) + tuple(args[1:]), kwargs
        key = next(k for k in ("hidden_states", "q_x", "x") if k in kwargs)
        return args, {**kwargs, key: fn(kwargs[key])}

    return _layer_module(raw, kind, modality, 0).register_forward_pre_hook(pre, with_kwargs=True)


def reference_m2ib(raw, kind, modality, pixels, ids, *, layer, beta, steps, lr, S, seed, n_real=None):
    """Per-token capacity (T,) of the released algorithm for one pair."""
    g = torch.Generator().manual_seed(seed)
    x_mod = pixels if modality == "image" else ids
    x_other = ids if modality == "image" else pixels
    other = "text" if modality == "image" else "image"
    with torch.no_grad():
        H = {}

        def keep(x):
            H["h"] = x
            return x

        h = _hook(raw, kind, modality, layer, keep)
        _features(raw, kind, modality, x_mod)
        h.remove()
    T, D = H["h"].shape[1:]
    n = T if n_real is None else n_real
    alpha = torch.full((1, T, D), 5.0, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=lr)
    state = {}

    def bottleneck(x):
        lam = torch.sigmoid(alpha).expand(x.shape[0], -1, -1)
        mu = x * lam
        var = (1 - lam) ** 2
        state["cap"] = -0.5 * (1 + torch.log(var) - mu**2 - var)
        eps = torch.zeros_like(x)
        eps[:, :n] = torch.randn((S, n, D), generator=g)
        return mu + var.sqrt() * eps

    for _ in range(steps):
        opt.zero_grad()
        hk = _hook(raw, kind, modality, layer, bottleneck)
        try:
            e = _features(raw, kind, modality, x_mod.expand(S, *x_mod.shape[1:]))
        finally:
            hk.remove()
        t = _features(raw, kind, other, x_other.expand(S, *x_other.shape[1:]))
        fit = F.cosine_similarity(e, t, eps=1e-6).mean()
        comp = state["cap"][:, :n].mean()
        loss = beta * comp - fit
        loss.backward()
        opt.step()
    return state["cap"].mean(0).sum(-1).detach()  # (T,)


CASES = [("hf", tiny_hf_clip), ("oc", tiny_open_clip)]


@pytest.mark.parametrize("kind,make", CASES)
@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("layer", [1, -1])
def test_fast_equals_reference(kind, make, modality, layer):
    """Block 1's output, and (layer -1) the input of block 0."""
    raw = make(layers=3)
    model = vx.load_model(make(layers=3))
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(1, 3, 64, 64, generator=g)
    text = "a small red house on a hill"
    tb = model.tokenize([text])
    n_real = int(tb.attention_mask.sum())
    if kind == "oc":
        import open_clip

        ids = open_clip.tokenize([text])  # padded to 77 as OpenCLIP's encode_text requires
    else:
        ids = tb.ids
    opts = dict(layer=layer, beta=0.1, steps=4, lr=1.0, num_samples=3)
    ref = reference_m2ib(
        raw,
        kind,
        modality,
        pixels,
        ids,
        layer=layer,
        beta=0.1,
        steps=4,
        lr=1.0,
        S=3,
        seed=7,
        n_real=n_real if modality == "text" else None,
    )
    exp = vx.explain(model, pixels, text, method="m2ib", seed=7, sides=[modality], **opts)
    if modality == "image":
        got = exp.patch_map.flatten()
        want = ref[1:]  # CLS dropped
    else:
        got = exp.token_scores
        want = ref[1 : n_real - 1]  # SOS / EOS not shown
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3 * float(want.abs().max()))


def test_pair_result_does_not_depend_on_batch(hf_clip):
    g = torch.Generator().manual_seed(2)
    px = torch.randn(3, 3, 64, 64, generator=g)
    texts = ["a dog", "a very long caption about a small cat sitting on a mat", "tree"]
    opts = dict(steps=3, num_samples=4)
    together = vx.explain(hf_clip, px, texts, method="m2ib", seed=3, batch_size=3, **opts)
    for k in range(3):
        alone = vx.explain(hf_clip, px[k], texts[k], method="m2ib", seed=3, **opts)
        torch.testing.assert_close(together[k].patch_map, alone.patch_map, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(together[k].token_scores, alone.token_scores, rtol=1e-4, atol=1e-4)


def test_seed_determinism_and_frozen_model(hf_clip):
    px = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    flags = [p.requires_grad for p in hf_clip.parameters()]
    before = [p.detach().clone() for p in hf_clip.parameters()]
    a = vx.explain(hf_clip, px, "a cat", method="m2ib", seed=5, steps=3)
    b = vx.explain(hf_clip, px, "a cat", method="m2ib", seed=5, steps=3)
    c = vx.explain(hf_clip, px, "a cat", method="m2ib", seed=6, steps=3)
    assert torch.equal(a.patch_map, b.patch_map) and torch.equal(a.token_scores, b.token_scores)
    assert not torch.equal(a.patch_map, c.patch_map)
    assert [p.requires_grad for p in hf_clip.parameters()] == flags
    assert all(p.grad is None for p in hf_clip.parameters())
    assert all(torch.equal(p, q) for p, q in zip(hf_clip.parameters(), before))


def test_outputs_are_raw_nats(hf_clip):
    px = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    e = vx.explain(hf_clip, px, "a cat", method="m2ib", steps=2)
    assert e.image_map.shape == (64, 64) and e.patch_map.shape == (4, 4)
    assert e.tokens == ["a", "cat"] and e.token_scores.shape == (2,)
    assert (e.patch_map >= 0).all() and float(e.patch_map.max()) > 1.0  # raw nats, not min-max normalised
    assert e.settings["beta"] == 0.1 and e.settings["seed"] == 0


def test_default_layers(hf_clip, offline):
    assert M2IB(hf_clip).image_layer == hf_clip.image.default_layer()
    # 12-block towers use block 9 (0-based), as the released code
    from vlexplain.models.base import Tower

    class _T(Tower):
        num_blocks = 12  # type: ignore[assignment]

    assert _T().default_layer() == 9
    assert M2IB(offline).image_layer == 4  # EfficientNet stage 4, 14 x 14 x 112
    assert M2IB(offline).text_layer == 4  # 6-block MiniLM: same relative depth


def test_bad_options(hf_clip):
    with pytest.raises(MethodError, match="out of range"):
        M2IB(hf_clip, layer=7)
    with pytest.raises(MethodError, match=r"out of range .*\(-1\.\.2; -1 is the input of block 0\)"):
        M2IB(hf_clip, text_layer=-2)
    with pytest.raises(MethodError, match="unknown option"):
        M2IB.create(hf_clip, stepz=3)
    with pytest.raises(MethodError):
        M2IB(hf_clip, steps=0)


def test_offline_cnn_bottleneck(offline):
    from vlexplain.testbeds.photos import load_photo

    e = vx.explain(offline, load_photo("cat"), "a cat", method="m2ib", steps=3, num_samples=4)
    assert e.patch_map.shape == (14, 14) and e.image_map.shape == (224, 224)
    assert torch.isfinite(e.patch_map).all() and e.tokens == ["a", "cat"]


@pytest.mark.parametrize("method", ["m2ib", "m2ib_fast"])
@pytest.mark.parametrize("layer", [-1, 1])
def test_hidden_state_kept_from_the_embedding_pass_changes_nothing(method, layer):
    """run_explainer keeps the bottleneck layer's hidden state from the embedding pass; the maps, the
    token scores and the embeddings are bit-identical to a batch that does not carry it."""
    from vlexplain.attribution.base import PairBatch, run_explainer
    from vlexplain.attribution.targets import make_target
    from vlexplain.models.base import frozen

    model = vx.load_model(tiny_hf_clip())
    px = torch.rand(2, 3, *model.input_size, generator=torch.Generator().manual_seed(5))
    tb = model.tokenize(["a red cat on a mat", "two dogs"])
    ex = vx.get_method(method).create(model, layer=layer, steps=3)
    tgt = make_target(model, "cosine")
    img, txt, score = run_explainer(ex, px, tb, tgt, [0, 1], ["image", "text"])
    with frozen(model), torch.no_grad():
        ie = F.normalize(model.image.encode(px), dim=-1)
        te = F.normalize(model.text.encode(tb), dim=-1)
    assert torch.equal(score, (ie * te).sum(-1))
    with frozen(model):
        plain = PairBatch(px, tb, ie, te, tgt, [0, 1])
        assert plain.hidden == {}
        assert torch.equal(img, ex.attribute_image(plain)) and torch.equal(txt, ex.attribute_text(plain))
