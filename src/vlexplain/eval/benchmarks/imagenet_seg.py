"""``benchmark imagenet-seg``: ImageNet-Segmentation (or ImageNet-S) as Chefer et al., TextSpan and LeGrad score it.

Each image is explained with one text; the map (at the model's input resolution) is min-max
normalised and thresholded at its mean; pixel accuracy, mIoU over {background, object} and mAP are
summed over the dataset as in ``imagenet_seg_eval.py`` (see ``stats``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .protocol_common import image_maps, refuse_metrics, require_model, resize_mask, select_methods, squash
from .protocol_run import ProtocolResult, finish, run_protocol
from .protocol_stats import chefer_reduce, chefer_stats
from .registry import Benchmark, Option, register_benchmark

if TYPE_CHECKING:
    from torch import Tensor

PROTOCOL = (
    "Protocol: Chefer et al. (CVPR 2021) `imagenet_seg_eval.py`, as TextSpan (ICLR 2024) and LeGrad (ICCV 2025) "
    "report ImageNet-Segmentation: image and mask resized to the model's input (no crop), map min-max "
    "normalised and thresholded at its mean, pixel accuracy and mIoU over {{background, object}} summed "
    "over the dataset, mAP averaged over images. Differences: {text}; {clamp}."
)
TEXT_ZERO_SHOT = (
    'the explained text is "a photo of a {c}." with c the model\'s zero-shot top-1 ImageNet class under that '
    "one prompt (Chefer: the ViT classifier's top class; TextSpan: the top class of an 80-template classifier)"
)
TEXT_OWN = 'ImageNet-S images: the explained text is "a photo of a {c}." with c the image\'s own class'


def open_dataset(data: str | os.PathLike) -> Any:
    """gtsegs_ijcv.mat (a file, or a folder holding it) or an ImageNet-S root (validation-segmentation/)."""
    p = Path(data).expanduser()
    if p.is_dir() and (p / "validation-segmentation").is_dir():
        from ...data.imagenet_s import ImageNetS

        return ImageNetS(p)
    from ...data.imagenet_seg import ImageNetSegmentation

    return ImageNetSegmentation(p)


def _imagenet_names() -> list[str]:
    """The 1000 ImageNet class names of OpenCLIP's zero-shot metadata (checked before a run writes)."""
    from ...errors import require

    return list(require("open_clip.zero_shot_metadata", "openclip").IMAGENET_CLASSNAMES)


def _zero_shot(model: Any, names: list[str]) -> Tensor:
    """(1000, d) unit-norm text embeddings of "a photo of a {c}." for the ImageNet classes."""
    import torch

    with torch.no_grad():
        t = torch.cat(
            [
                model.encode_text(model.tokenize([f"a photo of a {c}." for c in names[i : i + 250]]))
                for i in range(0, len(names), 250)
            ]
        )
    return torch.nn.functional.normalize(t, dim=-1)


def run_imagenet_seg(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: Any,
    methods: list[str] | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    n: int | None = None,
    seed: int = 0,
    clamp_negative: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    shard_size: int = 16,
) -> ProtocolResult:
    """Run the ImageNet-Segmentation protocol; every input is checked before anything is written."""
    import torch

    from ..run_config import _model_and_spec, _resolve_device
    from ..runner import dist_info, pair_seed

    ds = open_dataset(data)
    total = len(ds) if n is None else min(n, len(ds))
    mdl, spec = _model_and_spec(require_model(model, "imagenet-seg"), _resolve_device(device, dist_info()[1]))
    names, skipped = select_methods(mdl, methods)
    opts = dict(method_options or {})
    labelled = hasattr(ds, "names")  # ImageNet-S knows each image's class
    classnames = None if labelled else _imagenet_names()
    zs: list[torch.Tensor] = []  # the class embeddings, computed with the first image a run explains
    size = tuple(mdl.input_size)

    def compute(i: int) -> dict[str, np.ndarray]:
        if labelled:
            image, obj, ignore, cname = ds[i]
            target = np.where(ignore, -1, obj.astype(np.int64))
        else:
            image, obj = ds[i]
            target, cname = obj.astype(np.int64), ""
        px = squash(mdl, image)
        if classnames is not None:
            if not zs:
                zs.append(_zero_shot(mdl, classnames))
            with torch.no_grad():
                img = torch.nn.functional.normalize(mdl.encode_image(px[None]), dim=-1)
                cname = classnames[int((img @ zs[0].T).argmax())]
        t = torch.from_numpy(resize_mask(target, size))
        stats = {}
        for m in names:
            hm = image_maps(mdl, px, [f"a photo of a {cname}."], m, pair_seed(seed, i), opts.get(m, {}))[0]
            stats[m] = chefer_stats(hm.cpu(), t, clamp_negative)[None]
        return stats

    outp, config, values = run_protocol(
        out,
        "imagenet-seg",
        ds,
        spec,
        names,
        total,
        seed,
        opts,
        compute,
        chefer_reduce,
        resume=resume,
        shard_size=shard_size,
        progress=progress,
        overwrite=overwrite,
        clamp_negative=clamp_negative,
    )
    clamp = (
        "negative values clamped to 0 first (TextSpan)"
        if clamp_negative
        else "no clamping of negative values (Chefer; TextSpan clamps, --clamp-negative)"
    )
    title = f"imagenet-seg — {ds.describe()['kind']}, {total} images, model `{spec}`"
    return finish(
        outp,
        title,
        PROTOCOL.format(text=TEXT_OWN if labelled else TEXT_ZERO_SHOT, clamp=clamp),
        values,
        {"skipped": skipped, "config": config},
    )


METRICS = ("pixel_accuracy", "mIoU", "mAP")


def _run(
    out: str | os.PathLike,
    *,
    data: Path,
    clamp_negative: bool = False,
    metrics: Any = None,
    metric_options: Any = None,
    batch_size: int = 8,
    **settings: Any,
) -> ProtocolResult:
    """``vlexplain benchmark imagenet-seg`` (one image at a time: ``batch_size`` does not apply)."""
    refuse_metrics("imagenet-seg", metrics, metric_options)
    return run_imagenet_seg(data, out, clamp_negative=clamp_negative, **settings)


register_benchmark(
    Benchmark(
        name="imagenet-seg",
        summary="ImageNet-Segmentation (gtsegs_ijcv.mat) or ImageNet-S on your disk, scored as Chefer et al. / "
        "TextSpan / LeGrad: pixel accuracy, mIoU, mAP",
        default_model="",
        default_n=None,
        default_metrics=METRICS,
        primary="mIoU",
        run=_run,
        options=(
            Option("data", None, "gtsegs_ijcv.mat (or its folder), or an ImageNet-S root.", type=Path, required=True),
            Option("clamp_negative", False, "Clamp negative map values to 0 first (TextSpan's variant).", type=bool),
        ),
        model_help="Model spec (required), e.g. open_clip:ViT-B-16/openai, the published tables' ViT-B/16.",
        n_help="images (the first N)",
    )
)
