"""Tests of vlexplain.metrics: hand-computed values, reference libraries, oracle vs random maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import vlexplain as vx
from vlexplain.errors import InputError
from vlexplain.metrics import (
    auroc,
    boxes_to_masks,
    energy_pointing_game,
    get_metric,
    get_spec,
    grid_pointing_game,
    linear_impute,
    list_metrics,
    pointing_game,
    token_maps_from_explanations,
)
from vlexplain.metrics._common import embed_images, embed_texts, image_scores, rank_desc, text_scores, trapezoid_auc
from vlexplain.metrics.confidence import confidence_image, confidence_text, mask_image, median_token_mask
from vlexplain.metrics.deletion_insertion import image_curve, make_substrate, text_curve
from vlexplain.metrics.localization import average_ranks, dilate
from vlexplain.metrics.road import road_scores
from vlexplain.metrics.sanity import cascading_randomization, reinit_module, spearman, ssim

TEXTS = ["a photo of a red cat", "two dogs on the grass"]


def _pixels(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=g) * 2 - 1


# --- localisation -------------------------------------------------------------------------------


def test_pointing_game_hand_values():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0] = 1.0
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 3, 3] = True  # distance sqrt(18) = 4.24 from the maximum
    assert pointing_game(m, mask, tolerance=0).item() == 0.0
    assert pointing_game(m, mask, tolerance=4).item() == 0.0
    assert pointing_game(m, mask, tolerance=5).item() == 1.0
    mask[0, 0, 0] = True
    assert pointing_game(m, mask, tolerance=0).item() == 1.0
    assert math.isnan(pointing_game(m, torch.zeros_like(mask), 15).item())


def test_pointing_game_equals_disk_dilation():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(12, 48, 48, generator=g)
    masks = torch.zeros(12, 48, 48, dtype=torch.bool)
    for i in range(12):
        y, x = torch.randint(0, 40, (2,), generator=g).tolist()
        masks[i, y : y + 6, x : x + 5] = True
    for tol in (0, 3, 15):
        dil = dilate(masks, tol)
        idx = maps.flatten(1).argmax(1)
        expected = dil.flatten(1)[torch.arange(12), idx].float()
        assert torch.equal(pointing_game(maps, masks, tol), expected)


def test_energy_pointing_game_hand_values():
    m = torch.tensor([[[1.0, 2.0, 0.0, -5.0], [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, -1.0]]])
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True  # holds 1 + 2 + 3 of the positive mass 10; negatives ignored
    assert energy_pointing_game(m, mask).item() == pytest.approx(0.6)
    assert math.isnan(energy_pointing_game(-m.abs(), mask).item())


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(2)
    maps = torch.randint(0, 5, (6, 4, 4), generator=g).float()  # many ties
    masks = torch.rand(6, 4, 4, generator=g) < 0.4
    masks[:, 0, 0] = True
    masks[:, 3, 3] = False
    got = auroc(maps, masks)
    for i in range(6):
        ref = roc_auc_score(masks[i].flatten().numpy(), maps[i].flatten().numpy())
        assert got[i].item() == pytest.approx(ref, abs=1e-6)
    hand = auroc(torch.tensor([[[0.9, 0.1], [0.8, 0.8]]]), torch.tensor([[[True, False], [True, False]]]))
    assert hand.item() == pytest.approx(0.875)  # pairs: (0.9>0.1) (0.9>0.8) (0.8>0.1) (0.8=0.8 -> 1/2): 3.5/4


def test_average_ranks():
    r = average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]]))
    assert r.tolist() == [[3.5, 1.0, 3.5, 2.0], [2.5, 2.5, 2.5, 2.5]]


def test_boxes_to_masks():
    m = boxes_to_masks([[[1, 1, 2, 2]], []], (4, 4))
    exp = torch.zeros(4, 4, dtype=torch.bool)
    exp[1:3, 1:3] = True
    assert torch.equal(m[0], exp) and not m[1].any()
    # 8 x 16 image -> shortest side 4 (4 x 8), centre crop columns 2..5
    m = boxes_to_masks([[[4, 0, 8, 8]], [[0, 0, 4, 8]]], (4, 4), image_sizes=[(8, 16), (8, 16)])
    assert m[0].all() and not m[1].any()
    m = boxes_to_masks([[[0, 0, 8, 4]]], (4, 4), image_sizes=[(8, 16)], resize="stretch")
    assert m[0, :2, :2].all() and m[0].sum() == 4


def test_grid_pointing_game_2x2():
    m = torch.tensor([[[1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 4.0], [0.0, 0.0, -3.0, 0.0], [2.0, 0.0, 0.0, 0.0]]])
    # positive mass: cell 0 -> 4, cell 1 -> 4, cell 2 -> 2, cell 3 -> 0 (negative ignored); total 10
    for c, v in enumerate([0.4, 0.4, 0.2, 0.0]):
        assert grid_pointing_game(m, torch.tensor([c]), 2).item() == pytest.approx(v)
    with pytest.raises(InputError):
        grid_pointing_game(m, torch.tensor([4]), 2)
    assert torch.allclose(grid_pointing_game(m.repeat(2, 1, 1), 1, 2), torch.tensor([0.4, 0.4]))


def test_oracle_beats_random_maps():
    g = torch.Generator().manual_seed(3)
    b, s = 32, 64
    masks = torch.zeros(b, s, s, dtype=torch.bool)
    for i in range(b):
        y, x = torch.randint(0, s - 16, (2,), generator=g).tolist()
        masks[i, y : y + 16, x : x + 16] = True
    oracle = masks.float()
    rand = torch.rand(b, s, s, generator=g)
    assert pointing_game(oracle, masks).mean() == 1.0
    assert energy_pointing_game(oracle, masks).mean() == 1.0
    assert auroc(oracle, masks).mean() == 1.0
    assert abs(auroc(rand, masks).mean().item() - 0.5) < 0.02
    area = masks.float().mean().item()
    assert abs(energy_pointing_game(rand, masks).mean().item() - area) < 0.01
    # GridPG on a 3 x 3 grid: chance is 1/9
    cells = torch.randint(0, 9, (b,), generator=g)
    from vlexplain.metrics.gridpg import cell_masks

    cm = cell_masks((s, s), 3)[cells].float()
    assert grid_pointing_game(cm, cells, 3).mean() == 1.0
    assert abs(grid_pointing_game(rand, cells, 3).mean().item() - 1 / 9) < 0.01


# --- confidence ---------------------------------------------------------------------------------


def test_confidence_all_ones_map_gives_zero(hf_clip):
    px, tb = _pixels(), hf_clip.tokenize(TEXTS)
    out = confidence_image(hf_clip, px, tb, torch.ones(2, 64, 64))
    assert torch.all(out["m2ib_drop"] == 0) and torch.all(out["confidence_increase"] == 0)
    assert torch.all((out["confidence_drop"] == 0) | (out["score"] <= 0))


def test_confidence_image_formulas_and_per_sample_maps(hf_clip):
    px, tb = _pixels(), hf_clip.tokenize(TEXTS)
    maps = torch.zeros(2, 64, 64)
    maps[0, 0] = 5.0  # sample 0: only its first row is relevant
    maps[1] = torch.linspace(-1, 3, 64)[None, :]  # sample 1: a horizontal ramp
    x = mask_image(hf_clip, px, maps)
    rgb = x * torch.tensor(hf_clip.std).view(1, 3, 1, 1) + torch.tensor(hf_clip.mean).view(1, 3, 1, 1)
    rgb0 = px * torch.tensor(hf_clip.std).view(1, 3, 1, 1) + torch.tensor(hf_clip.mean).view(1, 3, 1, 1)
    assert torch.allclose(rgb[0, :, 1:], torch.zeros_like(rgb[0, :, 1:]), atol=1e-6)  # own map, not row 0 of another
    assert torch.allclose(rgb[0, :, 0], rgb0[0, :, 0], atol=1e-6)
    ramp = torch.linspace(0, 1, 64)
    assert torch.allclose(rgb[1], rgb0[1] * ramp.view(1, 1, 64), atol=1e-5)
    out = confidence_image(hf_clip, px, tb, maps)
    t_emb = hf_clip.encode_text(tb)
    y = (hf_clip.encode_image(px) * t_emb).sum(-1)
    o = (hf_clip.encode_image(x) * t_emb).sum(-1)
    assert torch.allclose(out["score"], y, atol=1e-6) and torch.allclose(out["perturbed_score"], o, atol=1e-6)
    assert torch.allclose(out["m2ib_drop"], 100 * (y - o).clamp_min(0), atol=1e-4)
    exp_drop = torch.where(y > 0, 100 * (y - o).clamp_min(0) / y, torch.full_like(y, float("nan")))
    assert torch.allclose(out["confidence_drop"], exp_drop, atol=1e-4, equal_nan=True)
    assert torch.equal(out["confidence_increase"], 100 * (o > y).float())


class _CosModel(nn.Module):
    """Wraps a DualEncoder for pytorch-grad-cam: image batch -> (B,) cosine with fixed text rows."""

    def __init__(self, model, text_emb):
        super().__init__()
        self.m, self.t = model, text_emb

    def forward(self, x):
        return (self.m.encode_image(x) * self.t).sum(-1)


def test_confidence_matches_pytorch_grad_cam(hf_clip):
    """pytorch_grad_cam.metrics.cam_mult_image.DropInConfidence / IncreaseInConfidence (x 100) equal
    m2ib_drop / confidence_increase when the map multiplies the preprocessed tensor."""
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence

    from vlexplain.metrics._common import minmax01

    px, tb = _pixels(3, seed=4), hf_clip.tokenize(TEXTS + ["a boat"])
    maps = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(5))
    ours = confidence_image(hf_clip, px, tb, maps, multiply_in="input")
    wrap = _CosModel(hf_clip, hf_clip.encode_text(tb).detach())
    cams = minmax01(maps).numpy()
    targets = [lambda o: o] * 3
    with torch.no_grad():
        drop = DropInConfidence()(px, cams, targets, wrap)
        inc = IncreaseInConfidence()(px, cams, targets, wrap)
    assert np.allclose(ours["m2ib_drop"].numpy(), drop * 100, atol=1e-4)
    assert np.array_equal(ours["confidence_increase"].numpy(), inc * 100)


def test_text_confidence_keeps_sos_eos_and_pools_at_eos(hf_clip):
    tb = hf_clip.tokenize(["a b c d", "red cat"])
    T = tb.ids.shape[1]
    tm = torch.zeros(2, T)
    tm[0, 1:5] = torch.tensor([4.0, 1.0, 3.0, 2.0])  # median 2.5: tokens valued 1 and 2 go
    tm[1, 1:3] = torch.tensor([1.0, 1.0])  # all equal: nothing is below the median
    pert = median_token_mask(tb, tm, hf_clip.pad_token_id)
    pad = hf_clip.pad_token_id
    exp0 = tb.ids[0].clone()
    exp0[2] = pad
    exp0[4] = pad
    assert torch.equal(pert.ids[0], exp0)
    assert torch.equal(pert.ids[1], tb.ids[1])
    assert torch.equal(pert.pool_index, tb.pool_index) and torch.equal(pert.attention_mask, tb.attention_mask)
    eos = tb.ids[torch.arange(2), tb.pool_index]
    assert torch.equal(pert.ids[torch.arange(2), pert.pool_index], eos)  # SOS / EOS kept
    assert torch.equal(pert.ids[:, 0], tb.ids[:, 0])
    px = _pixels()
    out = confidence_text(hf_clip, px, tb, tm)
    i_emb = hf_clip.encode_image(px)
    o = (hf_clip.encode_text(pert) * i_emb).sum(-1)
    assert torch.allclose(out["perturbed_score"], o, atol=1e-6)
    assert out["m2ib_drop"][1] == 0 and out["confidence_increase"][1] == 0


# --- deletion / insertion -----------------------------------------------------------------------


def test_trapezoid_auc_known_curve():
    c = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    assert torch.allclose(trapezoid_auc(c), torch.tensor([0.5, 1.0, 0.5]))


@pytest.mark.parametrize("substrate", ["zero", "mean", "blur"])
def test_image_deletion_insertion_curves(hf_clip, substrate):
    px, tb = _pixels(), hf_clip.tokenize(TEXTS)
    maps = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(6))
    n = 4
    d = image_curve(hf_clip, px, tb, maps, mode="deletion", substrate=substrate, n_steps=n)
    ins = image_curve(hf_clip, px, tb, maps, mode="insertion", substrate=substrate, n_steps=n)
    t_emb = embed_texts(hf_clip, tb)
    sub = make_substrate(hf_clip, px, substrate)
    y = image_scores(hf_clip, px, t_emb)
    ys = image_scores(hf_clip, sub, t_emb)
    assert d["curve"].shape == (2, n + 1)
    assert torch.allclose(d["curve"][:, 0], y, atol=1e-6) and torch.allclose(d["curve"][:, -1], ys, atol=1e-6)
    assert torch.allclose(ins["curve"][:, 0], ys, atol=1e-6) and torch.allclose(ins["curve"][:, -1], y, atol=1e-6)
    # step 1 by hand: the 1024 highest-valued pixels of each map replaced
    x = px.clone()
    for i in range(2):
        top = maps[i].flatten().argsort(descending=True)[: 64 * 64 // n]
        x[i].view(3, -1)[:, top] = sub[i].reshape(3, -1)[:, top]
    assert torch.allclose(d["curve"][:, 1], image_scores(hf_clip, x, t_emb), atol=1e-6)
    assert torch.allclose(d["auc"], trapezoid_auc(d["curve"]))
    dn = image_curve(hf_clip, px, tb, maps, mode="deletion", substrate=substrate, n_steps=n, normalize=True)
    assert torch.allclose(dn["curve"], d["curve"] / y[:, None], atol=1e-5)


def test_substrates():
    from vlexplain.metrics.deletion_insertion import blur

    class M:
        mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    px = _pixels()
    assert torch.allclose(make_substrate(M, px, "zero"), torch.full_like(px, -2.0))
    assert torch.allclose(make_substrate(M, px, "mean")[:, :, 5, 7], px.mean(dim=(2, 3)))
    const = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(blur(const), const, atol=1e-6)


def test_text_deletion_insertion_curves(hf_clip):
    px, tb = _pixels(), hf_clip.tokenize(["a b c d", "red cat"])
    T = tb.ids.shape[1]
    tm = torch.zeros(2, T)
    tm[0, 1:5] = torch.tensor([4.0, 1.0, 3.0, 2.0])
    tm[1, 1:3] = torch.tensor([0.5, 2.0])
    i_emb = embed_images(hf_clip, px)
    pad = hf_clip.pad_token_id
    d = text_curve(hf_clip, px, tb, tm, mode="deletion", n_steps=2)
    ins = text_curve(hf_clip, px, tb, tm, mode="insertion", n_steps=2)
    y = text_scores(hf_clip, tb, i_emb)
    ids_all = torch.where(tb.content_mask, torch.full_like(tb.ids, pad), tb.ids)
    from vlexplain.metrics._common import replace_tokens

    y_all = text_scores(hf_clip, replace_tokens(tb, tb.content_mask, pad), i_emb)
    assert torch.equal(replace_tokens(tb, tb.content_mask, pad).ids, ids_all)
    assert torch.allclose(d["curve"][:, 0], y, atol=1e-6) and torch.allclose(d["curve"][:, 2], y_all, atol=1e-6)
    assert torch.allclose(ins["curve"][:, 0], y_all, atol=1e-6) and torch.allclose(ins["curve"][:, 2], y, atol=1e-6)
    # halfway: text 0 loses its two best tokens (positions 1 and 3), text 1 its best (position 2)
    rm = torch.zeros_like(tb.content_mask)
    rm[0, 1] = rm[0, 3] = rm[1, 2] = True
    assert torch.allclose(d["curve"][:, 1], text_scores(hf_clip, replace_tokens(tb, rm, pad), i_emb), atol=1e-6)
    assert torch.allclose(
        ins["curve"][:, 1], text_scores(hf_clip, replace_tokens(tb, tb.content_mask & ~rm, pad), i_emb), atol=1e-6
    )


def test_rank_desc_ties_and_invalid():
    r = rank_desc(torch.tensor([[1.0, 3.0, 3.0, 0.0]]), torch.tensor([[True, True, True, False]]))
    assert r.tolist() == [[2, 0, 1, 3]]


# --- ROAD ---------------------------------------------------------------------------------------


def test_linear_imputation_of_a_gradient_is_exact():
    yy, xx = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    img = torch.stack([0.3 * yy + 0.7 * xx + 1, -0.2 * yy + 0.1 * xx, yy * 0 + 2])[None]
    rem = torch.zeros(1, 20, 20, dtype=torch.bool)
    rem[0, 5, 7] = True
    rem[0, 8:12, 3:9] = True  # a block of removed pixels, coupled through the linear system
    out = linear_impute(img, rem, noise=0.0)
    assert torch.allclose(out, img, atol=1e-4)


def test_linear_imputation_matches_pytorch_grad_cam():
    """pytorch_grad_cam.metrics.road.NoisyLinearImputer(noise=0) solves the same system with scipy."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    g = torch.Generator().manual_seed(7)
    img = torch.rand(2, 3, 24, 24, generator=g)
    rem = torch.rand(2, 24, 24, generator=g) < 0.6
    ours = linear_impute(img, rem, noise=0.0)
    ref = torch.stack([NoisyLinearImputer(noise=0.0)(img[i], (~rem[i]).float()) for i in range(2)])
    assert torch.allclose(ours, ref, atol=1e-4)


def test_road_matches_pytorch_grad_cam(hf_clip):
    """ROAD MoRF / LeRF curves (noise 0) against pytorch_grad_cam.metrics.road with the same
    removal masks: removing a fraction f most-relevant-first is its RemoveMostRelevantFirst(100 (1 - f))."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    px, tb = _pixels(), hf_clip.tokenize(TEXTS)
    maps = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(8))
    fr = (0.25, 0.5)  # fractions whose percentile thresholds select exactly round(f * 4096) pixels
    ours = road_scores(hf_clip, px, tb, maps, fractions=fr, noise=0.0, tol=1e-6)
    wrap = _CosModel(hf_clip, hf_clip.encode_text(tb).detach())
    targets = [lambda o: o] * 2
    for j, f in enumerate(fr):
        p = 100 * (1 - f)
        with torch.no_grad():
            morf = PerturbationConfidenceMetric(RemoveMostRelevantFirst(p, NoisyLinearImputer(noise=0.0)))(
                px, maps.numpy(), targets, wrap
            )
            lerf = PerturbationConfidenceMetric(RemoveLeastRelevantFirst(p, NoisyLinearImputer(noise=0.0)))(
                px, maps.numpy(), targets, wrap
            )
        assert np.allclose((ours["morf_curve"][:, j] - ours["score"]).numpy(), morf, atol=2e-4)
        assert np.allclose((ours["lerf_curve"][:, j] - ours["score"]).numpy(), lerf, atol=2e-4)
    assert torch.allclose(ours["road_combined"], (ours["lerf_mean"] - ours["morf_mean"]) / 2)


def test_road_noise_is_per_pair(hf_clip):
    px, tb = _pixels(), hf_clip.tokenize(TEXTS)
    maps = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(9))
    both = road_scores(hf_clip, px, tb, maps, fractions=(0.5,), noise=0.05, seed=3)
    one = road_scores(hf_clip, px[1:], tb.select([1]), maps[1:], fractions=(0.5,), noise=0.05, seed=3)
    assert torch.allclose(both["morf_curve"][1], one["morf_curve"][0], atol=1e-6)
    other = road_scores(hf_clip, px, tb, maps, fractions=(0.5,), noise=0.05, seed=4)
    assert not torch.allclose(both["morf_curve"], other["morf_curve"])


# --- sanity check -------------------------------------------------------------------------------


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(10)
    a = torch.rand(3, 32, 32, generator=g)
    b = (a + 0.3 * torch.rand(3, 32, 32, generator=g)).clamp(0, 1)
    got = ssim(a, b)
    for i in range(3):
        ref = structural_similarity(
            a[i].double().numpy(),
            b[i].double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert got[i].item() == pytest.approx(ref, abs=1e-5)
    assert torch.allclose(ssim(a, a), torch.ones(3), atol=1e-6)


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(11)
    a = torch.randint(0, 6, (2, 50), generator=g).float()
    b = a + torch.randn(2, 50, generator=g)
    got = spearman(a, b)
    for i in range(2):
        assert got[i].item() == pytest.approx(spearmanr(a[i].numpy(), b[i].numpy()).statistic, abs=1e-6)


def test_reinit_module():
    blk = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.BatchNorm1d(8), nn.MultiheadAttention(8, 2))
    with torch.no_grad():
        blk[2].running_mean.fill_(3.0)
    reinit_module(blk, torch.Generator().manual_seed(0))
    assert torch.all(blk[0].bias == 0) and abs(blk[0].weight.std().item() - 0.02) < 0.01
    assert torch.all(blk[1].weight == 1) and torch.all(blk[1].bias == 0)
    assert torch.all(blk[2].running_mean == 0) and torch.all(blk[2].running_var == 1)
    assert abs(blk[3].in_proj_weight.std().item() - 0.02) < 0.01 and torch.all(blk[3].in_proj_bias == 0)


@pytest.mark.parametrize("kind", ["hf_clip", "oc_clip"])
def test_cascading_randomization(request, kind):
    model = request.getfixturevalue(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    px, tb = _pixels(1), model.tokenize(TEXTS[:1])
    out = cascading_randomization(model, px, tb, method="m2ib", steps=1, num_samples=1)
    nb = model.image.num_blocks
    assert out["stages"] == [f"block_{i}" for i in reversed(range(nb))]
    for k in ("spearman", "spearman_abs", "ssim"):
        assert out[k].shape == (1, nb) and torch.isfinite(out[k]).all()
    assert out["ssim"][0, -1] < 0.95 and out["spearman"][0, -1] < 0.95  # a fully random tower changes the map
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    assert len(model.image.block_modules()) == nb and len(model.text.block_modules()) == model.text.num_blocks


# --- registry and helpers -----------------------------------------------------------------------


def test_token_maps_from_explanations(hf_clip):
    px = _pixels()
    exps = vx.explain(hf_clip, px, TEXTS, method="m2ib", steps=1, num_samples=1, sides=["text"])
    tb = hf_clip.tokenize(TEXTS)
    tm = token_maps_from_explanations(exps, tb)
    for i, e in enumerate(exps):
        assert torch.equal(tm[i][tb.content_mask[i]], e.token_scores.float())
        assert torch.all(tm[i][~tb.content_mask[i]] == 0)


def test_registry_runs_every_metric(hf_clip):
    names = list_metrics()
    assert {
        "confidence_image",
        "confidence_text",
        "deletion_image",
        "insertion_text",
        "road",
        "pointing_game",
        "energy_pointing_game",
        "auroc",
        "grid_pointing_game",
        "cascading_randomization",
    } <= set(names)
    assert set(list_metrics(ground_truth=True)) == {
        "pointing_game",
        "energy_pointing_game",
        "auroc",
        "grid_pointing_game",
        "cue_share",
        "cue_pointing",
        "cue_reliance_rank",
        "cue_reliance_rank_within",
    }
    px, tb = _pixels(), hf_clip.tokenize(TEXTS)
    im = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(12))
    tm = torch.rand(tb.ids.shape, generator=torch.Generator().manual_seed(13)) * tb.content_mask
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[:, 10:30, 20:40] = True
    extra = {
        "pointing_game": {"masks": masks},
        "energy_pointing_game": {"masks": masks},
        "auroc": {"masks": masks},
        "grid_pointing_game": {"cell_index": torch.tensor([0, 3]), "grid_n": 2},
        "cascading_randomization": {"method": "m2ib", "steps": 1, "num_samples": 1},
        "road": {"fractions": (0.5,)},
        "deletion_image": {"n_steps": 2},
        "insertion_image": {"n_steps": 2},
        "deletion_text": {"n_steps": 2},
        "insertion_text": {"n_steps": 2},
        "cue_share": {"cue_mask": masks},
        "cue_pointing": {"cue_mask": masks},
        "cue_reliance_rank": {"cue_mask": masks, "reliance": torch.tensor([0.1, 0.2])},
        "cue_reliance_rank_within": {"cue_mask": masks, "reliance": torch.tensor([0.1, 0.2]), "group": ["a", "b"]},
    }
    for name in names:
        spec = get_spec(name)
        out = get_metric(name)(hf_clip, px, tb, im, tm, **extra.get(name, {}))
        # a dataset-level value (spec.aggregate) is computed from per-pair outputs over the run
        key = spec.aggregate.partition(":")[2].split(",")[0] if spec.aggregate else spec.primary
        assert key in out and out[key].shape[0] == 2, name
    with pytest.raises(InputError, match="masks"):
        get_metric("pointing_game")(hf_clip, px, tb, im, tm)
    with pytest.raises(InputError, match="token maps"):
        get_metric("confidence_text")(hf_clip, px, tb, im, None)
    with pytest.raises(vx.MethodError):
        get_metric("nope")
