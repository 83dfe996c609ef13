"""End to end through the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support.models import tiny_hf_clip
from vlexplain.cli import main


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    tiny_hf_clip().save_pretrained(d)
    return d


@pytest.fixture
def photo(tmp_path):
    a = (np.random.default_rng(0).random((80, 100, 3)) * 255).astype(np.uint8)
    p = tmp_path / "photo one.png"
    Image.fromarray(a).save(p)
    return p


def test_explain_writes_everything(clip_dir, photo, tmp_path):
    out = tmp_path / "out"
    rc = main(
        [
            "explain",
            str(photo),
            "--text",
            "a cat",
            "--text",
            "a dog",
            "--model",
            str(clip_dir),
            "--out",
            str(out),
            "--steps",
            "2",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert "index.html" in files
    for stem in ("000_photo-one_a-cat", "001_photo-one_a-dog"):
        for suffix in ("_overlay.png", "_text.html", "_text.png", ".json"):
            assert stem + suffix in files
    d = json.loads((out / "000_photo-one_a-cat.json").read_text())
    assert d["method"] == "m2ib" and d["settings"]["steps"] == 2 and d["settings"]["seed"] == 3
    assert d["tokens"] == ["a", "cat"] and len(d["token_scores"]) == 2
    html = (out / "index.html").read_text()
    assert "000_photo-one_a-cat_overlay.png" in html and "cosine" in html
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_zip_and_method_option(clip_dir, photo, tmp_path):
    out = tmp_path / "z"
    rc = main(
        [
            "explain",
            str(photo),
            str(photo),
            "-t",
            "a",
            "-t",
            "b",
            "--zip",
            "-m",
            str(clip_dir),
            "--method",
            "m2ib",
            "--option",
            "num_samples=2",
            "--steps",
            "1",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    assert len(list(out.glob("0*.json"))) == 2 and (out / "explain_run.json").is_file()  # pairs, run settings


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--text", "a cat", "--model", "no-such-model"], "unknown model"),
        (["--text", "   "], "empty text"),
        (["--text", "a cat", "--method", "nope"], "unknown method"),
        (["--text", "a cat", "--layer", "42"], "out of range"),
        (["--text", "a cat", "--option", "bogus=1"], "unknown option"),
    ],
)
def test_bad_input_one_line_exit_2(clip_dir, photo, tmp_path, capsys, args, msg):
    out = tmp_path / "bad"
    if "--model" not in args:
        args = args + ["--model", str(clip_dir)]
    rc = main(["explain", str(photo), "--out", str(out)] + args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert msg in err and err.startswith("error:") and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_bad_image_files_exit_2_before_writing(clip_dir, tmp_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    for p, msg in [(tmp_path / "missing.png", "not found"), (tmp_path / "broken.jpg", "broken.jpg")]:
        out = tmp_path / ("o" + p.stem)
        rc = main(["explain", str(p), "-t", "a cat", "-m", str(clip_dir), "-o", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err
        assert not out.exists() or not any(out.iterdir())


def test_debug_shows_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "vlexplain.cli", "--debug", "explain", str(tmp_path / "x.png"), "-t", "a"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "vlexplain.cli", "explain", str(tmp_path / "x.png"), "-t", "a"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "image not found" in r.stderr


def test_models_and_methods(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "offline" in out and "hf:ORG/NAME" in out and "open_clip:" in out
    assert main(["methods"]) == 0
    assert "m2ib" in capsys.readouterr().out


def test_methods_for_offline_marks_attention_methods(capsys):
    assert main(["methods", "--model", "offline"]) == 0
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if "m2ib" in line][0]
    assert row.count("yes") == 2


def test_demo_runs_on_offline_model(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--method", "center"]) == 0
    html = (out / "index.html").read_text()
    assert html.count("class='card'") == 12 and "no match" in html
    assert len(list(out.glob("*_overlay.png"))) == 12


def test_compare_writes_figure_json_html(clip_dir, photo, tmp_path):
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare",
            str(photo),
            "-t",
            "a cat",
            "-t",
            "a dog",
            "-m",
            str(clip_dir),
            "-o",
            str(out),
            "--methods",
            "m2ib,gradcam,random",
            "--options",
            '{"m2ib": {"steps": 1, "num_samples": 2}}',
        ]
    )
    assert rc == 0
    d = json.loads((out / "compare.json").read_text())
    assert list(d["results"]) == ["m2ib", "gradcam", "random"] and len(d["results"]["m2ib"]) == 2
    assert (out / "compare.png").stat().st_size > 0 and "Token highlights" in (out / "index.html").read_text()


def test_compare_refuses_inapplicable_method(photo, tmp_path, capsys):
    rc = main(["compare", str(photo), "-t", "a cat", "-m", "offline", "--methods", "chefer", "-o", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "methods that apply" in err
    assert err.count("gradcam") == 1  # the alternatives are listed once


def test_explain_says_which_side_it_skips(photo, tmp_path, capsys):
    """chefer on the offline model (a CNN image tower): the text side is explained, the image side is
    named as skipped with the reason, not silently left out."""
    rc = main(["explain", str(photo), "-t", "a cat", "-m", "offline", "--method", "chefer", "-o", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 0 and "note: image side not explained: chefer needs attention probabilities" in err
    assert "text side not explained" not in err
    saved = json.loads(next((tmp_path / "e").glob("000_*.json")).read_text())
    assert saved["patch_map"] is None and saved["token_scores"]


@pytest.mark.parametrize(
    "args, option",
    [
        (["testbed", "train-shapes", "--token-drop", "1.0"], "--token-drop"),
        (["testbed", "train-shapes", "--minutes", "0"], "--minutes"),
        (["testbed", "train-shapes", "--image-layers", "0"], "--image-layers"),
        (["testbed", "train-shapes", "--activation", "swish"], "--activation"),
        (["testbed", "train-shapes", "--optimizer", "sgd"], "--optimizer"),
        (["testbed", "train-shapes", "--muon-lr", "-1"], "--muon-lr"),
        (["explain"], "images"),
    ],
)
def test_usage_errors_name_the_option(tmp_path, capsys, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err and "BadParameter" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_train_shapes_recipe_options_reach_the_model(tmp_path):
    out = tmp_path / "m"
    rc = main(
        [
            "testbed",
            "train-shapes",
            "--minutes",
            "0.2",
            "--steps",
            "1",
            "--processes",
            "1",
            "--no-evaluate",
            "--image-layers",
            "2",
            "--activation",
            "gelu",
            "--optimizer",
            "adamw",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())["vision_config"]
    assert (cfg["num_hidden_layers"], cfg["hidden_act"]) == (2, "gelu")  # both differ from the defaults
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["vision_layers"] == 2 and saved["optimizer"] == "adamw"
    from vlexplain.testbeds.shapes_train import ShapesCLIPConfig

    default = ShapesCLIPConfig()  # options left out take the recipe's defaults, not a copy of them
    for key in ("batch_size", "lr", "rank_weight", "token_drop", "loss", "init", "muon_lr"):
        assert saved[key] == getattr(default, key), key
