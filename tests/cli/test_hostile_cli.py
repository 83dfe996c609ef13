"""Hostile input through the command line: each case exits with code 2 and one line, and leaves
nothing behind (no output folder, no lock file, no parent folder), or succeeds with a warning.

The table's placeholders: IMG (an image), DATA (a pairs file), MODEL (a tiny model folder), OUT (a
fresh output folder, two levels below a folder that does not exist yet), and FILE:NAME for the
hostile files the ``env`` fixture writes.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.support.models import tiny_hf_clip
from vlexplain.cli import main

PAD = " " * 300  # JSON option values longer than a file name may be
EXPLAIN = ["explain", "IMG", "-t", "a cat", "-m", "MODEL", "-o", "OUT"]
EVALUATE = ["evaluate", "--data", "DATA", "--model", "MODEL", "--methods", "random", "--out", "OUT", "--no-progress"]
DELETION = ["--metrics", "deletion_image"]

#: (id, argv, expected part of the one line)
CASES = [
    # --- numbers and options (issue: validation after writing) ---------------------------------------
    ("beta-nan", [*EXPLAIN, "--beta", "nan"], "beta must be a finite number"),
    ("beta-inf", [*EXPLAIN, "--beta", "inf"], "beta must be a finite number"),
    ("seed-20-digits", [*EXPLAIN, "--seed", "123456789012345678901"], "--seed must be at most"),
    ("n-masks-fraction", [*EXPLAIN, "--method", "rise", "--option", "n_masks=2.5"], "n_masks must be a whole number"),
    ("option-unknown", [*EXPLAIN, "--method", "rise", "--option", "n_mask=8"], "unknown option(s) for rise: n_mask"),
    ("option-bool", [*EXPLAIN, "--option", "bf16=1"], "bf16 must be true or false"),
    ("target-banana", [*EXPLAIN, "--target", "banana"], "--target 'banana'"),
    ("softmax-one-text", [*EXPLAIN, "--target", "softmax"], "needs at least two texts"),
    ("evaluate-seed-negative", [*EVALUATE, *DELETION, "--seed", "-1"], "--seed must be >= 0"),
    (
        "metric-option-unknown",
        [*EVALUATE, *DELETION, "--metric-options", '{"deletion_image": {"bogus": 1}}'],
        "unknown option(s) for metric deletion_image: bogus",
    ),
    (
        "metric-option-range",
        [*EVALUATE, *DELETION, "--metric-options", '{"deletion_image": {"n_steps": 0}}'],
        "n_steps must be >= 1",
    ),
    (
        "method-option-nan",
        [*EVALUATE, *DELETION, "--method-options", '{"random": {"x": NaN}}'],
        "NaN is not a number JSON allows",
    ),
    (
        "method-options-long-json",
        [*EVALUATE, *DELETION, "--method-options", '{"random": {"x": 1}' + PAD + "}"],
        "unknown option(s) for random: x",
    ),
    (
        "method-options-other-method",
        [*EVALUATE, *DELETION, "--method-options", '{"rise": {"n_masks": 8}}'],
        "not among the methods run",
    ),
    ("metric-not-a-function", [*EVALUATE, "--metrics", "os:getcwd"], "is not a metric function"),
    (
        "layer-out-of-range",
        [*EVALUATE[:5], "--methods", "m2ib", *EVALUATE[7:], *DELETION, "--method-options", '{"m2ib": {"layer": 99}}'],
        "layer 99 is out of range",
    ),
    ("resume-and-overwrite", [*EVALUATE, *DELETION, "--resume", "--overwrite"], "give one of them"),
    ("deal-lr-nan", ["deal", "train", "--data", "shapes:8", "--out", "OUT", "--lr", "nan"], "--lr must be a finite"),
    ("deal-split-seed", ["deal", "train", "--data", "shapes:8", "--out", "OUT", "--split-seed", "-1"], ">= 0"),
    ("benchmark-grid-1000", ["benchmark", "grids", "--grid", "1000", "--n", "2", "--out", "OUT"], "--grid 1000"),
    # --- names, texts and files -------------------------------------------------------------------------
    ("text-not-utf8", ["explain", "IMG", "-t", "a\udcffb", "-m", "MODEL", "-o", "OUT"], "is not valid UTF-8"),
    (
        "image-name-300-chars",
        ["explain", "FILE:" + "x" * 300 + ".png", "-t", "a", "-m", "MODEL", "-o", "OUT"],
        "too long",
    ),
    ("image-fifo", ["explain", "FILE:fifo.png", "-t", "a", "-m", "MODEL", "-o", "OUT"], "is a FIFO (named pipe)"),
    (
        "image-link-loop",
        ["explain", "FILE:loop.png", "-t", "a", "-m", "MODEL", "-o", "OUT"],
        "a loop of symbolic links",
    ),
    ("image-broken-link", ["explain", "FILE:broken.png", "-t", "a", "-m", "MODEL", "-o", "OUT"], "a broken symbolic"),
    ("image-empty", ["explain", "FILE:empty.png", "-t", "a", "-m", "MODEL", "-o", "OUT"], "is empty (0 bytes)"),
    (
        "data-header-twice",
        [*EVALUATE[:2], "FILE:dup.csv", *EVALUATE[3:], *DELETION],
        "names the column 'caption' twice",
    ),
    ("data-box-infinite", [*EVALUATE[:2], "FILE:inf.jsonl", *EVALUATE[3:], *DELETION], "not a finite number"),
    ("data-empty", [*EVALUATE[:2], "FILE:empty.jsonl", *EVALUATE[3:], *DELETION], "is empty (0 bytes)"),
    ("data-blank-lines", [*EVALUATE[:2], "FILE:blank.jsonl", *EVALUATE[3:], *DELETION], "holds no pairs"),
    ("data-header-only", [*EVALUATE[:2], "FILE:header.csv", *EVALUATE[3:], *DELETION], "holds no pairs"),
    ("data-fifo", [*EVALUATE[:2], "FILE:fifo.jsonl", *EVALUATE[3:], *DELETION], "is a FIFO (named pipe)"),
    ("data-link-loop", [*EVALUATE[:2], "FILE:loop.jsonl", *EVALUATE[3:], *DELETION], "a loop of symbolic links"),
    ("jsonl-not-utf8", [*EVALUATE[:2], "FILE:bad.jsonl", *EVALUATE[3:], *DELETION], "line 2, column 37 (byte 0xff)"),
    ("csv-not-utf8", [*EVALUATE[:2], "FILE:bad.csv", *EVALUATE[3:], *DELETION], "line 3, column 12 (byte 0xff)"),
    # --- models --------------------------------------------------------------------------------------------
    ("model-size-superscript", ["explain", "IMG", "-t", "a", "-m", "offline#size=²x2", "-o", "OUT"], "whole numbers"),
    ("model-dir-missing", ["explain", "IMG", "-t", "a", "-m", "/models/my-clip", "-o", "OUT"], "directory not found"),
    ("model-truncated", ["explain", "IMG", "-t", "a", "-m", "FILE:truncated", "-o", "OUT"], "damaged or truncated"),
    ("model-pickle", ["explain", "IMG", "-t", "a", "-m", "FILE:pickled", "-o", "OUT"], "holds code, not only tensors"),
]


class _Runs:
    def __reduce__(self):  # a pickle that would run code if loaded without weights_only
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("hostile")
    tiny_hf_clip().save_pretrained(d / "model")
    img = d / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(img)
    (d / "data.jsonl").write_text(json.dumps({"image": str(img), "caption": "a photo"}) + "\n")
    files = d / "files"
    files.mkdir()
    os.mkfifo(files / "fifo.png")
    os.mkfifo(files / "fifo.jsonl")
    (files / "loop.png").symlink_to(files / "loop.png")
    (files / "loop.jsonl").symlink_to(files / "loop.jsonl")
    (files / "broken.png").symlink_to(files / "nowhere.png")
    (files / "empty.png").write_bytes(b"")
    (files / "empty.jsonl").write_bytes(b"")
    (files / "blank.jsonl").write_text("\n\n")
    (files / "header.csv").write_text("image,caption\n")
    (files / "dup.csv").write_text(f"image,caption,caption\n{img},a,b\n")
    (files / "inf.jsonl").write_text(
        json.dumps({"image": str(img), "caption": "a"})[:-1] + ', "boxes": [[0, 0, 1e309, 5]]}\n'
    )
    (files / "bad.jsonl").write_bytes(
        b'{"image": "photo.png", "caption": "a"}\n{"image": "photo.png", "caption": "b\xff"}\n'
    )
    (files / "bad.csv").write_bytes(b"image,caption\nphoto.png,ok\nphoto.png,b\xffc\n")
    for name in ("truncated", "pickled"):
        (files / name).mkdir()
        (files / name / "config.json").write_text((d / "model" / "config.json").read_text())
    weights = (d / "model" / "model.safetensors").read_bytes()
    (files / "truncated" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    torch.save({"x": _Runs()}, files / "pickled" / "pytorch_model.bin")
    return d


def _tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} | {p.name for p in root.iterdir()}


@pytest.mark.parametrize("argv,msg", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_one_line_exit_2_nothing_left(env, tmp_path, capsys, argv, msg):
    subs = {"IMG": str(env / "photo.png"), "DATA": str(env / "data.jsonl"), "MODEL": str(env / "model")}
    subs["OUT"] = str(tmp_path / "new" / "deeper" / "out")
    args = [subs.get(a, a) if not a.startswith("FILE:") else str(env / "files" / a[5:]) for a in argv]
    before = _tree(tmp_path)
    rc = main(args)
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("Loading weights", "warning", "note"))]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert msg in lines[0], lines[0]
    assert _tree(tmp_path) == before, "a refused command left files or folders behind"


def test_usage_error_leaves_no_lock_and_no_folder(env, tmp_path, capsys):
    """A click usage error (after --out was parsed) used to leave the folder's lock file."""
    out = tmp_path / "a" / "b"
    assert main([*EVALUATE[:8], str(out), *DELETION, "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_image_named_with_invalid_utf8_is_explained_and_shown(env, tmp_path, capsys):
    """A file name with a byte that is not UTF-8 is explained; the gallery shows U+FFFD for it."""
    img = tmp_path / "img\udcff.png"
    img.write_bytes((env / "photo.png").read_bytes())
    out = tmp_path / "out"
    assert (
        main(["explain", str(img), "-t", "a cat", "-m", str(env / "model"), "--method", "random", "-o", str(out)]) == 0
    )
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "img\ufffd.png" in page
    assert json.loads((out / "explain_run.json").read_text())["images"] == [str(tmp_path / "img\ufffd.png")]


def test_fifo_data_never_blocks(env, tmp_path):
    """The data file is checked before anything opens it: a FIFO with no writer would block forever."""
    from vlexplain.data.pairs import open_pairs
    from vlexplain.errors import InputError

    with pytest.raises(InputError, match="FIFO"):
        open_pairs(env / "files" / "fifo.jsonl")
    os.mkfifo(tmp_path / "coco.json")  # .json is sniffed for COCO: not opened either
    with pytest.raises(InputError, match="FIFO"):
        open_pairs(tmp_path / "coco.json")
