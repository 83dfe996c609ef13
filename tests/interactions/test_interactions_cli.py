"""``vlexplain explain --interactions`` and the interaction methods in ``vlexplain methods``."""

from __future__ import annotations

import json

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
    p = tmp_path / "bus.png"
    Image.fromarray((np.random.default_rng(0).random((60, 70, 3)) * 255).astype(np.uint8)).save(p)
    return p


def test_explain_writes_interactions_beside_the_explanations(clip_dir, photo, tmp_path):
    out2 = tmp_path / "out2"
    argv = ["explain", str(photo), "-t", "a red bus", "-t", "the red bus", "-m", str(clip_dir), "-o", str(out2)]
    argv += ["--method", "random", "--span", "red bus", "--interaction-option", "steps=2"]
    assert main(argv) == 0
    names = {p.name for p in out2.iterdir()}
    for stem in ("000_bus_a-red-bus", "001_bus_the-red-bus"):
        assert {stem + ".json", stem + "_overlay.png"} <= names  # the usual outputs
        assert {stem + s for s in ("_interactions.png", "_interactions.html", "_interactions.json")} <= names
    d = json.loads((out2 / "000_bus_a-red-bus_interactions.json").read_text())
    assert d["method"] == "integrated_jacobians" and d["settings"]["steps"] == 2
    assert d["tokens"] == ["a", "red", "bus"] and d["spans"][0]["span"] == "red bus"
    assert np.allclose(d["spans"][0]["region"], np.array(d["matrix"])[1:3].sum(0), atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--span", "green car"], "is not in the text"),
        (["--interactions", "--interaction-method", "nope"], "unknown interaction method"),
        (["--interactions", "--interaction-option", "steps=0"], "steps"),
        (["--interactions", "--interaction-option", "colour=red"], "unknown option"),
        (["--interaction-method", "banzhaf", "--interactions", "--interaction-option", "budget=5"], "budget"),
    ],
)
def test_bad_requests_exit_2_before_writing(clip_dir, photo, tmp_path, capsys, extra, msg):
    out = tmp_path / "out"
    rc = main(
        ["explain", str(photo), "-t", "a red bus", "-m", str(clip_dir), "-o", str(out), "--method", "random", *extra]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_methods_lists_interaction_methods(clip_dir, capsys):
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    assert "interaction methods" in text
    for name in ("integrated_jacobians", "banzhaf", "span_first_order"):
        assert name in text
    assert main(["methods", "-m", str(clip_dir)]) == 0
    assert "integrated_jacobians" in capsys.readouterr().out
