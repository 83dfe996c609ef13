"""``vlexplain benchmark KIND``: every method on a ground-truth testbed; a leaderboard and an HTML report.

One subcommand per kind registered in ``vlexplain.eval.benchmarks.registry`` (its shared options, then
its own, then the data options of ``evaluate`` for a kind that reads the user's pairs).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from ._out import out_dir
from .evaluate import _D, DATA_HELP, _names, _options, open_data

#: the data options of ``evaluate`` that a kind reading the user's pairs takes (after ``--data``)
_DATA_KEYS = (
    "split",
    "image_key",
    "caption_key",
    "box_key",
    "mask_key",
    "all_captions",
    "images",
    "instances",
    "coco_ground_truth",
    "coco_match",
)


def _shared(bench: Any) -> list[tuple[str, Any, Any]]:
    """(keyword, annotation, typer option) of the options every kind takes."""
    n_default = "all" if bench.default_n is None else str(bench.default_n)
    methods = ", ".join(bench.default_methods) if bench.default_methods else "all registered"
    return [
        (
            "methods",
            str | None,
            typer.Option(
                None,
                "--methods",
                help=f"Comma-separated methods (default: {methods}; random and center are always added).",
            ),
        ),
        (
            "metrics",
            str | None,
            typer.Option(
                None, "--metrics", help=f"Comma-separated metrics (default: {', '.join(bench.default_metrics)})."
            ),
        ),
        (
            "n",
            int | None,
            typer.Option(None, "--n", min=1, help=f"Number of {bench.n_help or 'pairs'} (default: {n_default})."),
        ),
        (
            "model",
            str | None,
            typer.Option(None, "--model", help=bench.model_help or f"Model spec (default: {bench.default_model})."),
        ),
        (
            "out",
            Path | None,
            typer.Option(
                None,
                "--out",
                callback=out_dir,
                help=f"Benchmark directory (default: benchmarks/runs/{bench.name}).",
            ),
        ),
        (
            "seed",
            int,
            typer.Option(
                0, "--seed", min=0, help="Selects the data and seeds the explanations (each pair its own seed)."
            ),
        ),
        ("batch_size", int, typer.Option(8, "--batch-size", min=1, help="Pairs explained together.")),
        ("resume", bool, typer.Option(False, "--resume", help="Continue an interrupted benchmark in --out.")),
        ("sanity", bool, typer.Option(False, "--sanity", help="Also run cascading_randomization (expensive).")),
        (
            "method_options",
            str | None,
            typer.Option(None, "--method-options", help='JSON (or a JSON file): {"m2ib": {"steps": 5}}.'),
        ),
        (
            "metric_options",
            str | None,
            typer.Option(None, "--metric-options", help='JSON (or a JSON file): {"deletion_image": {"n_steps": 8}}.'),
        ),
        ("device", str | None, typer.Option(None, "--device", help="cpu, cuda (default: cuda when available).")),
        ("no_progress", bool, typer.Option(False, "--no-progress", help="Hide the progress bar.")),
    ]


def _own(bench: Any) -> list[tuple[str, Any, Any]]:
    """(keyword, annotation, typer option) of the kind's own options (and the data options)."""
    out = []
    for o in bench.options:
        flag = "--" + o.name.replace("_", "-")
        text = o.help + (f" ({DATA_HELP})" if bench.reads_data and o.name == "data" else "")
        if o.type is bool:
            out.append(
                (o.name, bool, typer.Option(bool(o.default), flag, help=text, rich_help_panel=f"{bench.name} options"))
            )
            continue
        kw: dict[str, Any] = {"help": text, "rich_help_panel": f"{bench.name} options"}
        if o.min is not None:
            kw["min"] = o.min
        default = ... if o.required else o.default
        annotation = o.type if o.required or o.default is not None else o.type | None
        out.append((o.name, annotation, typer.Option(default, flag, **kw)))
    if bench.reads_data:
        out += [(k, _data_annotation(k), _D[k]) for k in _DATA_KEYS]
    return out


def _data_annotation(key: str) -> Any:
    if key == "all_captions":
        return bool
    if key in ("images", "instances"):
        return Path | None
    if key in ("coco_ground_truth", "coco_match"):
        return str
    return str | None


def _command(bench: Any):
    """The typer callback of ``vlexplain benchmark NAME``: a function whose signature is the options."""
    params = _shared(bench) + _own(bench)

    def benchmark_cmd(**kw: Any) -> None:
        _run(bench, kw)

    benchmark_cmd.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann) for k, ann, opt in params]
    )
    benchmark_cmd.__annotations__ = {k: ann for k, ann, _ in params}
    benchmark_cmd.__doc__ = f"Benchmark attribution methods on {bench.summary}; print the Markdown leaderboard."
    return benchmark_cmd


def _run(bench: Any, kw: dict[str, Any]) -> None:
    from ..eval.benchmarks.base import run_benchmark

    own = {o.name: kw[o.name] for o in bench.options}
    if bench.reads_data:  # the data first: a bad --data is the first thing to hear about
        own["data"] = open_data(own["data"], *(kw[k] for k in _DATA_KEYS))
    res = run_benchmark(
        bench.name,
        kw["out"] or Path("benchmarks") / "runs" / bench.name,
        methods=_names(kw["methods"], "methods") if kw["methods"] else None,
        metrics=_names(kw["metrics"], "metrics") if kw["metrics"] else None,
        n=kw["n"],
        model=kw["model"],
        seed=kw["seed"],
        batch_size=kw["batch_size"],
        resume=kw["resume"],
        sanity=kw["sanity"],
        method_options=_options(kw["method_options"], "--method-options"),
        metric_options=_options(kw["metric_options"], "--metric-options"),
        device=kw["device"],
        progress=not kw["no_progress"],
        **own,
    )
    typer.echo(res.markdown)
    reports = [str(r) for r in res.reports]
    typer.echo(f"leaderboard: {res.leaderboard}\n{'report' if len(reports) == 1 else 'reports'}: {', '.join(reports)}")


def register(app: typer.Typer) -> None:
    """Add ``benchmark`` with one subcommand per registered kind."""
    from ..eval.benchmarks.registry import get_benchmark, list_benchmarks

    group = typer.Typer(
        help="Benchmark attribution methods on a testbed with ground truth (one subcommand per kind).",
        no_args_is_help=True,
    )
    for name in list_benchmarks():
        bench = get_benchmark(name)
        cmd = _command(bench)
        group.command(name, help=cmd.__doc__, short_help=bench.summary)(cmd)
    # main() registers the commands on every call: replace an earlier benchmark group (and its kinds)
    app.registered_groups[:] = [g for g in app.registered_groups if g.name != "benchmark"]
    app.add_typer(group, name="benchmark")
