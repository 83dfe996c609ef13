"""The explorer's bounds on each request: expensive options lowered, bad options and seeds refused,
control characters removed, its temporary folder bounded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def explorer(hf_clip):
    from vlexplain.app.app import Explorer
    from vlexplain.app.runner import ModelCache

    return Explorer(ModelCache(lambda spec: hf_clip))


def _explain(ex, tmp_path, texts="a cat", methods=("center",), options="", seed=0):
    img = tmp_path / "x.png"
    if not img.exists():
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(img)
    return ex.explain({"path": str(img)}, texts, "tiny", list(methods), options, seed)


def test_explorer_lowers_an_expensive_option(explorer, tmp_path):
    """rise.n_masks=100000000 once asked for a 19.6 GB allocation: it runs with the explorer's bound."""
    scores, grid, tokens, files, status = _explain(explorer, tmp_path, methods=["rise"], options="rise.n_masks=1e8")
    assert "rise.n_masks lowered to 4000 (the explorer's limit)" in status
    data = json.loads(open(files[1]).read())
    assert data["explanations"][0]["settings"]["n_masks"] == 4000


def test_explorer_refuses_bad_options_and_seeds(explorer, tmp_path):
    import gradio as gr

    for kw, msg in [
        ({"options": "rise.n_masks=nan"}, "n_masks must be"),
        ({"options": "center.x=1"}, "unknown option"),
        ({"seed": 1e30}, "the seed must be at most"),
        ({"seed": -3}, "the seed must be >= 0"),
    ]:
        with pytest.raises(gr.Error, match=msg):
            _explain(explorer, tmp_path, methods=["rise", "center"], **kw)


def test_explorer_removes_control_characters(explorer, tmp_path):
    scores, _, tokens, files, status = _explain(explorer, tmp_path, texts="a\x00 cat\x07")
    assert "\x00" not in scores + tokens and "\x07" not in scores + tokens and "a cat" in scores
    assert "removed control characters (U+0000, U+0007)" in status


def test_explorer_temp_folder_stays_bounded(explorer, tmp_path):
    from vlexplain.app.app import KEEP_RESULTS

    root = Path(explorer._out.name)
    for _ in range(KEEP_RESULTS + 5):
        _explain(explorer, tmp_path)
    assert len(list(root.iterdir())) == KEEP_RESULTS
    assert len(list(root.rglob("*.png"))) == KEEP_RESULTS
