"""DEAL: concept sets, differentiable concept maps, metrics and losses (the training loop:
``test_deal_train.py``; class datasets: ``tests/data/test_class_datasets.py``)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vlexplain as vx
from tests.support.models import fresh_model
from vlexplain.concepts.losses import deal_losses, disentangle_loss, localize_loss, prediction_loss
from vlexplain.concepts.metrics import (
    disentanglability,
    insertion_masks,
    localizability,
    mean_pairwise_overlap,
    part_energy,
    part_pointing,
    topk_accuracy,
)
from vlexplain.concepts.relevance import concept_maps, deal_maps, plot_concept_maps
from vlexplain.concepts.sets import ConceptSet, load_concepts
from vlexplain.errors import InputError, MethodError

CONCEPTS = {
    "cat": ["pointy ears", "long whiskers", "striped fur"],
    "dog": ["floppy ears", "wet nose", "wagging tail"],
}


# --- concept sets -----------------------------------------------------------------------------


def test_concept_set_sources(tmp_path):
    js = tmp_path / "c.json"
    js.write_text(json.dumps(CONCEPTS))
    cv = tmp_path / "c.csv"
    cv.write_text("class,descriptor\n" + "".join(f"{c},{d}\n" for c, ds in CONCEPTS.items() for d in ds))
    for src in (js, cv, CONCEPTS):
        cs = load_concepts(src)
        assert isinstance(cs, ConceptSet)
        assert cs.classes == ["cat", "dog"]
        assert cs.descriptors("dog") == CONCEPTS["dog"]
        assert cs.descriptors("cat", k=2) == CONCEPTS["cat"][:2]
    assert load_concepts(js, k=1).descriptors("cat") == ["pointy ears"]


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"cat": []}, "no descriptors"),
        ({"cat": ["red", " "]}, "empty descriptor"),
        ({"cat": ["Red crest", "red  crest."]}, "duplicate"),
        ({"cat": [" ".join(["word"] * 13)]}, "longer than 12 words"),
        ({"cat": "pointy ears"}, "not a class name with a list"),
        ({}, "empty"),
    ],
)
def test_concept_set_validation(bad, words):
    with pytest.raises(InputError, match=words):
        load_concepts(bad)


def test_concept_set_missing_classes_and_alignment():
    cs = load_concepts({"Black-footed Albatross": ["dark feet"], "Cardinal": ["red crest"]})
    aligned = cs.align(["Black footed Albatross", "Cardinal"])  # CUB spelling matches
    assert aligned.descriptors("Black footed Albatross") == ["dark feet"]
    with pytest.raises(InputError, match=r"2 class\(es\).*'Blue Jay'.*'Crow'"):
        cs.align(["Cardinal", "Blue Jay", "Crow"])
    with pytest.raises(InputError, match="Blue Jay"):
        load_concepts({"Cardinal": ["red crest"]}, classes=["Cardinal", "Blue Jay"])


def test_concept_set_context_length(hf_clip):
    long_ok = " ".join(["very"] * 12)
    cs = load_concepts({"cat": [long_ok]}, max_words=100)
    cs.check_context(hf_clip)  # 12 words fit in 77 tokens
    huge = " ".join(["supercalifragilistic"] * 30)
    with pytest.raises(InputError, match="exceed the model's text context"):
        load_concepts({"cat": [huge]}, max_words=100, model=hf_clip)


def test_concept_set_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_concepts(tmp_path / "nope.json")
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_concepts(p)
    c = tmp_path / "bad.csv"
    c.write_text("cat,red,extra\n")
    with pytest.raises(InputError, match="expected 2 columns"):
        load_concepts(c)


# --- relevance maps -----------------------------------------------------------------------------


def literal_relevance(model, pixel, text):
    """One pair, written plainly: full forward with attention, gradient at the last block."""
    tower = model.image
    last = tower.num_blocks - 1
    store = {}

    def grab(i, h, attn):
        if i == last:
            store["attn"] = attn

    with torch.enable_grad():
        x = pixel[None].clone().requires_grad_(True)
        emb = tower.encode(x, need_attn=True, on_block=grab)
        t = model.text.encode(model.tokenize([text]))
        cos = F.cosine_similarity(emb, t)[0]
        attn = store["attn"]  # (1, heads, T, T)
        grad = torch.autograd.grad(cos, attn)[0]
    T = attn.shape[-1]
    cam = (grad * attn).clamp(min=0).mean(dim=1)[0]  # (T, T)
    R = torch.eye(T) + cam @ torch.eye(T)
    if tower.num_prefix_tokens:
        row = R[0, 1:]
    else:
        row = R.mean(dim=0)
    g = int(math.isqrt(row.numel()))
    m = row.reshape(g, g)
    return (m - m.min()) / (m.max() - m.min() + 1e-8)


@pytest.mark.parametrize("kind", ["hf_clip", "siglip", "oc_clip"])
def test_relevance_matches_literal_implementation(kind, request, rng_images):
    model = request.getfixturevalue(kind)
    texts = ["a photo of a cat.", "pointy ears", "a dog", "striped fur", "a car", "red"]
    got = concept_maps(model, rng_images, texts)  # 2 texts per image
    assert got.shape == (6, 4, 4)
    for n, t in enumerate(texts):
        want = literal_relevance(model, rng_images[n // 2], t)
        torch.testing.assert_close(got[n], want, atol=1e-5, rtol=1e-4)
    assert float(got.amin((1, 2)).abs().max()) < 1e-6 and float(got.amax((1, 2)).min()) > 0.999


@pytest.mark.parametrize("kind", ["hf_clip", "siglip"])
def test_relevance_matches_chefer_last_block(kind, request, rng_images):
    """The registered Chefer method with last_block_only is an independent implementation of the same map."""
    if "chefer" not in vx.list_methods():
        pytest.fail("the chefer method is not registered")
    model = request.getfixturevalue(kind)
    texts = ["a cat", "a dog", "a car"]
    ours = concept_maps(model, rng_images, texts)
    theirs = concept_maps(model, rng_images, texts, method="chefer", last_block_only=True)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_relevance_independent_of_batch(hf_clip, rng_images):
    cs = load_concepts(CONCEPTS)
    both = deal_maps(hf_clip, rng_images[:2], ["cat", "dog"], cs)
    one = deal_maps(hf_clip, rng_images[1:2], ["dog"], cs)
    torch.testing.assert_close(both.concepts[1], one.concepts[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both.category[1], one.category[0], atol=1e-5, rtol=1e-4)
    assert both.texts[0][0] == "a photo of a cat." and both.texts[0][1] == "cat, which has pointy ears."
    with torch.no_grad():
        plain = hf_clip.image.encode(rng_images[:2])
    torch.testing.assert_close(both.image_emb, plain, atol=1e-5, rtol=1e-4)


def test_deal_maps_ragged_concepts(hf_clip, rng_images):
    cs = load_concepts({"cat": ["a", "b", "c"], "dog": ["d"]})
    m = deal_maps(hf_clip, rng_images[:2], ["cat", "dog"], cs)
    assert m.concepts.shape == (2, 3, 4, 4)
    assert m.mask.tolist() == [[True, True, True], [True, False, False]]
    assert float(m.concepts[1, 1:].abs().sum()) == 0.0


def test_registered_methods_for_evaluation(hf_clip, rng_images):
    for name in [n for n in ("chefer", "gradcam") if n in vx.list_methods()]:
        maps = concept_maps(hf_clip, rng_images[:2], ["a cat", "a dog"], method=name)
        assert maps.shape[0] == 2 and not maps.requires_grad
        assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    with pytest.raises(MethodError):
        concept_maps(hf_clip, rng_images[:2], ["a cat", "a dog"], create_graph=True, method="gradcam")


def test_plot_concept_maps(hf_clip, rng_images, tmp_path):
    cs = load_concepts(CONCEPTS)
    m = deal_maps(hf_clip, rng_images[:1], ["cat"], cs)
    p = plot_concept_maps(
        hf_clip.denormalize(rng_images[0]), m.category[0], m.concepts[0], m.texts[0], tmp_path / "fig.png"
    )
    with Image.open(p) as im:
        assert im.size[0] > 4 * im.size[1] / 2


# --- THE PROOF: explanation losses train the model --------------------------------------------


def _explanation_only(model, pixels, labels, cs, detach=False):
    return deal_losses(
        model, pixels, labels, ["cat", "dog"], cs, lambda_sep=1.0, lambda_con=1.0, prediction="none", detach_maps=detach
    )


def test_explanation_losses_train_the_model(rng_images):
    torch.manual_seed(0)
    model = fresh_model()
    cs = load_concepts(CONCEPTS)
    pixels, labels = rng_images[:2], torch.tensor([0, 1])
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(6):
        losses = _explanation_only(model, pixels, labels, cs)
        assert float(losses.prediction) == 0.0
        opt.zero_grad()
        losses.total.backward()
        grads = [p.grad for p in model.image.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0
        opt.step()
        history.append(float(losses.total.detach()))
    assert history[-1] < history[0] * 0.9, history
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("model.vision_model.encoder.layers.0") for k in changed)
    assert any(k.startswith("model.text_model") for k in changed)


def test_map_gradients_match_finite_differences(rng_images):
    """The second-order path (grad of a loss on maps built from gradients) is the true derivative."""
    model = fresh_model().double()
    cs = load_concepts({"cat": ["pointy ears", "long whiskers"]})
    px = rng_images[:1].double()

    def loss():
        m = deal_maps(model, px, ["cat"], cs, create_graph=True)
        return disentangle_loss(m.concepts, m.mask) + localize_loss(m.concepts, m.category, m.mask)

    layers = model.model.vision_model.encoder.layers
    params = [layers[-1].self_attn.q_proj.weight, layers[0].mlp.fc1.weight, model.model.text_projection.weight]
    grads = torch.autograd.grad(loss(), params)
    for p, g in zip(params, grads):
        idx = tuple(int(i) for i in torch.nonzero(g.abs() > 1e-3 * g.abs().max())[0])
        old = p.data[idx].item()
        h = 1e-6
        with torch.no_grad():
            p.data[idx] = old + h
            up = float(loss())
            p.data[idx] = old - h
            down = float(loss())
            p.data[idx] = old
        assert (up - down) / (2 * h) == pytest.approx(float(g[idx]), rel=1e-3, abs=1e-7)


def test_detached_maps_send_no_gradient(rng_images):
    model = fresh_model()
    cs = load_concepts(CONCEPTS)
    losses = _explanation_only(model, rng_images[:2], torch.tensor([0, 1]), cs, detach=True)
    assert float(losses.total) > 0
    if losses.total.requires_grad:
        losses.total.backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0 for p in model.parameters())


# --- losses and metrics on hand-computed tensors -----------------------------------------------


def test_losses_hand_computed():
    h = torch.tensor([[[[1.0, 0.0], [0.5, 0.0]], [[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.5], [0.5, 1.0]]]])  # (1,3,2,2)
    hc = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # pairs: (0,1): 1; (0,2): 0.25; (1,2): 0.5 -> 1.75
    assert float(disentangle_loss(h)) == pytest.approx(1.75)
    # sum_i h_i = [[2, 1.5], [1, 1]] - hc = [[1, 1.5], [1, 0]] -> 1 + 2.25 + 1 = 4.25
    assert float(localize_loss(h, hc)) == pytest.approx(4.25)
    mask = torch.tensor([[True, True, False]])
    assert float(disentangle_loss(h, mask)) == pytest.approx(1.0)
    assert float(localize_loss(h, hc, mask)) == pytest.approx(1.0 + 1.0 + 0.25 + 1.0)
    two = torch.cat([h, torch.zeros_like(h)])
    assert float(disentangle_loss(two)) == pytest.approx(1.75 / 2)  # mean over images


def test_disentanglability_hand_computed():
    h = torch.tensor([[[[1.0, 0.0], [0.5, 0.0]], [[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.5], [0.5, 1.0]]]])
    ov = mean_pairwise_overlap(h)
    assert float(ov[0]) == pytest.approx(1.75 / 3)
    score, raw = disentanglability(h)  # released form: the sum over the 3 pairs (1.75)
    assert raw == pytest.approx(1.75 / 3)
    assert score == pytest.approx(1 / (1 + math.exp(-10 * (0.2 - 1.75 / 100))))
    score_mean, _ = disentanglability(h, pairs="mean")
    assert score_mean == pytest.approx(1 / (1 + math.exp(-10 * (0.2 - (1.75 / 3) / 100))))
    # equals the disentangle loss, image by image; images with one concept are skipped
    mask = torch.tensor([[True, True, True], [True, False, False]])
    two = torch.cat([h, h])
    assert disentanglability(two, mask)[0] == pytest.approx(score)
    assert float(disentangle_loss(h)) == pytest.approx(1.75)
    disjoint = torch.eye(4).view(1, 4, 2, 2)
    assert disentanglability(disjoint) == (pytest.approx(1 / (1 + math.exp(-2.0))), 0.0)


def test_prediction_losses():
    from types import SimpleNamespace

    hf_clip = SimpleNamespace(logit_scale=torch.tensor(2.0), logit_bias=None)
    ie = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ce = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    s = float(hf_clip.logit_scale)
    want = -math.log(math.exp(s) / (math.exp(s) + 1.0))
    assert float(prediction_loss(hf_clip, ie, ce, labels)) == pytest.approx(want, rel=1e-5)
    # contrastive: logits s * [[1,0,1],[0,1,0],[1,0,1]], rows 0 and 2 share a class (two positives)
    li = (2 * (math.log(2 * math.exp(s) + 1) - s) + math.log(math.exp(s) + 2) - s) / 3
    assert float(prediction_loss(hf_clip, ie, ce, labels, "contrastive")) == pytest.approx(li, rel=1e-5)


def test_insertion_masks_and_part_metrics():
    m = torch.tensor([[[0.0, 1.0], [0.5, 0.2]]])
    assert insertion_masks(m, (2, 2), 0.5).tolist() == [[[0.0, 1.0], [1.0, 0.0]]]
    assert insertion_masks(m, (2, 2), 1.0).sum() == 4
    part = torch.tensor([[[False, True], [False, False]]])
    assert part_pointing(m, part).tolist() == [1.0]
    assert part_pointing(m, ~part).tolist() == [0.0]
    assert float(part_energy(m, part)[0]) == pytest.approx(1.0 / 1.7)
    acc = topk_accuracy(torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.5]]), torch.tensor([1, 2]), ks=(1, 2))
    assert acc == {"top1": 50.0, "top2": 100.0}


class ToyModel:
    """encode_image = [mean of the left half, mean of the right half] (image is 1x2 pixels x 3 ch)."""

    def encode_image(self, x):
        return torch.stack([x[:, :, :, 0].mean((1, 2)), x[:, :, :, 1].mean((1, 2))], -1)


def test_localizability_hand_computed():
    # 1x2-pixel images; the blurred copy is 0.5 everywhere; text embedding t
    t = (1.0, 0.3)

    def cos(a, b):
        return (a * t[0] + b * t[1]) / (math.hypot(a, b) * math.hypot(*t))

    def want(orig, half):  # steps (0.5, 1.0): top pixel inserted, then the whole image
        s_orig, s_blur, s_half = cos(*orig), cos(0.5, 0.5), cos(*half)
        return (min(abs(s_half - s_blur) / abs(s_orig - s_blur), 1.0) + 1.0) / 2

    x = torch.zeros(1, 3, 1, 2)
    x[..., 0] = 1.0  # every channel: 1 on the left, 0 on the right
    blur = torch.full_like(x, 0.5)
    text = torch.tensor([t])
    left, right = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    got_l, _ = localizability(ToyModel(), x, left, text, steps=(0.5, 1.0), blurred=blur)
    got_r, _ = localizability(ToyModel(), x, right, text, steps=(0.5, 1.0), blurred=blur)
    assert got_l == pytest.approx(want((1.0, 0.0), (1.0, 0.5)), rel=1e-5)
    assert got_r == pytest.approx(want((1.0, 0.0), (0.5, 0.0)), rel=1e-5)
    # each map is tested on its own image: image 1 is the mirror image, its map points right
    x2 = torch.cat([x, x.flip(-1)])
    mean, per = localizability(
        ToyModel(),
        x2,
        torch.cat([left, right]),
        text.expand(2, 2),
        steps=(0.5, 1.0),
        blurred=blur.expand(2, -1, -1, -1),
    )
    assert float(per[0]) == pytest.approx(want((1.0, 0.0), (1.0, 0.5)), rel=1e-5)
    assert float(per[1]) == pytest.approx(want((0.0, 1.0), (0.5, 1.0)), rel=1e-5)
    assert mean == pytest.approx(float(per.mean()))


def test_localizability_real_model(hf_clip, rng_images):
    maps = concept_maps(hf_clip, rng_images, ["a cat", "a dog", "a car"])
    score, per = localizability(hf_clip, rng_images, maps, ["a cat", "a dog", "a car"])
    assert per.shape == (3,) and 0 <= score <= 1


def test_cnn_tower_uses_differentiable_gradcam(offline):
    """CNN image towers (no attention): Grad-CAM on the last block, written plainly here."""
    px = offline.preprocess(Image.new("RGB", (80, 64), (180, 40, 30)))[None]
    got = concept_maps(offline, px, ["a red square"])
    tower, last, store = offline.image, offline.image.num_blocks - 1, {}

    def grab(i, h, attn):
        if i == last:
            h = h.detach().requires_grad_(True)
            store["h"] = h
            return h

    with torch.enable_grad():
        emb = tower.encode(px, on_block=grab)
        cos = F.cosine_similarity(emb, offline.encode_text(offline.tokenize(["a red square"])))[0]
        g = torch.autograd.grad(cos, store["h"])[0]
    cam = (g.mean((2, 3), keepdim=True) * store["h"]).sum(1).clamp(min=0)[0]
    want = (cam - cam.min()) / (cam.max() - cam.min() + 1e-8)
    torch.testing.assert_close(got[0], want, atol=1e-4, rtol=1e-3)
    assert concept_maps(offline, px, ["a red square"], create_graph=True).requires_grad
