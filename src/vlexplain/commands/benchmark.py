"""``vlexplain benchmark``: every method on a ground-truth testbed; a leaderboard and an HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError
from ._out import out_dir
from .evaluate import _D, DATA_HELP, _names, _options, open_data


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command."""

    @app.command("benchmark")
    def benchmark_cmd(
        kind: str = typer.Argument(
            ...,
            help="Testbed: shapes (shapes-world scenes), grids (grids of real photos), spurious (a badge cue: testbed:spurious vs testbed:shapes) or data (your own pairs with boxes or masks, --data); published protocols on your copy of the dataset (--data, --model): imagenet-seg (gtsegs_ijcv.mat or ImageNet-S; pixel accuracy, mIoU, mAP), openimages-points (OpenImages V7 point labels; p-mIoU), openvocab-seg (--layout voc|context|coco-object|ade20k; mIoU).",
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
        layout: str | None = typer.Option(
            None, "--layout", help="openvocab-seg: the dataset's layout: voc, context, coco-object or ade20k."
        ),
        classes: Path | None = typer.Option(
            None, "--classes", help="openvocab-seg: class names, one line per label id, synonyms separated by ', '."
        ),
        no_background: bool = typer.Option(
            False,
            "--no-background",
            help="openvocab-seg: voc / context without the background class (VOC20, Context59).",
        ),
        short_side: int = typer.Option(
            336, "--short-side", min=1, help="openvocab-seg: images resized to this short side."
        ),
        stride: int | None = typer.Option(
            None, "--stride", min=1, help="openvocab-seg: sliding-window stride (default: half the model's input)."
        ),
        no_slide: bool = typer.Option(
            False, "--no-slide", help="openvocab-seg: the whole image resized to the model's input, no sliding windows."
        ),
        templates: str = typer.Option(
            "imagenet80", "--templates", help="openvocab-seg: imagenet80 (80 prompt templates averaged) or single."
        ),
        logit_scale: float = typer.Option(40.0, "--logit-scale", help="openvocab-seg: softmax temperature over names."),
        prob_threshold: float | None = typer.Option(
            None,
            "--prob-threshold",
            help="openvocab-seg: pixels below this top probability go to class 0 (default 0.1 with a background class, else 0).",
        ),
        clamp_negative: bool = typer.Option(
            False, "--clamp-negative", help="imagenet-seg: clamp negative map values to 0 first (TextSpan's variant)."
        ),
        point_threshold: float = typer.Option(
            0.5, "--point-threshold", help="openimages-points: threshold of the min-max normalised map."
        ),
    ) -> None:
        """Benchmark attribution methods on a testbed with ground truth; print the Markdown leaderboard."""
        from ..eval.benchmark import run_benchmark
        from ..eval.protocols import KINDS as PROTOCOL_KINDS
        from .benchmark_protocols import check_options, run_protocol

        protocol_opts = dict(
            layout=layout,
            classes=classes,
            no_background=no_background,
            short_side=short_side,
            stride=stride,
            no_slide=no_slide,
            templates=templates,
            logit_scale=logit_scale,
            prob_threshold=prob_threshold,
            clamp_negative=clamp_negative,
            point_threshold=point_threshold,
        )
        if kind in PROTOCOL_KINDS:
            run_protocol(
                kind,
                data,
                out or Path("benchmarks") / "runs" / kind,
                dict(
                    model=model,
                    methods=_names(methods, "methods") if methods else None,
                    method_options=_options(method_options, "--method-options"),
                    n=n,
                    seed=seed,
                    resume=resume,
                    device=device,
                    progress=not no_progress,
                ),
                protocol_opts,
            )
            return
        check_options(kind, protocol_opts)
        if (kind == "data") != (data is not None):
            raise InputError(
                "--data goes with `vlexplain benchmark data` (your pairs with ground truth), and "
                "`benchmark data` needs --data"
            )

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
                method_options=_options(method_options, "--method-options"),
                metric_options=_options(metric_options, "--metric-options"),
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
