"""The Quantus bridge: ``metrics=["quantus:<Metric>"]`` scores vlexplain image maps with a Quantus metric.

Quantus evaluates a classifier ``model(x) -> (N, classes)`` at labels ``y``. A batch of image-text
pairs is handed over as exactly that:

* ``model``: the image tower followed by the pair score (cosine similarity) against the K distinct
  texts of the batch, (N, 3, H, W) -> (N, K); Quantus gets raw scores (``softmax=False``; EfficientMPRT,
  whose entropy of the outputs needs probabilities, gets the softmax over the K texts);
* ``x_batch``: the preprocessed pixels; ``y_batch``: the index of each pair's text among the K;
* ``a_batch``: the image maps (B, 1, H, W); ``s_batch``: the ground-truth masks (localisation
  metrics, which then require ``masks``);
* ``explain_func``: the method being evaluated, re-run by vlexplain on the inputs Quantus perturbs
  (with the label's text, the run's seed and the method's options) — robustness, randomisation
  and re-explaining axiomatic metrics require ``method``. MPRT-style metrics randomise the layers
  of the image tower (the text embeddings stay fixed).

The whole batch goes to Quantus in one call (its ``batch_size``), under a fixed seed (the run's,
or 0) for the NumPy / torch draws of its perturbations, so a rerun or a resumed run gives the same
values. Quantus's own defaults hold, except the budgets below (``DEFAULTS``), which keep a metric
to a few dozen forward passes per pair; metric options override them. Each pair gets one value,
``score`` (NaN where Quantus gives none); metrics that return a curve per pair also return it as
``curve`` and score its mean. Quantus metrics explain the image side only: they perturb arrays of
pixels, not token ids.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, MethodError, require

PREFIX = "quantus:"

#: Quantus category -> the keywords its metrics require from vlexplain
NEEDS = {"localisation": ("masks",), "robustness": ("method",), "randomisation": ("method",)}
#: metrics outside those categories that re-explain perturbed inputs
REEXPLAIN = {"Consistency", "Continuity", "EfficientMPRT"}
#: metrics Quantus has that cannot score an image-text pair, with the reason
REFUSED = {
    "Focus": "Focus scores 2x2 mosaics of class images against quadrant labels (a custom_batch of positions), "
    "not a pair's map",
    "InputInvariance": "InputInvariance folds an input shift into the bias of the model's first layer, and a "
    "CLIP image tower starts with a patch embedding without one (or a normalisation)",
    "ModelParameterRandomisation": "ModelParameterRandomisation is Quantus's old name of MPRT; use quantus:MPRT",
    # Quantus 0.6 mixes the one-channel map with the three-channel image in these (shape errors):
    "ROAD": "Quantus 0.6's ROAD orders the pixels of all three colour channels but imputes one channel's "
    "(an index error on RGB images); vlexplain's own road metric implements ROAD",
    "IROF": "Quantus 0.6's IROF masks a three-channel image with a one-channel segment mask (a shape error on RGB images)",
    "NonSensitivity": "Quantus 0.6's NonSensitivity compares per-pixel and per-channel arrays (a shape error on RGB images)",
    "BatchSufficiency": "Quantus 0.6's BatchSufficiency reshapes the image batch to one image (a shape error); "
    "use quantus:Sufficiency",
    "SmoothMPRT": "Quantus 0.6's SmoothMPRT explains with its own Captum call instead of the explain_func it is "
    "given, so it cannot evaluate a vlexplain method; use quantus:MPRT",
    "SensitivityN": "SensitivityN correlates attributions with score drops across the samples of a batch for "
    "each n: a curve per batch, not a value per pair",
}
#: budgets in place of Quantus defaults that take hundreds of forward passes per pair
#: (a callable gets the image size (H, W) and returns the value)
DEFAULTS: dict[str, dict[str, Any]] = {
    "AvgSensitivity": {"nr_samples": 10},
    "MaxSensitivity": {"nr_samples": 10},
    "LocalLipschitzEstimate": {"nr_samples": 10},
    "RelativeInputStability": {"nr_samples": 10},
    "RelativeOutputStability": {"nr_samples": 10},
    "RelativeRepresentationStability": {"nr_samples": 10},
    "FaithfulnessCorrelation": {"nr_runs": 32, "subset_size": lambda hw: max(1, hw[0] * hw[1] // 16)},
    "FaithfulnessEstimate": {"features_in_step": lambda hw: hw[0] * hw[1] // 32},
    "Monotonicity": {"features_in_step": lambda hw: hw[0] * hw[1] // 32},
    "MonotonicityCorrelation": {"nr_samples": 4, "features_in_step": lambda hw: hw[0] * hw[1] // 32},
    "PixelFlipping": {"features_in_step": lambda hw: hw[0] * hw[1] // 32},
    "SensitivityN": {"features_in_step": lambda hw: hw[0] * hw[1] // 32},
    "RegionPerturbation": {"patch_size": lambda hw: max(1, min(hw) // 8), "regions_evaluation": 16},
    "Selectivity": {"patch_size": lambda hw: max(1, min(hw) // 8)},
    "Infidelity": {"n_perturb_samples": 8, "perturb_patch_sizes": lambda hw: [max(1, min(hw) // 8)]},
    "Continuity": {"nr_steps": 8},
    "SmoothMPRT": {"nr_samples": 4},
    "MPRT": {"return_last_correlation": True},
    "EfficientMPRT": {"abs": True, "softmax": True},  # its entropies need non-negative maps and outputs
    "TopKIntersection": {"k": lambda hw: hw[0] * hw[1] // 16},
}
#: options of the bridge itself (the rest go to the Quantus metric's constructor or call)
BRIDGE_OPTIONS = ("seed", "method", "options", "masks")


def _quantus():
    return require("quantus", "quantus")


def _metric_classes() -> dict[str, Any]:
    """Quantus metric classes by name (its public metrics)."""
    q = _quantus()
    from quantus.metrics.base import Metric

    out = {}
    for n in dir(q.metrics):
        c = getattr(q.metrics, n)
        if inspect.isclass(c) and issubclass(c, Metric) and c.__module__.startswith("quantus.metrics."):
            if c.__module__.split(".")[2] in ("base", "base_batched"):
                continue
            out[n] = c
    return out


def category(cls: Any) -> str:
    """faithfulness, robustness, localisation, complexity, randomisation or axiomatic."""
    return cls.__module__.split(".")[2]


def quantus_names() -> list[str]:
    """``quantus:<Metric>`` for every Quantus metric the bridge runs (none when Quantus is missing)."""
    try:
        classes = _metric_classes()
    except ImportError:
        return []
    return sorted(PREFIX + n for n in classes if n not in REFUSED)


# --- what Quantus sees -------------------------------------------------------------------
class PairClassifier(nn.Module):
    """The image tower and the pair score against K fixed texts: (N, 3, H, W) -> (N, K).

    The dual encoder rides along as a plain attribute (not a submodule), so Quantus randomises the
    image tower's layers only, and a deep copy keeps ``dual.image is self.image``.
    """

    text_emb: Tensor
    dual: Any

    def __init__(self, dual: Any, text_emb: Tensor, texts: list[str]):
        super().__init__()
        self.image = dual.image
        self.register_buffer("text_emb", F.normalize(text_emb.detach(), dim=-1))
        object.__setattr__(self, "dual", dual)
        self.texts = texts

    @torch.no_grad()  # Quantus reads scores only (explanations come from explain_func)
    def forward(self, x: Tensor) -> Tensor:
        p = next(self.image.parameters())
        e = F.normalize(self.image.encode(x.to(p.device, p.dtype)), dim=-1)
        return (e @ self.text_emb.T.to(e.dtype)).float()


def make_explain_func(method: str, seed: int, options: dict[str, Any]) -> Callable[..., np.ndarray]:
    """Quantus's ``explain_func(model, inputs, targets)``: ``method`` on the inputs with each target's text."""

    def explain_func(model: PairClassifier, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        from ..attribution.api import explain

        dual = model.dual
        px = torch.as_tensor(np.asarray(inputs), dtype=dual.dtype, device=dual.device)
        ys = np.asarray(targets).reshape(-1).tolist()
        caps = [model.texts[int(y)] for y in ys]
        exps = explain(dual, px, caps, method=method, seed=seed, sides=["image"], batch_size=len(caps), **options)
        exps = exps if isinstance(exps, list) else [exps]
        return np.stack([e.image_map.float().cpu().numpy() for e in exps if e.image_map is not None])[:, None]

    return explain_func


def representation_layers(net: PairClassifier, x: Tensor) -> list[str]:
    """Names (in ``net``) of the modules of the image tower's last block whose output is a batch:
    the internal representation RelativeRepresentationStability reads by default."""
    last = net.image.block_modules()[-1]
    inside = {id(m) for m in last.modules()}
    names = {id(m): n for n, m in net.named_modules() if id(m) in inside and not list(m.children())}
    seen: list[str] = []

    def hook(m: nn.Module, i: Any, o: Any) -> None:
        if isinstance(o, Tensor) and o.shape[:1] == x.shape[:1] and names[id(m)] not in seen:
            seen.append(names[id(m)])

    handles = [m.register_forward_hook(hook) for m in last.modules() if id(m) in names]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise MethodError("RelativeRepresentationStability: no module of the image tower's last block runs as a module")
    return seen


@contextlib.contextmanager
def no_new_hooks(module: nn.Module) -> Iterator[None]:
    """Remove the forward hooks a failing Quantus metric would leave on ``module``'s submodules."""
    before = {id(m): set(m._forward_hooks) for m in module.modules()}
    try:
        yield
    finally:
        for m in module.modules():
            for k in set(m._forward_hooks) - before.get(id(m), set()):
                del m._forward_hooks[k]


# --- running a metric ----------------------------------------------------------------------
def _split_options(cls: Any, opts: dict[str, Any], hw: tuple[int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor keywords, call keywords): the bridge's defaults, then the user's options."""
    init_params = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs", "args"}
    call_params = set(inspect.signature(cls.__call__).parameters) - {"self", "kwargs", "args"}
    base = {k: (v(hw) if callable(v) else v) for k, v in DEFAULTS.get(cls.__name__, {}).items()}
    merged = {**base, **opts}
    unknown = sorted(k for k in merged if k not in init_params and k not in call_params)
    if unknown:
        raise MethodError(
            f"unknown option(s) for quantus:{cls.__name__}: {', '.join(unknown)}; "
            f"options: {', '.join(sorted((init_params | call_params) - FILLED))}"
        )
    init = {k: v for k, v in merged.items() if k in init_params}
    call = {k: v for k, v in merged.items() if k not in init_params}
    return init, call


#: call arguments the bridge fills in
FILLED = {
    "model", "x_batch", "y_batch", "a_batch", "s_batch", "channel_first", "explain_func", "explain_func_kwargs",
    "model_predict_kwargs", "device", "custom_batch", "disable_warnings", "display_progressbar",
    "return_aggregate", "aggregate_func", "default_plot_func",
}  # fmt: skip


def check_options(name: str, opts: dict[str, Any]) -> None:
    """Raise a one-line MethodError for options a Quantus metric does not take (before a run starts)."""
    cls = _metric_classes()[name[len(PREFIX) :]]
    _split_options(cls, {k: v for k, v in opts.items() if k not in BRIDGE_OPTIONS}, (64, 64))


def _to_values(scores: Any, n: int) -> dict[str, Tensor]:
    """Quantus's per-pair results -> {"score": (B,)} (+ {"curve": (B, K)} for curves)."""
    if isinstance(scores, dict):  # one list per key (MPRT layers, ROAD percentages): a curve per pair
        keys = list(scores)
        rows = np.asarray([np.asarray(scores[k], dtype=np.float64).reshape(-1) for k in keys]).T
        if rows.shape[0] != n:
            raise MethodError(f"Quantus returned {rows.shape[0]} values per key for {n} pairs")
        curve = torch.as_tensor(rows)
        return {"score": curve.nanmean(1) if curve.numel() else torch.full((n,), float("nan")), "curve": curve}
    vals = list(scores)
    if len(vals) != n:
        raise MethodError(f"Quantus returned {len(vals)} values for {n} pairs")
    arrs = [np.asarray(v, dtype=np.float64).reshape(-1) for v in vals]
    if all(a.size == 1 for a in arrs):
        return {"score": torch.tensor([float(a[0]) for a in arrs], dtype=torch.float64)}
    k = max(a.size for a in arrs)
    curve = torch.full((n, k), float("nan"), dtype=torch.float64)
    for i, a in enumerate(arrs):
        curve[i, : a.size] = torch.as_tensor(a)
    return {"score": curve.nanmean(1), "curve": curve}


def run_quantus(
    name: str,
    model: Any,
    pixels: Tensor,
    texts: Any,
    image_maps: Tensor | None,
    token_maps: Tensor | None = None,
    *,
    masks: Tensor | None = None,
    method: str | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    **metric_options: Any,
) -> dict[str, Tensor]:
    """Score a batch of image maps with the Quantus metric ``name`` (``quantus:<Metric>``).

    Args:
        name: ``quantus:<Metric>``.
        model, pixels, texts, image_maps: as every vlexplain metric takes them (token maps unused).
        masks: (B, H, W) ground truth (localisation metrics).
        method / seed / options: the method under evaluation, for metrics that re-explain.
        **metric_options: the Quantus metric's constructor or call keywords.

    Returns:
        ``{"score": (B,)}`` (and ``"curve": (B, K)`` for curve-valued metrics), float64 on the model's device.
    """
    from ..models.base import frozen
    from ._common import check_pairs, prepare_image_maps

    cls = _metric_classes()[name[len(PREFIX) :]]
    n = check_pairs(pixels, texts)
    hw = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    maps = prepare_image_maps(image_maps, hw, n, pixels.device)
    init, call = _split_options(cls, metric_options, hw)
    uniq = list(dict.fromkeys(texts.texts))
    y = np.array([uniq.index(t) for t in texts.texts])
    with torch.no_grad():
        temb = model.encode_text(texts.select([texts.texts.index(t) for t in uniq]))
    net = PairClassifier(model, temb, uniq).eval()
    params = inspect.signature(cls.__init__).parameters
    if "num_classes" in params:
        if len(uniq) < 2:  # a random other label needs another text in the batch
            return {"score": torch.full((n,), float("nan"), dtype=torch.float64, device=pixels.device)}
        init.setdefault("num_classes", len(uniq))
    if "seed" in params:
        init.setdefault("seed", int(seed))
    if "return_aggregate" in params:
        init["return_aggregate"] = False  # one value per pair (the report aggregates)
    if "layer_names" in params and "layer_names" not in init and "layer_indices" not in init:
        init["layer_names"] = representation_layers(net, pixels[:1])
    metric = cls(**init, disable_warnings=True, display_progressbar=False)
    kw: dict[str, Any] = {}
    if method is not None:
        kw.update(explain_func=make_explain_func(method, int(seed), dict(options or {})), explain_func_kwargs={})
    if masks is not None:
        kw["s_batch"] = masks.reshape(n, 1, *masks.shape[-2:]).float().cpu().numpy()
    from ..attribution.captum_bridge import seeded

    with frozen(model), seeded(int(seed), pixels.device), no_new_hooks(net):
        scores = metric(
            model=net,
            x_batch=pixels.float().cpu().numpy(),
            y_batch=y,
            a_batch=maps[:, None].cpu().numpy(),
            channel_first=True,
            device=str(pixels.device),
            **{"batch_size": n, "softmax": False, **kw, **call},
        )
    return {k: v.to(pixels.device) for k, v in _to_values(scores, n).items()}


def quantus_spec(name: str):
    """The [`MetricSpec`][vlexplain.metrics.MetricSpec] of ``quantus:<Metric>`` (MethodError: unknown or refused)."""
    from . import MetricSpec

    metric = name[len(PREFIX) :]
    if metric in REFUSED:
        raise MethodError(f"{name} cannot score an image-text pair's map: {REFUSED[metric]}")
    classes = _metric_classes()
    if metric not in classes:
        raise MethodError(f"unknown Quantus metric {metric!r}; available: {', '.join(quantus_names())}")
    cls = classes[metric]
    cat = category(cls)
    requires = ("method",) if metric in REEXPLAIN else NEEDS.get(cat, ())
    direction = getattr(cls, "score_direction", None)
    higher = None if direction is None else {"higher": True, "lower": False}.get(str(direction.value).lower())

    def fn(model, pixels, texts, image_maps, token_maps, **extra):
        if image_maps is None:
            raise InputError(f"metric {name!r} needs image maps (B, H, W)")
        return run_quantus(name, model, pixels, texts, image_maps, token_maps, **extra)

    return MetricSpec(
        name,
        fn,
        "image",
        "score",
        bool(higher) if higher is not None else True,
        requires,
        "masks" in requires,
        summary=f"Quantus {metric} ({cat})",
    )
