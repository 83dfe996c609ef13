"""``vlexplain benchmark``: testbed data rows, the end-to-end command, the leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlexplain.cli import main
from vlexplain.errors import InputError
from vlexplain.eval.benchmarks.base import applicable_methods, run_benchmark
from vlexplain.eval.benchmarks.grids import make_grid_data
from vlexplain.eval.benchmarks.shapes import SHAPES_SEED_BASE, make_shapes_data, shapes_seeds
from vlexplain.testbeds.grids import make_grid
from vlexplain.testbeds.shapes import render_scene
from vlexplain.testbeds.shapes_categories import category_caption
from vlexplain.testbeds.shapes_train import TRAIN_SEED_BASE


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 127


@pytest.fixture(scope="module")
def tiny_shapes_dir(tmp_path_factory) -> Path:
    """A randomly initialised, tiny shapes-world CLIP saved as a ``testbed:shapes@DIR`` directory."""
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


def test_shapes_seeds_are_held_out():
    seeds = shapes_seeds(10, seed=3)
    assert seeds == list(range(seeds[0], seeds[0] + 10))
    assert SHAPES_SEED_BASE <= seeds[0] and seeds[-1] < TRAIN_SEED_BASE
    assert set(shapes_seeds(5, 0)).isdisjoint(shapes_seeds(5, 1))
    with pytest.raises(InputError):
        shapes_seeds(10, seed=10_000)


def test_shapes_rows_have_the_objects_masks(tmp_path):
    path = make_shapes_data(tmp_path, 6, seed=0)
    rows = _rows(path)
    assert len(rows) == 6
    for row in rows:
        scene = render_scene(row["scene_seed"], size=64)
        obj = scene.objects[row["object"]]
        assert row["category"] == obj.category and row["caption"] == category_caption(obj.category)
        got = _mask(tmp_path / row["mask"])
        # the object's own mask, plus the other objects of the same category (same caption)
        want = np.zeros_like(got)
        for o in scene.objects:
            if o.category == obj.category:
                want |= scene.object_mask(o.index)
        assert got.any() and np.array_equal(got, want)
        assert (got & scene.object_mask(obj.index)).sum() == scene.object_mask(obj.index).sum()
        assert np.array_equal(np.asarray(Image.open(tmp_path / row["image"]).convert("RGB")), scene.image)
    # deterministic
    again = make_shapes_data(tmp_path / "again", 6, seed=0)
    assert _rows(again) == rows


def test_grid_rows_have_the_cell(tmp_path):
    path = make_grid_data(tmp_path, 3, seed=0, rows=3)
    for row in _rows(path):
        g = make_grid(row["grid_seed"], rows=3)
        assert row["grid_n"] == 3 and row["cell_index"] == g.query and row["caption"] == g.text
        m = _mask(tmp_path / row["mask"])
        r, c = divmod(row["cell_index"], 3)
        s = g.cell_size
        want = np.zeros((3 * s, 3 * s), dtype=bool)
        want[r * s : (r + 1) * s, c * s : (c + 1) * s] = True
        assert np.array_equal(m, want)
        assert Image.open(tmp_path / row["image"]).size == (3 * s, 3 * s)


def test_skips_methods_without_an_image_side():
    class Tower:
        kind, has_attention = "cnn", False

    class Model:
        def tower(self, side):
            return Tower()

    keep, skipped = applicable_methods(Model(), ["chefer", "saliency"])
    assert keep == ["saliency", "random", "center"]
    assert "chefer" in skipped and "attention" in skipped["chefer"]
    assert applicable_methods(Model(), ["random"]) == (["random", "center"], {})
    with pytest.raises(InputError, match="none of the requested methods"):
        applicable_methods(Model(), ["chefer", "attention_rollout"])


def test_benchmark_shapes_cli_end_to_end(tmp_path, tiny_shapes_dir, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "bench"
    args = [
        "benchmark",
        "shapes",
        "--n",
        "4",
        "--model",
        f"testbed:shapes@{tiny_shapes_dir}",
        "--out",
        str(out),
        "--methods",
        "m2ib",
        "--batch-size",
        "2",
        "--no-progress",
        "--metrics",
        "pointing_game,energy_pointing_game,deletion_image,deletion_text",
        "--method-options",
        '{"m2ib": {"steps": 2}}',
        "--metric-options",
        '{"deletion_image": {"n_steps": 2}, "deletion_text": {"n_steps": 2}}',
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    md = (out / "leaderboard.md").read_text()
    assert md.strip() in printed
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| rank")]
    names = [line.split("|")[2].strip() for line in table]
    assert sorted(names) == ["center (reference)", "m2ib", "random (reference)"]
    # sorted by the pointing game, best first
    pg = [float(line.split("|")[3].split()[0]) for line in table]
    assert pg == sorted(pg, reverse=True)
    assert all(line.split("|")[-2].strip() != "0" for line in table)  # n pairs per method
    assert "m2ib options" in md
    assert (out / "run" / "report.html").stat().st_size > 0
    # the pointing game of the center map is recomputable from the written masks
    from vlexplain.eval import io as rio

    df = rio.load_results(out / "run").to_pandas()
    assert set(df["method"]) == {"m2ib", "random", "center"} and df["error"].isna().all()
    rows = _rows(out / "data" / "pairs.jsonl")
    for row, v in zip(rows, df[df["method"] == "center"].sort_values("index")["pointing_game"]):
        m = _mask(out / "data" / row["mask"])
        ys, xs = np.nonzero(m)
        d = np.sqrt((ys + 0.5 - 32) ** 2 + (xs + 0.5 - 32) ** 2).min()  # argmax of the centred Gaussian
        if abs(d - 15) > 1.5:  # away from the tolerance boundary
            assert v == float(d <= 15)
    # resuming a finished benchmark recomputes nothing and gives the same leaderboard
    assert main(args + ["--resume"]) == 0
    assert (out / "leaderboard.md").read_text() == md
    # without --resume an existing benchmark is refused
    assert main(args) == 2


def test_benchmark_grids_runs(tmp_path, tiny_shapes_dir):
    torch.set_num_threads(1)
    res = run_benchmark(
        "grids",
        tmp_path / "g",
        methods=["saliency"],
        n=2,
        model=f"testbed:shapes@{tiny_shapes_dir}",
        metrics=["grid_pointing_game", "pointing_game"],
        batch_size=2,
        progress=False,
    )
    assert res.methods == ["saliency", "random", "center"]
    assert "grid_pointing_game" in res.markdown and res.report.exists()
    from vlexplain.eval import io as rio

    df = rio.load_results(res.run_dir).to_pandas()
    assert df["grid_pointing_game"].notna().all()
    # the center map's mass in the queried cell of a 2x2 grid is 1/4 by symmetry
    assert np.allclose(df[df["method"] == "center"]["grid_pointing_game"], 0.25, atol=1e-3)


def test_grids_benchmark_budgets_and_caller_options():
    from vlexplain.eval.benchmarks.base import _with_benchmark_defaults
    from vlexplain.eval.benchmarks.registry import get_benchmark

    grids, shapes = get_benchmark("grids").method_options, get_benchmark("shapes").method_options
    got = _with_benchmark_defaults(grids, ["rise", "m2ib"], {"rise": {"p_keep": 0.3}, "m2ib": {"steps": 5}})
    # the testbed's budget stays unless the caller sets that option; methods not run get nothing
    assert got == {
        "rise": {"n_masks": grids["rise"]["n_masks"], "p_keep": 0.3},
        "m2ib": {"steps": 5},
    }
    assert _with_benchmark_defaults(grids, ["rise"], {"rise": {"n_masks": 1000}}) == {"rise": {"n_masks": 1000}}
    assert _with_benchmark_defaults(shapes, ["rise"], None) == {}
