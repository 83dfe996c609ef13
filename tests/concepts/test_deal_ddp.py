"""`vlexplain deal train` under `accelerate launch` with two CPU processes.

Process r takes the r-th half of the batch one process would draw and the gradients are averaged,
so two processes with batch B train exactly like one process with batch 2B (every loss is a mean
over images). The two-process run here also resumes from a checkpoint written by one process.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import vlexplain as vx
from tests.support.cli import two_process_cli
from tests.support.models import tiny_hf_clip
from vlexplain.concepts.sets import load_concepts
from vlexplain.concepts.train import batch_indices, deal_train, find_checkpoint, load_checkpoint
from vlexplain.data.classes import image_folder

CONCEPTS = {"cat": ["pointy ears", "long whiskers"], "dog": ["floppy ears", "wet nose"]}
LR = 1e-3
LOSSES = ("total", "prediction", "disentangle", "localize", "grad_norm")


def _setup(d):
    tiny_hf_clip().save_pretrained(str(d / "model"))
    rng = np.random.default_rng(0)
    for c in CONCEPTS:
        for i in range(5):  # 10 images, global batch 4: step 3 crosses an epoch boundary
            p = d / "data" / c / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
    (d / "c.json").write_text(json.dumps(CONCEPTS))


def _one_process(d, out, steps):
    m = vx.load_model(str(d / "model"))
    ds = image_folder(d / "data", transform=m.preprocess)
    r = deal_train(
        m, ds, load_concepts(d / "c.json"), out, steps=steps, batch_size=4, lr=LR, k=2, save_every=1, progress=False
    )
    return m, r


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_process_batches_split_the_single_process_batch():
    """Rank r's batch is the r-th slice of the batch one process with the whole batch draws, at every step."""
    for world in (2, 3):
        for step in range(7):  # 10 images: batches cross epoch boundaries
            parts = [batch_indices(10, 2, step, seed=3, rank=r, world=world) for r in range(world)]
            assert sum(parts, []) == batch_indices(10, 2 * world, step, seed=3)


@pytest.mark.slow
def test_two_processes_equal_one_with_double_batch(tmp_path):
    _setup(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    _one_process(tmp_path, one, 1)
    shutil.copytree(one, two)  # the two-process run resumes from this step-1 checkpoint
    ref, r1 = _one_process(tmp_path, one, 3)
    assert r1.step == 3 and r1.world_size == 1

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = two_process_cli(
        "deal",
        "train",
        "--data",
        str(tmp_path / "data"),
        "--split",
        "all",
        "--concepts",
        str(tmp_path / "c.json"),
        "--model",
        str(tmp_path / "model"),
        "--out",
        str(two),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--lr",
        str(LR),
        "--k",
        "2",
        "--save-every",
        "1",
        "--no-progress",
    )
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    # two processes ran; process 0 alone reported and wrote
    report = json.loads(r.stdout[r.stdout.index("{") :])  # exactly one JSON object
    assert report["world_size"] == 2 and report["step"] == 3 and report["stopped"] == "done"
    cfg = json.loads((two / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["batch_size"] == 2 and cfg["global_batch_size"] == 4
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint", "config.json", "log.csv"]
    assert json.loads((two / "checkpoint" / "state.json").read_text())["step"] == 3

    # the log: step 1 kept from the resumed run, one row per step, losses of the whole batch
    got, want = _rows(two / "log.csv"), _rows(one / "log.csv")
    assert [g["step"] for g in got] == ["1", "2", "3"]
    assert got[0] == want[0]
    for g, w in zip(got[1:], want[1:]):
        for k in LOSSES:
            assert float(g[k]) == pytest.approx(float(w[k]), rel=1e-4, abs=1e-6), (g["step"], k)

    # the weights equal the one-process run's, and moved far more than the tolerance
    m2 = vx.load_model(str(tmp_path / "model"))
    init = {k: v.clone() for k, v in m2.state_dict().items()}
    assert load_checkpoint(find_checkpoint(two), m2) == 3
    moved = 0.0
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(m2.state_dict()[k], v, atol=2e-5, rtol=1e-4, msg=k)
        moved = max(moved, float((v - init[k]).abs().max()))
    assert moved > 100 * 2e-5


def test_average_gradients_buckets_dtypes_and_missing_grads():
    from vlexplain.distributed import average_gradients

    ps = [
        torch.nn.Parameter(torch.ones(3)),
        torch.nn.Parameter(torch.ones(4)),
        torch.nn.Parameter(torch.ones(2, dtype=torch.float64)),
        torch.nn.Parameter(torch.ones(5)),
    ]
    for i, p in enumerate(ps):
        if i != 1:  # parameter 1 has no gradient: it must be sent as zeros
            p.grad = torch.arange(p.numel(), dtype=p.dtype).view_as(p) + i
    calls = []

    def fake_mean(t):  # stands in for the collective: records the buckets, maps g -> 2 g + 1
        calls.append((t.dtype, t.numel()))
        return 2 * t + 1

    average_gradients(ps, fake_mean, bucket=5)
    # buckets: [p0 (3 elements), p1 (4) -> 7 >= 5 closes it], [p2 float64], [p3 float32]
    assert calls == [(torch.float32, 7), (torch.float64, 2), (torch.float32, 5)]
    assert torch.equal(ps[0].grad, 2 * torch.arange(3.0) + 1)
    assert torch.equal(ps[1].grad, torch.ones(4))
    assert torch.equal(ps[2].grad, 2 * (torch.arange(2, dtype=torch.float64) + 2) + 1)
    assert torch.equal(ps[3].grad, 2 * (torch.arange(5.0) + 3) + 1)
