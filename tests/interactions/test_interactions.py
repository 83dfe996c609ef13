"""Interaction methods: contract over the registry x the families, the Interactions object (spans,
regions, boxes, masks), one-line refusals, and the saved figure / page / JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vlexplain as vx
from tests.attribution.test_contract import FAMILY_KINDS, _hook_state, _images
from vlexplain.errors import InputError, MethodError
from vlexplain.interactions.base import interaction_methods_for
from vlexplain.interactions.spans import content_words, span_tokens, token_offsets

KINDS = ["oc_clip", "offline", *FAMILY_KINDS, "hf_clip", "siglip"]
TEXTS = ["a red bus", "two dogs"]  # different lengths: the padding differs between batch and single
#: cheap options so that the contract runs on every family in seconds
CHEAP = {
    "integrated_jacobians": dict(steps=2),
    "banzhaf": dict(budget=24, cells=(2, 2)),
    "span_first_order": {},
    "random": {},
}


def _model(request, kind):
    return request.getfixturevalue("family_model")(kind) if kind in FAMILY_KINDS else request.getfixturevalue(kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", vx.list_interaction_methods())
def test_interaction_contract(name, kind, request):
    model = _model(request, kind)
    cls = vx.get_interaction_method(name)
    if cls.why_not(model) is not None:  # refused in one line, naming why
        with pytest.raises(MethodError) as e:
            vx.interactions(model, _images(model, "tiny")[0], TEXTS[0], method=name)
        assert "\n" not in str(e.value)
        return
    if kind == "offline" and name == "banzhaf":
        pytest.skip("covered on the tiny families; 24 masked 224-px CNN passes add nothing here")
    images = _images(model, kind)
    before = images.clone()
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    opts = CHEAP[name] if name in CHEAP else {}
    batched = vx.interactions(model, images, TEXTS, method=name, seed=0, batch_size=2, **opts)
    single = vx.interactions(model, images, TEXTS, method=name, seed=0, batch_size=1, **opts)
    for r, text in zip(batched, TEXTS):
        assert r.tokens == model.tokenize([text]).shown_tokens(0)
        assert r.matrix.dim() == 3 and r.matrix.shape[0] == len(r.tokens)
        assert r.matrix.is_floating_point() and torch.isfinite(r.matrix).all()
        assert r.matrix.device == model.device and r.method == name
    if name in ("random", "banzhaf"):  # seeded: the same seed gives the same result
        again = vx.interactions(model, images[:1], TEXTS[0], method=name, seed=0, **opts)
        assert torch.equal(again.matrix, single[0].matrix), "same seed, same input: a different result"
    for a, b in zip(batched, single):  # a pair's result does not depend on the batch
        scale = float(b.matrix.abs().max())
        torch.testing.assert_close(a.matrix, b.matrix, rtol=0, atol=1e-4 * scale + 1e-7)
        assert a.score == pytest.approx(b.score, abs=1e-5)
    assert torch.equal(images, before), "the input pixels were modified"
    assert _hook_state(model) == {}, "hooks left on the model"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in params.items()), "parameters changed"
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("name", vx.list_interaction_methods())
def test_registry_entry(name):
    cls = vx.get_interaction_method(name)
    assert cls.name == name and cls.summary and cls.__doc__


# --- the result object ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def inter(oc_clip):
    img = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return vx.interactions(oc_clip, img, "A red double-decker bus, near a tree.", method="random", seed=1)


def test_regions_sum_their_tokens(inter):
    assert inter.tokens == ["a", "red", "double", "-", "decker", "bus", ",", "near", "a", "tree", "."]
    assert inter.span("Red double") == [1, 2]  # case-insensitive substring
    assert inter.span("double-decker") == [2, 3, 4]
    assert inter.span([5, 1]) == [1, 5] and inter.span(-2) == [9]
    torch.testing.assert_close(inter.region("red double"), inter.matrix[1] + inter.matrix[2])
    up = inter.image_region("bus")
    assert tuple(up.shape) == (64, 64)
    torch.testing.assert_close(up.mean(), inter.matrix[5].mean(), rtol=1e-5, atol=1e-6)  # bilinear keeps the mean


def test_words_in_a_box_or_mask(inter):
    whole = inter.matrix.sum((1, 2))
    torch.testing.assert_close(inter.words((0, 0, 64, 64)), whole)
    torch.testing.assert_close(inter.words(np.ones((64, 64), dtype=bool)), whole)
    left = inter.matrix[:, :, :2].sum((1, 2))  # 4 x 4 cells of 16 px: the left half is columns 0-1
    torch.testing.assert_close(inter.words((0, 0, 32, 64)), left)
    cells = torch.zeros(4, 4, dtype=torch.bool)
    cells[:, :2] = True
    torch.testing.assert_close(inter.words(cells), left)
    # a box over half of column 2's cells counts half of them
    torch.testing.assert_close(inter.words((0, 0, 40, 64)), left + 0.5 * inter.matrix[:, :, 2].sum(1))


@pytest.mark.parametrize(
    ("call", "msg"),
    [
        (lambda r: r.region("green car"), "is not in the text"),
        (lambda r: r.region(""), "empty"),
        (lambda r: r.region([40]), "out of range"),
        (lambda r: r.words((0, 0, 65, 10)), "outside"),
        (lambda r: r.words((10, 10, 5, 20)), "outside"),
        (lambda r: r.words(np.zeros((64, 64), dtype=bool)), "no pixel"),
        (lambda r: r.words(np.ones((5, 5), dtype=bool)), "must be 64x64"),
    ],
)
def test_bad_spans_and_boxes_are_one_line(inter, call, msg):
    with pytest.raises(InputError) as e:
        call(inter)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_bad_requests_are_one_line(oc_clip):
    img = torch.zeros(1, 3, 64, 64)
    for kw, err in [
        (dict(texts=""), InputError),
        (dict(texts="a bus", method="nope"), MethodError),
        (dict(texts="a bus", steps=0), MethodError),
        (dict(texts="a bus", image_layer=3), MethodError),
        (dict(texts="a bus", colour="red"), MethodError),
        (dict(texts="a bus", method="banzhaf", budget=5), MethodError),
        (dict(texts="a bus", method="span_first_order", base="nope"), MethodError),
    ]:
        texts = kw.pop("texts")
        with pytest.raises(err) as e:
            vx.interactions(oc_clip, img, texts, **kw)
        assert "\n" not in str(e.value), kw


def test_token_offsets_and_content_words():
    toks = ["a", "red", "<unk>", "bus", ","]
    assert token_offsets("A red zzq bus,", toks) == [(0, 1), (2, 5), (6, 9), (10, 13), (13, 14)]
    assert span_tokens("A red zzq bus,", toks, "zzq") == [2]
    words = content_words(
        "A red double-decker bus, near the tree.",
        ["a", "red", "double", "-", "decker", "bus", ",", "near", "the", "tree", "."],
    )
    assert [(w, i) for w, i in words] == [("red", [1]), ("double-decker", [2, 3, 4]), ("bus", [5]), ("tree", [9])]


def test_save_writes_figure_page_and_json(inter, tmp_path):
    paths = inter.save(str(tmp_path / "pair"), spans=["red double"])
    assert [p.rsplit("_", 1)[1] for p in paths] == ["interactions.png", "interactions.html", "interactions.json"]
    from PIL import Image

    with Image.open(paths[0]) as im:
        assert im.size[0] > 400 and im.size[1] > 200
    page = open(paths[1]).read()
    assert "double-decker" in page and "data:image/png;base64" in page
    d = json.loads(open(paths[2]).read())
    assert d["tokens"] == inter.tokens and np.allclose(d["matrix"], inter.matrix.numpy(), atol=1e-6)
    assert [w["word"] for w in d["words"]] == ["red", "double-decker", "bus", "tree"]
    assert d["spans"][0]["span"] == "red double"
    assert np.allclose(d["spans"][0]["region"], inter.region("red double").numpy(), atol=1e-6)
    assert "<img" in inter._repr_html_()
    with pytest.raises(InputError):  # a bad span: nothing written
        inter.save(str(tmp_path / "bad"), spans=["green car"])
    assert not list(tmp_path.glob("bad*"))


def test_listing_says_why_not(offline):
    out = interaction_methods_for(offline)
    assert set(out) == set(vx.list_interaction_methods())
    assert all(v is None or isinstance(v, str) for v in out.values())


def test_span_first_order_is_the_words_own_map(oc_clip):
    """A content word's region is the base method's map of the image against the word alone (or the
    caption's map less the caption's without it); function words get zero rows."""
    from vlexplain.attribution.base import image_grid_size, pool_to_grid

    img = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    text = "a red double-decker bus"
    alone = vx.interactions(oc_clip, img, text, method="span_first_order", base="saliency")
    grid = image_grid_size(oc_clip)

    def fo(t: str) -> torch.Tensor:
        e = vx.explain(oc_clip, img, t, method="saliency", sides=["image"])
        return pool_to_grid(e.image_map[None], grid)[0]

    torch.testing.assert_close(alone.region("double-decker"), fo("double-decker"), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(alone.region("bus"), fo("bus"), rtol=1e-5, atol=1e-7)
    assert float(alone.matrix[0].abs().sum()) == 0.0  # "a"
    removed = vx.interactions(oc_clip, img, text, method="span_first_order", base="saliency", variant="removed")
    torch.testing.assert_close(removed.region("red"), fo(text) - fo("a double-decker bus"), rtol=1e-5, atol=1e-7)
