"""User paths found by trying the commands as a new user would: tiny data, one line per problem."""

from __future__ import annotations

import io
import tarfile

import numpy as np
from PIL import Image

from vlexplain.data.pairs import open_pairs


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _shard(path, samples) -> None:
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


def test_webdataset_sample_without_caption_says_so(tmp_path):
    """A shard sample with no txt member and no caption field is not reported as an 'empty caption'."""
    shard = tmp_path / "00000.tar"
    _shard(
        shard,
        [
            ("k0", {"png": _png(), "txt": b"a dark square"}),
            ("k1", {"png": _png()}),
            ("k2", {"png": _png(), "txt": b"  "}),
        ],
    )
    ds = open_pairs(str(shard))
    pairs = [ds.load(r) for r in ds.rows()]
    assert pairs[0].error is None
    assert pairs[1].error is not None and "k1: no caption in this sample (members: png;" in pairs[1].error
    assert ".txt member" in pairs[1].error
    assert pairs[2].error is not None and pairs[2].error.endswith("k2: empty caption")  # present but blank


def test_concepts_generate_help_has_no_broken_lines():
    """Each sentence of the command's description is one line of --help on a wide terminal."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "COLUMNS": "200"}
    res = subprocess.run(
        [str(Path(sys.executable).parent / "vlexplain"), "concepts", "generate", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    intro = res.stdout.split("Options")[0]
    lines = [ln.strip() for ln in intro.splitlines() if ln.strip() and not ln.strip().startswith("Usage")]
    assert lines and all(ln.endswith(".") for ln in lines if not ln.startswith("╭")), lines


def test_evaluate_on_class_folders_points_to_deal(tmp_path):
    """Class folders given to a captions reader: the refusal names the commands that read them."""
    import pytest

    from vlexplain.errors import InputError

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "0.png").write_bytes(_png())
    with pytest.raises(InputError, match=r"class folders.*vlexplain deal train") as e:
        open_pairs(str(tmp_path)).rows().__next__()
    assert "\n" not in str(e.value)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(_png())
    with pytest.raises(InputError) as e:
        open_pairs(str(tmp_path / "flat")).rows().__next__()
    assert "class folders" not in str(e.value)  # images without captions: the usual message
