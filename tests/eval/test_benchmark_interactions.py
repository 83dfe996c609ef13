"""``vlexplain benchmark interactions`` end to end on a tiny configuration, its data and its refusals."""

from __future__ import annotations

import json

import numpy as np

from vlexplain.cli import main
from vlexplain.eval.benchmarks.interactions import grids_items, shapes_items


def test_items_name_every_object_with_its_mask():
    for it in shapes_items(3):
        assert 2 <= len(it.spans) <= 4 and len(set(it.spans)) == len(it.spans)
        assert all(f"a {s}" in it.caption for s in it.spans)
        assert it.masks.shape == (len(it.spans), 64, 64) and it.masks.mean((1, 2)).min() >= 0.02
        assert not (it.masks.sum(0) > 1).any()  # visible pixels: no pixel in two objects
    (g,) = grids_items(1)
    assert len(g.spans) == 4 and all(s in g.caption for s in g.spans)
    np.testing.assert_array_equal(g.masks.sum(0), 1)  # the four cells tile the image


def test_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["benchmark", "interactions", "--n", "2", "--methods", "random", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| `random` |" in printed and "| `span_first_order` |" in printed
    data = json.loads((out / "results.json").read_text())
    assert set(data["methods"]) == {"random", "span_first_order"}
    for row in data["methods"].values():
        assert row["objects"] >= 4 and row["seconds_per_pair"] >= 0
        for m in ("pointing", "mass", "reverse"):
            mean, lo, hi = row[m]
            assert 0 <= lo <= mean <= hi <= 1
    assert "pointing - span_first_order" in data["methods"]["random"]


def test_bad_options_are_one_line_before_anything_is_written(tmp_path, capsys):
    for extra, message in (
        (["--world", "moon"], "--world must be one of"),
        (["--metrics", "auroc"], "unknown interaction metric"),
        (["--methods", "nope"], "unknown interaction method"),
    ):
        out = tmp_path / "x"
        assert main(["benchmark", "interactions", "--n", "1", "--out", str(out), *extra]) == 2
        assert message in capsys.readouterr().err and not out.exists()
