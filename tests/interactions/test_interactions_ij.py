"""Integrated Jacobians: equal to the released ``exclip`` package, completeness, forward == reverse,
the references' layout, and each tower's work done once per distinct input."""

from __future__ import annotations

import pytest
import torch

import vlexplain as vx
from vlexplain.interactions import integrated_jacobians as ij_mod
from vlexplain.interactions import paths as paths_mod
from vlexplain.interactions.integrated_jacobians import text_reference
from vlexplain.models.open_clip import tiny_vit

EPS32 = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def raw_vit():
    return tiny_vit()  # OpenCLIP CLIP: 64 px, 16 px patches (4 x 4), 3 blocks per tower, width 32, d 16


@pytest.fixture(scope="module")
def vit(raw_vit):
    return vx.load_model(raw_vit)


def _exclip(raw, image: torch.Tensor, ids77: torch.Tensor, image_layer: int, text_layer: int, steps: int):
    """The released code's matrix (rows: start token .. end token; columns: the patch grid).

    exclip runs as released on the raw OpenCLIP model; its explainer leaves its hooks on the model
    after ``explain`` (they are removed at the start of the next call), so they are removed here.
    """
    explanation = pytest.importorskip("exclip.explanation")
    ex = explanation.OpenClipExplainer(raw, image_dim=image.shape[-1], text_seq_len=77, device=torch.device("cpu"))
    try:
        return ex.explain(ids77, image, text_layer=text_layer, image_layer=image_layer, N=steps)
    finally:
        ex.reset_attribution()


@pytest.mark.parametrize(("image_layer", "text_layer"), [(2, 2), (0, 1)])
def test_equals_released_exclip(raw_vit, vit, image_layer, text_layer):
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 3, 64, 64, generator=g)
    text = "a red bus near two trees"
    tb = vit.tokenize([text])
    ids77 = torch.zeros(1, 77, dtype=torch.long)
    ids77[0, : tb.ids.shape[1]] = tb.ids[0]  # the released code reads texts padded to 77 tokens
    ref = _exclip(raw_vit, image, ids77, image_layer, text_layer, steps=10)[1:-1]  # no start / end rows
    for mode in ("forward", "reverse"):
        ours = vx.interactions(
            vit, image, text, image_layer=image_layer, text_layer=text_layer, steps=10, mode=mode, chunk=5
        )
        assert ours.tokens == ["a", "red", "bus", "near", "two", "trees"]
        assert ours.matrix.shape == ref.shape == (6, 4, 4)
        # each entry sums 32 x 32 x 16 float32 products (text width x image width x embedding), in
        # another order than the released code: about sqrt(16k) * eps = 2e-5 of the largest term
        scale = float(ref.abs().max())
        torch.testing.assert_close(ours.matrix, ref, rtol=0, atol=2e-5 * scale)
    # and the hooks of the released code are gone: our towers never call the blocks' forward anyway
    assert not any(m._forward_pre_hooks for m in raw_vit.modules())


def test_defaults_are_the_released_ones(vit):
    inst = vx.get_interaction_method("integrated_jacobians").create(vit)
    s = inst.settings()
    assert s["steps"] == 10 and s["image_baseline"] == "zeros" and s["text_baseline"] == "one_token"
    assert s["image_layer"] == vit.image.num_blocks - 1 and s["text_layer"] == vit.text.num_blocks - 1


@pytest.mark.parametrize("baselines", [("zeros", "one_token"), ("blur", "pad")])
def test_completeness_converges_to_the_reference_terms(vit, baselines):
    """Summed over every token and patch (start / end / class token included), the matrix tends to
    (e_t - e_t(r_t)) . (e_v - e_v(r_v)) / (|e_t| |e_v|) as 1/steps (a right Riemann sum): the error
    halves when the steps double, so Richardson's 2 T(2N) - T(N) lands on the limit."""
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    opts = dict(image_layer=1, text_layer=1, image_baseline=baselines[0], text_baseline=baselines[1])
    t = {}
    for n in (16, 32):
        r = vx.interactions(vit, image, "a red bus", steps=n, **opts)
        t[n], expected = r.extras["total"], r.extras["expected_total"]
    err = abs(t[16] - expected)
    assert err > 0  # a Riemann sum with few steps is not exact: the check below has something to see
    assert abs(t[32] - expected) == pytest.approx(err / 2, rel=0.15)
    assert abs(2 * t[32] - t[16] - expected) < 0.1 * err


def test_one_token_reference_is_the_released_layout(vit):
    tb = vit.tokenize(["a red bus", "two dogs on grass"])
    ref = text_reference(tb, "one_token", vit.pad_token_id)
    T = tb.ids.shape[1]
    for r in range(2):
        want = torch.zeros(T, dtype=torch.long)
        want[0], want[2] = 49406, 49407  # start token, one token of id 0, end token, padding (released)
        assert torch.equal(ref.ids[r], want)
        assert int(ref.pool_index[r]) == 2 == int(ref.ids[r].argmax())
    pad = text_reference(tb, "pad", vit.pad_token_id)
    assert torch.equal(pad.ids[~tb.content_mask], tb.ids[~tb.content_mask])
    assert (pad.ids[tb.content_mask] == vit.pad_token_id).all()


def test_each_tower_runs_once_per_distinct_input(vit, monkeypatch):
    seen = []
    real = paths_mod.integrated_path

    def spy(tower, x, ref, *a, **k):
        seen.append((tower.modality, len(x)))
        return real(tower, x, ref, *a, **k)

    # (the module object: ``vlexplain.interactions`` as an attribute is the function vx.interactions)
    monkeypatch.setattr(ij_mod, "integrated_path", spy)
    image = torch.randn(1, 3, 64, 64)
    out = vx.interactions(vit, image, ["a red bus", "a blue car", "a red bus"], steps=2, batch_size=3)
    assert seen == [("image", 1), ("text", 2)]  # one image, two distinct texts for three pairs
    torch.testing.assert_close(out[0].matrix, out[2].matrix, rtol=0, atol=0)


@pytest.mark.parametrize("key", ["open_clip-resnet", "hf-siglip", "open_clip-hf-text"])
def test_forward_and_reverse_modes_agree(family_model, key):
    """CNN feature maps, a tower without class token, a BERT text tower: both ways of batching the
    Jacobians give the same matrix (float32 noise of a 16-32 dimensional contraction)."""
    model = family_model(key)
    image = torch.randn(1, 3, *model.input_size, generator=torch.Generator().manual_seed(3))
    a = vx.interactions(model, image, "a red bus", steps=3, mode="forward")
    b = vx.interactions(model, image, "a red bus", steps=3, mode="reverse", chunk=7)
    scale = float(a.matrix.abs().max())
    torch.testing.assert_close(a.matrix, b.matrix, rtol=0, atol=1e-5 * scale + 1e-12)
