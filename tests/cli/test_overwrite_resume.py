"""A folder that holds a run: one way forward (--resume with the same inputs, or --overwrite), resume
identities that see changed content, claims by the resolved path, unreadable run files named in
one line, and masks read like images."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.support.models import tiny_hf_clip
from vlexplain.cli import main


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    tiny_hf_clip().save_pretrained(d / "model")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    (d / "pairs.jsonl").write_text(
        "".join(json.dumps({"image": f"img{i}.png", "caption": f"a photo {i}"}) + "\n" for i in range(3))
    )
    return d


def _evaluate(env, out, *extra):
    return [
        "evaluate",
        "--data",
        str(env / "pairs.jsonl"),
        "--model",
        str(env / "model"),
        "--methods",
        "random",
        "--metrics",
        "deletion_image",
        "--metric-options",
        '{"deletion_image": {"n_steps": 2}}',
        "--batch-size",
        "1",
        "--shard-size",
        "1",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def _error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


# --- explain --------------------------------------------------------------------------------------------
def test_explain_resume_sees_an_image_replaced_under_the_same_name(env, tmp_path, capsys):
    img = tmp_path / "photo.png"
    img.write_bytes((env / "img0.png").read_bytes())
    out = tmp_path / "out"
    args = ["explain", str(img), "-t", "a cat", "-m", str(env / "model"), "--method", "random", "-o", str(out)]
    assert main(args) == 0
    stamp = (out / "000_photo_a-cat.json").stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0  # unchanged: the pair is read back, not explained again
    assert (out / "000_photo_a-cat.json").stat().st_mtime_ns == stamp
    img.write_bytes((env / "img1.png").read_bytes())  # another picture, the same name (and size)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    line = _error(capsys)
    assert "photo.png changed since the first run" in line and "rerun without --resume" in line
    assert (out / "000_photo_a-cat.json").stat().st_mtime_ns == stamp  # nothing rewritten
    assert main(args) == 0  # the way forward the message names
    assert (out / "000_photo_a-cat.json").stat().st_mtime_ns != stamp


def test_explain_rerun_leaves_no_stale_pair_files(env, tmp_path):
    out = tmp_path / "out"
    base = ["explain", str(env / "img0.png"), "-m", str(env / "model"), "--method", "random", "-o", str(out)]
    assert main([*base, "-t", "a cat", "-t", "a dog"]) == 0
    assert len(list(out.glob("0*.json"))) == 2
    (out / "notes.txt").write_text("mine")
    assert main([*base, "-t", "a bird"]) == 0
    assert sorted(p.name for p in out.glob("0*.json")) == ["000_img0_a-bird.json"]
    assert (out / "notes.txt").read_text() == "mine"  # only the earlier run's files were removed


# --- evaluate: one way forward ----------------------------------------------------------------------------
def test_evaluate_refusals_name_one_way_forward_and_it_works(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_evaluate(env, out)) == 0
    capsys.readouterr()
    assert main(_evaluate(env, out)) == 2
    assert "pass --resume to continue it, --overwrite to replace it" in _error(capsys)
    assert main(_evaluate(env, out, "--resume", "--seed", "3")) == 2
    line = _error(capsys)
    assert "differs in seed" in line and "pass --overwrite to replace the run" in line
    (out / "shards" / "metrics-000009.parquet").write_bytes(b"")  # a stray file --overwrite must remove
    assert main(_evaluate(env, out, "--overwrite", "--seed", "3")) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 3 and sorted(p.name for p in (out / "shards").iterdir()) == [
        f"metrics-{k:06d}.parquet" for k in range(3)
    ]
    assert main(_evaluate(env, out, "--resume", "--seed", "3")) == 0


def test_unreadable_run_files_are_named_in_one_line(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_evaluate(env, out)) == 0
    shard = out / "shards" / "metrics-000001.parquet"
    shard.write_bytes(shard.read_bytes()[:10])  # truncated after it was written
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    line = _error(capsys)
    assert "metrics-000001.parquet" in line and "cannot read" in line and "--resume" in line
    assert main(_evaluate(env, out, "--resume")) == 0  # the shard is computed again
    assert main(["report", str(out)]) == 0
    (out / "config.json").write_text("{not json")
    capsys.readouterr()
    assert main(_evaluate(env, out, "--resume")) == 2
    assert "config.json is unreadable" in _error(capsys)


def test_a_link_to_a_folder_being_written_is_refused(env, tmp_path, capsys):
    from vlexplain.outdir import FolderClaim, claim

    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    assert FolderClaim(link).path == FolderClaim(real).path == tmp_path / ".real.vlexplain-lock"
    held = claim(real)
    try:
        assert main(_evaluate(env, link)) == 2
        assert "is being written by another vlexplain run" in _error(capsys)
    finally:
        held.release()
    assert list(real.iterdir()) == [] and not (tmp_path / ".link.vlexplain-lock").exists()


# --- masks ------------------------------------------------------------------------------------------------
def test_a_mask_bomb_fails_its_pair_not_the_run(env, tmp_path, capsys, monkeypatch):
    """Our own pixel limit applies to masks too, whatever Pillow's global limit is set to."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own guard off: ours still holds
    Image.new("L", (10000, 9000)).save(tmp_path / "bomb.png")  # 90 M pixels, a few kB on disk
    Image.new("L", (48, 48), 255).save(tmp_path / "mask.png")
    data = tmp_path / "pairs.jsonl"
    rows = [
        {"image": str(env / "img0.png"), "caption": "a", "mask": "bomb.png"},
        {"image": str(env / "img1.png"), "caption": "b", "mask": "mask.png"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["evaluate", "--data", str(data), "--model", str(env / "model"), "--methods", "random"]
    assert main([*args, "--metrics", "pointing_game", "--out", str(out), "--no-progress"]) == 0
    problems = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    assert len(problems) == 1 and problems[0]["index"] == 0
    assert "mask is too large (decompression-bomb guard: 10000x9000" in problems[0]["reason"]
    assert "1 of 2 pairs failed" in capsys.readouterr().err


# --- deal train ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_deal_train_continues_only_the_same_run(tmp_path, capsys):
    import torch

    out = tmp_path / "deal"
    base = ["deal", "train", "--data", "shapes:8", "--model", "testbed:shapes", "--batch-size", "2"]
    base += ["--save-every", "1", "--out", str(out), "--no-progress"]
    assert main([*base, "--steps", "1"]) == 0
    capsys.readouterr()
    assert main([*base, "--steps", "2", "--lr", "1e-6"]) == 2
    line = _error(capsys)
    assert "trained with other settings (lr 5e-07 there, 1e-06 here)" in line and "--overwrite" in line
    torch.save({"x": _Runs(), "step": 1}, out / "checkpoint" / "optimizer.pt")  # planted
    assert main([*base, "--steps", "2"]) == 2
    assert "holds code, not only tensors" in _error(capsys)
    assert main([*base, "--steps", "2", "--lr", "1e-6", "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-6
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 2


class _Runs:
    def __reduce__(self):
        return (os.system, ("echo pwned",))
