"""m2ib_fast: the shared bottleneck keeps m2ib bit-identical, the antithetic / common-noise
estimators equal the literal algorithm fed the same noise, and the fast maps agree with m2ib's."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

import vlexplain as vx
from tests.attribution import test_m2ib
from tests.support.models import tiny_hf_clip
from vlexplain.attribution.m2ib import M2IB, _draw_noise, _noise_sampler, _repeat_input, _token_mask, kl_capacity
from vlexplain.attribution.m2ib_fast import M2IBFast
from vlexplain.errors import MethodError


def _fit_before_sharing(tower, x, target, *, layer, beta, steps, lr, num_samples, seeds, init=5.0):
    """m2ib's optimisation loop as it was before the estimator options were added, verbatim
    (every step runs its forward and backward pass, the last one included)."""
    with torch.no_grad():
        H = tower.encode(x, stop=layer)
    B = H.shape[0]
    S = num_samples
    alpha = torch.full_like(H, init, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=lr)
    gens = [torch.Generator(device=H.device).manual_seed(s) for s in seeds]
    tmask = _token_mask(tower, H, x)
    per_row_count = tmask.sum(1) * tower.tokens(H).shape[-1]
    xs = _repeat_input(x, S)
    tgt = target.repeat(S, 1)
    cap = None
    for _ in range(steps):
        lam = torch.sigmoid(alpha)
        eps = _draw_noise(H, x, S, gens)
        z = (lam * H + (1 - lam) * eps).reshape(S * B, *H.shape[1:])
        e = tower.encode(xs, start=layer, hidden=z).float()
        fit = F.cosine_similarity(e, tgt, dim=-1, eps=1e-6).view(S, B).mean(0)
        cap = kl_capacity(H, lam)
        comp = (tower.tokens(cap) * tmask[..., None]).flatten(1).sum(1) / per_row_count
        loss = (beta * comp - fit).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return tower.tokens(cap.detach()).sum(-1) * tmask, H


def _inputs(model, n=2):
    px = torch.randn(n, 3, *model.input_size, generator=torch.Generator().manual_seed(0))
    texts = ["a small cat on a red mat", "dog"][:n]
    return px, texts


@pytest.mark.parametrize("kind", ["hf_clip", "oc_clip"])
@pytest.mark.parametrize("layer", [1, -1])
def test_m2ib_bit_identical_to_the_loop_before_sharing(kind, layer, request):
    model = request.getfixturevalue(kind)
    px, texts = _inputs(model)
    opts = dict(layer=layer, beta=0.1, steps=4, lr=1.0, num_samples=3)
    exps = vx.explain(model, px, texts, method="m2ib", seed=[5, 6], **opts)
    tb = model.tokenize(texts)
    with torch.no_grad():
        img_emb, txt_emb = model.encode_image(px), model.encode_text(tb)
    with torch.enable_grad():
        s_img, H = _fit_before_sharing(model.image, px, txt_emb, seeds=[5, 6], **opts)
        s_txt, _ = _fit_before_sharing(model.text, tb, img_emb, seeds=[5, 6], **opts)
    grid = model.image.token_scores_to_grid(s_img, H)
    for k, e in enumerate(exps):
        assert torch.equal(e.patch_map, grid[k])
        n = len(e.tokens)
        assert torch.equal(e.token_scores, s_txt[k, 1 : n + 1])


def test_m2ib_fast_with_m2ib_estimator_is_m2ib(hf_clip):
    px, texts = _inputs(hf_clip)
    a = vx.explain(hf_clip, px, texts, method="m2ib", seed=3, steps=3, num_samples=4)
    b = vx.explain(hf_clip, px, texts, method="m2ib_fast", seed=3, steps=3, num_samples=4, antithetic=False)
    for x, y in zip(a, b):
        assert torch.equal(x.patch_map, y.patch_map) and torch.equal(x.token_scores, y.token_scores)


def test_last_step_runs_no_pass(hf_clip, monkeypatch):
    """The map is read before the last update: ``steps`` steps run ``steps - 1`` passes. (The first
    call from a hidden state is the embedding pass, which keeps the bottleneck layer's hidden state
    for the method instead of the method running the tower up to it again.)"""
    rows = []

    def count(tower):
        encode = type(tower).encode

        def counting(self, x, **kw):
            if kw.get("hidden") is not None:
                rows.append(kw["hidden"].shape[0])
            return encode(self, x, **kw)

        monkeypatch.setattr(type(tower), "encode", counting)

    count(hf_clip.image)
    px, _ = _inputs(hf_clip, 1)
    vx.explain(hf_clip, px, "a cat", method="m2ib", sides=["image"], steps=5, num_samples=10)
    assert rows == [1] + [10] * 4
    rows.clear()
    vx.explain(hf_clip, px, "a cat", method="m2ib_fast", sides=["image"], steps=5)
    assert rows == [1] + [2] * 4  # image side: one antithetic pair per step
    monkeypatch.undo()
    count(hf_clip.text)
    rows.clear()
    vx.explain(hf_clip, px, "a cat", method="m2ib_fast", sides=["text"], steps=5)
    assert rows == [1] + [6] * 4  # text side: three pairs


def test_noise_sampler():
    H = torch.zeros(2, 5, 3)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    anti = _noise_sampler(H, None, 4, gens, antithetic=True, common=False)
    e1, e2 = anti(), anti()
    assert e1.shape == (4, 2, 5, 3)
    assert torch.equal(e1[2:], -e1[:2]) and not torch.equal(e1, e2)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    assert torch.equal(e1[:2], _draw_noise(H, None, 2, gens))  # the first half: the i.i.d. draws of half as many
    crn = _noise_sampler(H, None, 2, gens, antithetic=False, common=True)
    assert torch.equal(crn(), crn())
    with pytest.raises(MethodError, match="even"):
        _noise_sampler(H, None, 3, gens, antithetic=True, common=False)


def test_text_noise_padding_stays_zero(hf_clip):
    tb = hf_clip.tokenize(["a small cat on a red mat", "dog"])
    H = torch.ones(2, tb.ids.shape[1], 4)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    eps = _noise_sampler(H, tb, 2, gens, antithetic=True, common=False)()
    n = int(tb.attention_mask[1].sum())
    assert (eps[:, 1, n:] == 0).all() and (eps[:, 1, :n] != 0).all()


class _NoiseProxy(types.SimpleNamespace):
    """``torch`` for the literal reference, except that ``randn`` makes antithetic and/or common draws."""

    def __init__(self, antithetic: bool, common: bool):
        super().__init__(antithetic=antithetic, common=common, fixed=None)

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn(self, shape, generator=None):
        if self.common and self.fixed is not None:
            return self.fixed
        S, *rest = shape
        if self.antithetic:
            half = torch.randn((S // 2, *rest), generator=generator)
            out = torch.cat([half, -half])
        else:
            out = torch.randn(shape, generator=generator)
        self.fixed = out
        return out


@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("antithetic,common", [(True, False), (False, True), (True, True)])
def test_fast_estimators_equal_the_literal_algorithm(monkeypatch, modality, antithetic, common):
    """The literal released algorithm (tests/attribution/test_m2ib.py), fed the same antithetic / common noise."""
    raw = tiny_hf_clip(layers=3)
    model = vx.load_model(tiny_hf_clip(layers=3))
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    text = "a small red house on a hill"
    tb = model.tokenize([text])
    n_real = int(tb.attention_mask.sum())
    monkeypatch.setattr(test_m2ib, "torch", _NoiseProxy(antithetic, common))
    # the reference runs all 4 steps' passes; its map is read before the last update, as ours
    ref = test_m2ib.reference_m2ib(
        raw,
        "hf",
        modality,
        pixels,
        tb.ids,
        layer=1,
        beta=0.1,
        steps=4,
        lr=1.0,
        S=4,
        seed=7,
        n_real=n_real if modality == "text" else None,
    )
    monkeypatch.undo()
    exp = vx.explain(
        model,
        pixels,
        text,
        method="m2ib_fast",
        seed=7,
        sides=[modality],
        layer=1,
        steps=4,
        num_samples=4,
        antithetic=antithetic,
        common_noise=common,
    )
    got = exp.patch_map.flatten() if modality == "image" else exp.token_scores
    want = ref[1:] if modality == "image" else ref[1 : n_real - 1]
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3 * float(want.abs().max()))


def _r(a, b):
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_fast_maps_agree_with_m2ib():
    """Default options on the trained shapes model: m2ib_fast's maps agree with m2ib's at r >= 0.99
    (image) and about as well as m2ib's own maps under other seeds (image and text)."""
    from vlexplain.eval.benchmarks.shapes import shapes_seeds
    from vlexplain.testbeds.shapes import render_scene
    from vlexplain.testbeds.shapes_categories import category_caption

    model = vx.load_model("testbed:shapes")
    scenes = [render_scene(s) for s in shapes_seeds(8)]
    texts = [" of ".join(category_caption(o.category, o.colour) for o in sc.objects[:3]) for sc in scenes]
    px = torch.stack([model.preprocess(sc.pil()) for sc in scenes])
    ref = vx.explain(model, px, texts, method="m2ib", seed=list(range(8)))
    other = vx.explain(model, px, texts, method="m2ib", seed=list(range(10, 18)))
    fast = vx.explain(model, px, texts, method="m2ib_fast", seed=list(range(10, 18)))
    for side, floor in (("patch_map", 0.99), ("token_scores", 0.95)):
        self_r = sum(_r(getattr(a, side), getattr(b, side)) for a, b in zip(other, ref)) / 8
        fast_r = sum(_r(getattr(a, side), getattr(b, side)) for a, b in zip(fast, ref)) / 8
        assert fast_r >= floor and fast_r >= self_r - 0.005, (side, fast_r, self_r)


def test_registered_options_and_errors(hf_clip):
    assert "m2ib_fast" in vx.list_methods()
    e = vx.explain(hf_clip, _inputs(hf_clip, 1)[0], "a cat", method="m2ib_fast", steps=2)
    assert e.settings["antithetic"] is True and e.settings["common_noise"] is False
    assert (e.settings["num_samples"], e.settings["image_samples"], e.settings["text_samples"]) == (None, 2, 6)
    assert e.settings["steps"] == 2 and e.method == "m2ib_fast"
    one = M2IBFast(hf_clip, num_samples=4)  # both sides
    assert (one.image_samples, one.text_samples) == (4, 4)
    assert isinstance(one, M2IB) and M2IB(hf_clip).antithetic is False
    with pytest.raises(MethodError, match="even"):
        M2IBFast(hf_clip, num_samples=3)
    with pytest.raises(MethodError, match="even"):
        M2IBFast(hf_clip, text_samples=5)
    M2IBFast(hf_clip, num_samples=3, antithetic=False)  # odd counts are fine without pairs
    with pytest.raises(MethodError, match="at least 1"):
        M2IBFast(hf_clip, image_samples=0)
    with pytest.raises(MethodError, match="m2ib_fast needs"):
        M2IBFast(hf_clip, steps=0)
    with pytest.raises(MethodError, match="unknown option"):
        M2IBFast.create(hf_clip, antithetc=True)
