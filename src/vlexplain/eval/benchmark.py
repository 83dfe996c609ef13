"""``benchmark``: every attribution method on a ground-truth testbed, scored and ranked.

Two testbeds:

* ``shapes``: held-out scenes of the shapes world (``vlexplain.data.shapes``), each queried with
  the category caption of one of its objects; the ground truth is that caption's mask (the object,
  or the union of the objects of that category). Default model ``testbed:shapes``.
* ``grids``: ``n x n`` grids of real photos (``vlexplain.data.grids``) queried with one cell's
  class text; the ground truth is the queried cell. Default model ``offline``.

A benchmark directory holds ``data/`` (PNG images, PNG masks and ``pairs.jsonl``), ``run/`` (an
evaluation run of ``vlexplain.eval.evaluate``), ``run/report.html`` and ``leaderboard.md``.

Example:
    >>> run_benchmark("grids", "bench/grids", n=24)   # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError

#: first scene seed of the shapes benchmark: below the training seeds
#: (``shapes_train.TRAIN_SEED_BASE`` = 10_000_000 and up) and apart from the zero-shot evaluation
#: scenes of ``evaluate_shapes`` (0.. and 1_000_000..)
SHAPES_SEED_BASE = 5_000_000
#: scene seeds of benchmark seed ``s`` are ``SHAPES_SEED_BASE + SEED_STRIDE * s + i``
SEED_STRIDE = 100_000
#: first grid seed (grids are not used for training; kept apart from the examples' small seeds)
GRIDS_SEED_BASE = 1_000
SCENE_SIZE = 64

KINDS = ("shapes", "grids")
DEFAULT_MODEL = {"shapes": "testbed:shapes", "grids": "offline"}
DEFAULT_N = {"shapes": 64, "grids": 16}
#: cheaper budgets for the costly methods where a forward pass is expensive (224-px CNN on a CPU:
#: with their own defaults rise takes ~60 s and kernel_shap ~18 s per grid); options given by the
#: caller take precedence, so ``--method-options '{"rise": {"n_masks": 1000}}'`` restores a default
BENCHMARK_METHOD_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "shapes": {},
    "grids": {"rise": {"n_masks": 250}, "kernel_shap": {"n_samples": 96}, "integrated_gradients": {"steps": 16}},
}
DEFAULT_METRICS = {
    "shapes": [
        "pointing_game",
        "energy_pointing_game",
        "auroc",
        "deletion_image",
        "insertion_image",
        "confidence_image",
        "confidence_text",
        "deletion_text",
        "insertion_text",
    ],
    "grids": ["grid_pointing_game", "energy_pointing_game", "pointing_game", "deletion_image", "insertion_image"],
}
#: the localisation metric the leaderboard is sorted by
PRIMARY = {"shapes": "pointing_game", "grids": "grid_pointing_game"}
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


def shapes_seeds(n: int, seed: int = 0) -> list[int]:
    """Scene seeds of the shapes benchmark (held out from training)."""
    from ..data.shapes_train import TRAIN_SEED_BASE

    if n > SEED_STRIDE:
        raise InputError(f"the shapes benchmark holds at most {SEED_STRIDE} scenes per seed, got {n}")
    first = SHAPES_SEED_BASE + SEED_STRIDE * seed
    if seed < 0 or first + n > TRAIN_SEED_BASE:
        raise InputError(
            f"benchmark seed must be between 0 and {(TRAIN_SEED_BASE - SHAPES_SEED_BASE) // SEED_STRIDE - 1}"
        )
    return [first + i for i in range(n)]


def shapes_query(scene: Any) -> tuple[int, str]:
    """The object a benchmark scene is queried about (``scene.seed % len(objects)``) and its
    category caption."""
    from ..data.shapes import category_caption

    obj = scene.seed % len(scene.objects)
    return obj, category_caption(scene.objects[obj].category)


def make_shapes_data(out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = SCENE_SIZE) -> Path:
    """Render ``n`` held-out scenes; write ``images/``, ``masks/`` and ``pairs.jsonl`` under ``out_dir``.

    Scene ``i`` is queried with the category caption of object ``scene.seed % len(objects)``; its
    mask is every visible pixel that caption refers to (the object, plus any other object of the
    same category).

    Returns:
        The JSONL file (``image``, ``caption``, ``mask``, ``scene_seed``, ``object``, ``category``).
    """
    from ..data.shapes import render_scene

    d = Path(out_dir)
    (d / "images").mkdir(parents=True, exist_ok=True)
    (d / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(shapes_seeds(n, seed)):
        scene = render_scene(s, size=size)
        obj, caption = shapes_query(scene)
        cat = scene.objects[obj].category
        mask = scene.text_masks()[caption]
        img, msk = f"images/{i:06d}.png", f"masks/{i:06d}.png"
        _save_png(scene.pil(), d / img)
        _save_mask(mask, d / msk)
        rows.append({"image": img, "caption": caption, "mask": msk, "scene_seed": s, "object": obj, "category": cat})
    return _write_jsonl(d / "pairs.jsonl", rows)


def make_grid_data(out_dir: str | os.PathLike, n: int, seed: int = 0, rows: int = 2) -> Path:
    """Compose ``n`` photo grids; write ``images/``, ``masks/`` and ``pairs.jsonl`` under ``out_dir``.

    Returns:
        The JSONL file (``image``, ``caption``, ``mask``, ``cell_index``, ``grid_n``, ``grid_seed``).
    """
    from ..data.grids import grid_dataset

    if rows < 2:
        raise InputError(f"--grid must be at least 2, got {rows}")
    d = Path(out_dir)
    (d / "images").mkdir(parents=True, exist_ok=True)
    (d / "masks").mkdir(parents=True, exist_ok=True)
    out = []
    for i, g in enumerate(grid_dataset(n, seed=GRIDS_SEED_BASE + SEED_STRIDE * seed, rows=rows)):
        img, msk = f"images/{i:06d}.png", f"masks/{i:06d}.png"
        _save_png(g.image, d / img)
        _save_mask(g.mask, d / msk)
        out.append(
            {"image": img, "caption": g.text, "mask": msk, "cell_index": g.query, "grid_n": g.rows, "grid_seed": g.seed}
        )
    return _write_jsonl(d / "pairs.jsonl", out)


# --- methods -------------------------------------------------------------------------------
def applicable_methods(model: Any, methods: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """(methods to run, {method: reason} for those left out): a method must explain the image side.

    ``random`` and ``center`` are always added as reference maps.
    """
    from ..attribution.base import get_method, list_methods

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
    from . import io as rio
    from .report import bootstrap_ci, summary_table

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
    grid: int = 2,
    sanity: bool = False,
    method_options: dict[str, dict[str, Any]] | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> BenchmarkResult:
    """Generate a testbed, explain it with every applicable method, score, rank and report.

    Args:
        kind: "shapes" or "grids".
        out: the benchmark directory (``data/``, ``run/``, ``leaderboard.md``).
        methods: method names (default: every registered one); ``random`` and ``center`` are
            always added as references; methods that cannot explain the model's images are skipped.
        metrics: metric names (default: ``DEFAULT_METRICS`` of the testbed).
        n: number of pairs (default ``DEFAULT_N``).
        model: a model spec or model (default ``DEFAULT_MODEL``).
        seed: selects the data (scene / grid seeds) and seeds the explanations (each pair its own
            seed, see ``pair_seed``).
        batch_size: pairs explained together.
        resume: continue an interrupted benchmark in ``out``.
        grid: grid side for ``grids`` (2: 2x2, 3: 3x3).
        sanity: also run ``cascading_randomization`` (expensive).
        method_options: per method, keyword options (default: the methods' defaults).
        metric_options: per metric, keyword options.
        device: "cpu", "cuda"...; default cuda when available.
        progress: show a progress bar.
        overwrite: replace the benchmark ``out`` holds instead of refusing to write into it.

    Every option is checked before anything is written or the folder is claimed.

    Returns:
        A ``BenchmarkResult``.
    """
    from ..models.registry import load_model
    from ..outdir import check_overwrite, claimed, remove_run
    from ..validate import check_number, check_seed
    from .report import report
    from .runner import _resolve_device, evaluate

    if kind not in KINDS:
        raise InputError(f"unknown benchmark {kind!r}; choose from {', '.join(KINDS)}")
    n = int(check_number(DEFAULT_N[kind] if n is None else n, "--n", integer=True, lo=1, hi=1_000_000))
    seed = check_seed(seed)
    check_overwrite(resume, overwrite)
    if kind == "grids":
        from ..data.grids import make_grid

        try:
            make_grid(seed=0, rows=grid)  # a grid size the photos allow (one small grid, nothing written)
        except InputError as e:
            raise InputError(f"--grid {grid}: {e}") from None
    out = Path(out).expanduser()
    run_dir = out / "run"
    if (run_dir / "config.json").exists() and not resume and not overwrite:
        raise InputError(
            f"{out} already holds a benchmark; pass --resume to continue it, --overwrite to replace it, "
            "or choose another --out"
        )
    spec = model if model is not None else DEFAULT_MODEL[kind]
    loaded = load_model(spec, device=_resolve_device(device, 1))
    names, skipped = applicable_methods(loaded, methods)
    method_options = _with_benchmark_defaults(kind, names, method_options)
    mets = list(metrics) if metrics else list(DEFAULT_METRICS[kind])
    if sanity and SANITY_METRIC not in mets:
        mets.append(SANITY_METRIC)
    _check_options(loaded, names, mets, method_options, metric_options)
    with claimed(out):
        if overwrite:
            remove_run(out, ("data", "run", "leaderboard.md"))
        data = (
            make_shapes_data(out / "data", n, seed)
            if kind == "shapes"
            else make_grid_data(out / "data", n, seed, rows=grid)
        )
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
        primary = PRIMARY[kind] if PRIMARY[kind] in mets else mets[0]
        header = _header(kind, loaded, n, seed, grid, names, skipped, method_options, metric_options, primary)
        md = leaderboard_markdown(run_dir, primary, header)
        lb = out / "leaderboard.md"
        lb.write_text(md)
    return BenchmarkResult(out, data, run_dir, html, lb, md, names, skipped)


def _check_options(model: Any, names: list[str], mets: list[str], method_options: dict, metric_options: Any) -> None:
    """The methods' and metrics' options (keys, types, finite numbers, then on this model) before
    anything is written."""
    from ..validate import check_methods_options, check_metrics_options
    from .run_config import _check_methods, resolve_metric

    opts = check_methods_options(names, method_options)
    check_metrics_options({m: resolve_metric(m) for m in mets}, metric_options or {})
    _check_methods(model, names, opts)


def _with_benchmark_defaults(kind: str, names: Sequence[str], given: dict | None) -> dict[str, dict[str, Any]]:
    """The testbed's cheaper budgets for the chosen methods, overridden option by option by ``given``."""
    out = {m: dict(o) for m, o in BENCHMARK_METHOD_OPTIONS[kind].items() if m in names}
    for m, o in (given or {}).items():
        out[m] = {**out.get(m, {}), **o}
    return out


def _header(
    kind: str,
    model: Any,
    n: int,
    seed: int,
    grid: int,
    names: list[str],
    skipped: dict[str, str],
    method_options: dict | None,
    metric_options: dict | None,
    primary: str,
) -> list[str]:
    what = (
        f"{n} held-out shapes-world scenes (seeds {shapes_seeds(n, seed)[0]}..), queried with one object's "
        "category caption; ground truth: that caption's mask"
        if kind == "shapes"
        else f"{n} {grid}x{grid} grids of real photos, queried with one cell's class text; ground truth: the cell"
    )
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
