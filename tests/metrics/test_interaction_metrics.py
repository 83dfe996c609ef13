"""The interaction metrics on hand-built regions and masks, checked against literal values and a
plain per-pixel version of each definition."""

from __future__ import annotations

import math

import pytest
import torch

from vlexplain.errors import InputError
from vlexplain.metrics.interactions import (
    interaction_mass_ratio,
    interaction_metrics,
    reverse_pointing,
    second_order_pointing_game,
)

# two objects on an 8 x 8 image: the left half and the right half; a 2 x 2 grid of 4 x 4 cells
MASKS = torch.zeros(2, 8, 8, dtype=torch.bool)
MASKS[0, :, :4] = True
MASKS[1, :, 4:] = True
REGIONS = torch.tensor(
    [
        [[3.0, 1.0], [1.0, -2.0]],  # word 0: peaks on its object (left column), 64 of 80 positive mass there
        [[1.0, 1.0], [1.0, 1.0]],  # word 1: constant, no peak of its own
    ]
)


def test_literal_values():
    out = interaction_metrics(REGIONS, MASKS)
    # pointing: word 0 hits; word 1's tied maxima are every pixel, half of them on its object
    torch.testing.assert_close(out["pointing"], torch.tensor([1.0, 0.5]))
    # mass: word 0: (3 + 1) * 16 on its object, (1 + 0) * 16 on the other -> 0.8; word 1: 0.5
    torch.testing.assert_close(out["mass"], torch.tensor([0.8, 0.5]))
    # reverse: object 0: word 0 sums 64, word 1 sums 32 -> word 0; object 1: word 0 -16, word 1 32 -> word 1
    torch.testing.assert_close(out["reverse"], torch.tensor([1.0, 1.0]))
    # the same region for both words: every object's top word is a tie of two
    same = interaction_metrics(REGIONS[[0, 0]], MASKS)
    torch.testing.assert_close(same["reverse"], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(same["pointing"], torch.tensor([1.0, 0.0]))


def _plain(regions, masks):
    """Per-pixel loops over the definitions (cells upsampled by repetition)."""
    K, H, W = masks.shape
    gh, gw = regions.shape[1:]
    up = [[[float(regions[k, y * gh // H, x * gw // W]) for x in range(W)] for y in range(H)] for k in range(K)]
    pointing, mass, reverse = [], [], []
    for k in range(K):
        top = max(max(r) for r in up[k])
        ties = [(y, x) for y in range(H) for x in range(W) if up[k][y][x] == top]
        pointing.append(sum(bool(masks[k, y, x]) for y, x in ties) / len(ties))
        on = [sum(max(up[k][y][x], 0) for y in range(H) for x in range(W) if masks[j, y, x]) for j in range(K)]
        mass.append(on[k] / sum(on) if sum(on) > 0 else math.nan)
    for j in range(K):
        s = [sum(up[k][y][x] for y in range(H) for x in range(W) if masks[j, y, x]) for k in range(K)]
        best = [k for k in range(K) if s[k] == max(s)]
        reverse.append(1 / len(best) if j in best else 0.0)
    return pointing, mass, reverse


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_a_plain_version(seed):
    g = torch.Generator().manual_seed(seed)
    K, H, W = 3, 12, 12
    regions = torch.randint(-2, 3, (K, 3, 4), generator=g).float()  # small integers: ties happen
    masks = torch.rand(K, H, W, generator=g) < 0.3
    pointing, mass, reverse = _plain(regions, masks)
    exp = {"pointing": pointing, "mass": mass, "reverse": reverse}
    for name, v in interaction_metrics(regions, masks).items():
        torch.testing.assert_close(v, torch.tensor(exp[name]), equal_nan=True, msg=name)


def test_undefined_and_bad_input():
    empty = MASKS.clone()
    empty[1] = False
    assert math.isnan(float(second_order_pointing_game(REGIONS, empty)[1]))
    assert math.isnan(float(interaction_mass_ratio(-REGIONS.abs(), MASKS)[0]))  # no positive mass anywhere
    with pytest.raises(InputError, match="boolean"):
        reverse_pointing(REGIONS, MASKS.float())
    with pytest.raises(InputError, match=r"\(K, gh, gw\)"):
        reverse_pointing(REGIONS[:1], MASKS)
    with pytest.raises(InputError, match="unknown interaction metric"):
        interaction_metrics(REGIONS, MASKS, ["nope"])
