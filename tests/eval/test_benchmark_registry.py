"""Benchmark kinds come from the registry: a kind registered from outside the package is a
subcommand of ``vlexplain benchmark`` with its own options, and the docs' table lists it."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlexplain.cli import main
from vlexplain.errors import InputError
from vlexplain.eval.benchmarks import registry as kinds
from vlexplain.eval.benchmarks.base import SANITY_METRIC, run_benchmark
from vlexplain.eval.benchmarks.registry import Benchmark, Option, get_benchmark, list_benchmarks, register_benchmark

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry():
    """The registry, restored after the test (whatever the test registered is gone)."""
    list_benchmarks()  # the built-in kinds are in before the snapshot
    saved = dict(kinds._BENCHMARKS)
    yield kinds._BENCHMARKS
    kinds._BENCHMARKS.clear()
    kinds._BENCHMARKS.update(saved)


def _toy(calls: list) -> Benchmark:
    def run(out, **kw):
        calls.append({"out": out, **kw})
        p = Path(out)
        return SimpleNamespace(markdown="| toy leaderboard |", leaderboard=p / "leaderboard.md", reports=[p / "r.html"])

    return Benchmark(
        name="toy",
        summary="toy pairs from a test module",
        default_model="offline",
        default_n=3,
        default_metrics=("pointing_game",),
        primary="pointing_game",
        run=run,
        options=(
            Option("level", 1, "How hard the toy pairs are.", type=int, min=1),
            Option("shuffle", False, "Shuffle the toy pairs.", type=bool),
        ),
    )


def test_builtin_kinds_are_registered():
    assert list_benchmarks() == ["data", "grids", "shapes", "spurious"]
    for name in list_benchmarks():
        b = get_benchmark(name)
        assert b.name == name and b.summary and b.primary in b.default_metrics
    assert [o.name for o in get_benchmark("grids").options] == ["grid"]
    assert get_benchmark("data").reads_data


def test_a_registered_kind_is_a_subcommand_with_its_own_options(registry, tmp_path, capsys):
    calls: list = []
    register_benchmark(_toy(calls))
    assert main(["benchmark", "--help"]) == 0
    listing = capsys.readouterr().out
    assert "toy" in listing and "toy pairs from a test module" in listing
    assert all(k in listing for k in ("shapes", "grids", "spurious", "data"))
    assert main(["benchmark", "toy", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--level" in help_text and "How hard" in help_text and "--shuffle" in help_text
    assert "--grid" not in help_text  # another kind's option

    out = tmp_path / "bench"
    args = ["benchmark", "toy", "--level", "3", "--shuffle", "--n", "2", "--methods", "saliency, m2ib"]
    assert main(args + ["--sanity", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| toy leaderboard |" in printed
    assert f"leaderboard: {out / 'leaderboard.md'}" in printed and f"report: {out / 'r.html'}" in printed
    (got,) = calls
    assert got["level"] == 3 and got["shuffle"] is True and got["n"] == 2
    assert got["methods"] == ["saliency", "m2ib"] and got["metrics"] == ["pointing_game", SANITY_METRIC]
    assert Path(got["out"]) == out and got["progress"] is False and got["seed"] == 0

    # the kind's option bounds are checked by the command line, before the kind runs
    assert main(["benchmark", "toy", "--level", "0", "--out", str(tmp_path / "x")]) == 2
    assert main(["benchmark", "shapes", "--level", "3", "--out", str(tmp_path / "y")]) == 2
    assert "No such option" in capsys.readouterr().err
    assert len(calls) == 1


def test_run_benchmark_checks_the_kinds_options(registry, tmp_path):
    calls: list = []
    register_benchmark(_toy(calls))
    run_benchmark("toy", tmp_path, metrics=["auroc"])
    assert calls[-1]["level"] == 1 and calls[-1]["shuffle"] is False and calls[-1]["metrics"] == ["auroc"]
    with pytest.raises(InputError, match="has no option grid"):
        run_benchmark("toy", tmp_path, grid=3)
    with pytest.raises(InputError, match="has no option grid"):
        run_benchmark("shapes", tmp_path, grid=3)
    with pytest.raises(InputError, match="needs --data"):
        run_benchmark("data", tmp_path)
    with pytest.raises(InputError, match="unknown benchmark 'nope'; choose from data, grids, shapes, spurious, toy"):
        run_benchmark("nope", tmp_path)
    assert len(calls) == 1


def test_registration_refuses_incomplete_kinds(registry):
    kw = dict(summary="s", default_model="offline", default_n=1, default_metrics=("auroc",), primary="auroc")
    with pytest.raises(ValueError, match="make_data and describe, or run"):
        register_benchmark(Benchmark(name="half", make_data=lambda *a: Path("x"), **kw))
    with pytest.raises(ValueError, match="shadow the shared settings"):
        register_benchmark(Benchmark(name="clash", run=lambda *a, **k: None, options=(Option("seed", 1, "s"),), **kw))
    with pytest.raises(ValueError, match="no 'data' option"):
        register_benchmark(Benchmark(name="reader", run=lambda *a, **k: None, reads_data=True, **kw))
    assert not {"half", "clash", "reader"} & set(list_benchmarks())


def test_the_docs_table_lists_every_kind(registry):
    register_benchmark(_toy([]))
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from docs_hooks import benchmarks_table
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    rows = [r for r in benchmarks_table().splitlines()[2:]]
    assert [r.split("|")[1].strip(" `") for r in rows] == list_benchmarks()
    toy = rows[-1]
    assert "toy pairs from a test module" in toy and "`--level`, `--shuffle`" in toy and "**pointing_game**" in toy
