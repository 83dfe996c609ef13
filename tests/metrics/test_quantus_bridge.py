"""The Quantus bridge (``quantus:<Metric>``): every listed metric on the shapes testbed, agreement
with vlexplain's own localisation metrics, refusals, and evaluate / benchmark end to end."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

import vlexplain as vx
from vlexplain.cli import main
from vlexplain.errors import MethodError, MissingExtraError
from vlexplain.metrics import get_metric, list_metrics


@pytest.fixture(scope="module")
def shapes_batch():
    """The shipped shapes model, three held-out scenes with their captions' masks, saliency maps."""
    from vlexplain.eval.benchmarks.shapes import SHAPES_SEED_BASE
    from vlexplain.testbeds.shapes import render_scene
    from vlexplain.testbeds.shapes_categories import category_caption

    model = vx.load_model("testbed:shapes")
    caps, imgs, masks = [], [], []
    for s in range(3):
        scene = render_scene(SHAPES_SEED_BASE + s, size=64)
        obj = scene.objects[s % len(scene.objects)]
        caps.append(category_caption(obj.category))
        imgs.append(scene.pil())
        masks.append(torch.from_numpy(scene.text_masks()[caps[-1]]))
    px = torch.stack([model.preprocess(i) for i in imgs])
    exps = vx.explain(model, px, caps, method="saliency", batch_size=3)
    maps = torch.stack([e.image_map for e in exps])
    return model, px, model.tokenize(caps), maps, torch.stack(masks).bool()


QUANTUS = [n for n in list_metrics(bridged=True) if n.startswith("quantus:")]
#: small budgets for the test (the bridge's defaults are for users)
_FEW = {"nr_samples": 2}
CHEAP = {
    "Infidelity": {"n_perturb_samples": 2},
    "MonotonicityCorrelation": {"nr_samples": 2, "features_in_step": 512},
    "Monotonicity": {"features_in_step": 512},
    "PixelFlipping": {"features_in_step": 512},
    "FaithfulnessEstimate": {"features_in_step": 512},
    "FaithfulnessCorrelation": {"nr_runs": 8},
    "MPRT": {"skip_layers": True},
    "EfficientMPRT": {"skip_layers": True},
    "Continuity": {"nr_steps": 4},
    "Selectivity": {"patch_size": 16},
    "RegionPerturbation": {"regions_evaluation": 4},
    **{
        k: _FEW
        for k in (
            "AvgSensitivity",
            "MaxSensitivity",
            "LocalLipschitzEstimate",
            "RelativeInputStability",
            "RelativeOutputStability",
            "RelativeRepresentationStability",
        )
    },
}


def test_the_listed_metrics_cover_every_category():
    cats = {get_metric(n).summary.rsplit("(", 1)[1].rstrip(")") for n in QUANTUS}
    assert cats == {"faithfulness", "robustness", "localisation", "complexity", "randomisation", "axiomatic"}
    assert len(QUANTUS) >= 30


@pytest.mark.parametrize("name", QUANTUS)
def test_every_listed_metric_is_finite_on_the_shapes_testbed(name, shapes_batch):
    model, px, texts, maps, masks = shapes_batch
    spec = get_metric(name)
    kw = {}
    if "masks" in spec.requires:
        kw["masks"] = masks
    if "method" in spec.requires:
        kw.update(method="saliency", seed=0, options={})
    kw.update(CHEAP.get(name.split(":", 1)[1], {}))
    out = spec(model, px, texts, maps, None, **kw)
    assert out["score"].shape == (3,)
    assert torch.isfinite(out["score"]).all(), out
    if name in ("quantus:FaithfulnessCorrelation", "quantus:MaxSensitivity"):  # random perturbations, seeded
        again = spec(model, px, texts, maps, None, **kw)
        assert torch.equal(again["score"], out["score"])


def test_own_localisation_metrics_agree_with_quantus(shapes_batch):
    """vlexplain's pointing game (no tolerance, unique maxima), energy pointing game and AUROC are
    Quantus's PointingGame, RelevanceMassAccuracy (of the map's positive part) and AUC."""
    model, px, texts, maps, masks = shapes_batch
    raw = dict(abs=False, normalise=False)
    ours = {k: get_metric(k)(model, px, texts, maps, None, masks=masks) for k in ("auroc", "energy_pointing_game")}
    pg = get_metric("pointing_game")(model, px, texts, maps, None, masks=masks, tolerance=0)["pointing_game"]
    theirs_auc = get_metric("quantus:AUC")(model, px, texts, maps, None, masks=masks, **raw)["score"]
    theirs_rma = get_metric("quantus:RelevanceMassAccuracy")(
        model, px, texts, maps.clamp_min(0), None, masks=masks, **raw
    )
    theirs_pg = get_metric("quantus:PointingGame")(model, px, texts, maps, None, masks=masks, **raw)["score"]
    flat = maps.flatten(1)
    assert ((flat == flat.max(1, keepdim=True).values).sum(1) == 1).all()  # unique maxima: no tie rule applies
    torch.testing.assert_close(theirs_auc.float(), ours["auroc"]["auroc"].float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        theirs_rma["score"].float(), ours["energy_pointing_game"]["energy_pointing_game"].float(), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(theirs_pg.float(), pg.float(), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name, words",
    [("quantus:ROAD", "road metric"), ("quantus:Focus", "mosaics"), ("quantus:Nonsense", "unknown Quantus metric")],
)
def test_metrics_that_cannot_apply_are_refused_in_one_line(name, words):
    with pytest.raises(MethodError) as e:
        get_metric(name)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_unknown_options_are_refused(shapes_batch):
    from vlexplain.metrics.quantus_bridge import check_options

    with pytest.raises(MethodError, match="unknown option"):
        check_options("quantus:PixelFlipping", {"featurez_in_step": 8})
    check_options("quantus:PixelFlipping", {"features_in_step": 8})


def test_missing_quantus_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "quantus", None)
    with pytest.raises(MissingExtraError, match=r"vlexplain\[quantus\]"):
        get_metric("quantus:AUC")
    assert not [n for n in list_metrics(bridged=True) if n.startswith("quantus:")]


# --- evaluate and benchmark --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_shapes_dir(tmp_path_factory):
    from vlexplain.testbeds.shapes_categories import vocabulary
    from vlexplain.testbeds.shapes_train import ShapesCLIPConfig, build_model
    from vlexplain.testbeds.testbed_models import build_vocab

    d = tmp_path_factory.mktemp("shapes_clip")
    vocab = build_vocab(vocabulary())
    cfg = ShapesCLIPConfig(
        patch_size=16, vision_width=32, vision_layers=2, text_width=32, text_layers=2, heads=2, projection_dim=16
    )
    build_model(cfg, len(vocab), seed=0).eval().save_pretrained(str(d), safe_serialization=True)
    (d / "vocab.json").write_text(json.dumps({"tokens": vocab}))
    return d


def test_benchmark_and_evaluate_with_the_bridges(tmp_path, tiny_shapes_dir, capsys):
    """``benchmark shapes --methods captum:Occlusion,...`` with Quantus metrics: leaderboard with
    intervals, resume, the report; then ``evaluate`` on the benchmark's pairs."""
    from vlexplain.eval import io as rio

    torch.set_num_threads(1)
    model = f"testbed:shapes@{tiny_shapes_dir}"
    metrics = "quantus:FaithfulnessCorrelation,quantus:PointingGame,quantus:MaxSensitivity,pointing_game"
    out = tmp_path / "bench"
    args = ["benchmark", "shapes", "--n", "4", "--model", model, "--out", str(out), "--batch-size", "2"]
    args += ["--methods", "captum:Occlusion,captum:IntegratedGradients", "--metrics", metrics, "--no-progress"]
    args += ["--method-options", '{"captum:IntegratedGradients": {"n_steps": 4}}']
    args += ["--metric-options", '{"quantus:FaithfulnessCorrelation": {"nr_runs": 8}}']
    assert main(args) == 0
    md = (out / "leaderboard.md").read_text()
    assert "captum:Occlusion" in md and "quantus:FaithfulnessCorrelation" in md
    cell = [line for line in md.splitlines() if "| captum:Occlusion |" in line][0]
    assert "[" in cell  # intervals
    df = rio.load_results(out / "run").to_pandas()
    assert df["error"].isna().all()
    vals = df[df["method"] == "captum:Occlusion"]["quantus:FaithfulnessCorrelation"].to_numpy(dtype=float)
    assert len(vals) == 4 and np.isfinite(vals).all()
    assert (out / "run" / "report.html").read_text().count("quantus:PointingGame") >= 1
    assert main(args + ["--resume"]) == 0 and (out / "leaderboard.md").read_text() == md
    capsys.readouterr()

    run = tmp_path / "eval"
    ev = ["evaluate", "--data", str(out / "data" / "pairs.jsonl"), "--model", model, "--out", str(run)]
    ev += ["--methods", "captum:Saliency", "--metrics", "quantus:Sparseness,quantus:AUC", "--batch-size", "2"]
    assert main([*ev, "--no-progress"]) == 0
    res = rio.load_results(run).to_pandas()
    assert np.isfinite(res["quantus:AUC"].to_numpy(dtype=float)).all()
    man = json.loads((run / "manifest.json").read_text())
    assert man["complete"]
    capsys.readouterr()
    # bad names and options: one line, exit 2, nothing written
    for bad in (
        ["--methods", "captum:NoiseTunnel", "--metrics", "quantus:AUC"],
        ["--methods", "captum:Saliency", "--metrics", "quantus:ROAD"],
        ["--methods", "captum:Saliency", "--metrics", "quantus:AUC", "--metric-options", '{"quantus:AUC": {"x": 1}}'],
        [
            "--methods",
            "captum:Saliency",
            "--metrics",
            "quantus:AUC",
            "--method-options",
            '{"captum:Saliency": {"y": 1}}',
        ],
    ):
        fresh = tmp_path / "fresh"
        assert main([*ev[:6], str(fresh), *bad, "--no-progress"]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
        assert len(err) == 1 and not fresh.exists(), err
    assert math.isfinite(float(res["quantus:Sparseness"].mean()))
