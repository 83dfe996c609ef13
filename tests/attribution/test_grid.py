"""Non-square inputs: a ViT with image_size=(64, 96) gives maps on its own 4 x 6 patch grid for every
image-side method (never a square guess)."""

from __future__ import annotations

import warnings

import pytest
import torch

import vlexplain as vx
from tests.attribution.test_contract import cheap_options
from vlexplain.attribution.base import image_grid_size


@pytest.fixture(scope="module")
def wide_vit():
    from tests.support.models import tiny_open_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vx.load_model(tiny_open_clip(image_size=(64, 96), layers=2))


def test_the_grid_is_the_models_own(wide_vit):
    assert tuple(wide_vit.input_size) == (64, 96)
    assert image_grid_size(wide_vit) == (4, 6) and wide_vit.image.grid == (4, 6)
    with torch.no_grad():
        h = wide_vit.image.encode(torch.zeros(1, 3, 64, 96), stop=0)
    scores = torch.arange(h.shape[1], dtype=torch.float32)[None]  # (1, 1 + 24) with the class token
    grid = wide_vit.image.token_scores_to_grid(scores, h)
    assert grid.shape == (1, 4, 6)
    assert grid[0, 1, 0] == 1 + 6  # row-major: the 7th patch starts the second row of 6
    with pytest.raises(ValueError, match="4x6 patch grid"):
        wide_vit.image.grid_size(16)


@pytest.mark.parametrize("name", [n for n in vx.list_methods() if "image" in vx.get_method(n).sides])
def test_every_image_method_on_a_non_square_vit(name, wide_vit):
    assert vx.get_method(name).why_not(wide_vit, "image") is None  # every image method takes a ViT
    x = torch.randn(3, 64, 96, generator=torch.Generator().manual_seed(0))
    e = vx.explain(wide_vit, x, "a wide photo", method=name, seed=0, sides=["image"], **cheap_options(name, "oc_clip"))
    assert tuple(e.patch_map.shape) == (4, 6) and tuple(e.image_map.shape) == (64, 96)
    assert torch.isfinite(e.patch_map).all() and torch.isfinite(e.image_map).all()
