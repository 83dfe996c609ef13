"""``benchmark openimages-points``: p-mIoU on OpenImages V7 point labels, as GEM and LeGrad report it.

Each (image, class with points) is explained with "a photo of a {class}."; the map is min-max
normalised and thresholded at 0.5; per class, points are counted over the dataset (see ``stats``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .protocol_common import image_maps, refuse_metrics, require_model, select_methods, squash
from .protocol_run import ProtocolResult, finish, run_protocol
from .protocol_stats import point_stats, points_reduce
from .registry import Benchmark, Option, register_benchmark

PROTOCOL = (
    "Protocol: point-wise mIoU of Benenson & Ferrari (2022) as GEM (CVPR 2024) and LeGrad (ICCV 2025) report "
    "it on OpenImages V7: image resized to the model's input (no crop, bicubic as GEM's transform), one "
    'text "a photo of a {{class}}." per class with points, map min-max normalised and thresholded at '
    "{threshold}, TP / FP / FN of the yes / no points summed per class over the dataset, p-mIoU the mean over "
    'classes; "unsure" points left out. Differences: the model\'s own input size (GEM: 448 px with '
    "resized position embeddings); {missing}."
)


def run_openimages_points(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: Any,
    methods: list[str] | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    n: int | None = None,
    seed: int = 0,
    threshold: float = 0.5,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    shard_size: int = 16,
) -> ProtocolResult:
    """Run the point-label protocol; every input is checked before anything is written."""
    from ...data.openimages_points import OpenImagesPoints
    from ..run_config import _model_and_spec, _resolve_device
    from ..runner import dist_info, pair_seed

    ds = OpenImagesPoints(data)
    total = len(ds) if n is None else min(n, len(ds))
    mdl, spec = _model_and_spec(require_model(model, "openimages-points"), _resolve_device(device, dist_info()[1]))
    names, skipped = select_methods(mdl, methods)
    opts = dict(method_options or {})
    class_ids = {c: j for j, c in enumerate(sorted({c for _, cls in ds.items for c, _, _ in cls}))}

    def compute(i: int) -> dict[str, np.ndarray]:
        image, classes = ds[i]
        px = squash(mdl, image, resample=Image.Resampling.BICUBIC)
        texts = [f"a photo of a {c}." for c, _, _ in classes]
        stats = {}
        for m in names:
            maps = image_maps(mdl, px, texts, m, pair_seed(seed, i), opts.get(m, {})).cpu()
            rows = [[class_ids[c], *point_stats(hm, pos, neg, threshold)] for hm, (c, pos, neg) in zip(maps, classes)]
            stats[m] = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        return stats

    outp, config, values = run_protocol(
        out,
        "openimages-points",
        ds,
        spec,
        names,
        total,
        seed,
        opts,
        compute,
        points_reduce,
        resume=resume,
        shard_size=shard_size,
        progress=progress,
        overwrite=overwrite,
        threshold=threshold,
    )
    missing = (
        f"{ds.missing} labelled images not on disk were left out" if ds.missing else "every labelled image is on disk"
    )
    title = f"openimages-points — {total} images, {len(class_ids)} classes, model `{spec}`"
    return finish(
        outp,
        title,
        PROTOCOL.format(threshold=threshold, missing=missing),
        values,
        {"skipped": skipped, "config": config},
    )


def _run(
    out: str | os.PathLike,
    *,
    data: Path,
    point_threshold: float = 0.5,
    metrics: Any = None,
    metric_options: Any = None,
    batch_size: int = 8,
    **settings: Any,
) -> ProtocolResult:
    """``vlexplain benchmark openimages-points`` (one image at a time: ``batch_size`` does not apply)."""
    refuse_metrics("openimages-points", metrics, metric_options)
    return run_openimages_points(data, out, threshold=point_threshold, **settings)


register_benchmark(
    Benchmark(
        name="openimages-points",
        summary="OpenImages V7 point labels on your disk, scored as GEM / LeGrad: p-mIoU at a 0.5 threshold",
        default_model="",
        default_n=None,
        default_metrics=("p-mIoU",),
        primary="p-mIoU",
        run=_run,
        options=(
            Option(
                "data",
                None,
                "The OpenImages V7 root (point-label CSVs and the images folder).",
                type=Path,
                required=True,
            ),
            Option("point_threshold", 0.5, "Threshold of the min-max normalised map.", type=float),
        ),
        model_help="Model spec (required), e.g. open_clip:ViT-B-16/openai, the published tables' ViT-B/16.",
        n_help="images (the first N)",
    )
)
