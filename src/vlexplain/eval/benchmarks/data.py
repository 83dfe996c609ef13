"""``benchmark data``: every attribution method on your own pairs with ground truth, ranked.

The other kinds generate their data; this one reads any layout of
``vlexplain.data.pairs`` (COCO captions + instances, a JSONL with boxes or masks, webdataset
shards with ``boxes`` ...) and writes the same leaderboard and report. A localisation metric
without ground truth in the data is refused before the run (``skip_missing`` runs without it).

Example:
    >>> ds = open_pairs("annotations/captions_val2017.json", instances="annotations/instances_val2017.json")
    >>> run_data_benchmark(ds, "bench/coco", n=200)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import InputError
from .grids import METHOD_OPTIONS
from .registry import Benchmark, Option, register_benchmark

DEFAULT_METRICS = ["pointing_game", "energy_pointing_game", "auroc", "deletion_image", "insertion_image"]
#: the metric the leaderboard is sorted by (when it was run)
PRIMARY = "pointing_game"
DEFAULT_MODEL = "offline"


def run_data_benchmark(
    ds: Any,
    out: str | os.PathLike,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    n: int | None = None,
    model: Any = None,
    seed: int = 0,
    batch_size: int = 8,
    resume: bool = False,
    method_options: dict[str, dict[str, Any]] | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    device: str | None = None,
    progress: bool = True,
    skip_missing: bool = False,
) -> Any:
    """Explain ``ds`` with every applicable method, score, rank and report.

    Args:
        ds: a ``PairDataset`` (or a path for ``open_pairs``).
        out: the benchmark directory (``run/``, ``run/report.html``, ``leaderboard.md``).
        methods, metrics: names (default: every registered method with ``random`` and ``center``
            added; ``DEFAULT_METRICS``).
        n: only the first ``n`` pairs.
        model: a model spec or model (default ``offline``).
        seed, batch_size, resume, method_options, metric_options, device, progress, skip_missing:
            as in ``vlexplain.eval.evaluate`` (the costly methods get the grids benchmark's budgets
            unless options are given).

    Returns:
        A ``BenchmarkResult``.
    """
    from ...data.pairs import open_pairs
    from ...models.registry import load_model
    from .. import io as rio
    from ..report import report
    from ..run_config import _resolve_device
    from ..runner import evaluate
    from .base import BenchmarkResult, applicable_methods, leaderboard_markdown

    ds = open_pairs(ds)
    out = Path(out).expanduser()
    run_dir = out / "run"
    if (run_dir / rio.CONFIG).exists() and not resume:
        raise InputError(f"{out} already holds a benchmark; pass --resume to continue it or choose another --out")
    spec = model if model is not None else DEFAULT_MODEL
    loaded = load_model(spec, device=_resolve_device(device, 1))
    names, skipped = applicable_methods(loaded, methods)
    options = {m: dict(o) for m, o in METHOD_OPTIONS.items() if m in names}
    for m, o in (method_options or {}).items():
        options[m] = {**options.get(m, {}), **o}
    mets = list(metrics) if metrics else list(DEFAULT_METRICS)
    # one shard per batch: an interrupted benchmark loses at most one batch
    evaluate(
        ds,
        loaded,
        names,
        mets,
        run_dir,
        batch_size=batch_size,
        limit=n,
        resume=resume,
        shard_size=batch_size,
        method_options=options,
        metric_options=metric_options,
        seed=seed,
        progress=progress,
        skip_missing=skip_missing,
    )
    html = report(run_dir)
    cfg = rio.read_json(run_dir / rio.CONFIG)
    ran = list(cfg["metrics"])
    primary = PRIMARY if PRIMARY in ran else ran[0]
    data = cfg["data"]
    what = (
        f"{cfg['num_samples']} pairs of {data.get('path')} ({data.get('format')}, split {data.get('split')}); "
        "ground truth: the data's boxes / masks"
    )
    header = [
        f"## Benchmark `data` — model `{getattr(loaded, 'name', spec)}`",
        "",
        f"{what}. Sorted by `{primary}` (best first). Cells: mean over pairs [95 % percentile bootstrap "
        "interval of the mean, 1000 resamples]; ↑ higher is better, ↓ lower is better. `random` and `center` "
        "are reference maps that ignore the model.",
        "",
        f"- methods: {', '.join(names)} (each with its default options unless listed below)",
    ]
    header += [f"- skipped {m}: {why}" for m, why in skipped.items()]
    header += [f"- skipped metric {m}: {why}" for m, why in cfg.get("skipped_metrics", {}).items()]
    header += [f"- {m} options: {json.dumps(o, sort_keys=True)}" for m, o in options.items()]
    md = leaderboard_markdown(run_dir, primary, header)
    lb = out / "leaderboard.md"
    lb.write_text(md)
    return BenchmarkResult(out, Path(ds.path), run_dir, html, lb, md, names, skipped)


def _run(out: str | os.PathLike, *, data: Any, skip_missing: bool = False, **settings: Any) -> Any:
    return run_data_benchmark(data, out, skip_missing=skip_missing, **settings)


register_benchmark(
    Benchmark(
        name="data",
        summary="your own pairs with boxes or masks (--data: COCO, JSONL, CSV, webdataset, Parquet, ...)",
        default_model=DEFAULT_MODEL,
        default_n=None,
        default_metrics=tuple(DEFAULT_METRICS),
        primary=PRIMARY,
        run=_run,
        method_options=METHOD_OPTIONS,
        options=(
            Option("data", None, "Your pairs with boxes / masks.", type=Path, required=True),
            Option("skip_missing", False, "Run without the metrics whose ground truth the data lacks.", type=bool),
        ),
        reads_data=True,
        n_help="pairs (the first N of the data)",
    )
)
