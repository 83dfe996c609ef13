"""The fingerprint `evaluate --resume` checks: cheap for bulk data (no shard or Parquet file is read to
fingerprint it), content-exact for small text files, and covering every file a run reads (brace patterns
of webdataset shards, COCO's --instances file and --images folder)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from vlexplain.eval import identity


def _png(value, w=8, h=6):
    b = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(b, "PNG")
    return b.getvalue()


def _shard(path, samples):
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


def _shards(d, grey=0):
    d.mkdir(exist_ok=True)
    for s in range(2):
        _shard(
            d / f"{s:05d}.tar",
            [
                (f"{2 * s + i:09d}", {"png": _png(10 * (2 * s + i) + grey), "txt": f"pair {2 * s + i}".encode()})
                for i in range(2)
            ],
        )


KW = dict(batch_size=2, shard_size=2, progress=False)


# --- the cost: what is read to fingerprint a file -------------------------------------------------------
def test_small_text_files_are_hashed_bulk_and_large_files_are_stat_only(tmp_path, monkeypatch):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"image": "a.png", "caption": "a red square"}\n')
    st = pairs.stat()
    before = identity.file_fingerprint(pairs)
    assert before == hashlib.sha256(pairs.read_bytes()).hexdigest()  # as runs recorded it so far
    # an edit that keeps the size and the modification time is still noticed (content hash)
    pairs.write_text('{"image": "a.png", "caption": "a red circle"}\n')
    os.utime(pairs, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert pairs.stat().st_size == st.st_size and identity.file_fingerprint(pairs) != before

    _shards(tmp_path / "shards")
    shard = tmp_path / "shards" / "00000.tar"
    hashed = []
    real = identity._sha_file
    monkeypatch.setattr(identity, "_sha_file", lambda p: hashed.append(p) or real(p))
    st = shard.stat()
    assert identity.file_fingerprint(shard) == f"size={st.st_size} mtime={st.st_mtime_ns}"
    for suffix in (".parquet", ".arrow", ".tar.gz"):  # bulk by kind, whatever the size
        f = tmp_path / f"data{suffix}"
        f.write_bytes(b"x")
        assert identity.file_fingerprint(f).startswith("size=1 mtime=")
    assert hashed == []  # no bulk file was read
    monkeypatch.setattr(identity, "HASH_LIMIT", 10)  # a text file over the limit: stat only
    assert identity.file_fingerprint(pairs).startswith(f"size={pairs.stat().st_size} mtime=")
    assert hashed == []
    # a whole folder of shards: the file names, each with its size and modification time, nothing read
    digest = identity.data_files_digest(tmp_path / "shards")
    assert sorted(digest) == ["00000.tar", "00001.tar"] and all(v.startswith("size=") for v in digest.values())
    assert hashed == []


def test_brace_pattern_names_every_shard(tmp_path):
    _shards(tmp_path / "shards")
    digest = identity.data_files_digest(str(tmp_path / "shards" / "{00000..00001}.tar"))
    assert digest == identity.data_files_digest(tmp_path / "shards")  # the same names as the folder
    assert sorted(identity.data_files_digest(str(tmp_path / "shards" / "{00001..00001}.tar"))) == ["00001.tar"]


# --- resume refuses what changed ---------------------------------------------------------------------
def test_resume_of_a_brace_pattern_refuses_a_rewritten_shard(tmp_path, hf_clip):
    from vlexplain.errors import InputError
    from vlexplain.eval.runner import evaluate

    _shards(tmp_path / "shards")
    pattern = str(tmp_path / "shards" / "{00000..00001}.tar")
    run = evaluate(pattern, hf_clip, ["random"], ["confidence_image"], tmp_path / "run", **KW)
    files = json.loads((run / "config.json").read_text())["data_identity"]["files"]
    assert sorted(files) == ["00000.tar", "00001.tar"]
    (run / "shards" / "metrics-000001.parquet").unlink()  # stopped after its first shard
    evaluate(pattern, hf_clip, ["random"], ["confidence_image"], run, resume=True, **KW)  # unchanged: resumes
    (run / "shards" / "metrics-000001.parquet").unlink()
    # the same keys and captions, other image bytes in the first shard: only the shard file tells
    st = (tmp_path / "shards" / "00000.tar").stat()
    _shards(tmp_path / "shards", grey=1)
    os.utime(tmp_path / "shards" / "00000.tar", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(
        InputError,
        match=r"cannot resume .*: the data files 00000.tar, 00001.tar changed; "
        r"start a new run",
    ):
        evaluate(pattern, hf_clip, ["random"], ["confidence_image"], run, resume=True, **KW)


def _coco(root):
    from PIL import Image as I

    (root / "val2017").mkdir()
    for i in (1, 2):
        I.new("RGB", (10, 8), (10 * i, 0, 0)).save(root / "val2017" / f"{i:012d}.jpg")
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 10, "height": 8} for i in (1, 2)]
    caps = {
        "images": images,
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "Two dogs."},
            {"id": 11, "image_id": 2, "caption": "A cat on a sofa"},
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(caps))
    return root / "annotations" / "captions_val2017.json"


def _instances(path, polygon):
    inst = {
        "images": [],
        "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 18, "bbox": [0, 0, 4, 4], "segmentation": [polygon], "iscrowd": 0}
        ],
    }
    path.write_text(json.dumps(inst))
    return path


def test_resume_of_coco_refuses_changed_instances_and_images_with_exit_2(tmp_path, capsys):
    from tests.support.models import tiny_hf_clip
    from vlexplain.cli import main

    tiny_hf_clip().save_pretrained(tmp_path / "model")
    caps = _coco(tmp_path)
    inst = _instances(tmp_path / "annotations" / "instances_val2017.json", [1, 1, 4, 1, 4, 3, 1, 3])
    run = tmp_path / "run"
    args = [
        "evaluate",
        "--data",
        str(caps),
        "--instances",
        str(inst),
        "--coco-ground-truth",
        "masks",
        "--model",
        str(tmp_path / "model"),
        "--methods",
        "random",
        "--metrics",
        "confidence_image",
        "--batch-size",
        "1",
        "--shard-size",
        "1",
        "--no-progress",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    assert main([*args, "--resume"]) == 0  # unchanged: resumes
    capsys.readouterr()
    # another segmentation polygon of the same box, the same size: the masks are built when a pair
    # loads, so only the instances file itself can tell
    st = inst.stat()
    _instances(inst, [1, 1, 3, 1, 3, 3, 1, 3])
    assert inst.stat().st_size == st.st_size
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "cannot resume" in line]  # one line, after what was read
    assert len(said) == 1 and "the data file instances_val2017.json (--instances) changed; start a new run" in said[0]
    _instances(inst, [1, 1, 4, 1, 4, 3, 1, 3])
    assert main([*args, "--resume"]) == 0  # restored: resumes
    capsys.readouterr()
    # an image of the --images folder rewritten
    Image.new("RGB", (10, 8), (99, 0, 0)).save(tmp_path / "val2017" / "000000000002.jpg")
    os.utime(tmp_path / "val2017" / "000000000002.jpg", ns=(1, 1))
    assert main([*args, "--resume"]) == 2
    assert "the image files (size or modification time) of samples 1-1 changed" in capsys.readouterr().err
    # another --images folder (a copy): the configuration says which data field differs
    shutil.copytree(tmp_path / "val2017", tmp_path / "copy")
    assert main([*args, "--images", str(tmp_path / "copy"), "--resume"]) == 2
    assert "the configuration differs in data (images_dir)" in capsys.readouterr().err


def test_a_fingerprint_recorded_under_the_content_rule_is_not_compared_with_a_stat(tmp_path):
    _shards(tmp_path / "shards")
    new = {"files": identity.data_files_digest(tmp_path / "shards"), "rows": ["a"], "images": ["b"]}
    old = {**new, "files": {k: identity._sha_file(tmp_path / "shards" / k) for k in new["files"]}}  # the rule before
    assert identity.describe_change(new, new, 2, 2) is None
    assert identity.describe_change(old, new, 2, 2) == (
        "the run fingerprinted 00000.tar, 00001.tar by content (the rule of an older vlexplain), so a resume cannot "
        "be checked"
    )
