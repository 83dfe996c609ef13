"""``vlexplain benchmark``: every method on a ground-truth testbed; a leaderboard and an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._out import out_dir
from .evaluate import _names, _options


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command."""

    @app.command("benchmark")
    def benchmark_cmd(
        kind: str = typer.Argument(..., help="Testbed: shapes (shapes-world scenes) or grids (grids of real photos)."),
        methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods (default: all registered; random and center are always added)."),
        metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics (default: those that apply to the testbed)."),
        n: Optional[int] = typer.Option(None, "--n", min=1, help="Number of pairs (default: shapes 64, grids 16)."),
        model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: shapes testbed:shapes, grids offline)."),
        out: Optional[Path] = typer.Option(None, "--out", callback=out_dir, help="Benchmark directory (default: benchmarks/runs/KIND)."),
        seed: int = typer.Option(0, "--seed", min=0, help="Selects the scenes / grids and seeds the explanations (each pair its own seed)."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Pairs explained together."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted benchmark in --out."),
        grid: int = typer.Option(2, "--grid", min=2, help="Grid side for grids (2: 2x2, 3: 3x3)."),
        sanity: bool = typer.Option(False, "--sanity", help="Also run cascading_randomization (expensive)."),
        method_options: Optional[str] = typer.Option(None, "--method-options", help='JSON (or a JSON file): {"m2ib": {"steps": 5}}.'),
        metric_options: Optional[str] = typer.Option(None, "--metric-options", help='JSON (or a JSON file): {"deletion_image": {"n_steps": 8}}.'),
        device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda (default: cuda when available)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Benchmark attribution methods on a testbed with ground truth; print the Markdown leaderboard."""
        from ..eval.benchmark import run_benchmark

        res = run_benchmark(
            kind, out or Path("benchmarks") / "runs" / kind,
            methods=_names(methods, "methods") if methods else None,
            metrics=_names(metrics, "metrics") if metrics else None,
            n=n, model=model, seed=seed, batch_size=batch_size, resume=resume, grid=grid, sanity=sanity,
            method_options=_options(method_options, "--method-options"),
            metric_options=_options(metric_options, "--metric-options"),
            device=device, progress=not no_progress,
        )
        typer.echo(res.markdown)
        typer.echo(f"leaderboard: {res.leaderboard}\nreport: {res.report}")
