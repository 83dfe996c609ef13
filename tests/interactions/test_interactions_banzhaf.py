"""Weighted Banzhaf interactions: equal to a brute-force computation over every joint coalition of
image cells and tokens, to shapiq's exact Banzhaf interaction index at p = 0.5, and close to it
from sampled coalitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vlexplain as vx
from vlexplain.interactions.banzhaf import exact_budget, split_budget

TEXT = "red bus tree"  # three shown tokens
CELLS = (2, 2)  # four image players


@pytest.fixture(scope="module")
def setup(oc_clip):
    img = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    return oc_clip, img


def joint_values(model, img: torch.Tensor, text: str) -> tuple[np.ndarray, int, int]:
    """v(S) for every joint coalition S (bit k: player k kept; cells first, row-major, then tokens),
    by masking the inputs directly: removed cells become 0 (the preprocessed mean colour) and removed
    tokens the pad token; v = cosine of the two embeddings."""
    tb = model.tokenize([text])
    content = tb.content_mask[0].nonzero()[:, 0].tolist()
    n_i, n_t = CELLS[0] * CELLS[1], len(content)
    n = n_i + n_t
    H, W = model.input_size
    ch, cw = H // CELLS[0], W // CELLS[1]
    images, ids = [], []
    for mask in range(2**n):
        x = img[0].clone()
        for c in range(n_i):
            if not mask >> c & 1:
                r, k = divmod(c, CELLS[1])
                x[:, r * ch : (r + 1) * ch, k * cw : (k + 1) * cw] = 0
        images.append(x)
        row = tb.ids[0].clone()
        for t, pos in enumerate(content):
            if not mask >> (n_i + t) & 1:
                row[pos] = model.pad_token_id
        ids.append(row)
    texts = tb.select([0] * 2**n)
    texts.ids = torch.stack(ids)
    with torch.no_grad():
        e_i = F.normalize(model.image.encode(torch.stack(images)), dim=-1).double()
        e_t = F.normalize(model.text.encode(texts), dim=-1).double()
    return (e_i * e_t).sum(-1).numpy(), n_i, n_t


def brute_force(v: np.ndarray, n: int, i: int, j: int, p: float) -> float:
    """sum over T in N \\ {i, j} of p^|T| (1-p)^(n-2-|T|) (v(T+i+j) - v(T+i) - v(T+j) + v(T))."""
    others = [k for k in range(n) if k not in (i, j)]
    total = 0.0
    for r in range(len(others) + 1):
        for T in itertools.combinations(others, r):
            t = sum(1 << k for k in T)
            d = v[t | 1 << i | 1 << j] - v[t | 1 << i] - v[t | 1 << j] + v[t]
            total += p**r * (1 - p) ** (len(others) - r) * d
    return total


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_exact_budget_equals_brute_force(setup, p):
    model, img = setup
    v, n_i, n_t = joint_values(model, img, TEXT)
    want = np.array([[brute_force(v, n_i + n_t, c, n_i + t, p) for c in range(n_i)] for t in range(n_t)])
    r = vx.interactions(model, img, TEXT, method="banzhaf", budget=exact_budget(n_i, n_t), cells=CELLS, p=p)
    got = r.matrix.reshape(n_t, n_i).double().numpy()
    assert r.extras == {"image_coalitions": 2**n_i, "text_coalitions": 2**n_t}
    # float32 embeddings: each value carries ~1e-7 of noise, a second difference summed with weights ~1e-6
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 + 1e-4 * np.abs(want).max())
    assert np.abs(want).max() > 1e-4  # the game is not flat: the comparison has something to compare


def test_shapiq_exact_banzhaf_interactions_agree(setup):
    shapiq = pytest.importorskip("shapiq")
    model, img = setup
    v, n_i, n_t = joint_values(model, img, TEXT)
    n = n_i + n_t
    weights = 1 << np.arange(n)

    def game(coalitions: np.ndarray) -> np.ndarray:
        return v[(coalitions.astype(int) * weights).sum(1)]

    bii = shapiq.ExactComputer(game, n_players=n)("BII", order=2)
    r = vx.interactions(model, img, TEXT, method="banzhaf", budget=exact_budget(n_i, n_t), cells=CELLS)
    got = r.matrix.reshape(n_t, n_i).double().numpy()
    want = np.array([[bii[(c, n_i + t)] for c in range(n_i)] for t in range(n_t)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 + 1e-4 * np.abs(want).max())


def test_sampled_budget_estimates_the_exact_values(oc_clip):
    """Sampled coalitions (about a third of every coalition): the estimate points the same way."""
    img = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    cells = (3, 3)
    exact = vx.interactions(oc_clip, img, TEXT, method="banzhaf", budget=exact_budget(9, 3), cells=cells)
    est = vx.interactions(oc_clip, img, TEXT, method="banzhaf", budget=200, cells=cells, seed=0)
    assert est.extras["image_coalitions"] < 2**9
    a, b = exact.matrix.flatten().double(), est.matrix.flatten().double()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.8
    again = vx.interactions(oc_clip, img, TEXT, method="banzhaf", budget=200, cells=cells, seed=0)
    assert torch.equal(again.matrix, est.matrix)


def test_budget_split():
    assert split_budget(1024, 49, 12) == (823, 201)  # in proportion to the players
    assert split_budget(100, 4, 3) == (16, 8)  # both capped at every coalition
    b_i, b_t = split_budget(12, 6, 4)
    assert b_i >= 7 and b_t >= 5 and b_i + b_t <= 12
