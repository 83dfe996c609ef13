"""``vlexplain benchmark``: every method on a ground-truth testbed; a leaderboard and an HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError
from ._out import out_dir
from .evaluate import _D, DATA_HELP, _names, _options, check_run_options, open_data


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command."""

    @app.command("benchmark")
    def benchmark_cmd(
        kind: str = typer.Argument(
            ...,
            help="Testbed: shapes (shapes-world scenes), grids (grids of real photos), spurious (a badge cue: testbed:spurious vs testbed:shapes) or data (your own pairs with boxes or masks, --data).",
        ),
        methods: str | None = typer.Option(
            None,
            "--methods",
            help="Comma-separated methods (default: all registered; random and center are always added).",
        ),
        metrics: str | None = typer.Option(
            None, "--metrics", help="Comma-separated metrics (default: those that apply to the testbed)."
        ),
        n: int | None = typer.Option(
            None, "--n", min=1, help="Number of pairs (default: shapes 64, grids 16; spurious: 24 scenes per group)."
        ),
        model: str | None = typer.Option(
            None,
            "--model",
            help="Model spec (default: shapes testbed:shapes, grids offline; spurious: the biased model, testbed:spurious, compared with testbed:shapes).",
        ),
        out: Path | None = typer.Option(
            None, "--out", callback=out_dir, help="Benchmark directory (default: benchmarks/runs/KIND)."
        ),
        seed: int = typer.Option(
            0, "--seed", min=0, help="Selects the scenes / grids and seeds the explanations (each pair its own seed)."
        ),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Pairs explained together."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted benchmark in --out."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace the benchmark --out holds (its files are removed first)."
        ),
        grid: int = typer.Option(2, "--grid", min=2, help="Grid side for grids (2: 2x2, 3: 3x3)."),
        sanity: bool = typer.Option(False, "--sanity", help="Also run cascading_randomization (expensive)."),
        method_options: str | None = typer.Option(
            None, "--method-options", help='JSON (or a JSON file): {"m2ib": {"steps": 5}}.'
        ),
        metric_options: str | None = typer.Option(
            None, "--metric-options", help='JSON (or a JSON file): {"deletion_image": {"n_steps": 8}}.'
        ),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda (default: cuda when available)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
        data: Path | None = typer.Option(
            None, "--data", help="benchmark data: your pairs with boxes / masks (" + DATA_HELP + ")"
        ),
        skip_missing: bool = typer.Option(
            False, "--skip-missing", help="benchmark data: run without the metrics whose ground truth the data lacks."
        ),
        split: str | None = _D["split"],
        image_key: str | None = _D["image_key"],
        caption_key: str | None = _D["caption_key"],
        box_key: str | None = _D["box_key"],
        mask_key: str | None = _D["mask_key"],
        all_captions: bool = _D["all_captions"],
        images: Path | None = _D["images"],
        instances: Path | None = _D["instances"],
        coco_ground_truth: str = _D["coco_ground_truth"],
        coco_match: str = _D["coco_match"],
    ) -> None:
        """Benchmark attribution methods on a testbed with ground truth; print the Markdown leaderboard."""
        from ..eval.benchmark import run_benchmark

        if (kind == "data") != (data is not None):
            raise InputError(
                "--data goes with `vlexplain benchmark data` (your pairs with ground truth), and "
                "`benchmark data` needs --data"
            )

        from ..outdir import check_overwrite

        check_overwrite(resume, overwrite)
        m_opts = _options(method_options, "--method-options")
        x_opts = _options(metric_options, "--metric-options")
        names = _names(methods, "methods") if methods else []
        check_run_options(names, _names(metrics, "metrics") if metrics else [], {}, {}, seed)

        def shared(mets: list[str] | None = None) -> dict:
            """The options every kind of benchmark takes, parsed in the order each kind always parsed them
            (``mets``: the metrics when the kind chose them itself, else --metrics)."""
            return dict(
                methods=_names(methods, "methods") if methods else None,
                metrics=mets if mets is not None else (_names(metrics, "metrics") if metrics else None),
                n=n,
                seed=seed,
                batch_size=batch_size,
                resume=resume,
                overwrite=overwrite,
                method_options=m_opts,
                metric_options=x_opts,
                device=device,
                progress=not no_progress,
            )

        out_dir = out or Path("benchmarks") / "runs" / kind
        if kind == "data":
            from ..eval.data_bench import run_data_benchmark

            assert data is not None  # checked above

            ds = open_data(
                data,
                split,
                image_key,
                caption_key,
                box_key,
                mask_key,
                all_captions,
                images,
                instances,
                coco_ground_truth,
                coco_match,
            )
            res = run_data_benchmark(
                ds,
                out_dir,
                model=model,
                skip_missing=skip_missing,
                **shared(),
            )
            typer.echo(res.markdown)
            typer.echo(f"leaderboard: {res.leaderboard}\nreport: {res.report}")
            return

        if kind == "spurious":
            from ..eval.spurious_bench import DEFAULT_METRICS, MODELS, run_spurious_benchmark

            mets = _names(metrics, "metrics") if metrics else list(DEFAULT_METRICS)
            if sanity and "cascading_randomization" not in mets:
                mets.append("cascading_randomization")
            sp = run_spurious_benchmark(
                out_dir,
                models={**MODELS, "spurious": model} if model else None,
                **shared(mets),
            )
            typer.echo(sp.markdown)
            typer.echo(
                f"leaderboard: {sp.leaderboard}\nreports: "
                + ", ".join(str(r / "report.html") for r in sp.runs.values())
            )
            return
        res = run_benchmark(
            kind,
            out_dir,
            model=model,
            grid=grid,
            sanity=sanity,
            **shared(),
        )
        typer.echo(res.markdown)
        typer.echo(f"leaderboard: {res.leaderboard}\nreport: {res.report}")
