"""The cue metrics read maps at their own resolution: pointing per patch, the share's ceiling,
undefined pairs counted, the within-group reliance rank. Every expected value is worked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlexplain.metrics import get_metric, get_spec
from vlexplain.metrics.cue import (
    cell_masks,
    cue_pointing,
    cue_reliance_rank,
    cue_share,
    cue_share_ceiling,
    cue_share_report,
    group_codes,
    spearman,
    spearman_ci,
    spearman_within,
)


def corner_badge(size: int = 64, corner: str = "top-left") -> torch.Tensor:
    """A 10 x 10 px glyph 4 px from the borders of a corner (the spurious testbed's badge), with
    holes, as a (1, size, size) mask."""
    g = torch.zeros(10, 10, dtype=torch.bool)
    g[::2] = True  # every other row of the glyph is on
    m = torch.zeros(1, size, size, dtype=torch.bool)
    y = 4 if corner.startswith("top") else size - 14
    x = 4 if corner.endswith("left") else size - 14
    m[0, y : y + 10, x : x + 10] = g
    return m


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_perfect_patch_map_on_a_corner_badge_points_at_it(corner):
    mask = corner_badge(corner=corner)
    on = cell_masks(mask, (8, 8))  # 8 x 8 patches of 8 px: the glyph (rows 4-13) overlaps 2 x 2 patches
    assert int(on.sum()) == 4
    perfect = on.float()  # mass exactly on the badge's patches, nothing elsewhere
    assert cue_pointing(perfect, mask).item() == 1.0
    # mass on the corner patch alone (it overlaps the glyph) is on the cue at the map's resolution;
    # upsampled bilinearly and pointed at pixel level it misses the glyph in the top-left corner:
    # the plateau of the corner patch's maximum lies on pixels 0-3, the glyph starts at pixel 4
    r0, c0 = (0 if corner.startswith("top") else 7), (0 if corner.endswith("left") else 7)
    single = torch.zeros(1, 8, 8)
    single[0, r0, c0] = 1.0
    assert cue_pointing(single, mask).item() == 1.0
    up = F.interpolate(single[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    assert cue_pointing(up, mask).item() == 0.0
    # one patch off the badge is a miss; two tied maxima, one on it: a half
    off = torch.zeros(1, 8, 8)
    off[0, 4, 4] = 1.0
    assert cue_pointing(off, mask).item() == 0.0
    half = off.clone()
    r, c = on[0].nonzero()[0].tolist()
    half[0, r, c] = 1.0
    assert cue_pointing(half, mask).item() == 0.5


def test_pointing_tolerance_dilates_the_mask():
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 5, 5] = True
    m = torch.zeros(1, 16, 16)
    m[0, 5, 8] = 1.0  # 3 px to the right
    assert cue_pointing(m, mask).item() == 0.0
    assert cue_pointing(m, mask, tolerance=3).item() == 1.0
    assert cue_pointing(m, mask, tolerance=2).item() == 0.0


def test_ceiling_by_hand():
    # 2 x 2 grid -> 4 x 4 pixels, bilinear, half-pixel centres: each patch's 1-D profile is
    # (1, .75, .25, 0) or (0, .25, .75, 1); the top-left patch spreads mass 2 x 2 = 4, of which
    # pixel (0, 0) takes 1 x 1: ceiling 1 / 4
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    assert cue_share_ceiling((2, 2), mask).item() == pytest.approx(0.25)
    # the 2 x 2 block of the top-left corner: (1 + .75)^2 / 4 = 0.765625
    mask[0, :2, :2] = True
    assert cue_share_ceiling((2, 2), mask).item() == pytest.approx(1.75**2 / 4)
    # a map at the mask's own size can put everything there
    assert cue_share_ceiling((4, 4), mask).item() == 1.0
    assert torch.isnan(cue_share_ceiling((2, 2), torch.zeros(1, 4, 4, dtype=torch.bool))).all()


def test_ceiling_bounds_every_nonnegative_patch_map_and_is_reached():
    torch.manual_seed(0)
    mask = corner_badge().expand(200, -1, -1)
    ceil = cue_share_ceiling((8, 8), mask)
    maps = torch.rand(200, 8, 8) ** 8  # peaky random maps
    assert (cue_share(maps, mask) <= ceil + 1e-6).all()
    # the best single patch reaches it
    best = torch.zeros(1, 8, 8)
    shares = []
    for p in range(64):
        z = torch.zeros(1, 64)
        z[0, p] = 1.0
        shares.append(cue_share(z.view(1, 8, 8), mask[:1]).item())
    best.view(-1)[int(np.argmax(shares))] = 1.0
    assert cue_share(best, mask[:1]).item() == pytest.approx(ceil[0].item(), abs=1e-6)
    # the perfect map (mass on the badge's patches) stays well below 1 at this resolution
    perfect = cell_masks(mask[:1], (8, 8)).float()
    assert cue_share(perfect, mask[:1]).item() < ceil[0].item() < 1.0


def test_report_counts_maps_without_positive_mass():
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[:2, 0, 0] = True  # the third mask is empty
    maps = torch.stack([torch.ones(4, 4), -torch.ones(4, 4), torch.ones(4, 4)])
    rep = cue_share_report(maps, mask)
    assert rep["cue_share"][0].item() == pytest.approx(1 / 16) and rep["normalised"][0].item() == pytest.approx(1 / 16)
    assert torch.isnan(rep["cue_share"][1]) and rep["no_mass"][1].item() == 1.0  # counted
    assert rep["no_mass"][0].item() == 0.0 and torch.isnan(rep["no_mass"][2])  # no mask: no pair
    out = get_metric("cue_share")(None, None, None, maps, None, cue_mask=mask)
    assert set(out) == {"cue_share", "ceiling", "normalised", "no_mass"}
    assert get_spec("cue_share").native_maps and get_spec("cue_pointing").native_maps


def test_within_group_rank_by_hand():
    # group a: shares track reliance (rho 1); group b: reversed (rho -1); pooled the groups'
    # levels line up, so the pooled rho is high while the within-group mean is (3 * 1 + 3 * -1) / 6 = 0
    x = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0.01, 0.02, 0.03, 0.3, 0.2, 0.1])
    g = np.array(["a", "a", "a", "b", "b", "b"])
    assert spearman(x, y) == pytest.approx(1 - 6 * (0 + 0 + 0 + 4 + 0 + 4) / (6 * 35))
    assert spearman_within(x, y, g) == pytest.approx(0.0)
    # unequal groups: weights 4 and 3
    x2 = np.r_[x[:3], 0.4, x[3:]]
    y2 = np.r_[y[:3], 0.04, y[3:]]
    g2 = np.array(["a"] * 4 + ["b"] * 3)
    assert spearman_within(x2, y2, g2) == pytest.approx((4 * 1 - 3 * 1) / 7)
    # a group with fewer than 3 usable pairs is left out
    assert spearman_within(np.r_[x, 5, 6], np.r_[y, 1, 2], np.array(list(g) + ["c", "c"])) == pytest.approx(0.0)
    rho, lo, hi = spearman_ci(x2, y2, n_boot=200, groups=g2)
    assert rho == pytest.approx(1 / 7) and lo <= rho <= hi


def test_reliance_rank_reports_both_readings():
    maps = torch.zeros(6, 2, 2)
    maps[:, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 7.0, 8.0, 9.0])
    maps[:, 1, 1] = 10.0
    masks = torch.zeros(6, 2, 2, dtype=torch.bool)
    masks[:, 0, 0] = True
    rel = torch.tensor([0.01, 0.02, 0.03, 0.3, 0.2, 0.1])
    out = cue_reliance_rank(maps, masks, rel, ["a"] * 3 + ["b"] * 3)
    assert out["spearman"] == pytest.approx(1 - 6 * 8 / 210) and out["spearman_within"] == pytest.approx(0.0)
    codes = group_codes(["a", "b", "a"], 3)
    assert codes[0] == codes[2] != codes[1] and codes.dtype == torch.float32
    assert float(codes[0]) == float(np.float32(codes[0]))  # exact in float32


def test_runner_scores_native_maps_and_within_groups(tmp_path, hf_clip):
    from PIL import Image

    from vlexplain.attribution.api import explain
    from vlexplain.eval import io as rio
    from vlexplain.eval.report import summary_table
    from vlexplain.eval.runner import evaluate
    from vlexplain.metrics.cue import load_cue_masks

    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        cue = np.zeros((64, 64), dtype=np.uint8)
        cue[4 : 14 + i, 4 : 14 + i] = 255
        Image.fromarray(cue).save(tmp_path / f"cue{i}.png")
        rows.append(
            {
                "image": f"im{i}.png",
                "caption": "a photo",
                "cue_mask": f"cue{i}.png",
                "reliance": 0.1 * i,
                "group": "aligned" if i % 2 else "conflicting",
            }
        )
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = ["cue_share", "cue_pointing", "cue_reliance_rank", "cue_reliance_rank_within"]
    run = evaluate(tmp_path / "p.jsonl", hf_clip, ["gradcam", "saliency"], metrics, tmp_path / "run", progress=False)
    df = rio.load_results(run).to_pandas().sort_values("index")
    px = torch.stack([hf_clip.preprocess(Image.open(tmp_path / f"im{i}.png")) for i in range(8)])
    masks = load_cue_masks([str(tmp_path / f"cue{i}.png") for i in range(8)], tuple(hf_clip.input_size))
    for method, res in (("gradcam", "patch"), ("saliency", "pixel")):
        exps = explain(hf_clip, px, ["a photo"] * 8, method=method, sides=["image"], seed=0)
        assert {e.map_resolution for e in exps} == {res}
        native = torch.stack([e.native_map.float() for e in exps])
        sub = df[df["method"] == method]
        assert np.allclose(sub["cue_pointing"].to_numpy(), cue_pointing(native, masks).numpy())
        rep = cue_share_report(native, masks)
        assert np.allclose(sub["cue_share"].to_numpy(), rep["cue_share"].numpy(), atol=1e-6)
        assert np.allclose(sub["cue_share.ceiling"].to_numpy(), rep["ceiling"].numpy(), atol=1e-6)
        if res == "pixel":
            assert (sub["cue_share.ceiling"] == 1.0).all()
    cfg = rio.read_json(run / rio.CONFIG)
    rows_ = {(r["method"], r["column"]): r for r in summary_table(df, cfg)}
    for method in ("gradcam", "saliency"):
        sub = df[df["method"] == method]
        x = sub["cue_reliance_rank_within.cue_share"].to_numpy()
        y = sub["cue_reliance_rank_within.reliance"].to_numpy()
        g = np.array([r["group"] for r in rows])
        r = rows_[(method, "cue_reliance_rank_within.spearman_within")]
        assert r["mean"] == pytest.approx(spearman_within(x, y, g))


def test_spurious_headline_is_the_paired_difference(tmp_path, hf_clip):
    from PIL import Image

    import vlexplain as vx
    from vlexplain.eval import io as rio
    from vlexplain.eval.benchmarks.spurious_headline import headline, headline_rows, undefined_pairs
    from vlexplain.eval.report import bootstrap_ci
    from vlexplain.eval.runner import evaluate
    from vlexplain.models.hf_clip import tiny_clip

    rng = np.random.default_rng(2)
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        cue = np.zeros((64, 64), dtype=np.uint8)
        cue[4:14, 50:60] = 255
        Image.fromarray(cue).save(tmp_path / f"cue{i}.png")
        g = "aligned" if i < 4 else "conflicting"
        rows.append(
            {"image": f"im{i}.png", "caption": "a photo", "cue_mask": f"cue{i}.png", "reliance": 0.1 * i, "group": g}
        )
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    other = vx.load_model(tiny_clip(seed=1))
    metrics = ["cue_share", "cue_pointing", "cue_reliance_rank_within"]
    runs = {}
    for tag, m in (("a", hf_clip), ("b", other)):
        runs[tag] = evaluate(tmp_path / "p.jsonl", m, ["gradcam"], metrics, tmp_path / tag, progress=False)
    fa, fb = (rio.load_results(runs[t]).to_pandas().sort_values("index") for t in "ab")
    d = fa["cue_share.normalised"].to_numpy() - fb["cue_share.normalised"].to_numpy()
    (r,) = headline_rows(runs["a"], runs["b"], ["gradcam"])
    assert r["aligned"] == pytest.approx(bootstrap_ci(d[:4]), nan_ok=True)
    assert r["badged"] == pytest.approx(bootstrap_ci(d), nan_ok=True)
    md = "\n".join(headline(runs["a"], runs["b"], "a", "b", ["gradcam"]))
    assert "| gradcam |" in md and "### Headline" in md
    assert any("badged pairs whose map has no positive mass" in x for x in undefined_pairs(runs, ["gradcam"]))
