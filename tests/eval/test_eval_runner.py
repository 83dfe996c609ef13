"""Evaluation runs: shards, error rows, ground truth, resume after SIGKILL, two processes, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlexplain as vx
from tests.support.cli import two_process_cli
from vlexplain.errors import InputError
from vlexplain.eval import evaluate, load_maps, load_results, report
from vlexplain.eval.report import bootstrap_ci
from vlexplain.eval.runner import pair_seed, write_manifest

M2IB = {"m2ib": {"steps": 2, "num_samples": 2}}
METRIC_OPTS = {"deletion_image": {"n_steps": 4}, "insertion_text": {"n_steps": 2}}
METRICS = ["deletion_image", "insertion_text", "energy_pointing_game"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run faster on one thread (no OpenMP hand-offs on a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _write_data(folder: Path, n: int, bad: bool = True) -> Path:
    """n pairs of random 64x80 images (every third with a box); optionally a missing and a corrupt image."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
        rec = {"image": f"img/{i}.png", "caption": f"a photo of thing {i}"}
        if i % 3 == 0:
            rec["boxes"] = [[10, 8, 30, 20]]
        lines.append(rec)
    if bad:
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
        lines.insert(2, {"image": "img/missing.png", "caption": "gone"})
        lines.insert(5, {"image": "broken.jpg", "caption": "corrupt"})
    f = folder / "pairs.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return f


def _frame(run_dir: Path):
    """The run's rows without the wall-clock column (the only one that may differ between runs)."""
    df = load_results(run_dir).to_pandas()
    return df.drop(columns=["seconds"])


def _assert_same(a, b) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for c in a.columns:
        for x, y in zip(a[c], b[c]):
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                assert np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True), c
            elif isinstance(x, float) and isinstance(y, float) and np.isnan(x):
                assert np.isnan(y), c
            else:
                assert x == y, (c, x, y)


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, hf_clip):
    d = tmp_path_factory.mktemp("eval")
    data = _write_data(d, 7)
    out = evaluate(
        data,
        hf_clip,
        ["m2ib", "random"],
        METRICS,
        d / "run",
        batch_size=2,
        shard_size=4,
        save_maps=True,
        method_options=M2IB,
        metric_options=METRIC_OPTS,
        progress=False,
    )
    return d, data, out


def test_rows_errors_and_files(run_a, hf_clip):
    d, data, out = run_a
    df = load_results(out).to_pandas()
    assert len(df) == 9 * 2
    assert df["index"].tolist() == [i for i in range(9) for _ in range(2)]
    assert df["method"].tolist() == ["m2ib", "random"] * 9
    err = df[df["error"].notna()]
    assert sorted(set(err["index"])) == [2, 5]
    assert all("pairs.jsonl:3" in e and "image not found" in e for e in err[err["index"] == 2]["error"])
    assert all("pairs.jsonl:6" in e for e in err[err["index"] == 5]["error"])
    assert err["deletion_image.auc"].isna().all() and err["score"].isna().all()
    good = df[df["error"].isna()]
    assert good["deletion_image.auc"].notna().all() and good["insertion_text.auc"].notna().all()
    assert all(len(c) == 5 for c in good["deletion_image.curve"])
    # ground truth only for pairs with boxes (dataset rows 0, 3, 6 -> sample indices 0, 4, 8)
    has_gt = set(good[good["energy_pointing_game"].notna()]["index"])
    assert has_gt == {0, 4, 8}
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["num_samples"] == 9 and man["num_shards"] == 3
    assert man["finished"] == [f"shards/metrics-{k:06d}.parquet" for k in range(3)]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["methods"] == ["m2ib", "random"] and cfg["shard_size"] == 4 and cfg["method_options"] == M2IB
    assert cfg["metric_info"]["deletion_image"]["higher_is_better"] is False
    assert not list(out.rglob(".tmp-*"))


def test_values_match_direct_calls(run_a, hf_clip):
    """The stored values equal explain() + the metric called by hand on the same batch."""
    d, data, out = run_a
    from vlexplain.metrics import get_metric, token_maps_from_explanations

    df = load_results(out).to_pandas()
    imgs = [Image.open(d / "img" / f"{i}.png").convert("RGB") for i in (0, 1)]
    px = torch.stack([hf_clip.preprocess(im) for im in imgs])
    caps = ["a photo of thing 0", "a photo of thing 1"]
    exps = vx.explain(
        hf_clip, px, caps, method="m2ib", seed=[pair_seed(0, 0), pair_seed(0, 1)], batch_size=2, **M2IB["m2ib"]
    )
    tb = hf_clip.tokenize(caps)
    dele = get_metric("deletion_image")(hf_clip, px, tb, torch.stack([e.image_map for e in exps]), None, n_steps=4)
    ins = get_metric("insertion_text")(hf_clip, px, tb, None, token_maps_from_explanations(exps, tb), n_steps=2)
    rows = df[(df["method"] == "m2ib") & df["index"].isin([0, 1])]
    assert np.allclose(rows["deletion_image.auc"], dele["auc"].numpy(), atol=1e-6)
    assert np.allclose(rows["insertion_text.auc"], ins["auc"].numpy(), atol=1e-6)
    assert np.allclose(rows["score"], [e.score for e in exps], atol=1e-6)
    maps = load_maps(out, {0})
    assert torch.allclose(maps["0.m2ib.image_map"], exps[0].image_map, atol=1e-6)
    assert maps["0.m2ib.tokens"] == exps[0].tokens
    assert maps["0.image"].dtype == torch.uint8 and maps["0.image"].shape == (3, 64, 64)


def test_resume_recomputes_only_missing_shards(run_a, hf_clip, tmp_path):
    d, data, out = run_a
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(out, run)
    ref = _frame(run)
    keep = (run / "shards" / "metrics-000000.parquet").stat().st_mtime_ns
    (run / "shards" / "metrics-000001.parquet").unlink()
    (run / "shards" / ".tmp-metrics-000001.parquet.abc").write_bytes(b"half written")
    write_manifest(run, 9, 4)
    assert not json.loads((run / "manifest.json").read_text())["complete"]
    evaluate(
        data,
        hf_clip,
        ["m2ib", "random"],
        METRICS,
        run,
        batch_size=2,
        shard_size=4,
        save_maps=True,
        method_options=M2IB,
        metric_options=METRIC_OPTS,
        resume=True,
        progress=False,
    )
    _assert_same(_frame(run), ref)
    assert (run / "shards" / "metrics-000000.parquet").stat().st_mtime_ns == keep
    assert not list(run.rglob(".tmp-*"))
    assert json.loads((run / "manifest.json").read_text())["complete"]


def test_refuses_to_mix_runs(run_a, hf_clip):
    d, data, out = run_a
    with pytest.raises(InputError, match="already holds a run; pass --resume"):
        evaluate(data, hf_clip, ["m2ib", "random"], METRICS, out, batch_size=2, shard_size=4, progress=False)
    with pytest.raises(InputError, match="configuration differs in methods"):
        evaluate(
            data,
            hf_clip,
            ["m2ib"],
            METRICS,
            out,
            batch_size=2,
            shard_size=4,
            save_maps=True,
            method_options=M2IB,
            metric_options=METRIC_OPTS,
            resume=True,
            progress=False,
        )
    with pytest.raises(vx.MethodError, match="unknown metric"):
        evaluate(data, hf_clip, ["m2ib"], ["no_such_metric"], d / "other", progress=False)
    bad = d / "bad.jsonl"
    bad.write_text(data.read_text() + '{"image": "img/0.png", "caption": }\n')
    with pytest.raises(InputError, match=r"bad.jsonl:10: invalid JSON"):
        evaluate(bad, hf_clip, ["random"], ["deletion_image"], d / "bad_run", progress=False)
    assert not (d / "bad_run").exists()  # validated before anything was written


def test_ground_truth_follows_preprocessing(tmp_path, hf_clip, monkeypatch):
    """Boxes and mask PNGs land where the shortest-side resize + centre crop puts the pixels."""
    (tmp_path / "gtmetric.py").write_text(
        "import torch\n"
        "def area(model, pixels, texts, image_maps, token_maps, *, masks):\n"
        "    return {'area': masks.flatten(1).sum(1).float(),\n"
        "            'row': masks.any(2).float().argmax(1).float(), 'col': masks.any(1).float().argmax(1).float()}\n"
        "area.side = 'image'\narea.requires = ('masks',)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    Image.new("RGB", (128, 64), "gray").save(tmp_path / "wide.png")  # 128 wide: crop 32 px each side
    m = np.zeros((64, 128), np.uint8)
    m[8:24, 40:56] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    rows = [
        {"image": "wide.png", "caption": "box", "boxes": [[40, 8, 16, 16]]},
        {"image": "wide.png", "caption": "mask", "mask": "mask.png"},
        {"image": "wide.png", "caption": "none"},
    ]
    (tmp_path / "gt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = evaluate(tmp_path / "gt.jsonl", hf_clip, ["random"], ["gtmetric:area"], tmp_path / "run", progress=False)
    df = load_results(out).to_pandas()
    assert df["gtmetric:area.area"].tolist()[:2] == [256.0, 256.0]
    assert df["gtmetric:area.row"].tolist()[:2] == [8.0, 8.0] and df["gtmetric:area.col"].tolist()[:2] == [8.0, 8.0]
    assert np.isnan(df["gtmetric:area.area"].tolist()[2])


def test_a_failing_pair_becomes_an_error_row(tmp_path, hf_clip, monkeypatch):
    """A pair that makes a metric raise a VlexplainError is isolated; its batch mates are still scored."""
    (tmp_path / "poison.py").write_text(
        "from vlexplain.errors import InputError\n"
        "def mean(model, pixels, texts, image_maps, token_maps):\n"
        "    if any('poison' in t for t in texts.texts):\n"
        "        raise InputError('poisoned caption')\n"
        "    return {'mean': image_maps.flatten(1).mean(1)}\n"
        "mean.side = 'image'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for i in range(3):
        Image.new("RGB", (64, 64), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
    caps = ["fine", "poison", "also fine"]
    (tmp_path / "p.jsonl").write_text(
        "".join(json.dumps({"image": f"{i}.png", "caption": c}) + "\n" for i, c in enumerate(caps))
    )
    out = evaluate(
        tmp_path / "p.jsonl", hf_clip, ["random"], ["poison:mean"], tmp_path / "run", batch_size=3, progress=False
    )
    df = load_results(out).to_pandas()
    assert df["error"].isna().tolist() == [True, False, True]
    assert "p.jsonl:2" in df["error"][1] and "poisoned caption" in df["error"][1]
    exps = vx.explain(hf_clip, [tmp_path / "0.png"], ["fine"], method="random", seed=pair_seed(0, 0))
    assert df["poison:mean"][0] == pytest.approx(float(exps[0].image_map.mean()), abs=1e-6)


def test_every_pair_has_its_own_seed(tmp_path, hf_clip, monkeypatch):
    """The same pair repeated gets a different random map each time (one seed per pair, not one per
    run), each equal to explain() with that pair's seed, whatever the batch size."""
    (tmp_path / "first.py").write_text(
        "def value(model, pixels, texts, image_maps, token_maps):\n"
        "    return {'v': image_maps.flatten(1)[:, 0]}\n"
        "value.side = 'image'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    Image.new("RGB", (64, 64), "gray").save(tmp_path / "0.png")
    (tmp_path / "same.jsonl").write_text((json.dumps({"image": "0.png", "caption": "a thing"}) + "\n") * 6)
    runs = [
        evaluate(
            tmp_path / "same.jsonl",
            hf_clip,
            ["random"],
            ["first:value"],
            tmp_path / f"run{b}",
            batch_size=b,
            shard_size=6,
            seed=3,
            progress=False,
        )
        for b in (1, 3)
    ]
    vals = [load_results(r).to_pandas()["first:value"].to_numpy() for r in runs]
    assert np.array_equal(vals[0], vals[1])  # batching does not change a pair's seed
    assert len(set(vals[0].tolist())) == 6  # six draws, not one draw repeated
    exps = vx.explain(
        hf_clip, [tmp_path / "0.png"] * 6, ["a thing"] * 6, method="random", seed=[pair_seed(3, i) for i in range(6)]
    )
    assert np.allclose(vals[0], [float(e.image_map.flatten()[0]) for e in exps], atol=1e-6)
    assert [e.settings["seed"] for e in exps] == [pair_seed(3, i) for i in range(6)]
    assert len({pair_seed(s, i) for s in range(3) for i in range(100)}) == 300
    with pytest.raises(InputError, match="got 2 seeds for 6 image-text pairs"):
        vx.explain(hf_clip, [tmp_path / "0.png"] * 6, ["a thing"] * 6, method="random", seed=[1, 2])
    # a run written before per-pair seeds (config version 1) is not resumed with the new seeding
    cfg_path = runs[0] / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "version": 1}))
    with pytest.raises(InputError, match="configuration differs in version"):
        evaluate(
            tmp_path / "same.jsonl",
            hf_clip,
            ["random"],
            ["first:value"],
            runs[0],
            batch_size=1,
            shard_size=6,
            seed=3,
            resume=True,
            progress=False,
        )


def test_report(run_a):
    d, data, out = run_a
    path = report(out)
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    for word in (
        "m2ib",
        "random",
        "deletion_image.auc",
        "insertion_text.auc",
        "energy_pointing_game",
        "Deletion / insertion curves",
        "data:image/png;base64,",
        "image not found",
        "config.json",
    ):
        assert word in page, word
    assert "http://" not in page and "https://" not in page  # self-contained
    import csv

    table = list(csv.DictReader((out / "table.csv").open()))
    row = next(r for r in table if r["method"] == "m2ib" and r["column"] == "deletion_image.auc")
    df = load_results(out).to_pandas()
    vals = df[df["method"] == "m2ib"]["deletion_image.auc"].dropna().to_numpy()
    assert float(row["mean"]) == pytest.approx(vals.mean()) and int(row["n"]) == 7
    assert float(row["ci_low"]) <= vals.mean() <= float(row["ci_high"])
    assert json.loads((out / "table.json").read_text())[0]["method"] == "m2ib"


def test_bootstrap_by_hand():
    v = np.array([1.0, 2.0, np.nan, 4.0, 8.0])
    mean, lo, hi = bootstrap_ci(v, n_boot=1000, seed=0)
    clean = v[~np.isnan(v)]
    rng = np.random.default_rng(0)
    means = clean[rng.integers(0, 4, size=(1000, 4))].mean(1)
    assert mean == pytest.approx(3.75)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert bootstrap_ci(np.full(10, 0.5)) == (0.5, 0.5, 0.5)
    assert all(np.isnan(x) for x in bootstrap_ci(np.array([np.nan])))


def test_cli_help_and_errors(capsys):
    from vlexplain.cli import main

    assert main(["evaluate", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in (
        "--data",
        "--model",
        "--methods",
        "--metrics",
        "--out",
        "--batch-size",
        "--limit",
        "--resume",
        "--save-maps",
        "--device",
    ):
        assert flag in text
    assert main(["report", "/nonexistent/run"]) == 2
    assert "not an evaluation run" in capsys.readouterr().err


# --- end to end through the command line: SIGKILL + resume, two processes -------------------
def _tiny_model_dir(path: Path) -> Path:
    """The tiny CLIP of conftest saved with save_pretrained, plus a CLIP tokenizer (from open_clip's vocabulary)."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    from tests.support.models import tiny_hf_clip

    path.mkdir(parents=True, exist_ok=True)
    st = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (path / "vocab.json").write_text(json.dumps({special.get(k, k): v for k, v in st.encoder.items()}))
    merges = sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for (a, b), _ in merges))
    CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt")).save_pretrained(str(path))
    tiny_hf_clip().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = _tiny_model_dir(d / "model")
    data = _write_data(d, 22)  # 24 pairs with the two bad rows -> 6 shards of 4
    args = [
        "evaluate",
        "--data",
        str(data),
        "--model",
        str(model),
        "--methods",
        "m2ib,random",
        "--metrics",
        "deletion_image,insertion_text",
        "--batch-size",
        "2",
        "--shard-size",
        "4",
        "--method-options",
        json.dumps(M2IB),
        "--metric-options",
        json.dumps(METRIC_OPTS),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ref = d / "ref"
    r = subprocess.run(
        [sys.executable, "-m", "vlexplain.cli", *args, "--out", str(ref)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((ref / "manifest.json").read_text())["complete"]
    return d, args, env, ref


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(cli_setup):
    d, args, env, ref = cli_setup
    run = d / "killed"
    cmd = [sys.executable, "-m", "vlexplain.cli", *args, "--out", str(run)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = run / "shards" / "metrics-000000.parquet"
    deadline = time.monotonic() + 600
    while not first.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = sorted(x.name for x in (run / "shards").glob("metrics-*.parquet"))
    assert 1 <= len(done) < 6, done
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same(_frame(run), _frame(ref))
    man = json.loads((run / "manifest.json").read_text())
    assert man["complete"] and len(man["finished"]) == 6


@pytest.mark.slow
def test_two_processes_equal_one(cli_setup):
    d, args, env, ref = cli_setup
    run = d / "two"
    cmd = two_process_cli(*args, "--out", str(run))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    man = json.loads((run / "manifest.json").read_text())
    assert man["complete"] and len(man["finished"]) == 6
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    _assert_same(_frame(run), _frame(ref))


@pytest.mark.parametrize(
    "metrics,save_maps,want",
    [
        (["deletion_image"], False, ["image"]),
        (["deletion_text"], False, ["text"]),
        (["deletion_image", "deletion_text"], False, ["image", "text"]),
        (["deletion_image"], True, ["image", "text"]),  # saved maps keep every side
    ],
)
def test_explains_only_the_sides_the_metrics_read(tmp_path, hf_clip, monkeypatch, metrics, save_maps, want):
    import vlexplain.attribution.api as api

    seen = []
    real = api.explain

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append([s for s, v in (("image", out[0].image_map), ("text", out[0].token_scores)) if v is not None])
        return out

    monkeypatch.setattr(api, "explain", spy)
    data = _write_data(tmp_path, 2, bad=False)
    evaluate(data, hf_clip, ["saliency"], metrics, tmp_path / "run", batch_size=2, progress=False, save_maps=save_maps)
    assert seen == [want]
