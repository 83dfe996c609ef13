"""Every command maps the same classes of user error to one line on stderr and exit code 2.

(An unknown model spec is the one message that goes on after its first line: with the list of
accepted spec forms.)

One table: (command line, what the message must say). Placeholders: IMG (an image), DATA (a valid
pairs file), FILE (an existing file), MODEL (a tiny model folder), OUT (a fresh output folder),
RUN (a folder that is not a run), PROC (a place nothing can be written: /proc).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.support.models import tiny_hf_clip
from vlexplain.cli import main

NO_WRITE = "/proc/vlexplain-test-out"

#: (id, argv, expected substring of the message)
CASES = [
    # --- an input that is not there -------------------------------------------------------------
    ("explain-missing-image", ["explain", "MISSING.png", "-t", "a cat", "-m", "MODEL", "-o", "OUT"], "image not found"),
    ("compare-missing-image", ["compare", "MISSING.png", "-t", "a cat", "-m", "MODEL", "-o", "OUT"], "image not found"),
    (
        "evaluate-missing-data",
        [
            "evaluate",
            "--data",
            "MISSING.jsonl",
            "--model",
            "MODEL",
            "--methods",
            "random",
            "--metrics",
            "deletion_image",
            "--out",
            "OUT",
        ],
        "not found",
    ),
    ("report-not-a-run", ["report", "RUN"], "is not an evaluation run"),
    (
        "deal-train-missing-data",
        ["deal", "train", "--data", "MISSING", "--out", "OUT", "--model", "MODEL"],
        "not found",
    ),
    (
        "deal-evaluate-missing-data",
        ["deal", "evaluate", "--data", "MISSING", "--out", "OUT", "--model", "MODEL"],
        "not found",
    ),
    (
        "concepts-missing-classes",
        [
            "concepts",
            "generate",
            "--classes",
            "MISSING.txt",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--out",
            "OUT/c.json",
        ],
        "not found",
    ),
    # --- --out names an existing file (a folder is expected) ---------------------------------------
    ("explain-out-file", ["explain", "IMG", "-t", "a cat", "-m", "MODEL", "-o", "FILE"], "is an existing file"),
    ("demo-out-file", ["demo", "-o", "FILE"], "is an existing file"),
    ("compare-out-file", ["compare", "IMG", "-t", "a cat", "-m", "MODEL", "-o", "FILE"], "is an existing file"),
    (
        "evaluate-out-file",
        [
            "evaluate",
            "--data",
            "DATA",
            "--model",
            "MODEL",
            "--methods",
            "random",
            "--metrics",
            "deletion_image",
            "--out",
            "FILE",
        ],
        "is an existing file",
    ),
    ("benchmark-out-file", ["benchmark", "shapes", "--n", "2", "--out", "FILE"], "is an existing file"),
    ("deal-train-out-file", ["deal", "train", "--data", "shapes:4", "--out", "FILE"], "is an existing file"),
    ("deal-evaluate-out-file", ["deal", "evaluate", "--data", "shapes:4", "--out", "FILE"], "is an existing file"),
    ("testbed-out-file", ["testbed", "train-shapes", "--out", "FILE"], "is an existing file"),
    ("report-out-folder", ["report", "RUN", "--out", "OUT_EXISTING"], "is a folder; give a file name"),
    (
        "concepts-out-folder",
        [
            "concepts",
            "generate",
            "--classes",
            "FILE",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--out",
            "OUT_EXISTING",
        ],
        "is a folder; give a file name",
    ),
    # --- --out where nothing can be written ------------------------------------------------------
    ("explain-out-unwritable", ["explain", "IMG", "-t", "a cat", "-m", "MODEL", "-o", "PROC"], "cannot write in /proc"),
    (
        "explain-out-under-file",
        ["explain", "IMG", "-t", "a cat", "-m", "MODEL", "-o", "FILE/sub"],
        "is a file, not a folder",
    ),
    ("compare-out-unwritable", ["compare", "IMG", "-t", "a cat", "-m", "MODEL", "-o", "PROC"], "cannot write in /proc"),
    (
        "evaluate-out-unwritable",
        [
            "evaluate",
            "--data",
            "DATA",
            "--model",
            "MODEL",
            "--methods",
            "random",
            "--metrics",
            "deletion_image",
            "--out",
            "PROC",
        ],
        "cannot write in /proc",
    ),
    ("benchmark-out-unwritable", ["benchmark", "shapes", "--n", "2", "--out", "PROC"], "cannot write in /proc"),
    ("deal-train-out-unwritable", ["deal", "train", "--data", "shapes:4", "--out", "PROC"], "cannot write in /proc"),
    ("audit-layers-missing-data", ["audit", "layers", "--model", "MODEL", "--data", "MISSING.jsonl"], "not found"),
    ("audit-heads-missing-data", ["audit", "heads", "--model", "MODEL", "--data", "MISSING.jsonl"], "not found"),
    (
        "repair-missing-data",
        ["repair", "--model", "MODEL", "--method", "control", "--data", "MISSING.jsonl", "--out", "OUT"],
        "not found",
    ),
    (
        "repair-out-unwritable",
        ["repair", "--model", "MODEL", "--method", "control", "--data", "spurious:2", "--out", "PROC"],
        "cannot write in /proc",
    ),
    ("testbed-out-unwritable", ["testbed", "train-shapes", "--out", "PROC"], "cannot write in /proc"),
    ("report-out-unwritable", ["report", "RUN", "--out", "PROC/r.html"], "cannot write in /proc"),
    # --- --out held by another run ------------------------------------------------------------------
    ("explain-out-busy", ["explain", "IMG", "-t", "a cat", "-m", "MODEL", "-o", "BUSY"], "being written by another"),
    (
        "evaluate-out-busy",
        [
            "evaluate",
            "--data",
            "DATA",
            "--model",
            "MODEL",
            "--methods",
            "random",
            "--metrics",
            "deletion_image",
            "--out",
            "BUSY",
        ],
        "being written by another",
    ),
    # --- a device that is not one, or not here ---------------------------------------------------
    (
        "explain-bad-device",
        ["explain", "IMG", "-t", "a cat", "-m", "MODEL", "-o", "OUT", "--device", "nonsense"],
        "not a device name",
    ),
    (
        "compare-bad-device",
        ["compare", "IMG", "-t", "a cat", "-m", "MODEL", "-o", "OUT", "--device", "gpu0"],
        "not a device name",
    ),
    ("demo-bad-device", ["demo", "-o", "OUT", "--device", "nonsense"], "not a device name"),
    (
        "evaluate-bad-device",
        [
            "evaluate",
            "--data",
            "DATA",
            "--model",
            "MODEL",
            "--methods",
            "random",
            "--metrics",
            "deletion_image",
            "--out",
            "OUT",
            "--device",
            "nonsense",
        ],
        "not a device name",
    ),
    (
        "evaluate-absent-gpu",
        [
            "evaluate",
            "--data",
            "DATA",
            "--model",
            "MODEL",
            "--methods",
            "random",
            "--metrics",
            "deletion_image",
            "--out",
            "OUT",
            "--device",
            "cuda:7",
        ],
        "CUDA",
    ),
    (
        "deal-train-bad-device",
        ["deal", "train", "--data", "shapes:4", "--out", "OUT", "--model", "MODEL", "--device", "nonsense"],
        "not a device name",
    ),
    (
        "deal-evaluate-bad-device",
        ["deal", "evaluate", "--data", "shapes:4", "--out", "OUT", "--model", "MODEL", "--device", "nonsense"],
        "not a device name",
    ),
    # --- a model spec that is not one --------------------------------------------------------------
    ("explain-bad-model", ["explain", "IMG", "-t", "a cat", "-m", "no-such-model", "-o", "OUT"], "unknown model"),
    ("compare-bad-model", ["compare", "IMG", "-t", "a cat", "-m", "no-such-model", "-o", "OUT"], "unknown model"),
    (
        "evaluate-bad-model",
        [
            "evaluate",
            "--data",
            "DATA",
            "--model",
            "no-such-model",
            "--methods",
            "random",
            "--metrics",
            "deletion_image",
            "--out",
            "OUT",
        ],
        "unknown model",
    ),
    (
        "deal-train-bad-model",
        ["deal", "train", "--data", "shapes:4", "--out", "OUT", "--model", "no-such-model"],
        "unknown model",
    ),
    ("serve-bad-model", ["serve", "--model", "no-such-model", "--port", "0"], "unknown model"),
    # --- texts without a visible character ------------------------------------------------------------
    ("explain-nul-text", ["explain", "IMG", "-t", "\x00\x00", "-m", "MODEL", "-o", "OUT"], "visible character"),
    (
        "compare-control-text",
        ["compare", "IMG", "-t", "\x01\u200b", "-m", "MODEL", "-o", "OUT", "--methods", "center"],
        "visible character",
    ),
    # --- serve's startup --------------------------------------------------------------------------------
    ("serve-model-not-allowed", ["serve", "--models", "offline", "--model", "testbed:shapes"], "is not among --models"),
    ("serve-empty-models", ["serve", "--models", " , "], "needs at least one model"),
    (
        "serve-bad-upload-limit",
        ["serve", "--model", "MODEL", "--max-upload-mb", "0", "--port", "0"],
        "must be positive",
    ),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-errors")
    tiny_hf_clip().save_pretrained(d / "model")
    img = d / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(img)
    (d / "data.jsonl").write_text(json.dumps({"image": str(img), "caption": "a photo"}) + "\n")
    (d / "file.txt").write_text("a cat\n")
    (d / "not-a-run").mkdir()
    (d / "existing").mkdir()
    return d


@pytest.mark.parametrize("argv,msg", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_errors_one_line_exit_2(env, tmp_path, capsys, argv, msg):
    from vlexplain.outdir import claim

    out = tmp_path / "out"
    subs = {
        "IMG": str(env / "photo.png"),
        "DATA": str(env / "data.jsonl"),
        "FILE": str(env / "file.txt"),
        "MODEL": str(env / "model"),
        "OUT": str(out),
        "RUN": str(env / "not-a-run"),
        "OUT_EXISTING": str(env / "existing"),
        "PROC": NO_WRITE,
        "BUSY": str(tmp_path / "busy"),
        "MISSING": str(tmp_path / "missing"),
    }
    args = []
    for a in argv:
        for k in sorted(subs, key=len, reverse=True):
            if a == k or a.startswith(k + "/") or a.startswith(k + "."):
                a = subs[k] + a[len(k) :]
                break
        args.append(a)
    held = claim(tmp_path / "busy") if "BUSY" in argv else None
    try:
        rc = main(args)
    finally:
        if held is not None:
            held.release()
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("Loading weights", "warning"))]
    assert rc == 2, err
    if "unknown model" in msg:  # the one exception: the message goes on with the accepted spec forms
        assert lines[1] == "accepted model specs:", err
        lines = lines[:1]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert msg in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())  # nothing written
