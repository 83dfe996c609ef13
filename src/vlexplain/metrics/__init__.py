"""Explanation metrics: functional, torch, batched on the model's device.

Every registered metric is called the same way::

    from vlexplain.metrics import get_metric, list_metrics
    out = get_metric(name)(model, pixels, texts, image_maps, token_maps, **extra)

* ``model``: a [`DualEncoder`][vlexplain.models.base.DualEncoder].
* ``pixels``: (B, 3, H, W) preprocessed images; ``texts``: a TextBatch of B rows
  (``model.tokenize(list_of_str)``); pairs are zipped (row i with row i).
* ``image_maps``: (B, H, W) raw image maps (None for text-only metrics; other (B, h, w) sizes
  are upsampled bilinearly). Build them with ``image_maps_from_explanations``.
* ``token_maps``: (B, T) one score per token position of ``texts``, 0 at non-content positions
  (None for image-only metrics). Build them with ``token_maps_from_explanations``.
* ``extra``: the keywords in ``spec.requires`` (ground truth etc.), then optional settings of the
  underlying function (e.g. ``substrate="blur"``, ``n_steps=16``, ``batch_size=32``).
* ``out``: a dict of per-pair tensors on the model's device — (B,) values or (B, K) curves
  (``cascading_randomization`` also returns ``stages``, a list of names). The dataset value is the
  mean over pairs of ``out[spec.primary]``, ignoring NaN (NaN marks a pair where the metric is
  undefined, e.g. an empty ground-truth mask or a non-positive original score).

[`get_spec`][vlexplain.metrics.get_spec] describes a metric: ``side`` ("image" / "text"), ``requires`` (keywords that must
be given), ``needs_ground_truth``, ``primary`` output key and ``higher_is_better``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from ..errors import InputError, MethodError
from ._common import image_maps_from_explanations, token_maps_from_explanations
from .confidence import confidence_image, confidence_text
from .cue import cue_pointing, cue_reliance_rank, cue_share, cue_share_ceiling, cue_share_report
from .deletion_insertion import deletion_image, deletion_text, image_curve, insertion_image, insertion_text, text_curve
from .gridpg import grid_pointing_game
from .localization import auroc, boxes_to_masks, energy_pointing_game, pointing_game
from .road import linear_impute, road_scores
from .sanity import cascading_randomization

MetricFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: registry name.
        fn: ``fn(model, pixels, texts, image_maps, token_maps, **extra) -> dict``.
        side: which map it evaluates ("image" or "text").
        primary: the output key summarising the metric.
        higher_is_better: direction of ``primary``.
        requires: keywords that must be passed (ground truth or other inputs).
        needs_ground_truth: whether ``requires`` holds ground truth annotations.
        summary: one line for listings.
        aggregate: "" when the dataset value is the mean of ``primary`` over pairs; otherwise how
            it is computed from the per-pair outputs: ``"spearman:A,B"`` is Spearman's rho of
            outputs ``A`` and ``B`` over the pairs, ``"spearman_within:A,B,G"`` its mean within the
            groups of output ``G`` (``primary`` then names that rho).
        native_maps: the metric reads each map at its own resolution (a patch-level method's
            (B, gh, gw) patch map, a pixel-level method's (B, H, W) map) instead of the maps
            upsampled to the input size.
        options_fn: the function whose keyword-only arguments are the metric's options (None:
            ``fn``); options are checked against it before a run (``vlexplain.validate``).
        ranked: whether a best value exists across methods (False: ``higher_is_better`` is
            nominal, e.g. the cue metrics, where a faithful map follows the model's reliance on the
            cue; reports then shade no best value).
    """

    name: str
    fn: MetricFn
    side: Literal["image", "text"]
    primary: str
    higher_is_better: bool
    requires: tuple[str, ...] = ()
    needs_ground_truth: bool = False
    summary: str = ""
    aggregate: str = ""
    options_fn: Callable | None = None
    ranked: bool = True
    native_maps: bool = False

    def __call__(self, model, pixels, texts, image_maps=None, token_maps=None, **extra: Any) -> dict[str, Any]:
        missing = [k for k in self.requires if extra.get(k) is None]
        if missing:
            raise InputError(f"metric {self.name!r} needs {', '.join(missing)}")
        if self.side == "image" and image_maps is None:
            raise InputError(f"metric {self.name!r} needs image maps (B, H, W)")
        if self.side == "text" and token_maps is None:
            raise InputError(f"metric {self.name!r} needs token maps (B, T)")
        return self.fn(model, pixels, texts, image_maps, token_maps, **extra)


def _image(fn: Callable) -> MetricFn:
    def run(model, pixels, texts, image_maps, token_maps, **kw):
        return fn(model, pixels, texts, image_maps, **kw)

    return run


def _text(fn: Callable) -> MetricFn:
    def run(model, pixels, texts, image_maps, token_maps, **kw):
        return fn(model, pixels, texts, token_maps, **kw)

    return run


def _pg(model, pixels, texts, image_maps, token_maps, *, masks: Tensor, tolerance: int = 15):
    return {"pointing_game": pointing_game(image_maps.to(masks.device), masks, tolerance)}


def _epg(model, pixels, texts, image_maps, token_maps, *, masks: Tensor):
    return {"energy_pointing_game": energy_pointing_game(image_maps.to(masks.device), masks)}


def _auroc(model, pixels, texts, image_maps, token_maps, *, masks: Tensor):
    return {"auroc": auroc(image_maps.to(masks.device), masks)}


def _gridpg(model, pixels, texts, image_maps, token_maps, *, cell_index, grid_n: int):
    return {"grid_pointing_game": grid_pointing_game(image_maps, cell_index, int(grid_n))}


def _cue_share(model, pixels, texts, image_maps, token_maps, *, cue_mask: Tensor):
    return cue_share_report(image_maps.to(cue_mask.device), cue_mask)


def _cue_pointing(model, pixels, texts, image_maps, token_maps, *, cue_mask: Tensor, tolerance: int = 0):
    return {"cue_pointing": cue_pointing(image_maps.to(cue_mask.device), cue_mask, tolerance)}


def _cue_reliance(model, pixels, texts, image_maps, token_maps, *, cue_mask: Tensor, reliance):
    out = cue_reliance_rank(image_maps.to(cue_mask.device), cue_mask, reliance)
    return {k: out[k] for k in ("cue_share", "reliance", "no_mass")}  # rho: over the dataset


def _cue_reliance_within(model, pixels, texts, image_maps, token_maps, *, cue_mask: Tensor, reliance, group):
    out = cue_reliance_rank(image_maps.to(cue_mask.device), cue_mask, reliance, group)
    return {k: out[k] for k in ("cue_share", "reliance", "group", "no_mass")}  # rho: within groups


_REGISTRY: dict[str, MetricSpec] = {
    s.name: s
    for s in [
        MetricSpec(
            "confidence_image",
            _image(confidence_image),
            "image",
            "confidence_drop",
            False,
            summary="confidence drop / increase after multiplying the image by its map",
            options_fn=confidence_image,
        ),
        MetricSpec(
            "confidence_text",
            _text(confidence_text),
            "text",
            "confidence_drop",
            False,
            summary="confidence drop / increase after padding tokens below the median",
            options_fn=confidence_text,
        ),
        MetricSpec(
            "deletion_image",
            _image(deletion_image),
            "image",
            "auc",
            False,
            summary="deletion AUC, most relevant pixels replaced first",
            options_fn=image_curve,
        ),
        MetricSpec(
            "insertion_image",
            _image(insertion_image),
            "image",
            "auc",
            True,
            summary="insertion AUC, most relevant pixels restored first",
            options_fn=image_curve,
        ),
        MetricSpec(
            "deletion_text",
            _text(deletion_text),
            "text",
            "auc",
            False,
            summary="deletion AUC, most relevant tokens padded first",
            options_fn=text_curve,
        ),
        MetricSpec(
            "insertion_text",
            _text(insertion_text),
            "text",
            "auc",
            True,
            summary="insertion AUC, most relevant tokens restored first",
            options_fn=text_curve,
        ),
        MetricSpec(
            "road",
            _image(road_scores),
            "image",
            "road_combined",
            True,
            summary="ROAD MoRF / LeRF with noisy linear imputation",
            options_fn=road_scores,
        ),
        MetricSpec(
            "pointing_game",
            _pg,
            "image",
            "pointing_game",
            True,
            ("masks",),
            True,
            summary="map maximum within 15 px of the ground-truth mask",
        ),
        MetricSpec(
            "energy_pointing_game",
            _epg,
            "image",
            "energy_pointing_game",
            True,
            ("masks",),
            True,
            summary="share of positive map mass inside the mask",
        ),
        MetricSpec(
            "auroc",
            _auroc,
            "image",
            "auroc",
            True,
            ("masks",),
            True,
            summary="AUROC of the map as a pixel classifier of the mask",
        ),
        MetricSpec(
            "grid_pointing_game",
            _gridpg,
            "image",
            "grid_pointing_game",
            True,
            ("cell_index", "grid_n"),
            True,
            summary="share of positive map mass in the queried cell of an n x n grid",
        ),
        MetricSpec(
            "cue_share",
            _cue_share,
            "image",
            "cue_share",
            False,
            ("cue_mask",),
            True,
            summary="share of positive map mass on a cue's mask (cue_mask column), its ceiling at the map's resolution",
            native_maps=True,
            ranked=False,
        ),
        MetricSpec(
            "cue_pointing",
            _cue_pointing,
            "image",
            "cue_pointing",
            False,
            ("cue_mask",),
            True,
            summary="map maximum on a cue's mask at the map's resolution (cue_mask column)",
            native_maps=True,
            ranked=False,
        ),
        MetricSpec(
            "cue_reliance_rank",
            _cue_reliance,
            "image",
            "spearman",
            True,
            ("cue_mask", "reliance"),
            True,
            summary="Spearman rho over pairs of cue share vs true reliance (cue_mask, reliance columns)",
            aggregate="spearman:cue_share,reliance",
            native_maps=True,
        ),
        MetricSpec(
            "cue_reliance_rank_within",
            _cue_reliance_within,
            "image",
            "spearman_within",
            True,
            ("cue_mask", "reliance", "group"),
            True,
            summary="cue_reliance_rank within each group of a group column, averaged over groups",
            aggregate="spearman_within:cue_share,reliance,group",
            native_maps=True,
        ),
        MetricSpec(
            "cascading_randomization",
            cascading_randomization,
            "image",
            "ssim",
            False,
            ("method",),
            False,
            summary="similarity of maps after randomising image blocks top down (lower is better)",
        ),
    ]
}


def list_metrics(side: str | None = None, ground_truth: bool | None = None, bridged: bool = False) -> list[str]:
    """Registered metric names, optionally filtered by side and by whether they need ground truth;
    with ``bridged``, also the Quantus metrics of the bridge (``quantus:<Metric>``) when Quantus is installed."""
    names = sorted(_REGISTRY)
    if bridged:
        from .quantus_bridge import quantus_names

        names += quantus_names()
    out = []
    for n in names:
        s = get_spec(n)
        if (side is None or s.side == side) and (ground_truth is None or s.needs_ground_truth == ground_truth):
            out.append(n)
    return out


def get_spec(name: str) -> MetricSpec:
    """The [`MetricSpec`][vlexplain.metrics.MetricSpec] registered under ``name`` (or ``quantus:<Metric>``)."""
    from .quantus_bridge import PREFIX, quantus_spec

    if name.startswith(PREFIX):
        return quantus_spec(name)
    if name not in _REGISTRY:
        raise MethodError(f"unknown metric {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_metric(name: str) -> MetricSpec:
    """The callable registered under ``name`` (a [`MetricSpec`][vlexplain.metrics.MetricSpec], called with the common signature)."""
    return get_spec(name)


__all__ = [
    "MetricSpec",
    "auroc",
    "boxes_to_masks",
    "cascading_randomization",
    "confidence_image",
    "cue_pointing",
    "cue_reliance_rank",
    "cue_share",
    "cue_share_ceiling",
    "cue_share_report",
    "confidence_text",
    "deletion_image",
    "deletion_text",
    "energy_pointing_game",
    "get_metric",
    "get_spec",
    "grid_pointing_game",
    "image_maps_from_explanations",
    "insertion_image",
    "insertion_text",
    "linear_impute",
    "list_metrics",
    "pointing_game",
    "road_scores",
    "token_maps_from_explanations",
]
