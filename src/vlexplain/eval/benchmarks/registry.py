"""Benchmark kinds in a registry, like methods and metrics.

A kind is one module of ``vlexplain.eval.benchmarks`` that registers a [`Benchmark`][vlexplain.eval.benchmarks.registry.Benchmark]:
its name, where its pairs and their ground truth come from, its default model, methods and
metrics, the metric its leaderboard is sorted by, and its own options. ``vlexplain benchmark``
has one subcommand per registered kind, and the docs' table of kinds is generated from the
registry. Built in: ``shapes`` and ``grids`` (pairs generated with exact ground truth),
``spurious`` (a badge shortcut, two models side by side) and ``data`` (your own pairs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError

#: the settings every kind takes (``run_benchmark``'s keywords; a kind's own options use other names)
SHARED = (
    "methods",
    "metrics",
    "n",
    "model",
    "seed",
    "batch_size",
    "resume",
    "method_options",
    "metric_options",
    "device",
    "progress",
)


@dataclass(frozen=True)
class Option:
    """An option of one benchmark kind: ``--NAME`` of ``vlexplain benchmark KIND``, a keyword of
    [`run_benchmark`][vlexplain.eval.benchmarks.base.run_benchmark].

    Attributes:
        name: the keyword (a Python identifier); the flag is ``--name`` with ``-`` for ``_``.
        default: the value when the option is not given.
        help: one line for ``--help``.
        type: ``str``, ``int``, ``float``, ``bool`` (a flag) or ``Path``.
        min: the smallest value of an ``int`` option.
        required: the option must be given (then ``default`` is None).
    """

    name: str
    default: Any
    help: str
    type: type = str
    min: int | None = None
    required: bool = False


@dataclass(frozen=True)
class Benchmark:
    """One kind of benchmark.

    A kind whose pairs are generated gives ``make_data`` and ``describe``, and
    [`run_benchmark`][vlexplain.eval.benchmarks.base.run_benchmark] does the rest: load the model,
    keep the methods that explain its images, write the pairs, evaluate, report and rank. A kind
    that needs more (two models, the user's data) gives ``run`` instead.

    Attributes:
        name: the subcommand (``vlexplain benchmark NAME``) and registry key.
        summary: one line: the pairs, their ground truth and the model (``--help``, the docs' table).
        default_model: the model spec used without ``--model``.
        default_n: pairs without ``--n`` (None: all of them).
        default_metrics: metrics without ``--metrics``.
        primary: the metric the leaderboard is sorted by (the first metric run when it was not).
        make_data: ``make_data(out_dir, n, seed, **options) -> pairs.jsonl`` (images, masks, captions).
        describe: ``describe(n, seed, **options) -> str``: what the pairs are, for the leaderboard.
        run: ``run(out, **settings, **options) -> result`` (a result has ``markdown``,
            ``leaderboard`` and ``reports``); ``settings`` are the ``SHARED`` keywords.
        default_methods: methods without ``--methods`` (None: every registered method);
            ``random`` and ``center`` are always added.
        method_options: cheaper budgets for costly methods; the caller's options take precedence.
        options: the kind's own options.
        reads_data: its ``data`` option is the user's pairs, read with the data options of
            ``vlexplain evaluate`` (``--split``, ``--image-key``, ...).
        model_help, n_help: ``--help`` of ``--model`` and ``--n`` when the defaults do not say it.
    """

    name: str
    summary: str
    default_model: str
    default_n: int | None
    default_metrics: tuple[str, ...]
    primary: str
    make_data: Callable[..., Path] | None = None
    describe: Callable[..., str] | None = None
    run: Callable[..., Any] | None = None
    default_methods: tuple[str, ...] | None = None
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    options: tuple[Option, ...] = ()
    reads_data: bool = False
    model_help: str = ""
    n_help: str = ""


_BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(bench: Benchmark) -> Benchmark:
    """Add a kind to the registry (a second registration under the same name replaces the first)."""
    if (bench.run is None) == (bench.make_data is None or bench.describe is None):
        raise ValueError(f"benchmark {bench.name!r}: give make_data and describe, or run")
    clash = [o.name for o in bench.options if o.name in SHARED or o.name == "sanity"]
    if clash:
        raise ValueError(f"benchmark {bench.name!r}: options {clash} shadow the shared settings")
    if bench.reads_data and "data" not in {o.name for o in bench.options}:
        raise ValueError(f"benchmark {bench.name!r} reads data but has no 'data' option")
    _BENCHMARKS[bench.name] = bench
    return bench


def _load_builtin_benchmarks() -> None:
    import importlib
    import pkgutil

    from .. import benchmarks

    for m in pkgutil.iter_modules(benchmarks.__path__):
        if m.name not in ("base", "registry"):
            importlib.import_module(f"{benchmarks.__name__}.{m.name}")


def list_benchmarks() -> list[str]:
    """Names of all registered benchmark kinds."""
    _load_builtin_benchmarks()
    return sorted(_BENCHMARKS)


def get_benchmark(name: str) -> Benchmark:
    """The kind registered under ``name`` (an ``InputError`` naming the kinds otherwise)."""
    _load_builtin_benchmarks()
    if name not in _BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}; choose from {', '.join(sorted(_BENCHMARKS))}")
    return _BENCHMARKS[name]
