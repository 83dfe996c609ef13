"""Kernel SHAP, RISE, random and center: axioms, exact toy values and determinism."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vlexplain as vx
from vlexplain.attribution.base import PairBatch
from vlexplain.attribution.center import center_gaussian
from vlexplain.attribution.kernel_shap import KernelShap, sample_coalitions, solve_shapley
from vlexplain.attribution.rise import Rise, grids_to_masks
from vlexplain.errors import MethodError
from vlexplain.models.base import DualEncoder, TextBatch, Tower

# ---------------------------------------------------------------------------------------------
# A toy dual encoder whose "embeddings" are the raw inputs, so that a target can be any
# hand-written function of the perturbed image / text.


class _PixelTower(Tower):
    modality, kind = "image", "vit"

    @property
    def num_blocks(self) -> int:
        return 0

    def stem(self, x, inputs_embeds=None):
        return x

    def head(self, h, x):
        return h[:, 0].flatten(1)  # (B, H*W): channel 0 of the (perturbed) image


class _TableTower(Tower):
    modality, kind = "text", "text"

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    @property
    def num_blocks(self) -> int:
        return 0

    def stem(self, x, inputs_embeds=None):
        return self.table[x.ids]  # (B, T)

    def head(self, h, x):
        return h  # (B, T): the value of the token at each position


class _Toy(DualEncoder):
    def __init__(self, size: int, table: torch.Tensor):
        super().__init__()
        self.image, self.text = _PixelTower(), _TableTower(table)
        self.input_size = (size, size)
        self._p = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    @property
    def pad_token_id(self) -> int:
        return 0


def _toy_batch(model: _Toy, pixels, ids, target, seeds) -> PairBatch:
    B, T = ids.shape
    content = torch.zeros(B, T, dtype=torch.bool)
    content[:, 1:-1] = True  # SOS ... EOS, no padding
    tb = TextBatch(
        ids, torch.ones(B, T, dtype=torch.long), torch.full((B,), T - 1), content, [["t"] * T] * B, ["x"] * B
    )
    with torch.no_grad():
        ie, te = model.image.encode(pixels), model.text.encode(tb)
    return PairBatch(pixels, tb, ie, te, target, list(seeds))


def _brute_shapley(f, M: int) -> torch.Tensor:
    """Shapley values of a set function ``f(frozenset) -> float`` from the definition."""
    phi = torch.zeros(M, dtype=torch.float64)
    for j in range(M):
        others = [k for k in range(M) if k != j]
        for r in range(M):
            for S in itertools.combinations(others, r):
                w = math.factorial(r) * math.factorial(M - r - 1) / math.factorial(M)
                phi[j] += w * (f(frozenset(S) | {j}) - f(frozenset(S)))
    return phi


# ---------------------------------------------------------------------------------------------
# Kernel SHAP


def test_kernel_shap_solver_exact_on_small_nonlinear_game():
    M = 5
    g = torch.Generator().manual_seed(0)
    w = torch.randn(M, generator=g, dtype=torch.float64).tolist()

    def f(S: frozenset) -> float:  # a non-additive game: saturation plus an interaction of 0 and 3
        return math.tanh(sum(w[k] for k in S)) + 0.3 * (0 in S and 3 in S)

    Z, wt = sample_coalitions(M, 64, g)  # 2^5 - 2 = 30 <= 64: enumerated
    assert Z.shape == (30, M)
    y = torch.tensor([f(frozenset(torch.nonzero(z).flatten().tolist())) for z in Z], dtype=torch.float64)
    phi = solve_shapley(
        Z,
        wt,
        y,
        torch.tensor(f(frozenset(range(M))), dtype=torch.float64),
        torch.tensor(f(frozenset()), dtype=torch.float64),
    )
    torch.testing.assert_close(phi, _brute_shapley(f, M), atol=1e-10, rtol=0)


@pytest.mark.parametrize("M,n", [(12, 64), (30, 80), (30, 40), (30, 16)])
def test_kernel_shap_solver_recovers_additive_contributions(M, n):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(M, generator=g, dtype=torch.float64)
    Z, wt = sample_coalitions(M, n, g)
    y = 0.7 + Z.double() @ w
    phi = solve_shapley(Z, wt, y, 0.7 + w.sum(), torch.tensor(0.7, dtype=torch.float64))
    torch.testing.assert_close(phi.sum(), w.sum(), atol=1e-9, rtol=0)  # efficiency, always
    if n // 2 + 1 >= M:  # enough coalitions to identify every contribution (a pair and its
        # complement give one equation, the constraint another)
        torch.testing.assert_close(phi, w, atol=1e-8, rtol=0)


def test_kernel_shap_sampling_is_paired_and_seeded():
    Z1, _ = sample_coalitions(20, 100, torch.Generator().manual_seed(3))
    Z2, _ = sample_coalitions(20, 100, torch.Generator().manual_seed(3))
    assert torch.equal(Z1, Z2)
    assert torch.equal(Z1[:50], 1 - Z1[50:])
    s = Z1.sum(1)
    assert ((s >= 1) & (s <= 19)).all()


def test_kernel_shap_method_recovers_additive_image_and_text_contributions():
    torch.manual_seed(0)
    table = torch.tensor([0.0, 1.5, -2.0, 0.25, 3.0, -0.5], dtype=torch.float64)
    model = _Toy(8, table)
    pixels = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    w = torch.randn(64, dtype=torch.float64)
    ids = torch.tensor([[5, 1, 2, 3, 4, 5], [5, 4, 4, 2, 1, 5]])
    wt = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5, 0.0], dtype=torch.float64)

    def target(ie, te):
        return ie @ w + te @ wt  # additive in the 64 pixels and in the tokens

    batch = _toy_batch(model, pixels, ids, target, [0, 1])
    ks = KernelShap(model, n_samples=40, grid=4)  # 16 features of 2x2 pixels, sampled coalitions
    img = ks.attribute_image(batch)  # (B, 8, 8)
    contrib = pixels[:, 0] * w.view(8, 8)  # mean baseline = 0: pixel p contributes w_p * x_p
    cells = F.avg_pool2d(contrib[:, None], 2)[:, 0] * 4  # per 2x2 cell
    torch.testing.assert_close(F.avg_pool2d(img[:, None], 2)[:, 0], cells, atol=1e-8, rtol=0)
    txt = ks.attribute_text(batch)  # (B, T); removed tokens become id 0 (value 0)
    exact = table[ids] * wt * batch.texts.content_mask
    torch.testing.assert_close(txt, exact, atol=1e-8, rtol=0)


@pytest.mark.parametrize("baseline", ["mean", "blur"])
def test_kernel_shap_efficiency_image(hf_clip, rng_images, baseline):
    x = rng_images[:2]
    texts = ["a red square", "two dogs on grass"]
    exps = vx.explain(hf_clip, x, texts, method="kernel_shap", sides=["image"], n_samples=24, baseline=baseline)
    from vlexplain.attribution.perturbation import image_baseline

    with torch.no_grad():
        te = hf_clip.encode_text(hf_clip.tokenize(texts))
        f_x = (hf_clip.encode_image(x) * te).sum(-1)
        f_0 = (hf_clip.encode_image(image_baseline(x, baseline)) * te).sum(-1)
    for e, d in zip(exps, f_x - f_0):
        # features are the 4x4 patches: the patch map holds one value per feature
        assert e.patch_map.shape == (4, 4)
        assert abs(float(e.patch_map.sum() - d)) < 1e-5
        assert float(d.abs()) > 1e-4  # the test is not vacuous


def test_kernel_shap_efficiency_text_and_slic(offline):
    import numpy as np
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.chelsea())
    texts = ["a cat sitting on a wooden floor next to a wall", "a cat"]
    exps = vx.explain(offline, img, texts, method="kernel_shap", n_samples=48, sides=["text"])
    exp_img = vx.explain(
        offline, img, texts[0], method="kernel_shap", n_samples=16, segments="slic", n_segments=20, sides=["image"]
    )
    tb = offline.tokenize(texts)
    with torch.no_grad():
        ie = offline.encode_image(exps[0].pixels[None])
        f_x = (ie * offline.encode_text(tb)).sum(-1)
        ids = torch.where(tb.content_mask, torch.full_like(tb.ids, offline.pad_token_id), tb.ids)
        empty = TextBatch(ids, tb.attention_mask, tb.pool_index, tb.content_mask, tb.tokens, tb.texts)
        f_0 = (ie * offline.encode_text(empty)).sum(-1)
    for e, d in zip(exps, f_x - f_0):
        assert e.token_scores.shape == (len(e.tokens),)
        assert abs(float(e.token_scores.sum() - d)) < 1e-5
    # image: one value per superpixel, and they sum to f(x) - f(mean image)
    from vlexplain.attribution.perturbation import slic_feature_masks

    labels = slic_feature_masks(offline, exp_img.pixels[None], 20, 10.0)[0]
    M = int(labels.max()) + 1
    first = torch.zeros(M, dtype=torch.long).scatter_(
        0, labels.flatten().flip(0), torch.arange(labels.numel() - 1, -1, -1)
    )
    phi = exp_img.image_map.flatten()[first]
    assert torch.equal(exp_img.image_map, phi[labels])  # constant on each superpixel
    with torch.no_grad():
        te = offline.encode_text(offline.tokenize(texts[:1]))
        f0 = float((offline.encode_image(torch.zeros_like(exp_img.pixels[None])) * te).sum())
    assert abs(float(phi.double().sum()) - (exp_img.score - f0)) < 1e-5
    assert np.isfinite(exp_img.image_map.numpy()).all()


def test_kernel_shap_bad_options(hf_clip):
    with pytest.raises(MethodError):
        KernelShap(hf_clip, segments="quickshift")
    with pytest.raises(MethodError):
        KernelShap(hf_clip, baseline="black")
    with pytest.raises(MethodError):
        vx.explain(hf_clip, torch.zeros(3, 64, 64), "a", method="kernel_shap", n_samples=0)


# ---------------------------------------------------------------------------------------------
# RISE


def _exact_rise_image(f, size: int, cell: int, p: float) -> torch.Tensor:
    """E[f(M) M] / p by enumerating every grid and every shift (all equally likely per shift)."""
    n_cells = cell * cell
    c = math.ceil(size / cell)
    grids = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n_cells))).view(-1, cell, cell)
    prob = (p ** grids.flatten(1).sum(1)) * ((1 - p) ** (n_cells - grids.flatten(1).sum(1)))
    shifts = torch.tensor(list(itertools.product(range(c), range(c))))
    G = grids.repeat_interleave(len(shifts), 0)
    S = shifts.repeat(len(grids), 1)
    P = prob.repeat_interleave(len(shifts)) / len(shifts)
    masks = grids_to_masks(G, S, (size, size)).double()
    return (P[:, None, None] * f(masks)[:, None, None] * masks).sum(0) / p


def test_rise_image_converges_to_exact_expectation():
    size, cell, p = 8, 2, 0.5
    model = _Toy(size, torch.zeros(2, dtype=torch.float64))
    pixels = torch.ones(1, 3, size, size, dtype=torch.float64)  # masked image == mask (mean baseline 0)

    def f(m):  # nonlinear in the mask: squared mean over the top-left 3x5 block plus a linear term
        return m[:, :3, :5].mean((-2, -1)) ** 2 + 0.5 * m[:, 6, 2]

    exact = _exact_rise_image(f, size, cell, p)
    ids = torch.tensor([[1, 1, 1]])
    errors = {}
    for n in (30, 300, 30000):
        errs = []
        for seed in range(3):
            batch = _toy_batch(model, pixels, ids, lambda ie, te: f(ie.view(-1, size, size)), [seed])
            sal = Rise(model, n_masks=n, cell=cell, p_keep=p, chunk=4096).attribute_image(batch)[0]
            errs.append(float((sal - exact).abs().max()))
        errors[n] = sum(errs) / len(errs)
    assert errors[30000] < errors[300] < errors[30]
    assert errors[30000] < 0.03 * float(exact.abs().max())


def test_rise_text_converges_to_exact_expectation():
    table = torch.tensor([0.0, 1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    model = _Toy(8, table)
    ids = torch.tensor([[1, 2, 3, 4, 2, 1]])  # 4 content tokens
    p = 0.5

    def f(te):
        return te[:, 1:-1].sum(-1) ** 2  # nonlinear in the kept tokens

    vals = table[ids[0, 1:-1]]
    K = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    exact = ((K @ vals) ** 2)[:, None].mul(K).sum(0) / 16 / p  # uniform over 2^4 when p = 0.5
    pixels = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    errors = {}
    for n in (30, 300, 30000):
        errs = []
        for seed in range(3):
            batch = _toy_batch(model, pixels, ids, lambda ie, te: f(te), [seed])
            sal = Rise(model, n_masks=n, p_keep=p, chunk=8192).attribute_text(batch)[0]
            assert sal[0] == 0 and sal[-1] == 0  # SOS / EOS get nothing
            errs.append(float((sal[1:-1] - exact).abs().max()))
        errors[n] = sum(errs) / len(errs)
    assert errors[30000] < errors[300] < errors[30]
    assert errors[30000] < 0.03 * float(exact.abs().max())


def test_rise_masks_shape_and_range():
    g = torch.Generator().manual_seed(0)
    from vlexplain.attribution.rise import draw_grids

    grids, shifts = draw_grids(50, 7, (64, 48), 0.5, g)
    m = grids_to_masks(grids, shifts, (64, 48))
    assert m.shape == (50, 64, 48)
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    assert 0.35 < float(m.mean()) < 0.65
    assert int(shifts[:, 0].max()) < 10 and int(shifts[:, 1].max()) < 7


def test_rise_runs_on_real_model_and_is_seeded(hf_clip, rng_images):
    kw = dict(method="rise", n_masks=32, chunk=16)
    a = vx.explain(hf_clip, rng_images[0], "a cat", **kw)
    b = vx.explain(hf_clip, rng_images[0], "a cat", **kw)
    c = vx.explain(hf_clip, rng_images[0], "a cat", seed=5, **kw)
    assert a.image_map.shape == (64, 64)
    assert torch.equal(a.image_map, b.image_map) and torch.equal(a.token_scores, b.token_scores)
    assert not torch.equal(a.image_map, c.image_map)


# ---------------------------------------------------------------------------------------------
# random and center


def test_random_map_shapes_determinism_and_seed(hf_clip, rng_images):
    a = vx.explain(hf_clip, rng_images, "a cat on a mat", method="random")
    b = vx.explain(hf_clip, rng_images, "a cat on a mat", method="random", batch_size=1)
    c = vx.explain(hf_clip, rng_images, "a cat on a mat", method="random", seed=1)
    assert a[0].patch_map.shape == (4, 4) and a[0].image_map.shape == (64, 64)
    assert a[0].token_scores.shape == (len(a[0].tokens),)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x.patch_map, y.patch_map) and torch.equal(x.token_scores, y.token_scores)
        assert not torch.equal(x.patch_map, z.patch_map)
        assert float(x.patch_map.min()) >= 0 and float(x.patch_map.max()) < 1
    assert not vx.get_method("random").needs_gradients


def test_center_map(hf_clip, rng_images):
    e = vx.explain(hf_clip, rng_images[0], "a cat on a mat", method="center")
    m = e.image_map
    assert m.shape == (64, 64)
    torch.testing.assert_close(m, m.flip(0))
    torch.testing.assert_close(m, m.T)
    assert float(m.max()) == pytest.approx(float(m[31:33, 31:33].mean()), abs=1e-6)
    torch.testing.assert_close(e.token_scores, torch.ones(len(e.tokens)))
    g = center_gaussian((101, 101), "cpu", torch.float64)  # odd side: the centre is a pixel
    assert float(g[50, 50]) == pytest.approx(1.0)
    # sigma = side / 4 = 25.25 px, distances measured between pixel centres
    assert float(g[50, 75]) == pytest.approx(math.exp(-0.5 * (25 / 25.25) ** 2), rel=1e-6)
    assert float(g[0, 50]) == pytest.approx(math.exp(-0.5 * (50 / 25.25) ** 2), rel=1e-6)
    assert not vx.get_method("center").needs_gradients
