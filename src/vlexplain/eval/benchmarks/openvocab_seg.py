"""``benchmark openvocab-seg``: training-free open-vocabulary segmentation mIoU (SCLIP / ClearCLIP / NACLIP).

Every class name is a query; its text embedding is the mean of the unit-norm embeddings of the prompt
templates. A method's map for a query is its image map explained against that embedding (the dense
methods' maps are patch-text cosines, the segmentors' logits). Inference runs on sliding windows of
the model's input size over the image resized to a short side, the windows' maps are averaged where
they overlap and resized to the label map; then ``softmax(logit_scale * maps)`` over the queries, the
best query per class, the argmax class per pixel, and pixels whose top probability is below
``prob_threshold`` go to class 0 (the background), as the released ``predict`` / ``postprocess_result``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ...errors import InputError
from .protocol_common import refuse_metrics, require_model, select_methods, squash
from .protocol_run import ProtocolResult, finish, run_protocol
from .protocol_stats import confusion_stats, miou_reduce
from .registry import Benchmark, Option, register_benchmark

if TYPE_CHECKING:
    from torch import Tensor

Templates = Literal["imagenet80", "single"]

PROTOCOL = (
    "Protocol: the training-free open-vocabulary segmentation evaluation of SCLIP (ECCV 2024), ClearCLIP "
    "(ECCV 2024) and NACLIP (WACV 2025) (mmsegmentation IoUMetric): image resized to a short side of "
    "{short_side} px, {slide}, {templates}, softmax({logit_scale} x cosine) over the class names, the best "
    "name per class, argmax; pixels whose top probability is below {thd} go to class 0; IoU per class "
    "summed over the dataset, mIoU over classes present. Differences: no PAMR refinement (NACLIP's "
    "reported numbers use it); the window is the model's input size (SCLIP / NACLIP: 224 px at stride "
    "112, ClearCLIP: 448 at 224 with position embeddings resized, NACLIP on VOC: the whole image)."
)


def query_embeddings(model: Any, classes: tuple[str, ...], templates: Templates) -> tuple[Tensor, Tensor]:
    """(Q, d) unit-norm query embeddings (template means) and (Q,) the class of each query."""
    import torch
    import torch.nn.functional as F

    from ...attribution.clip_surgery import TEMPLATES

    temps = list(TEMPLATES[:80]) if templates == "imagenet80" else ["a photo of a {}."]
    queries, owner = [], []
    for c, line in enumerate(classes):
        for name in line.split(","):
            queries.append(name.strip())
            owner.append(c)
    embs = []
    with torch.no_grad():
        for q in queries:
            e = F.normalize(model.encode_text(model.tokenize([t.format(q) for t in temps])), dim=-1)
            embs.append(F.normalize(e.mean(0), dim=-1))
    return torch.stack(embs), torch.tensor(owner)


def _windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the released ``forward_slide`` windows (the last ones flush with the border)."""
    hg = max(h - crop + stride - 1, 0) // stride + 1
    wg = max(w - crop + stride - 1, 0) // stride + 1
    out = []
    for i in range(hg):
        for j in range(wg):
            y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
            out.append((max(y2 - crop, 0), max(x2 - crop, 0)))
    return out


def _maps(model: Any, explainer: Any, px: Tensor, te: Tensor, seed: int) -> Tensor:
    """(Q, H, W) maps of one input-size image against each query embedding."""
    import torch
    import torch.nn.functional as F

    from ...attribution.base import PairBatch, upsample_grid
    from ...attribution.targets import make_target
    from ...models.base import frozen

    q = te.shape[0]
    with frozen(model):
        with torch.no_grad():
            ie = F.normalize(model.image.encode(px[None]), dim=-1).expand(q, -1)
        batch = PairBatch(
            px[None].expand(q, -1, -1, -1),
            model.tokenize(["a"] * q),
            ie,
            te.to(ie),
            make_target(model, "cosine"),
            [seed] * q,
        )
        m = explainer.attribute_image(batch).detach().float()
    size = (int(px.shape[-2]), int(px.shape[-1]))
    return m if tuple(m.shape[-2:]) == size else upsample_grid(m, size)


def slide_maps(
    model: Any, explainer: Any, px: Tensor, corners: list[tuple[int, int]], crop: int, te: Tensor, seed: int
) -> Tensor:
    """(Q, h, w) maps of a (3, h, w) image: every window's maps added where it lies, divided by the
    number of windows over each pixel (the released ``forward_slide``)."""
    import torch

    size = tuple(px.shape[-2:])
    acc = torch.zeros(len(te), *size)
    count = torch.zeros(1, *size)
    for y, x in corners:
        acc[:, y : y + crop, x : x + crop] += _maps(model, explainer, px[:, y : y + crop, x : x + crop], te, seed).cpu()
        count[:, y : y + crop, x : x + crop] += 1
    return acc / count


def predict(logits: Tensor, owner: Tensor, n_classes: int, logit_scale: float, thd: float) -> Tensor:
    """(Q, H, W) query maps -> (H, W) class ids (the released ``postprocess_result``)."""
    import torch

    probs = (logits * logit_scale).softmax(0)
    flat = probs.flatten(1)  # (Q, H * W)
    per_class = torch.zeros(n_classes, flat.shape[1], dtype=probs.dtype)
    per_class = per_class.scatter_reduce_(0, owner[:, None].expand_as(flat), flat, "amax", include_self=False)
    per_class = per_class.view(n_classes, *probs.shape[1:])
    pred = per_class.argmax(0)
    pred[per_class.max(0).values < thd] = 0
    return pred


def _protocol_text(
    short_side: int, slide: bool, crop: int, stride: int, templates: str, logit_scale: float, thd: float
) -> str:
    """The protocol this run follows, with its settings, for the leaderboard."""
    slide_txt = (
        f"sliding windows of {crop} px at stride {stride}" if slide else "the whole image resized to the model's input"
    )
    temp_txt = (
        "the 80 ImageNet prompt templates averaged" if templates == "imagenet80" else 'one prompt "a photo of a {}."'
    )
    return PROTOCOL.format(short_side=short_side, slide=slide_txt, templates=temp_txt, logit_scale=logit_scale, thd=thd)


def run_openvocab_seg(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: Any,
    layout: str,
    classes: str | os.PathLike | None = None,
    background: bool = True,
    methods: list[str] | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    n: int | None = None,
    seed: int = 0,
    short_side: int = 336,
    slide: bool = True,
    stride: int | None = None,
    templates: Templates = "imagenet80",
    logit_scale: float = 40.0,
    prob_threshold: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    shard_size: int = 16,
) -> ProtocolResult:
    """Run the open-vocabulary segmentation protocol; every input is checked before anything is written."""
    import torch
    import torch.nn.functional as F

    from ...attribution.base import get_method
    from ...data.semseg import SemSegFolder
    from ..run_config import _model_and_spec, _resolve_device
    from ..runner import dist_info, pair_seed

    if templates not in ("imagenet80", "single"):
        raise InputError(f"--templates must be imagenet80 or single, got {templates!r}")
    ds = SemSegFolder(data, layout, background=background, classes=classes)
    total = len(ds) if n is None else min(n, len(ds))
    mdl, spec = _model_and_spec(require_model(model, "openvocab-seg"), _resolve_device(device, dist_info()[1]))
    names, skipped = select_methods(mdl, methods)
    opts = dict(method_options or {})
    crop = int(min(mdl.input_size))
    if tuple(mdl.input_size) != (crop, crop):
        raise InputError(f"openvocab-seg slides square windows; this model's input is {tuple(mdl.input_size)}")
    stride = crop // 2 if stride is None else stride
    if slide and (short_side < crop or not 0 < stride <= crop):
        raise InputError(f"--short-side must be >= the window ({crop}) and --stride in 1..{crop}")
    thd = (0.1 if ds.background else 0.0) if prob_threshold is None else prob_threshold
    te, owner = query_embeddings(mdl, ds.classes, templates)
    explainers = {m: get_method(m).create(mdl, **opts.get(m, {})) for m in names}
    nc = len(ds.classes)

    def compute(i: int) -> dict[str, np.ndarray]:
        image, label = ds[i]
        if slide:
            f = min(2048 / max(image.size), short_side / min(image.size))
            size = (round(image.height * f), round(image.width * f))
            px = squash(mdl, image, size)
            corners = _windows(*size, crop, stride)
        else:
            px, size, corners = squash(mdl, image), tuple(mdl.input_size), [(0, 0)]
        stats = {}
        for m, ex in explainers.items():
            logits = slide_maps(mdl, ex, px, corners, crop, te, pair_seed(seed, i))
            logits = F.interpolate(logits[None], size=label.shape, mode="bilinear", align_corners=False)[0]
            pred = predict(logits, owner, nc, logit_scale, thd)
            stats[m] = confusion_stats(pred, torch.from_numpy(label), nc)[None]
        return stats

    outp, config, values = run_protocol(
        out,
        "openvocab-seg",
        ds,
        spec,
        names,
        total,
        seed,
        opts,
        compute,
        miou_reduce,
        resume=resume,
        shard_size=shard_size,
        progress=progress,
        overwrite=overwrite,
        short_side=short_side,
        slide=slide,
        stride=stride,
        templates=templates,
        logit_scale=logit_scale,
        prob_threshold=thd,
    )
    proto = _protocol_text(short_side, slide, crop, stride, templates, logit_scale, thd)
    title = f"openvocab-seg — {layout}{'' if ds.background else ' (no background)'}, {total} images, {nc} classes, model `{spec}`"
    return finish(outp, title, proto, values, {"skipped": skipped, "config": config})


def _run(
    out: str | os.PathLike,
    *,
    data: Path,
    layout: str,
    classes: Path | None = None,
    no_background: bool = False,
    no_slide: bool = False,
    metrics: Any = None,
    metric_options: Any = None,
    batch_size: int = 8,
    **rest: Any,
) -> ProtocolResult:
    """``vlexplain benchmark openvocab-seg`` (one image at a time: ``batch_size`` does not apply)."""
    refuse_metrics("openvocab-seg", metrics, metric_options)
    return run_openvocab_seg(
        data, out, layout=layout, classes=classes, background=not no_background, slide=not no_slide, **rest
    )


register_benchmark(
    Benchmark(
        name="openvocab-seg",
        summary="VOC / Pascal Context / COCO-Object / ADE20K on your disk, scored as SCLIP / ClearCLIP / NACLIP: "
        "mIoU with sliding windows and prompt templates",
        default_model="",
        default_n=None,
        default_metrics=("mIoU",),
        primary="mIoU",
        run=_run,
        options=(
            Option("data", None, "The dataset's root folder (the official layout).", type=Path, required=True),
            Option("layout", None, "voc, context, coco-object or ade20k.", required=True),
            Option("classes", None, "Class names, one line per label id, synonyms separated by ', '.", type=Path),
            Option("no_background", False, "voc / context without the background class (VOC20, Context59).", type=bool),
            Option("short_side", 336, "Images resized to this short side.", type=int, min=1),
            Option("stride", None, "Sliding-window stride (default: half the model's input).", type=int, min=1),
            Option("no_slide", False, "The whole image resized to the model's input, no sliding windows.", type=bool),
            Option("templates", "imagenet80", "imagenet80 (80 prompt templates averaged) or single."),
            Option("logit_scale", 40.0, "Softmax temperature over the class names.", type=float),
            Option(
                "prob_threshold",
                None,
                "Pixels below this top probability go to class 0 (default 0.1 with a background class, else 0).",
                type=float,
            ),
        ),
        model_help="Model spec (required), e.g. open_clip:ViT-B-16/openai, the published tables' ViT-B/16.",
        n_help="images (the first N)",
    )
)
