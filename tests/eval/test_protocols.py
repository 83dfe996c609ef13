"""The published-protocol benchmark kinds: the protocols' statistics by hand, and each protocol end
to end on a replica of its official layout with a hand-computed score.

The end-to-end runs use an ``oracle`` method registered for the test only: its map is the red channel
of the image (openvocab-seg: 1 where the pixel's colour is the queried class's colour), so the
predicted regions, and hence the scores, are known by construction.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vlexplain as vx
from tests.support.models import tiny_hf_clip, tiny_open_clip
from tests.support.replicas import POINTS, seg_mask, square_image, write_gtsegs, write_openimages, write_voc
from vlexplain.attribution.base import _METHODS, Explainer, PairBatch
from vlexplain.cli import main
from vlexplain.errors import InputError, MethodError
from vlexplain.eval.benchmarks import protocol_stats as S

pytest.importorskip("h5py")


# --- statistics by hand ---------------------------------------------------------------------------
def test_average_precision_equals_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 200)
        s = rng.integers(0, 7, 200) / 6.0  # many ties
        assert S.average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_chefer_stats_by_hand() -> None:
    hm = torch.zeros(64, 64)
    hm[16:48, 16:48] = 3.0  # the predicted object: the square
    t = torch.from_numpy(seg_mask()).long()  # the true object: shifted 8 px right
    st = S.chefer_stats(hm, t)
    # correct 768 object + 2816 background of 4096; inter (bg, obj) = 2816, 768; union = 3328, 1280
    assert st[:6].tolist() == [3584, 4096, 2816, 768, 3328, 1280]
    # AP of [1 - r, r] pooled: score 1 on 4096 entries (3584 positive), 0 on 4096 (512 positive)
    assert st[6] == pytest.approx(0.875 * 0.875 + 0.125 * 0.5)
    red = S.chefer_reduce(st[None], np.ones(1))
    assert red["pixel_accuracy"] == pytest.approx(87.5)
    assert red["mIoU"] == pytest.approx(100 * (768 / 1280 + 2816 / 3328) / 2)
    # ignored pixels (-1) count nowhere; a constant map predicts background everywhere (released NaN rule)
    t2 = t.clone()
    t2[:, :8] = -1
    assert S.chefer_stats(hm, t2)[1] == 4096 - 512
    flat = S.chefer_stats(torch.ones(64, 64), t)
    assert flat[3] == 0 and flat[0] == 4096 - 1024


def test_points_and_miou_by_hand() -> None:
    hm = torch.zeros(10, 10)
    hm[:5] = 1.0  # top half in
    pos = np.array([[0.5, 0.1], [0.5, 0.9], [0.2, 0.3]])  # in, out, in
    neg = np.array([[0.5, 0.2], [0.5, 0.8]])  # in, out
    assert S.point_stats(hm, pos, neg).tolist() == [2, 1, 1]
    rows = np.array([[0, 2, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1]], float)  # class 0 twice
    assert S.points_reduce(rows, np.ones(3))["p-mIoU"] == pytest.approx(100 * (3 / 6 + 1) / 2)
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    lab = torch.tensor([[0, 1, 2], [255, 2, 1]])
    st = S.confusion_stats(pred, lab, 4)
    # the ignored pixel (predicted 2) counts nowhere; class 0: inter 1, union 2; class 1: inter 1,
    # union 3; class 2: inter 1, union 2; class 3: empty (left out of the mean)
    assert st.tolist() == [[1, 1, 1, 0], [2, 3, 2, 0]]
    assert S.miou_reduce(st[None], np.ones(1))["mIoU"] == pytest.approx(100 * (1 / 2 + 1 / 3 + 1 / 2) / 3)


def test_bootstrap_resamples_images() -> None:
    rows = np.array([[1.0, 0, 0], [0.0, 1, 0]])
    got = S.bootstrap(rows, np.array([0, 1]), 2, lambda r, w: {"a": 100 * (w * r[:, 0]).sum() / w.sum()}, n_boot=200)
    v, lo, hi = got["a"]
    assert v == 50 and lo == 0 and hi == 100


# --- the protocols end to end -----------------------------------------------------------------------
class Oracle(Explainer):
    """The red channel of the image, or (openvocab-seg) 1 where the pixel has the queried class's colour."""

    name = "oracle"
    summary = "test oracle"
    needs_gradients = False
    sides = ("image",)
    colours: dict[int, tuple[float, ...]] = {}  # query row of ``queries`` -> RGB
    queries: torch.Tensor | None = None

    def attribute_image(self, batch: PairBatch) -> torch.Tensor:
        rgb = self.model.denormalize(batch.pixels)  # (B, 3, H, W) in [0, 1]
        if self.queries is None:
            return rgb[:, 0]
        q = (batch.text_emb @ self.queries.T.to(batch.text_emb)).argmax(-1)
        out = torch.zeros(rgb.shape[0], *rgb.shape[-2:])
        for b, j in enumerate(q.tolist()):
            if j in self.colours:
                c = torch.tensor(self.colours[j]).view(3, 1, 1)
                out[b] = ((rgb[b] - c).abs().sum(0) < 0.5).float()
        return out


@pytest.fixture
def oracle():
    _METHODS["oracle"] = Oracle
    Oracle.queries, Oracle.colours = None, {}
    try:
        yield Oracle
    finally:
        del _METHODS["oracle"]


def test_imagenet_seg_protocol(tmp_path, oracle) -> None:
    from vlexplain.eval.benchmarks.imagenet_seg import run_imagenet_seg

    write_gtsegs(tmp_path / "gtsegs_ijcv.mat", [square_image()] * 2, [seg_mask(), seg_mask()])
    model = vx.load_model(tiny_open_clip())
    res = run_imagenet_seg(tmp_path, tmp_path / "run", model=model, methods=["oracle"], progress=False)
    acc, miou, ap = (res.values["oracle"][k] for k in ("pixel_accuracy", "mIoU", "mAP"))
    assert acc[0] == pytest.approx(87.5) and ap[0] == pytest.approx(100 * (0.875**2 + 0.0625))
    assert miou[0] == pytest.approx(100 * (768 / 1280 + 2816 / 3328) / 2)
    assert miou[1] == pytest.approx(miou[0]) and miou[2] == pytest.approx(miou[0])  # two equal images
    assert set(res.values) == {"oracle", "random", "center"}
    assert "Chefer" in res.markdown and "Differences" in res.markdown
    # resumable: a finished run resumed recomputes nothing and gives the same values
    again = run_imagenet_seg(tmp_path, tmp_path / "run", model=model, methods=["oracle"], progress=False, resume=True)
    assert again.values == res.values
    with pytest.raises(InputError, match="holds a protocol run; pass --resume .* --overwrite to replace it"):
        run_imagenet_seg(tmp_path, tmp_path / "run", model=model, methods=["oracle"], progress=False)
    # --overwrite replaces the run (its files only: a user's file in the folder stays)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "run" / "shards" / "stats-000099.npz").write_bytes(b"stale")
    fresh = run_imagenet_seg(
        tmp_path, tmp_path / "run", model=model, methods=["oracle"], progress=False, overwrite=True
    )
    assert fresh.values == res.values and (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "run" / "shards" / "stats-000099.npz").exists()
    with pytest.raises(InputError, match="give one of them"):
        run_imagenet_seg(tmp_path, tmp_path / "run", model=model, methods=["oracle"], resume=True, overwrite=True)
    with pytest.raises(InputError, match="other settings"):
        run_imagenet_seg(tmp_path, tmp_path / "run", model=model, methods=["oracle"], resume=True, seed=3)


def test_openimages_points_protocol(tmp_path, oracle) -> None:
    from vlexplain.eval.benchmarks.openimages_points import run_openimages_points

    write_openimages(tmp_path, POINTS, {"img1": square_image(), "img2": square_image()})
    model = vx.load_model(tiny_open_clip())
    res = run_openimages_points(tmp_path, tmp_path / "run", model=model, methods=["oracle"], progress=False)
    # Cat: tp 2, fp 1, fn 1 -> 0.5; Dog: tp 1 -> 1
    assert res.values["oracle"]["p-mIoU"][0] == pytest.approx(75.0)
    assert "1 labelled images not on disk" in res.markdown


def test_openvocab_seg_protocol(tmp_path, oracle) -> None:
    from vlexplain.data.semseg_classes import VOC21
    from vlexplain.eval.benchmarks.openvocab_seg import query_embeddings, run_openvocab_seg

    red, green = (255, 0, 0), (0, 255, 0)
    img1 = np.zeros((64, 96, 3), np.uint8)
    img1[:, :48], img1[:, 48:] = red, green
    lab1 = np.full((64, 96), 2, np.uint8)
    lab1[:, :40] = 1
    lab1[0] = 255  # a border row, ignored
    img2 = np.zeros((64, 64, 3), np.uint8)
    img2[:] = red
    lab2 = np.ones((64, 64), np.uint8)
    write_voc(tmp_path, [lab1, lab2], [img1, img2])
    model = vx.load_model(tiny_open_clip())
    te, owner = query_embeddings(model, VOC21, "single")
    Oracle.queries = te
    first = {int(c): j for j, c in reversed(list(enumerate(owner.tolist())))}
    Oracle.colours = {first[1]: (1.0, 0.0, 0.0), first[2]: (0.0, 1.0, 0.0)}  # aeroplane red, bicycle green
    res = run_openvocab_seg(
        tmp_path, tmp_path / "run", model=model, layout="voc", methods=["oracle"], short_side=64,
        templates="single", progress=False,
    )  # fmt: skip
    # class 1: pred 48x63 + 64x64, label 40x63 + 64x64, inter = label; class 2: pred 48x63, label 56x63
    iou1 = (40 * 63 + 4096) / (48 * 63 + 4096)
    iou2 = (48 * 63) / (56 * 63)
    assert res.values["oracle"]["mIoU"][0] == pytest.approx(100 * (iou1 + iou2) / 2)
    assert "sliding windows of 64 px at stride 32" in res.markdown and "PAMR" in res.markdown


def test_predict_by_hand() -> None:
    from vlexplain.eval.benchmarks.openvocab_seg import _windows, predict

    logits = torch.tensor([[[0.0, 0.3]], [[0.2, 0.0]], [[0.25, 0.0]]])  # 3 queries, 1x2 pixels
    owner = torch.tensor([0, 1, 1])  # class 1 has two names
    assert predict(logits, owner, 2, 40.0, 0.0).tolist() == [[1, 0]]
    assert predict(logits, owner, 2, 1.0, 0.9).tolist() == [[0, 0]]  # nothing confident: class 0
    assert _windows(64, 96, 64, 32) == [(0, 0), (0, 32)]
    assert _windows(100, 64, 64, 32) == [(0, 0), (32, 0), (36, 0)]  # the last window flush with the border


def test_method_the_tower_cannot_run(tmp_path, siglip) -> None:
    from vlexplain.eval.benchmarks.imagenet_seg import run_imagenet_seg

    write_gtsegs(tmp_path / "gtsegs_ijcv.mat", [square_image()], [seg_mask()])
    with pytest.raises(MethodError, match="gem"):
        run_imagenet_seg(tmp_path, tmp_path / "run", model=siglip, methods=["gem"], progress=False)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("protocols-cli")
    tiny_hf_clip().save_pretrained(d / "model")
    write_voc(d / "voc", [np.array([[0, 1], [2, 30]], np.uint8)], [np.zeros((2, 2, 3), np.uint8)])
    (d / "bad.mat").write_text("not hdf5")
    write_gtsegs(d / "gtsegs_ijcv.mat", [square_image()], [seg_mask()])
    return d


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["imagenet-seg", "--data", "MISSING.mat"], "not found"),
        (["imagenet-seg", "--data", "ENV/bad.mat"], "HDF5"),
        (["openimages-points", "--data", "ENV"], "point-label CSV"),
        (["openvocab-seg", "--data", "ENV/voc", "--layout", "voc"], "label id 30 but the class list has 21"),
        (["openvocab-seg", "--data", "ENV/voc", "--layout", "mars"], "unknown layout"),
        (["openimages-points", "--data", "ENV", "--metrics", "pointing_game"], "--metrics / --sanity does not apply"),
        (["imagenet-seg", "--data", "ENV/gtsegs_ijcv.mat", "--methods", "gem", "--model", "offline"], "gem"),
    ],
)
def test_cli_bad_input_one_line_exit_2(cli_env, tmp_path, capsys, argv, msg) -> None:
    out = tmp_path / "out"
    args = [a.replace("ENV", str(cli_env)).replace("MISSING", str(tmp_path / "missing")) for a in argv]
    model = [] if "--model" in args else ["--model", str(cli_env / "model")]
    rc = main(["benchmark", *args, *model, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("Loading weights", "warning"))]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["imagenet-seg"], "Missing option '--data'"),
        (["openvocab-seg", "--data", "ENV/voc"], "Missing option '--layout'"),
        (["shapes", "--layout", "voc"], "No such option: --layout"),  # another kind's option
    ],
)
def test_cli_missing_or_foreign_option_exit_2(cli_env, tmp_path, capsys, argv, msg) -> None:
    out = tmp_path / "out"
    args = [a.replace("ENV", str(cli_env)) for a in argv]
    rc = main(["benchmark", *args, "--model", str(cli_env / "model"), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err, err
    assert not out.exists()


def test_cli_lists_the_kinds_and_runs(cli_env, tmp_path, capsys, oracle) -> None:
    assert main(["benchmark", "--help"]) == 0
    helptext = capsys.readouterr().out
    for kind in ("imagenet-seg", "openimages-points", "openvocab-seg"):
        assert kind in helptext
    write_openimages(tmp_path / "oi", POINTS, {"img1": square_image(), "img2": square_image()})
    argv = ["benchmark", "openimages-points", "--data", str(tmp_path / "oi"), "--model", str(cli_env / "model")]
    rc = main([*argv, "--methods", "oracle", "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["values"]["oracle"]["p-mIoU"][0] == pytest.approx(75.0)
    assert "| oracle |" in capsys.readouterr().out


def test_partial_resume_equals_one_run(tmp_path) -> None:
    """A run that lost a shard (killed mid-way) resumes to the same values as an uninterrupted one."""
    from vlexplain.eval.benchmarks.openimages_points import run_openimages_points

    write_openimages(tmp_path / "oi", POINTS, {"img1": square_image(), "img2": square_image()})
    model = vx.load_model(tiny_open_clip())
    kw = dict(model=model, methods=["sclip"], progress=False, shard_size=1)
    full = run_openimages_points(tmp_path / "oi", tmp_path / "run", **kw)
    shard = tmp_path / "run" / "shards" / "stats-000001.npz"
    before = shard.read_bytes()
    shard.unlink()
    again = run_openimages_points(tmp_path / "oi", tmp_path / "run", resume=True, **kw)
    assert again.values == full.values and shard.read_bytes() == before


def test_two_processes_equal_one(cli_env, tmp_path) -> None:
    """Under accelerate launch (two CPU processes) the shards are split and the values are the same."""
    import subprocess

    from tests.support.cli import two_process_cli

    ids = [f"im{i:02d}" for i in range(18)]  # two shards of 16: one per process
    rows = [(k, x, y, lab, yn) for k in ids for _, x, y, lab, yn in POINTS[:4]]
    write_openimages(tmp_path / "oi", rows, {k: square_image(lo=2 * i, hi=40 + i) for i, k in enumerate(ids)})
    common = ["--data", str(tmp_path / "oi"), "--model", str(cli_env / "model"), "--methods", "sclip"]
    assert main(["benchmark", "openimages-points", *common, "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    argv = two_process_cli("benchmark", "openimages-points", *common, "--out", str(tmp_path / "two"), "--no-progress")
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())["values"]
    two = json.loads((tmp_path / "two" / "results.json").read_text())["values"]
    assert one == two
    assert len(list((tmp_path / "two" / "shards").glob("stats-*.npz"))) == 2


@pytest.mark.parametrize(
    "kind,fn,flags,expected",
    [
        ("imagenet-seg", "run_imagenet_seg", ["--clamp-negative"], {"clamp_negative": True}),
        ("openimages-points", "run_openimages_points", ["--point-threshold", "0.25"], {"threshold": 0.25}),
        (
            "openvocab-seg",
            "run_openvocab_seg",
            ["--layout", "context", "--no-background", "--no-slide", "--stride", "7", "--templates", "single"],
            {"layout": "context", "background": False, "slide": False, "stride": 7, "templates": "single"},
        ),
    ],
)
def test_cli_options_reach_the_protocol(cli_env, tmp_path, capsys, monkeypatch, kind, fn, flags, expected) -> None:
    """Each kind's own options (and the shared ones) reach its protocol under the protocol's names."""
    import importlib
    from pathlib import Path

    from vlexplain.eval.benchmarks.protocol_run import ProtocolResult

    module = importlib.import_module(f"vlexplain.eval.benchmarks.{kind.replace('-', '_')}")
    calls = []

    def fake(data, out, **kw):
        calls.append((data, out, kw))
        return ProtocolResult(Path(out), Path(out) / "results.json", Path(out) / "leaderboard.md", "| fake |", {})

    monkeypatch.setattr(module, fn, fake)
    out = tmp_path / "out"
    argv = ["benchmark", kind, "--data", str(tmp_path), *flags, "--model", "M", "--n", "3", "--seed", "2"]
    assert main([*argv, "--methods", "sclip", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "| fake |" in capsys.readouterr().out
    ((data, got_out, kw),) = calls
    assert data == tmp_path and got_out == out
    assert {k: kw[k] for k in expected} == expected
    shared = {"model": "M", "n": 3, "seed": 2, "methods": ["sclip"], "resume": True, "progress": False}
    assert {k: kw[k] for k in shared} == shared
