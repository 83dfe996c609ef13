"""``benchmark``: every attribution method on a ground-truth testbed, scored and ranked.

What every kind shares: the methods that explain the model's images (``random`` and ``center``
always added), the run of a kind whose pairs are generated, and the leaderboard. The kinds are
registered in ``.registry``, one module each (``shapes``, ``grids``, ``spurious``, ``data``).

A benchmark directory holds ``data/`` (PNG images, PNG masks and ``pairs.jsonl``), ``run/`` (an
evaluation run of ``vlexplain.eval.evaluate``), ``run/report.html`` and ``leaderboard.md``.

Example:
    >>> run_benchmark("grids", "bench/grids", n=24)   # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import InputError
from .registry import Benchmark, get_benchmark

#: the data seeds of benchmark seed ``s`` start at ``BASE + SEED_STRIDE * s`` (each kind its own BASE)
SEED_STRIDE = 100_000
REFERENCES = ("random", "center")
SANITY_METRIC = "cascading_randomization"


@dataclass
class BenchmarkResult:
    """What ``run_benchmark`` produced."""

    out: Path
    data: Path  # the pairs file
    run_dir: Path
    report: Path  # the HTML report
    leaderboard: Path  # leaderboard.md
    markdown: str  # its text
    methods: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it was left out

    @property
    def reports(self) -> list[Path]:
        """The HTML reports (one)."""
        return [self.report]


# --- data ----------------------------------------------------------------------------------
def _save_mask(mask: np.ndarray, path: Path) -> None:
    _save_png(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"), path)


def _save_png(image: Image.Image, path: Path) -> None:
    """Write a PNG unless the file already holds these bytes (a resumed run regenerates its data: the
    images' modification times, part of the run's data identity, must not change)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    os.replace(tmp, path)
    return path


# --- methods -------------------------------------------------------------------------------
def applicable_methods(model: Any, methods: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """(methods to run, {method: reason} for those left out): a method must explain the image side.

    ``random`` and ``center`` are always added as reference maps.
    """
    from ...attribution.base import get_method, list_methods

    names = list(methods) if methods else list_methods()
    names += [r for r in REFERENCES if r not in names]
    keep, skipped = [], {}
    for m in dict.fromkeys(names):
        why = get_method(m).why_not(model, "image")
        if why is None:
            keep.append(m)
        else:
            skipped[m] = why
    wanted = [m for m in names if m not in REFERENCES]
    if wanted and all(m in skipped for m in wanted):
        raise InputError(
            "none of the requested methods explains this model's images: "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    return keep, skipped


# --- leaderboard ---------------------------------------------------------------------------
def _fmt(mean: float, lo: float, hi: float) -> str:
    if mean is None or np.isnan(mean):
        return "–"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def leaderboard_markdown(run_dir: str | os.PathLike, primary: str, header: Sequence[str] = ()) -> str:
    """A Markdown leaderboard of a run: one row per method, sorted by ``primary`` (best first).

    Each cell is the mean over pairs of a metric's primary value and its 95 % percentile bootstrap
    interval (``vlexplain.eval.report.bootstrap_ci``); ``s/pair`` is the mean explanation time.
    Reference maps (``random``, ``center``) are marked ``(reference)``.
    """
    from .. import io as rio
    from ..report import bootstrap_ci, summary_table

    run_dir = Path(run_dir)
    cfg = rio.read_json(run_dir / rio.CONFIG)
    df = rio.load_results(run_dir).to_pandas()
    if df.empty:
        raise InputError(f"{run_dir} has no results")
    info = cfg.get("metric_info", {})
    rows = [r for r in summary_table(df, cfg) if r["higher_is_better"] is not None]
    by = {(r["method"], r["metric"]): r for r in rows}
    metrics = [m for m in cfg["metrics"] if any(k[1] == m for k in by)]
    methods = [m for m in cfg["methods"] if m in set(df["method"])]

    def key(m: str) -> tuple[int, float]:
        r = by.get((m, primary))
        if r is None or np.isnan(r["mean"]):
            return (1, 0.0)
        return (0, -r["mean"] if r["higher_is_better"] else r["mean"])

    methods.sort(key=key)
    arrow = {m: (" ↑" if info.get(m, {}).get("higher_is_better") else " ↓") for m in metrics}
    lines = list(header) + ([""] if header else [])
    lines.append("| rank | method | " + " | ".join(f"{m}{arrow[m]}" for m in metrics) + " | n | s/pair |")
    lines.append("|---:|:---|" + "---:|" * len(metrics) + "---:|---:|")
    for rank, m in enumerate(methods, 1):
        sub = df[df["method"] == m]
        n = int((sub["error"].isna()).sum()) if "error" in sub else len(sub)
        secs = (
            bootstrap_ci(sub["seconds"].to_numpy(dtype=np.float64, na_value=np.nan))[0] if "seconds" in sub else np.nan
        )
        cells = [
            _fmt(by[(m, k)]["mean"], by[(m, k)]["ci_low"], by[(m, k)]["ci_high"]) if (m, k) in by else "–"
            for k in metrics
        ]
        name = f"{m} (reference)" if m in REFERENCES else m
        lines.append(f"| {rank} | {name} | " + " | ".join(cells) + f" | {n} | {secs:.3g} |")
    errors = int(df.drop_duplicates("index")["error"].notna().sum()) if "error" in df else 0
    if errors:
        lines.append("")
        lines.append(f"{errors} pair(s) failed and are left out (see report.html).")
    return "\n".join(lines) + "\n"


# --- entry point ---------------------------------------------------------------------------
def run_benchmark(
    kind: str,
    out: str | os.PathLike,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    n: int | None = None,
    model: Any = None,
    seed: int = 0,
    batch_size: int = 8,
    resume: bool = False,
    sanity: bool = False,
    method_options: dict[str, dict[str, Any]] | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> Any:
    """Run the registered benchmark ``kind``: explain its pairs with every applicable method, score,
    rank and report.

    Args:
        kind: a registered kind ([`list_benchmarks`][vlexplain.eval.benchmarks.registry.list_benchmarks]).
        out: the benchmark directory (``data/``, ``run/``, ``leaderboard.md``).
        methods: method names (default: the kind's, else every registered one); ``random`` and
            ``center`` are always added as references; methods that cannot explain the model's
            images are skipped.
        metrics: metric names (default: the kind's ``default_metrics``).
        n: number of pairs (default: the kind's ``default_n``).
        model: a model spec or model (default: the kind's ``default_model``).
        seed: selects the data and seeds the explanations (each pair its own seed, see ``pair_seed``).
        batch_size: pairs explained together.
        resume: continue an interrupted benchmark in ``out``.
        sanity: also run ``cascading_randomization`` (expensive).
        method_options: per method, keyword options (over the kind's cheaper budgets).
        metric_options: per metric, keyword options.
        device: "cpu", "cuda"...; default cuda when available.
        progress: show a progress bar.
        **options: the kind's own options (``grid`` for ``grids``, ``data`` for ``data``, ...).

    Returns:
        The kind's result (``markdown``, ``leaderboard``, ``reports``; a ``BenchmarkResult`` for the
        kinds that generate their pairs).
    """
    bench = get_benchmark(kind)
    own = {o.name: o for o in bench.options}
    unknown = sorted(set(options) - set(own))
    if unknown:
        takes = ", ".join(own) or "none"
        raise InputError(f"benchmark {kind} has no option {', '.join(unknown)} (its options: {takes})")
    values = {name: options.get(name, o.default) for name, o in own.items()}
    missing = [name for name, o in own.items() if o.required and values[name] is None]
    if missing:
        raise InputError(f"benchmark {kind} needs {', '.join('--' + m.replace('_', '-') for m in missing)}")
    if sanity:
        metrics = list(metrics) if metrics else list(bench.default_metrics)
        if SANITY_METRIC not in metrics:
            metrics.append(SANITY_METRIC)
    if not methods and bench.default_methods:
        methods = list(bench.default_methods)
    settings = dict(
        methods=methods,
        metrics=metrics,
        n=n,
        model=model,
        seed=seed,
        batch_size=batch_size,
        resume=resume,
        method_options=method_options,
        metric_options=metric_options,
        device=device,
        progress=progress,
    )
    if bench.run is not None:
        return bench.run(out, **settings, **values)
    return _run_generated(bench, out, values, **settings)


def _run_generated(
    bench: Benchmark,
    out: str | os.PathLike,
    options: dict[str, Any],
    methods: Sequence[str] | None,
    metrics: Sequence[str] | None,
    n: int | None,
    model: Any,
    seed: int,
    batch_size: int,
    resume: bool,
    method_options: dict[str, dict[str, Any]] | None,
    metric_options: dict[str, dict[str, Any]] | None,
    device: str | None,
    progress: bool,
) -> BenchmarkResult:
    """A kind whose pairs are generated: model, methods, pairs, evaluation, report, leaderboard."""
    from ...models.registry import load_model
    from ..report import report
    from ..run_config import _resolve_device
    from ..runner import evaluate

    assert bench.make_data is not None and bench.describe is not None  # checked at registration
    n = bench.default_n if n is None else n
    if n is None or n < 1:
        raise InputError("--n must be at least 1")
    out = Path(out).expanduser()
    run_dir = out / "run"
    if (run_dir / "config.json").exists() and not resume:
        raise InputError(f"{out} already holds a benchmark; pass --resume to continue it or choose another --out")
    spec = model if model is not None else bench.default_model
    loaded = load_model(spec, device=_resolve_device(device, 1))
    names, skipped = applicable_methods(loaded, methods)
    method_options = _with_benchmark_defaults(bench.method_options, names, method_options)
    mets = list(metrics) if metrics else list(bench.default_metrics)
    data = bench.make_data(out / "data", n, seed, **options)
    # one shard per batch: an interrupted benchmark loses at most one batch
    evaluate(
        data,
        loaded,
        names,
        mets,
        run_dir,
        batch_size=batch_size,
        resume=resume,
        shard_size=batch_size,
        method_options=method_options,
        metric_options=metric_options,
        seed=seed,
        progress=progress,
    )
    html = report(run_dir)
    primary = bench.primary if bench.primary in mets else mets[0]
    what = bench.describe(n, seed, **options)
    header = _header(bench.name, loaded, what, names, skipped, method_options, metric_options, primary)
    md = leaderboard_markdown(run_dir, primary, header)
    lb = out / "leaderboard.md"
    lb.write_text(md)
    return BenchmarkResult(out, data, run_dir, html, lb, md, names, skipped)


def _with_benchmark_defaults(
    budgets: Mapping[str, Mapping[str, Any]], names: Sequence[str], given: dict | None
) -> dict[str, dict[str, Any]]:
    """The kind's cheaper budgets for the chosen methods, overridden option by option by ``given``."""
    out = {m: dict(o) for m, o in budgets.items() if m in names}
    for m, o in (given or {}).items():
        out[m] = {**out.get(m, {}), **o}
    return out


def _header(
    kind: str,
    model: Any,
    what: str,
    names: list[str],
    skipped: dict[str, str],
    method_options: dict | None,
    metric_options: dict | None,
    primary: str,
) -> list[str]:
    lines = [
        f"## Benchmark `{kind}` — model `{getattr(model, 'name', model)}`",
        "",
        f"{what}. Sorted by `{primary}` (best first). Cells: mean over pairs [95 % percentile "
        "bootstrap interval of the mean, 1000 resamples]; ↑ higher is better, ↓ lower is better. "
        "`random` and `center` are reference maps that ignore the model.",
        "",
        f"- methods: {', '.join(names)} (each with its default options unless listed below)",
    ]
    for m, why in skipped.items():
        lines.append(f"- skipped {m}: {why}")
    for m, opts in (method_options or {}).items():
        lines.append(f"- {m} options: {json.dumps(opts, sort_keys=True)}")
    for m, opts in (metric_options or {}).items():
        lines.append(f"- metric {m} options: {json.dumps(opts, sort_keys=True)}")
    return lines
