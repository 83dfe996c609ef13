"""Nothing silent in `evaluate`: failed pairs are counted and listed, a run where all fail exits non-zero,
a metric without ground truth is refused (or skipped with a warning), ground truth outside the crop is
reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.support.models import tiny_hf_clip
from vlexplain.errors import InputError
from vlexplain.eval import evaluate, load_results
from vlexplain.eval.problems import AllPairsFailedError, summary_line


def _img(path, w=60, h=20, value=120):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_pair_failed_exits_non_zero_with_a_summary(tmp_path, capsys):
    from vlexplain.cli import main

    tiny_hf_clip().save_pretrained(tmp_path / "model")
    f = tmp_path / "pairs.tsv"
    f.write_text("filepath\ttitle\nmissing0.png\ta cat\nmissing1.png\ta dog\n")
    out = tmp_path / "run"
    rc = main(
        [
            "evaluate",
            "--data",
            str(f),
            "--model",
            str(tmp_path / "model"),
            "--methods",
            "random",
            "--metrics",
            "confidence_image",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "every one of the 2 pairs failed" in err and "image not found" in err and str(out / "problems.jsonl") in err
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["failed"] == 2 and man["num_samples"] == 2
    lines = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    assert [(x["index"], x["kind"]) for x in lines] == [(0, "error"), (1, "error")]
    assert "missing0.png" in lines[0]["reason"] and "pairs.tsv:2" in lines[0]["reason"]
    with pytest.raises(AllPairsFailedError):
        evaluate(f, str(tmp_path / "model"), ["random"], ["confidence_image"], tmp_path / "run2", progress=False)


def test_failed_pairs_are_counted_on_the_terminal(tmp_path, capsys):
    from vlexplain.cli import main

    tiny_hf_clip().save_pretrained(tmp_path / "model")
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    f = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"image": "a.png", "caption": "one"},
            {"image": "gone.png", "caption": "two"},
            {"image": "b.png", "caption": "three"},
        ],
    )
    rc = main(
        [
            "evaluate",
            "--data",
            str(f),
            "--model",
            str(tmp_path / "model"),
            "--methods",
            "random",
            "--metrics",
            "confidence_image",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0
    assert "warning: 1 of 3 pairs failed (first: " in err and "gone.png" in err
    assert f"every reason is in {tmp_path / 'run' / 'problems.jsonl'}" in err
    assert "3 pairs from jsonl data" in err


def test_metric_without_ground_truth_is_refused_or_skipped(tmp_path, hf_clip, capsys):
    _img(tmp_path / "a.png")
    f = _jsonl(tmp_path / "p.jsonl", [{"image": "a.png", "caption": "one"}])
    with pytest.raises(InputError, match=r"metric 'pointing_game' needs ground-truth masks .* --skip-missing"):
        evaluate(f, hf_clip, ["random"], ["confidence_image", "pointing_game"], tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    out = evaluate(
        f,
        hf_clip,
        ["random"],
        ["confidence_image", "pointing_game"],
        tmp_path / "run",
        progress=False,
        skip_missing=True,
    )
    assert "warning: metric 'pointing_game' needs ground-truth masks" in capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["metrics"] == ["confidence_image"] and "pointing_game" in cfg["skipped_metrics"]
    assert "pointing_game" not in load_results(out).column_names
    with pytest.raises(InputError, match="no metric can be computed"):
        evaluate(f, hf_clip, ["random"], ["pointing_game"], tmp_path / "run3", progress=False, skip_missing=True)


def test_boxes_outside_the_centre_crop_are_counted_and_reported(tmp_path, hf_clip):
    # a 60 x 20 image -> 64 x 64 input: scale 3.2, width 192, crop 64 px from the left, i.e. the crop
    # keeps original x in [20, 40). Box x 0..10 and x 15..19 lie wholly left of it; x 25..30 inside.
    _img(tmp_path / "wide.png")
    rows = [
        {"image": "wide.png", "caption": "left", "boxes": [[0, 0, 10, 10]]},
        {"image": "wide.png", "caption": "inside", "boxes": [[25, 5, 5, 5]]},
        {"image": "wide.png", "caption": "just left", "boxes": [[15, 0, 4, 20]]},
    ]
    f = _jsonl(tmp_path / "p.jsonl", rows)
    out = evaluate(f, hf_clip, ["random"], ["energy_pointing_game"], tmp_path / "run", progress=False)
    df = load_results(out).to_pandas().sort_values("index")
    assert df["warning"].notna().tolist() == [True, False, True]
    assert df["energy_pointing_game"].isna().tolist() == [True, False, True]  # null, not NaN from an empty mask
    assert "covers no pixel of the model's input" in df["warning"].iloc[0] and "p.jsonl:1" in df["warning"].iloc[0]
    man = json.loads((out / "manifest.json").read_text())
    assert man["warnings"] == 2 and man["failed"] == 0
    line = summary_line(out)
    assert line.startswith("2 pairs without usable ground truth (first: ") and "problems.jsonl" in line


def test_a_url_as_data_is_refused_in_one_line(tmp_path, capsys):
    from vlexplain.cli import main

    rc = main(
        [
            "evaluate",
            "--data",
            "https://example.com/pairs.tsv",
            "--model",
            "offline",
            "--methods",
            "random",
            "--metrics",
            "confidence_image",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and not (tmp_path / "run").exists()
    assert "--data: the data is a URL (https://example.com/pairs.tsv)" in err and "download" in err
