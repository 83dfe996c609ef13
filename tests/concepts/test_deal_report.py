"""DEAL evaluation: shapes-world ground truth, the before / after report, `deal evaluate` on shapes."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vlexplain as vx
from tests.support.cub import CUB_CONCEPTS, make_cub
from tests.support.models import tiny_hf_clip
from vlexplain.concepts.evaluate import concept_gallery, evaluate_concepts, paired_interval
from vlexplain.concepts.relevance import Templates, deal_maps
from vlexplain.concepts.report import flatten, read_report, write_report
from vlexplain.concepts.sets import load_concepts
from vlexplain.concepts.train import find_checkpoint
from vlexplain.data.classes import cub
from vlexplain.errors import InputError
from vlexplain.testbeds.shapes import render_scene
from vlexplain.testbeds.shapes_categories import concept_set
from vlexplain.testbeds.shapes_classes import TRAIN_SEEDS, parse_shapes_spec, shapes_classes

SHAPES_PROMPTS = Templates("a {class}", "{descriptor}")


# --- the shapes world as a class dataset -------------------------------------------------------


def test_shapes_classes_dataset():
    ds = shapes_classes(4, "test")
    assert ds.seeds == [0, 1, 2, 3] and len(ds) == 4  # the held-out scenes of evaluate_shapes
    assert ds.classes[:3] == ["house", "tree", "snowman"] and len(ds.classes) == 10
    for i in range(4):
        im, y = ds[i]
        s = render_scene(i, n_objects=1)
        assert np.array_equal(np.asarray(im), s.image) and ds.classes[y] == s.objects[0].category
    assert ds.labels == [ds[i][1] for i in range(4)]
    assert shapes_classes(2, "train").seeds == [TRAIN_SEEDS, TRAIN_SEEDS + 1]

    s = render_scene(0, n_objects=1)
    d = concept_set()[s.objects[0].category][0]
    want = s.text_masks()[d]
    assert want.any()
    assert torch.equal(ds.concept_mask(0, d, (64, 64)), torch.from_numpy(want))
    big = ds.concept_mask(0, d, (128, 128))  # nearest: every scene pixel becomes a 2 x 2 block
    assert torch.equal(big, torch.from_numpy(np.kron(want, np.ones((2, 2), dtype=bool))))
    assert (
        ds.concept_mask(0, "a triangular sail" if s.objects[0].category != "boat" else "a tall hat", (64, 64)) is None
    )

    assert parse_shapes_spec("shapes:12") == 12
    for bad in ("shapes:0", "shapes:x", "shapes:", "shapes:-3"):
        with pytest.raises(InputError, match="shapes:N"):
            parse_shapes_spec(bad)
    with pytest.raises(InputError, match="train and test"):
        shapes_classes(3, "all")


def test_evaluate_shapes_ground_truth(hf_clip):
    """Part pointing / energy / area against the scenes' own masks, computed here image by image."""
    ds = shapes_classes(3, transform=hf_clip.preprocess)
    cs = load_concepts(concept_set())
    r = evaluate_concepts(hf_clip, ds, cs, k=2, templates=SHAPES_PROMPTS, batch_size=2)
    point, energy, area = [], [], []
    for i in range(3):
        s = render_scene(i, n_objects=1)
        name = s.objects[0].category
        m = deal_maps(hf_clip, ds[i][0][None], [name], cs, k=2, templates=SHAPES_PROMPTS)
        for j, d in enumerate(concept_set()[name][:2]):
            mask = torch.from_numpy(s.text_masks()[d])
            up = F.interpolate(m.concepts[0, j][None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
            point.append(float(mask.flatten()[up.flatten() == up.max()].float().mean()))  # share of tied maxima
            up = (up - up.min()) / (up.max() - up.min() + 1e-8)
            energy.append(float((up * mask).sum() / (up.sum() + 1e-8)))
            area.append(float(mask.float().mean()))
    assert r["part_maps"] == 6
    assert r["part_pointing"] == pytest.approx(100 * np.mean(point))
    assert r["part_energy"] == pytest.approx(np.mean(energy), rel=1e-5)
    assert r["part_area"] == pytest.approx(np.mean(area), rel=1e-6)
    # per-item scores (for paired intervals): the same maps, each with its image
    per = r["per_item"]
    np.testing.assert_allclose(per["part_pointing"]["values"], 100 * np.array(point))
    np.testing.assert_allclose(per["part_energy"]["values"], energy, rtol=1e-5)
    assert per["part_pointing"]["image"].tolist() == [0, 0, 1, 1, 2, 2]
    assert per["localizability"]["image"].tolist() == [0, 0, 1, 1, 2, 2]
    for key, want in (
        ("localizability", r["localizability"]),
        ("mean_pairwise_overlap", r["mean_pairwise_overlap"]),
        ("accuracy_standard.top1", r["accuracy_standard"]["top1"]),
        ("accuracy_concepts.top1", r["accuracy_concepts"]["top1"]),
    ):
        assert per[key]["values"].mean() == pytest.approx(want, rel=1e-5)

    g = concept_gallery(hf_clip, ds, cs, [0, 2], k=2, templates=SHAPES_PROMPTS)
    assert [x["index"] for x in g] == [0, 2]
    assert g[0]["maps"].shape == (3, 4, 4) and g[0]["image"].shape == (64, 64, 3)
    assert g[0]["texts"] == [f"a {g[0]['label']}"] + concept_set()[g[0]["label"]][:2]
    assert g[0]["part_energy"] == pytest.approx(energy[:2], rel=1e-5)
    assert g[1]["part_energy"] == pytest.approx(energy[4:], rel=1e-5)


# --- the report ----------------------------------------------------------------------------------


def _metrics(acc, dis, overlap, loc, point):
    return {
        "images": 10,
        "method": "deal",
        "accuracy_standard": {"top1": acc, "top5": 90.0},
        "accuracy_concepts": {"top1": acc - 5, "top5": 80.0},
        "disentanglability": dis,
        "pairwise_overlap_sum": 3 * overlap,
        "mean_pairwise_overlap": overlap,
        "localizability": loc,
        "part_pointing": point,
        "part_energy": 0.25,
        "part_area": 0.05,
        "part_maps": 30,
    }


def _gallery(seed):
    rng = np.random.default_rng(seed)
    return [
        {
            "index": i,
            "label": "house",
            "predicted": "tree",
            "texts": ["a house", "square walls", "a roof"],
            "image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
            "maps": rng.random((3, 2, 2), dtype=np.float32),
            "part_energy": [0.5, None],
        }
        for i in (3, 7)
    ]


def _table(page):
    rows = {}
    for key, row in re.findall(r"<tr data-metric='([^']+)'>(.*?)</tr>", page):
        cells = re.findall(r"<td([^>]*)>(.*?)</td>", row)
        rows[key] = [(cls, text) for cls, text in cells[1:]]
    return rows


def test_report_before_after(tmp_path):
    before, after = _metrics(60.0, 0.4, 3.0, 0.6, 20.0), _metrics(72.5, 0.45, 3.5, 0.55, 20.0)
    cfg = {"model": "m", "checkpoint": "/runs/a/checkpoint", "data": "shapes:10", "k": 3, "training run": {"lr": 1e-4}}
    path = write_report(
        tmp_path, cfg, {"before": before, "after": after}, {"before": _gallery(0), "after": _gallery(1)}
    )
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["columns"] == ["before", "after"] and doc["config"] == cfg
    assert doc["delta"]["accuracy_standard.top1"] == pytest.approx(12.5)
    assert doc["delta"]["mean_pairwise_overlap"] == pytest.approx(0.5)

    page = path.read_text()
    assert "<th>before</th><th>after</th><th>Δ</th>" in page
    rows = _table(page)
    assert set(rows) == set(flatten(before))  # every numeric metric has a row
    for key, cells in rows.items():
        (_, b), (_, a), (cls, d) = cells
        for shown, want in ((b, flatten(before)[key]), (a, flatten(after)[key]), (d, doc["delta"][key])):
            assert float(shown) == pytest.approx(want, abs=0.006)
    assert rows["accuracy_standard.top1"][2] == (" class='up'", "+12.50")
    assert rows["disentanglability"][2][0] == " class='up'"
    assert rows["mean_pairwise_overlap"][2][0] == " class='down'"  # more overlap is worse
    assert rows["localizability"][2][0] == " class='down'"
    assert rows["part_pointing"][2] == ("", "0.00")  # unchanged: not shaded
    assert rows["images"][2][0] == ""  # a count has no direction

    with open(tmp_path / "metrics.csv", newline="") as f:
        table = {r["metric"]: r for r in csv.DictReader(f)}
    assert float(table["localizability"]["after"]) == pytest.approx(0.55)
    assert float(table["localizability"]["delta"]) == pytest.approx(-0.05)
    assert table["mean_pairwise_overlap"]["higher_is_better"] == "False"

    # self-contained: every image is inline; 2 images x 2 columns x (image + 3 maps)
    srcs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(srcs) == 16 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http" not in page.replace("http-equiv", "")
    assert page.count("in part 0.50") == 4 and "/runs/a/checkpoint" in page and "lr" in page

    cfg2, m2, g2 = read_report(tmp_path)  # the last column: after
    assert cfg2 == cfg and m2 == after
    assert [g["index"] for g in g2] == [3, 7]
    np.testing.assert_array_equal(g2[1]["maps"], _gallery(1)[1]["maps"])
    np.testing.assert_array_equal(read_report(tmp_path, "before")[2][0]["image"], _gallery(0)[0]["image"])
    with pytest.raises(InputError, match="no column"):
        read_report(tmp_path, "middle")
    with pytest.raises(InputError, match="metrics.json"):
        read_report(tmp_path / "nothing")


def test_paired_interval():
    rng = np.random.default_rng(1)
    images = np.repeat(np.arange(400), 3)  # 400 images, 3 maps each
    effect = rng.normal(0.0, 1.0, 400)[images]  # maps of one image move together
    before = {"values": rng.normal(0.0, 1.0, images.size), "image": images}
    after = {"values": before["values"] + 0.3 + effect + rng.normal(0.0, 0.5, images.size), "image": images}
    lo, hi = paired_interval(before, after)
    d = (after["values"] - before["values"]).reshape(400, 3).mean(1)  # per-image mean change
    half = 1.96 * d.std(ddof=1) / np.sqrt(400)  # the normal-theory interval of the mean over images
    assert lo < d.mean() < hi
    assert (hi - lo) == pytest.approx(2 * half, rel=0.12)
    naive = 1.96 * (after["values"] - before["values"]).std(ddof=1) / np.sqrt(images.size)
    assert hi - lo > 1.3 * 2 * naive  # resampling maps as if independent would be far too narrow
    same = paired_interval(before, before)
    assert same == (0.0, 0.0)
    shifted = paired_interval(before, {"values": before["values"] + 2.0, "image": images})
    assert shifted == pytest.approx((2.0, 2.0))
    assert paired_interval(before, {"values": after["values"][:-1], "image": images[:-1]}) is None  # not paired
    assert paired_interval(before, {"values": after["values"], "image": images[::-1]}) is None


def test_report_paired_intervals(tmp_path):
    rng = np.random.default_rng(0)
    img = np.repeat(np.arange(50), 2)
    before = {
        **_metrics(60.0, 0.4, 3.0, 0.6, 20.0),
        "per_item": {"part_pointing": {"values": 100.0 * (rng.random(100) < 0.2), "image": img}},
    }
    after = {
        **_metrics(72.5, 0.45, 3.5, 0.55, 60.0),
        "per_item": {"part_pointing": {"values": 100.0 * (rng.random(100) < 0.6), "image": img}},
    }
    path = write_report(tmp_path, {"model": "m"}, {"before": before, "after": after})
    doc = json.loads((tmp_path / "metrics.json").read_text())
    lo, hi = doc["delta_ci"]["part_pointing"]
    assert list(doc["delta_ci"]) == ["part_pointing"] and lo < doc["delta"]["part_pointing"] < hi and lo > 0
    assert "per_item" not in doc["metrics"]["before"]  # per-item scores live in scores.npz
    rows = _table(path.read_text())
    cls, text = rows["part_pointing"][2]
    assert cls == " class='up'" and text.startswith("+") and f"[{lo:.2f}, {hi:.2f}]" in text
    with open(tmp_path / "metrics.csv", newline="") as f:
        table = {r["metric"]: r for r in csv.DictReader(f)}
    assert float(table["part_pointing"]["delta_low"]) == pytest.approx(lo)
    assert table["localizability"]["delta_low"] == ""  # no per-item scores: no interval
    _, back, _ = read_report(tmp_path)  # read back with its per-item scores, for a later comparison
    np.testing.assert_array_equal(
        back["per_item"]["part_pointing"]["values"], after["per_item"]["part_pointing"]["values"]
    )
    (tmp_path / "scores.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="scores.npz cannot be read"):
        read_report(tmp_path)
    # one map of one image gained: +1 point, but an interval that reaches 0 leaves it unshaded
    one = before["per_item"]["part_pointing"]["values"].copy()
    one[np.flatnonzero(one == 0)[0]] = 100.0
    small = {**before, "part_pointing": 21.0, "per_item": {"part_pointing": {"values": one, "image": img}}}
    page = write_report(tmp_path / "small", {"model": "m"}, {"before": before, "after": small})
    lo, hi = json.loads((tmp_path / "small" / "metrics.json").read_text())["delta_ci"]["part_pointing"]
    assert lo == 0.0 < hi
    assert _table(page.read_text())["part_pointing"][2][0] == ""


def test_report_single_column(tmp_path):
    m = _metrics(60.0, 0.4, 3.0, 0.6, 20.0)
    del m["part_pointing"], m["part_energy"], m["part_area"], m["part_maps"]
    page = write_report(tmp_path, {"model": "m"}, {"model": m}).read_text()
    assert "<th>model</th></tr>" in page and "<th>Δ</th>" not in page and "Δ =" not in page
    assert "ground truth" not in page and "No gallery" in page
    assert json.loads((tmp_path / "metrics.json").read_text())["delta"] == {}


# --- the command --------------------------------------------------------------------------------


def test_cli_train_and_evaluate(tmp_path):
    from vlexplain.cli import main

    make_cub(tmp_path / "cub")
    tiny_hf_clip().save_pretrained(tmp_path / "model")
    (tmp_path / "c.json").write_text(json.dumps(CUB_CONCEPTS))
    common = [
        "--data",
        str(tmp_path / "cub"),
        "--concepts",
        str(tmp_path / "c.json"),
        "--model",
        str(tmp_path / "model"),
    ]
    rc = main(
        [
            "deal",
            "train",
            *common,
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--k",
            "2",
            "--no-progress",
            "--freeze-text",
            "--lr",
            "1e-3",
        ]
    )
    assert rc == 0 and find_checkpoint(tmp_path / "run") is not None
    # before / after: the base model, then the base model with the run's checkpoint
    rc = main(
        [
            "deal",
            "evaluate",
            *common,
            "--checkpoint",
            str(tmp_path / "run"),
            "--split",
            "all",
            "--out",
            str(tmp_path / "ev"),
            "--gallery",
            "1",
        ]
    )
    assert rc == 0
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert doc["columns"] == ["before", "after"]
    assert doc["config"]["k"] == 2 and doc["config"]["checkpoint_step"] == 1  # k taken from the run
    for col in ("before", "after"):
        assert doc["metrics"][col]["images"] == 4 and 0 <= doc["metrics"][col]["localizability"] <= 1
        assert "part_pointing" not in doc["metrics"][col]  # no descriptor names the one visible part (beak)
    # the fine-tuned model differs from the base model; delta = after - before
    d = doc["delta"]["mean_pairwise_overlap"]
    assert d == pytest.approx(
        doc["metrics"]["after"]["mean_pairwise_overlap"] - doc["metrics"]["before"]["mean_pairwise_overlap"]
    )
    assert d != 0.0
    base = vx.load_model(str(tmp_path / "model"))
    ds = cub(tmp_path / "cub", "all", transform=base.preprocess)
    want = evaluate_concepts(base, ds, load_concepts(CUB_CONCEPTS), k=2)
    assert doc["metrics"]["before"]["localizability"] == pytest.approx(want["localizability"], rel=1e-5)
    html_text = (tmp_path / "ev" / "report.html").read_text()
    assert ">before<" in html_text and ">after<" in html_text and ">Δ<" in html_text
    assert (tmp_path / "ev" / "metrics.csv").read_text().startswith("metric,before,after,delta")
    # --before reuses an earlier output: the same numbers without evaluating the base model again
    assert (
        main(
            [
                "deal",
                "evaluate",
                *common,
                "--split",
                "all",
                "--k",
                "2",
                "--out",
                str(tmp_path / "base"),
                "--gallery",
                "1",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "base" / "metrics.json").read_text())["columns"] == ["model"]
    rc = main(
        [
            "deal",
            "evaluate",
            *common,
            "--checkpoint",
            str(tmp_path / "run"),
            "--split",
            "all",
            "--before",
            str(tmp_path / "base"),
            "--out",
            str(tmp_path / "ev2"),
            "--gallery",
            "1",
        ]
    )
    assert rc == 0
    doc2 = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert doc2["metrics"] == doc["metrics"] and doc2["delta"] == doc["delta"]
    assert doc2["delta_ci"] == doc["delta_ci"] and "localizability" in doc["delta_ci"]  # per-item scores read back
    # an earlier output with other settings is refused, and nothing is written
    rc = main(
        [
            "deal",
            "evaluate",
            *common,
            "--checkpoint",
            str(tmp_path / "run"),
            "--split",
            "train",
            "--before",
            str(tmp_path / "base"),
            "--out",
            str(tmp_path / "ev3"),
        ]
    )
    assert rc == 2 and not (tmp_path / "ev3").exists()
    assert (
        main(
            [
                "deal",
                "train",
                *common[:2],
                "--concepts",
                str(tmp_path / "nope.json"),
                "--model",
                str(tmp_path / "model"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert main(["deal", "evaluate", "--data", str(tmp_path / "cub"), "--out", str(tmp_path / "x")]) == 2  # no concepts


def test_cli_evaluate_shapes(tmp_path):
    from vlexplain.cli import main

    run, out = tmp_path / "run", tmp_path / "ev"
    assert (
        main(
            [
                "deal",
                "train",
                "--model",
                "testbed:shapes",
                "--data",
                "shapes:4",
                "--out",
                str(run),
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--k",
                "2",
                "--lr",
                "1e-3",
                "--no-progress",
            ]
        )
        == 0
    )
    train_cfg = json.loads((run / "config.json").read_text())
    assert train_cfg["category_template"] == "a {class}" and train_cfg["concept_template"] == "{descriptor}"
    assert (
        main(
            [
                "deal",
                "evaluate",
                "--model",
                "testbed:shapes",
                "--data",
                "shapes:3",
                "--out",
                str(out),
                "--checkpoint",
                str(run),
                "--gallery",
                "1",
            ]
        )
        == 0
    )
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["columns"] == ["before", "after"] and doc["config"]["k"] == 2  # k and prompts from the run
    assert doc["config"]["category_template"] == "a {class}" and doc["config"]["concept_template"] == "{descriptor}"
    for r in doc["metrics"].values():
        assert r["images"] == 3 and r["part_maps"] == 6 and 0 <= r["part_pointing"] <= 100
    assert doc["metrics"]["before"]["part_energy"] != doc["metrics"]["after"]["part_energy"]
    lo, hi = doc["delta_ci"]["part_energy"]
    assert lo <= doc["delta"]["part_energy"] <= hi
    page = (out / "report.html").read_text()
    assert "in part " in page and "ground truth: concept pointing" in page
    assert (
        main(["deal", "evaluate", "--model", "testbed:shapes", "--data", "shapes:0", "--out", str(tmp_path / "x")]) == 2
    )
    assert not (tmp_path / "x").exists()
