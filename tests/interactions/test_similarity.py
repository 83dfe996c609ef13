"""Same-modality similarity (image-image, text-text): symmetry, identical inputs, completeness,
the shapes, the saved figure, one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

import vlexplain as vx
from vlexplain.errors import InputError


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))


def test_image_pair_is_symmetric(oc_clip, images):
    ab = vx.explain_similarity(oc_clip, images[0], images[1], layer=1, steps=4)
    ba = vx.explain_similarity(oc_clip, images[1], images[0], layer=1, steps=4)
    assert ab.modality == "image" and tuple(ab.matrix.shape) == (4, 4, 4, 4)
    assert ab.score == pytest.approx(ba.score, abs=1e-6)
    scale = float(ab.matrix.abs().max())
    torch.testing.assert_close(ba.matrix, ab.matrix.permute(2, 3, 0, 1), rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(ab.map_a, ba.map_b, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(ab.map_a, ab.matrix.sum((2, 3)))


def test_identical_images(oc_clip, images):
    s = vx.explain_similarity(oc_clip, images[0], images[0].clone(), layer=1, steps=4)
    assert s.score == pytest.approx(1.0, abs=1e-5)
    m = s.matrix.reshape(16, 16)
    torch.testing.assert_close(m, m.T, rtol=0, atol=0)  # the same Jacobian on both sides
    # the same sums taken along rows and along columns: float32 rounding of 16 terms
    torch.testing.assert_close(s.map_a, s.map_b, rtol=0, atol=16 * 1.2e-7 * float(s.map_a.abs().max()))


@pytest.mark.parametrize("modality", ["image", "text"])
def test_completeness_converges(oc_clip, images, modality):
    a, b = (images[0], images[1]) if modality == "image" else ("a red bus", "a bus that is red")
    t = {}
    for n in (16, 32):
        s = vx.explain_similarity(oc_clip, a, b, layer=0, steps=n)
        t[n], expected = s.extras["total"], s.extras["expected_total"]
    err = abs(t[16] - expected)
    assert err > 0
    assert abs(2 * t[32] - t[16] - expected) < 0.1 * err  # first-order convergence to the right limit


def test_text_pair(oc_clip, tmp_path):
    s = vx.explain_similarity(oc_clip, "a red bus", "two red buses on a road", steps=3)
    assert s.modality == "text" and s.tokens_a == ["a", "red", "bus"] and len(s.tokens_b) == 6
    assert tuple(s.matrix.shape) == (3, 6)
    torch.testing.assert_close(s.map_b, s.matrix.sum(0))
    paths = s.save(str(tmp_path / "t"))
    assert json.loads(open(paths[1]).read())["tokens_b"] == s.tokens_b


def test_refusals(oc_clip, images, tmp_path):
    with pytest.raises(InputError):
        vx.explain_similarity(oc_clip, images[0], "a red bus")
    with pytest.raises(InputError):
        vx.explain_similarity(oc_clip, "a", "b", baseline="zeros")
    with pytest.raises(vx.MethodError):
        vx.explain_similarity(oc_clip, "a", "b", layer=9)
    with pytest.raises(InputError):
        vx.explain_similarity(oc_clip, "", "a bus")


def test_image_figure(oc_clip, images, tmp_path):
    s = vx.explain_similarity(oc_clip, images[0], images[1], steps=2)
    png, js = s.save(str(tmp_path / "sim"))
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 300
    assert len(json.loads(open(js).read())["map_a"]) == 4
