"""``vlexplain evaluate`` and ``vlexplain report``: thin wrappers around :mod:`vlexplain.eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import InputError


def _names(value: str, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError(f"--{what} needs at least one name (comma-separated)")
    return names


def _options(value: Optional[str], flag: str) -> dict[str, dict[str, Any]]:
    """``'{"m2ib": {"steps": 5}}'`` or a path to such a JSON file -> dict."""
    if not value:
        return {}
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{flag}: not valid JSON ({e.msg}); expected e.g. '{{\"m2ib\": {{\"steps\": 5}}}}'") from None
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise InputError(f"{flag}: expected a JSON object of objects, e.g. '{{\"m2ib\": {{\"steps\": 5}}}}'")
    return obj


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` and ``report`` commands."""

    @app.command("evaluate")
    def evaluate_cmd(
        data: Path = typer.Option(..., "--data", help="Pairs: .jsonl/.csv/.tsv file, image folder with captions, or saved HF dataset."),
        model: str = typer.Option(..., "--model", help="Model spec (offline, hf:ORG/NAME, open_clip:ARCH/TAG, a directory)."),
        methods: str = typer.Option(..., "--methods", help="Comma-separated attribution methods, e.g. m2ib,gradcam."),
        metrics: str = typer.Option(..., "--metrics", help="Comma-separated metrics (vlexplain.metrics.list_metrics(), or module:function)."),
        out: Path = typer.Option(..., "--out", help="Run directory (results, maps, manifest, configuration)."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Pairs explained together."),
        limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Only the first N pairs."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
        save_maps: bool = typer.Option(False, "--save-maps", help="Also save maps and input images (safetensors)."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda when available, else cpu; under a multi-process launcher cuda means each process's own GPU)."),
        shard_size: Optional[int] = typer.Option(None, "--shard-size", min=1, help="Pairs per shard (default 8 x batch size)."),
        seed: int = typer.Option(0, "--seed", help="Run seed: each pair is explained with its own seed derived from it and the pair's index."),
        target: str = typer.Option("cosine", "--target", help="Score to explain: cosine or logit."),
        method_options: Optional[str] = typer.Option(None, "--method-options", help='JSON (or a JSON file): {"m2ib": {"steps": 5}}.'),
        metric_options: Optional[str] = typer.Option(None, "--metric-options", help='JSON (or a JSON file): {"deletion_image": {"n_steps": 8}}.'),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Explain every pair of a dataset with each method and score the maps with each metric."""
        from ..eval.runner import evaluate

        run_dir = evaluate(
            data, model, _names(methods, "methods"), _names(metrics, "metrics"), out,
            batch_size=batch_size, limit=limit, resume=resume, save_maps=save_maps,
            method_options=_options(method_options, "--method-options"),
            metric_options=_options(metric_options, "--metric-options"),
            shard_size=shard_size, seed=seed, target=target, device=device, progress=not no_progress,
        )
        from ..eval.runner import dist_info

        if dist_info()[0] == 0:
            typer.echo(f"results in {run_dir}  (vlexplain report {run_dir})")

    @app.command("report")
    def report_cmd(
        run_dir: Path = typer.Argument(..., help="A run directory written by `vlexplain evaluate`."),
        out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default RUN_DIR/report.html)."),
    ) -> None:
        """Write a self-contained HTML report (tables with 95 % intervals, curves, gallery) of a run."""
        from ..eval.report import report

        typer.echo(str(report(run_dir, out)))
