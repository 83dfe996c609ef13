"""What a new user meets first: a fast command line, runs that say what will stay empty, pages and
tables that read right (the demo's labels, the report, the explorer's figures, the methods table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlexplain.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_line_imports_no_heavy_library_before_a_command_runs():
    code = (
        "import sys, vlexplain, vlexplain.cli\n"
        "from vlexplain.cli import main\n"
        "from vlexplain.models.loaders import registered_loaders\n"
        "rc = main(['--help'])\n"
        "print(rc, sorted(m for m in ('torch', 'transformers', 'open_clip', 'matplotlib') if m in sys.modules),"
        " [e.prefix for e in registered_loaders()])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    # the testbed: specs are registered on import, without torch
    assert r.stdout.strip().splitlines()[-1] == "0 [] ['testbed:']", r.stdout + r.stderr


def test_lazy_package_names_resolve():
    import vlexplain as vx

    assert callable(vx.explain) and callable(vx.load_model) and "m2ib" in vx.list_methods()
    import vlexplain.eval as ev
    from vlexplain.eval.report import report
    from vlexplain.interactions.api import interactions  # a subpackage named like vx.interactions

    assert vx.interactions is interactions and ev.report is report  # the functions, not the modules
    assert {"explain", "load_model", "Explanation"} <= set(dir(vx))
    with pytest.raises(AttributeError):
        vx.no_such_name  # noqa: B018


def test_readme_says_how_to_reach_the_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.index("vlexplain explain cat.jpg")
    assert "source .venv/bin/activate" in readme[:block] and ".venv/bin/vlexplain" in readme[:block]


def test_default_output_folders_are_documented_and_ignored():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert {"vlexplain-compare/", "vlexplain-out/", "vlexplain-demo/"} <= set(ignored)
    assert "./vlexplain-compare/" in (ROOT / "docs" / "cli.md").read_text()


# --- evaluate: methods that cannot be scored ----------------------------------------------------------
def test_evaluate_refuses_a_method_no_metric_can_score(offline, tmp_path, capsys):
    """chefer explains only the text side of the offline model (its image tower is a CNN)."""
    from vlexplain.errors import MethodError
    from vlexplain.eval import evaluate

    img = tmp_path / "a.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(img)
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"image": str(img), "caption": "a cat"}) + "\n")
    with pytest.raises(MethodError, match=r"chefer cannot be scored by the metrics chosen \(deletion_image\)"):
        evaluate(data, offline, ["random", "chefer"], ["deletion_image"], tmp_path / "run")
    assert not (tmp_path / "run").exists()
    capsys.readouterr()
    kw = dict(metric_options={"deletion_image": {"n_steps": 2}, "deletion_text": {"n_steps": 2}})
    evaluate(data, offline, ["chefer"], ["deletion_image", "deletion_text"], tmp_path / "run", **kw)
    assert "note: chefer explains only the text side of this model: deletion_image stay empty for it" in (
        capsys.readouterr().err
    )


# --- the demo -------------------------------------------------------------------------------------------
def test_demo_labels_are_the_expected_answer_and_nats_are_explained():
    from vlexplain.commands.explain import demo_subtitle
    from vlexplain.testbeds.photos import demo_set

    photos, texts, labels = demo_set()
    assert set(labels.values()) == {"expected match", "expected no match"}
    assert labels[(2, "a cat")] == "expected no match"  # the rocket photo
    line = demo_subtitle("m2ib", 0)
    assert "the label is the expected answer" in line and "the colour bar is in nats" in line
    assert "nats" not in demo_subtitle("center", 0)  # only M2IB's maps are in nats


# --- the methods table ----------------------------------------------------------------------------------
def test_methods_table_keeps_names_whole_at_80_columns(capsys, monkeypatch, tmp_path):
    """With a model the side columns used to hold the reasons, squeezing names ("attention_rollo|ut");
    the long names of the Captum bridge have their own table."""
    import vlexplain as vx
    from tests.support.models import tiny_hf_clip

    tiny_hf_clip().save_pretrained(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    for argv in (["methods"], ["methods", "--model", str(tmp_path)]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert max(len(ln) for ln in out.splitlines()) <= 80, argv
        tables = [t for t in out.split("┘")[:-1] if "┃ method" in t and "┃ group" in t]  # not the interactions'
        names = [ln.split("│")[1].strip() for t in tables for ln in t.splitlines() if ln.startswith("│")]
        assert [n for n in names if n] == vx.list_methods(bridged=True), argv
    assert "clip_surgery, text side: clip_surgery has no text side" in out  # the reasons, below the tables


# --- the evaluation report ------------------------------------------------------------------------------
def test_report_folds_its_configuration_and_has_no_empty_gallery(hf_clip, tmp_path):
    from vlexplain.eval import evaluate, report

    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(img)
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"image": str(img), "caption": "a photo"}) + "\n")
    opts = {"deletion_image": {"n_steps": 2}}
    run = evaluate(data, hf_clip, ["random"], ["deletion_image"], tmp_path / "run", metric_options=opts)
    page = report(run).read_text()
    assert "<details><summary>config.json" in page and "<details open>" not in page
    assert "class='card'" not in page and "Maps were not saved, so there is no gallery" in page
    run2 = evaluate(
        data, hf_clip, ["random"], ["deletion_image"], tmp_path / "run2", save_maps=True, metric_options=opts
    )
    assert "class='card'" in report(run2).read_text()  # with maps: the gallery's overlays


def test_cue_metrics_shade_no_best_method():
    """random puts the least mass on a small cue; for an audit that is not 'best'."""
    from vlexplain.eval.report import _table_html

    def row(method, metric, mean, hib):
        return dict(method=method, metric=metric, column=f"{metric}.{metric}", n=4, mean=mean, ci_low=mean,
                    ci_high=mean, higher_is_better=hib)  # fmt: skip

    rows = [row("m2ib", "cue_share", 0.4, False), row("random", "cue_share", 0.05, False)]
    rows += [row("m2ib", "pointing_game", 0.9, True), row("random", "pointing_game", 0.2, True)]
    cfg = {"metric_info": {"cue_share": {"ranked": False}, "pointing_game": {"ranked": True}}}
    page = _table_html(rows, ["m2ib", "random"], cfg)
    assert page.count("class='best'") == 1  # pointing_game's m2ib only
    assert "cue_share: no best value is shaded" in page
    from vlexplain.eval.run_config import resolve_metric

    assert resolve_metric("cue_share").describe()["ranked"] is False
    assert resolve_metric("pointing_game").describe()["ranked"] is True


# --- the explorer's figures -----------------------------------------------------------------------------
def test_explorer_bars_scale_to_the_scores_shown():
    from vlexplain.app.render import scores_html
    from vlexplain.app.runner import RunResult

    class E:
        def __init__(self, s):
            self.score, self.contrast = s, None

    res = RunResult(["a", "b", "c"], ["center"], "m", "x", [{"center": E(s)} for s in (0.46, 0.23, -0.1)])
    widths = [float(w) for w in __import__("re").findall(r"height:10px;width:([\d.]+)%", scores_html(res))]
    assert widths == [100.0, 50.0, 0.0]  # 0.23 is half of 0.46; a negative score has no bar


def test_explorer_grid_title_is_not_clipped(hf_clip):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from vlexplain.app.render import grid_figure
    from vlexplain.app.runner import run

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    res = run(hf_clip, img, ["a cat"], ["center"], {}, seed=0)
    fig = grid_figure(res)
    FigureCanvasAgg(fig).draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
    assert fig._suptitle.get_text().startswith("model: ")


def test_torch_threads_are_the_suites(request):
    """(conftest restores the thread count after every test and module)"""
    from tests.support.threads import THREADS

    assert torch.get_num_threads() == THREADS
