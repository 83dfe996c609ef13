"""The pointing game (and DEAL's part pointing) scores a map whose maximum is tied across several pixels
by the share of the tied maxima within the tolerance."""

from __future__ import annotations

import math

import pytest
import torch

from vlexplain.concepts.metrics import part_pointing
from vlexplain.metrics.localization import dilate, pointing_game, tied_max_share


# --- pointing game: ties ------------------------------------------------------------------------
def test_pointing_game_ties_hand_computed():
    """A 2x2 plateau of maxima; the mask pixel sits at (0, 3)."""
    m = torch.zeros(1, 4, 4)
    m[0, :2, :2] = 1.0  # tied maxima at (0,0) (0,1) (1,0) (1,1)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 3] = True
    # distances to (0,3): (0,0) 3, (0,1) 2, (1,0) sqrt(10)=3.16, (1,1) sqrt(5)=2.24
    assert pointing_game(m, mask, tolerance=1).item() == 0.0
    assert pointing_game(m, mask, tolerance=2).item() == pytest.approx(1 / 4)  # (0,1) only
    assert pointing_game(m, mask, tolerance=3).item() == pytest.approx(3 / 4)  # (1,0) is 3.16 away
    assert pointing_game(m, mask, tolerance=4).item() == 1.0
    # the same scores for the mirrored map and mask: no bias towards the top-left
    for tol in (1, 2, 3, 4):
        assert pointing_game(m.flip(-1), mask.flip(-1), tol).item() == pointing_game(m, mask, tol).item()
        assert pointing_game(m.flip(-2), mask.flip(-2), tol).item() == pointing_game(m, mask, tol).item()


def test_pointing_game_constant_map_scores_the_covered_share():
    """A constant map does not always hit: its score is the share of pixels within the tolerance."""
    m = torch.full((1, 10, 10), 0.3)
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 4:6, 4:6] = True
    assert pointing_game(m, mask, tolerance=0).item() == pytest.approx(4 / 100)
    # tolerance 1: the 2x2 block plus its 8 edge neighbours (diagonals are sqrt(2) away)
    assert pointing_game(m, mask, tolerance=1).item() == pytest.approx(12 / 100)
    assert math.isnan(pointing_game(m, torch.zeros_like(mask), 3).item())


def test_pointing_game_unique_maximum_unchanged_and_batched():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(8, 20, 20, generator=g)
    maps[:4, 5:8, 5:8] = 2.0  # four maps with a 3x3 plateau of maxima
    masks = torch.zeros(8, 20, 20, dtype=torch.bool)
    masks[:, 6:12, 3:7] = True
    got = pointing_game(maps, masks, tolerance=1)
    for i in range(8):  # one by one, by enumeration of the maxima
        top = (maps[i] == maps[i].max()).nonzero().tolist()
        ys, xs = masks[i].nonzero().T
        hits = [float(((ys - y) ** 2 + (xs - x) ** 2 <= 1).any()) for y, x in top]
        assert got[i].item() == pytest.approx(sum(hits) / len(hits))
        assert pointing_game(maps[i : i + 1], masks[i : i + 1], 1).item() == got[i].item()
    # rows 6..11, cols 3..6 dilated by 1 cover rows 5..12 x cols 2..7 minus corners; the plateau
    # (rows 5..7, cols 5..7): row 5 has cols 5, 6 (col 7 is a corner), rows 6, 7 all three -> 8 / 9
    assert got[0].item() == pytest.approx(8 / 9)


def test_dilate_equals_disk_convolution():
    import torch.nn.functional as F

    from vlexplain.metrics.localization import disk

    g = torch.Generator().manual_seed(0)
    m = torch.rand(5, 41, 33, generator=g) > 0.99
    for r in (0, 1, 2, 5, 15, 50):
        ref = m if r == 0 else F.conv2d(m[:, None].float(), disk(r).float()[None, None], padding=r)[:, 0] > 0.5
        assert torch.equal(dilate(m, r), ref)


def test_part_pointing_ties():
    maps = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])  # three tied maxima
    part = torch.tensor([[[True, False], [False, False]]])
    assert part_pointing(maps, part).tolist() == [pytest.approx(1 / 3)]
    assert part_pointing(maps, ~part).tolist() == [pytest.approx(2 / 3)]
    assert tied_max_share(torch.tensor([[[float("nan"), 1.0]]]), torch.tensor([[[False, True]]])).item() == 1.0
