"""The configuration of an ``evaluate`` run: what it records in ``config.json``, how its metrics and
model are resolved, and when an existing run directory may be resumed (the same settings and,
through ``vlexplain.eval.identity``, the same data).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, MethodError
from . import io as rio

#: 2: every pair is explained with its own seed (``pair_seed``); version 1 gave every pair ``seed``
CONFIG_VERSION = 2
#: configuration keys that must match for ``resume`` to continue a run
IDENTITY_KEYS = (
    "data",
    "num_samples",
    "model",
    "methods",
    "method_options",
    "metrics",
    "metric_options",
    "batch_size",
    "shard_size",
    "limit",
    "seed",
    "target",
    "save_maps",
    "version",
)


@dataclass
class EvalConfig:
    """The resolved configuration of a run (saved as ``config.json``)."""

    data: dict[str, Any]  # the dataset: path, format, split
    model: str  # model spec (or the in-memory model's name)
    methods: list[str]  # attribution methods (registry names)
    metrics: list[str]  # metrics (registry names)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method: its options
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per metric: its options
    batch_size: int = 8  # pairs explained together
    shard_size: int = 64  # pairs per shard (a multiple of batch_size)
    limit: int | None = None  # only the first `limit` pairs
    num_samples: int = 0  # pairs evaluated (after `limit`); a changed data file cannot be resumed
    seed: int = 0  # the run's seed: pair i is explained with pair_seed(seed, i)
    target: str = "cosine"  # score explained: cosine or logit
    save_maps: bool = False  # also write the maps (safetensors)
    device: str = "cpu"  # where the model runs (not part of the run's identity)
    metric_info: dict[str, dict[str, Any]] = field(default_factory=dict)  # side, primary, direction
    world_size: int = 1  # processes that ran the evaluation
    data_identity: dict[str, Any] = field(default_factory=dict)  # fingerprint of the data (eval.identity)
    skipped_metrics: dict[str, str] = field(default_factory=dict)  # metric -> why it was left out (skip_missing)
    version: int = CONFIG_VERSION


# --- metrics registry ----------------------------------------------------------------------
@dataclass(frozen=True)
class MetricInfo:
    """What the runner needs to know about a metric."""

    name: str
    fn: Callable[..., dict[str, Any]]  # fn(model, pixels, texts, image_maps, token_maps, **extra)
    side: str | None  # "image", "text" or None (either)
    requires: tuple[str, ...]  # keywords that must be given: masks, method, per-row extras
    primary: str | None  # output key that summarises the metric
    higher_is_better: bool | None
    native_maps: bool = False  # read each map at its own resolution (``MetricSpec.native_maps``)

    def describe(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "requires": list(self.requires),
            "primary": self.primary,
            "higher_is_better": self.higher_is_better,
        }


def resolve_metric(name: str) -> MetricInfo:
    """A metric from the registry (``quantus:<Metric>`` included), or ``package.module:function``
    following the same signature.

    A plug-in function may carry the attributes ``side``, ``requires``, ``primary`` and
    ``higher_is_better`` of [`vlexplain.metrics.MetricSpec`][vlexplain.metrics.MetricSpec].
    """
    import importlib

    if ":" in name and not name.startswith("quantus:"):
        mod, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise InputError(f"cannot import metric {name!r}: {e}") from None
    else:
        from ..metrics import get_spec

        fn = get_spec(name)
    return MetricInfo(
        name,
        fn,
        getattr(fn, "side", None),
        tuple(getattr(fn, "requires", ())),
        getattr(fn, "primary", None),
        getattr(fn, "higher_is_better", None),
        bool(getattr(fn, "native_maps", False)),
    )


# --- configuration -------------------------------------------------------------------------
def _model_and_spec(model_spec_or_model: Any, device: str | None) -> tuple[Any, str]:
    from ..models.registry import load_model

    if isinstance(model_spec_or_model, (str, os.PathLike)):
        spec = str(model_spec_or_model)
        p = Path(spec).expanduser()
        if p.exists():
            spec = str(p.resolve())
        return load_model(spec, device=device), spec
    model = load_model(model_spec_or_model, device=device)
    return model, getattr(model, "name", type(model).__name__)


def _resolve_device(device: str | None, world: int) -> str | None:
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else None
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def _check_methods(model: Any, methods: Sequence[str]) -> None:
    from ..attribution.base import get_method

    if not methods:
        raise MethodError("no methods given")
    for m in methods:
        cls = get_method(m)
        if all(cls.why_not(model, s) is not None for s in ("image", "text")):
            from ..attribution.api import not_applicable

            raise MethodError(not_applicable(cls, model))


def _prepare_dir(out: Path, cfg: EvalConfig, resume: bool) -> None:
    cfg_path = out / rio.CONFIG
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    if cfg_path.exists():
        old = rio.read_json(cfg_path)
        if not resume:
            raise InputError(f"{out} already holds a run; pass --resume to continue it or choose another directory")
        new = _jsonable(dataclasses.asdict(cfg))
        diff = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
        if "data" in diff and isinstance(old.get("data"), dict):  # name the fields: path, images_dir, instances...
            od, nd = old["data"], new["data"]
            keys = sorted(k for k in set(od) | set(nd) if od.get(k) != nd.get(k))
            diff[diff.index("data")] = f"data ({', '.join(keys)})"
        if diff:
            raise InputError(
                f"cannot resume {out}: the configuration differs in {', '.join(diff)}; resume with the "
                "options of the first run, or start a new run (another --out, or drop --resume to replace it)"
            )
        from .identity import describe_change

        change = describe_change(old.get("data_identity"), new["data_identity"], cfg.shard_size, cfg.num_samples)
        if change:  # the same settings on other data: finished shards would mix with new ones
            raise InputError(f"cannot resume {out}: {change}; start a new run in another directory")
    elif rio.finished_shards(out):
        raise InputError(f"{out} holds result shards but no {rio.CONFIG}; choose another directory")


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str, sort_keys=True))
