"""``vlexplain evaluate`` and ``vlexplain report``: thin wrappers around ``vlexplain.eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import InputError
from ._out import out_dir, out_file


def _names(value: str, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError(f"--{what} needs at least one name (comma-separated)")
    return names


def _options(value: str | None, flag: str) -> dict[str, dict[str, Any]]:
    """``'{"m2ib": {"steps": 5}}'`` or a path to such a JSON file -> dict (``vlexplain.validate.parse_json_option``)."""
    from ..validate import parse_json_option

    example = '{"deletion_image": {"n_steps": 8}}' if "metric" in flag else '{"m2ib": {"steps": 5}}'
    return parse_json_option(value, flag, example)


def check_run_options(
    methods: list[str], metrics: list[str], method_options: dict, metric_options: dict, seed: int
) -> None:
    """What ``evaluate`` and ``benchmark`` can check before any data is read or model loaded: the
    method and metric names, their options (keys, types, finite numbers) and the seed."""
    from ..attribution.base import get_method
    from ..attribution.options import check_methods_options
    from ..eval.run_config import resolve_metric
    from ..validate import check_metrics_options, check_seed

    check_seed(seed)
    for m in methods:
        get_method(m)
    check_methods_options(methods, method_options)
    check_metrics_options({m: resolve_metric(m) for m in metrics}, metric_options)


def open_data(
    data: Path,
    split: str | None,
    image_key: str | None,
    caption_key: str | None,
    box_key: str | None,
    mask_key: str | None,
    all_captions: bool,
    images: Path | None,
    instances: Path | None,
    coco_ground_truth: str,
    coco_match: str,
):
    """The command line's data options -> a ``PairDataset``."""
    from ..data.pairs import open_pairs

    if coco_ground_truth not in ("boxes", "masks"):
        raise InputError(f"--coco-ground-truth {coco_ground_truth!r}: use boxes or masks")
    if coco_match not in ("caption", "all"):
        raise InputError(f"--coco-match {coco_match!r}: use caption or all")
    ds = open_pairs(
        data,
        split=split,
        image_key=image_key,
        caption_key=caption_key,
        box_key=box_key,
        mask_key=mask_key,
        all_captions=all_captions,
        images=images,
        instances=instances,
        coco_ground_truth=coco_ground_truth,
        coco_match=coco_match,
    )
    if (images is not None or instances is not None) and ds.format != "coco":
        raise InputError(f"--images / --instances go with a COCO captions file; {data} is read as {ds.format}")
    return ds


#: the data options shared by the commands that read pairs (``evaluate``, ``benchmark``)
DATA_HELP = (
    "Pairs: .jsonl/.csv/.tsv file, image folder with captions, COCO captions_*.json, webdataset .tar "
    "shard(s) (a file, folder or {000..009} pattern), .parquet file(s), or a saved HF dataset."
)


def data_options():
    """Typer parameters for the data options (used as defaults of each command's signature)."""
    return dict(
        split=typer.Option(
            None,
            "--split",
            help="Split to read: a split folder (train/val/test), a saved DatasetDict's split, <split>-*.parquet files.",
        ),
        image_key=typer.Option(
            None,
            "--image-key",
            help="Image column / field / webdataset extension (default: image, filepath, file_name, img, jpg, png, url ...).",
        ),
        caption_key=typer.Option(
            None, "--caption-key", help="Caption column / field (default: caption, text, title, sentences, txt ...)."
        ),
        box_key=typer.Option(
            None, "--box-key", help="Column of COCO boxes: lists of x, y, w, h in pixels (default: boxes)."
        ),
        mask_key=typer.Option(None, "--mask-key", help="Column of ground-truth mask paths (default: mask)."),
        all_captions=typer.Option(
            False,
            "--all-captions",
            help="A list of captions (or COCO's captions of an image) gives one pair per caption (default: the first).",
        ),
        images=typer.Option(None, "--images", help="COCO: the image folder (default: ../<split> beside annotations/)."),
        instances=typer.Option(
            None, "--instances", help="COCO: instances_*.json whose boxes / masks are the ground truth."
        ),
        coco_ground_truth=typer.Option(
            "boxes", "--coco-ground-truth", help="COCO ground truth: boxes or masks (segmentations)."
        ),
        coco_match=typer.Option(
            "caption",
            "--coco-match",
            help="COCO: the objects whose category the caption names (caption) or every object (all).",
        ),
    )


_D = data_options()


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` and ``report`` commands."""

    @app.command("evaluate")
    def evaluate_cmd(
        data: Path = typer.Option(..., "--data", help=DATA_HELP),
        model: str = typer.Option(
            ..., "--model", help="Model spec (offline, hf:ORG/NAME, open_clip:ARCH/TAG, a directory)."
        ),
        methods: str = typer.Option(..., "--methods", help="Comma-separated attribution methods, e.g. m2ib,gradcam."),
        metrics: str = typer.Option(
            ..., "--metrics", help="Comma-separated metrics (vlexplain.metrics.list_metrics(), or module:function)."
        ),
        out: Path = typer.Option(
            ..., "--out", callback=out_dir, help="Run directory (results, maps, manifest, configuration)."
        ),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Pairs explained together."),
        limit: int | None = typer.Option(None, "--limit", min=0, help="Only the first N pairs."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace the run --out holds (its result files are removed first)."
        ),
        save_maps: bool = typer.Option(False, "--save-maps", help="Also save maps and input images (safetensors)."),
        device: str | None = typer.Option(
            None,
            "--device",
            help="cpu, cuda, cuda:1 (default: cuda when available, else cpu; under a multi-process launcher cuda means each process's own GPU).",
        ),
        shard_size: int | None = typer.Option(
            None, "--shard-size", min=1, help="Pairs per shard (default 8 x batch size)."
        ),
        seed: int = typer.Option(
            0, "--seed", help="Run seed: each pair is explained with its own seed derived from it and the pair's index."
        ),
        target: str = typer.Option("cosine", "--target", help="Score to explain: cosine or logit."),
        method_options: str | None = typer.Option(
            None, "--method-options", help='JSON (or a JSON file): {"m2ib": {"steps": 5}}.'
        ),
        metric_options: str | None = typer.Option(
            None, "--metric-options", help='JSON (or a JSON file): {"deletion_image": {"n_steps": 8}}.'
        ),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
        skip_missing: bool = typer.Option(
            False,
            "--skip-missing",
            help="Run without the metrics whose ground truth the data lacks (warned), instead of refusing.",
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
        """Explain every pair of a dataset with each method and score the maps with each metric."""
        from ..eval.problems import summary_line
        from ..eval.runner import dist_info, evaluate
        from ..outdir import check_overwrite

        check_overwrite(resume, overwrite)
        names, mets = _names(methods, "methods"), _names(metrics, "metrics")
        m_opts = _options(method_options, "--method-options")
        x_opts = _options(metric_options, "--metric-options")
        check_run_options(names, mets, m_opts, x_opts, seed)  # before the data is read or a model loaded
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
        run_dir = evaluate(
            ds,
            model,
            names,
            mets,
            out,
            batch_size=batch_size,
            limit=limit,
            resume=resume,
            overwrite=overwrite,
            save_maps=save_maps,
            method_options=m_opts,
            metric_options=x_opts,
            shard_size=shard_size,
            seed=seed,
            target=target,
            device=device,
            progress=not no_progress,
            skip_missing=skip_missing,
        )
        if dist_info()[0] == 0:
            line = summary_line(run_dir)
            if line:
                typer.echo(f"warning: {line}", err=True)
            typer.echo(f"results in {run_dir}  (vlexplain report {run_dir})")

    @app.command("report")
    def report_cmd(
        run_dir: Path = typer.Argument(..., help="A run directory written by `vlexplain evaluate`."),
        out: Path | None = typer.Option(
            None, "--out", callback=out_file, help="HTML file to write (default RUN_DIR/report.html)."
        ),
    ) -> None:
        """Write a self-contained HTML report (tables with 95 % intervals, curves, gallery) of a run."""
        from ..eval.report import report

        typer.echo(str(report(run_dir, out)))
