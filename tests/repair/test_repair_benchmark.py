"""The statistics of ``benchmarks/spurious_repair.py`` by hand (its table in RESULTS comes from them)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("spurious_repair", ROOT / "benchmarks" / "spurious_repair.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(aligned, absent, conflicting, n_multi=4):
    n = len(aligned)
    return {
        "correct_aligned": np.array(aligned, float),
        "correct_absent": np.array(absent, float),
        "correct_conflicting": np.array(conflicting, float),
        "reliance_removed": np.linspace(0, 1, n),
        "reliance_swapped": np.linspace(0, 2, n),
        "cue_m2ib": np.full(n, 0.5),
        "multi_ok": np.ones(n_multi),
    }


def test_gap_closed_and_paired_differences_by_hand(bench):
    before = _run([1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 1])  # gap 1 - 0.5 = 0.5
    after = _run([1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 1])  # gap 0.25: half of it closed
    assert bench.STATS["gap"](before, np.arange(4), None) == 0.5
    v, lo, hi = bench.gap_closed(after, before, n_boot=200)
    assert v == 0.5 and lo <= v <= hi
    # the same run against itself: no change, and an interval of width 0
    assert bench.paired(before, before, bench.STATS["worst group"], n_boot=50) == (0.5, 0.0, 0.0, 0.0)
    # conflicting accuracy 0.5 -> 0.75 on the same images: +0.25
    value, diff, lo, hi = bench.paired(after, before, bench.STATS["conflicting"], n_boot=200)
    assert (value, diff) == (0.75, 0.25) and 0 <= lo <= diff <= hi <= 1  # one image of 4 changed


def test_the_goal_column(bench, tmp_path):
    before = _run([1] * 8, [1] * 8, [1, 1, 1, 1, 0, 0, 0, 0])  # gap 0.5
    runs = {
        "closes half, keeps aligned, seed 0": _run([1] * 8, [1] * 8, [1, 1, 1, 1, 1, 1, 0, 0]),
        "closes all, loses aligned, seed 0": _run([1] * 7 + [0], [1] * 8, [1, 1, 1, 1, 1, 1, 1, 0]),
    }
    a = argparse.Namespace(out=tmp_path)
    bench.write_tables(a, before, runs)
    rows = {line.split(" | ")[0][2:]: line for line in (tmp_path / "table.md").read_text().splitlines()}
    assert rows["closes half, keeps aligned, seed 0"].startswith("| closes half")
    assert rows["closes half, keeps aligned, seed 0"].rstrip().endswith("| yes |")
    assert rows["closes all, loses aligned, seed 0"].rstrip().endswith("| no |")  # 12.5 points of aligned lost
