"""The configuration of an ``evaluate`` run: what it records in ``config.json``, how its metrics and
model are resolved, and when an existing run directory may be resumed (the same settings and,
through ``vlexplain.eval.identity``, the same data).
"""

from __future__ import annotations

import dataclasses
import os
import sys
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
    ranked: bool = True  # False: the direction is nominal, no method is "best" (cue metrics)
    native_maps: bool = False  # read each map at its own resolution (``MetricSpec.native_maps``)

    def describe(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "requires": list(self.requires),
            "primary": self.primary,
            "higher_is_better": self.higher_is_better,
            "ranked": self.ranked,
        }


def resolve_metric(name: str) -> MetricInfo:
    """A metric from the registry (``quantus:<Metric>`` included), or ``package.module:function``
    following the same signature.

    A plug-in function may carry the attributes ``side``, ``requires``, ``primary`` and
    ``higher_is_better`` of [`vlexplain.metrics.MetricSpec`][vlexplain.metrics.MetricSpec].
    """
    import importlib

    if ":" in name and not name.startswith("quantus:"):
        from ..validate import check_metric_function

        mod, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError, ValueError) as e:
            raise InputError(f"cannot import metric {name!r}: {e}") from None
        check_metric_function(name, fn)
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
        bool(getattr(fn, "ranked", True)),
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


def _check_methods(model: Any, methods: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> None:
    """Every method applies to the model, and its options are valid on it (layers it has...)."""
    from ..attribution.base import get_method

    if not methods:
        raise MethodError("no methods given")
    for m in methods:
        cls = get_method(m)
        if all(cls.why_not(model, s) is not None for s in ("image", "text")):
            from ..attribution.api import not_applicable

            raise MethodError(not_applicable(cls, model))
        cls.create(model, **(options or {}).get(m, {}))  # the model-dependent checks, before any pair


def _check_quantus_options(metrics: Sequence[str], metric_options: dict[str, dict[str, Any]]) -> None:
    """Refuse unknown options of bridged metrics (``quantus:``) before anything is written (a bad
    option would otherwise fail every pair)."""
    from ..metrics.quantus_bridge import PREFIX, check_options

    for m in metrics:
        if m.startswith(PREFIX):
            check_options(m, metric_options.get(m, {}))


#: what ``overwrite`` removes from a run folder before the new run writes it
RUN_FILES = (rio.CONFIG, rio.MANIFEST, "problems.jsonl", "report.html", rio.SHARD_DIR, rio.MAPS_DIR)
#: the way forward a refusal names
REPLACE = "pass --overwrite to replace the run, or choose another --out"


def check_run_args(
    batch_size: Any,
    limit: Any,
    shard_size: Any,
    target: str,
    seed: Any,
    resume: bool,
    overwrite: bool,
    methods: Sequence[str],
    metrics: Sequence[str],
    method_options: Any,
    metric_options: Any,
) -> dict[str, Any]:
    """``evaluate``'s arguments checked (numbers, names, the options' keys and types) before any
    data is read or model loaded; returns them normalised, with the resolved metrics."""
    from ..attribution.options import check_methods_options
    from ..outdir import check_overwrite
    from ..validate import check_metrics_options, check_number, check_seed

    out: dict[str, Any] = {"batch_size": int(check_number(batch_size, "batch_size", integer=True, lo=1, hi=2**20))}
    out["limit"] = None if limit is None else int(check_number(limit, "limit", integer=True, lo=0))
    out["shard_size"] = (
        None if shard_size is None else int(check_number(shard_size, "shard_size", integer=True, lo=1, hi=2**24))
    )
    if target not in ("cosine", "logit"):
        raise InputError(f"target must be 'cosine' or 'logit' for evaluation runs, got {target!r}")
    out["seed"] = check_seed(seed)
    check_overwrite(resume, overwrite)
    out["methods"] = _check_names(list(methods), "methods")
    out["metric_fns"] = {m: resolve_metric(m) for m in _check_names(list(metrics), "metrics")}
    out["method_options"] = check_methods_options(out["methods"], method_options or {}, "method_options")
    out["metric_options"] = check_metrics_options(out["metric_fns"], metric_options or {}, "metric_options")
    return out


def _check_names(names: list[str], what: str) -> list[str]:
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise InputError(f"{what}: give at least one name (non-empty texts)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{what}: {', '.join(dup)} named twice")
    return names


def _check_scored(model: Any, methods: list[str], metric_fns: dict[str, MetricInfo], show: bool) -> None:
    """Every method must feed at least one metric: a method that explains only the side no metric
    reads (chefer on a CNN image tower with image metrics) would leave all its rows empty."""
    from ..attribution.base import Side, brief_reason, get_method

    both: tuple[Side, Side] = ("image", "text")
    for m in methods:
        cls = get_method(m)
        sides = [s for s in both if cls.why_not(model, s) is None]
        fed = [n for n, info in metric_fns.items() if info.side is None or info.side in sides]
        if fed:
            starved = [n for n in metric_fns if n not in fed]
            if starved and show:
                print(
                    f"note: {m} explains only the {' and '.join(sides)} side of this model: "
                    f"{', '.join(starved)} stay empty for it",
                    file=sys.stderr,
                )
            continue
        missing = [s for s in both if s not in sides]
        why = "; ".join(f"{s} side: {brief_reason(cls.why_not(model, s) or '')}" for s in missing)
        raise MethodError(
            f"{m} cannot be scored by the metrics chosen ({', '.join(metric_fns)}): it explains only the "
            f"{' and '.join(sides)} side of this model ({why}); drop it, or add a metric of that side"
        )


def _prepare_dir(out: Path, cfg: EvalConfig, resume: bool, overwrite: bool = False) -> None:
    """Check that ``out`` can take this run: empty, or (``resume``) holding the same run, or
    (``overwrite``) holding a run that is removed here. Refusals say the one way forward."""
    from ..outdir import remove_run

    cfg_path = out / rio.CONFIG
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    if overwrite:
        if cfg_path.exists() or rio.finished_shards(out):
            print(f"note: --overwrite: replacing the run in {out}", file=sys.stderr)
        remove_run(out, RUN_FILES)
        return
    if cfg_path.exists():
        if not resume:
            raise InputError(
                f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                "or choose another --out"
            )
        try:
            old = rio.read_json(cfg_path)
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise InputError(f"cannot resume {out}: its {rio.CONFIG} is unreadable ({e}); {REPLACE}") from None
        new = _jsonable(dataclasses.asdict(cfg))
        diff = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
        if "data" in diff and isinstance(old.get("data"), dict):  # name the fields: path, images_dir, instances...
            od, nd = old["data"], new["data"]
            keys = sorted(k for k in set(od) | set(nd) if od.get(k) != nd.get(k))
            diff[diff.index("data")] = f"data ({', '.join(keys)})"
        if diff:
            raise InputError(
                f"cannot resume {out}: the configuration differs in {', '.join(diff)}; resume with the "
                f"options of the first run, {REPLACE}"
            )
        from .identity import describe_change

        change = describe_change(old.get("data_identity"), new["data_identity"], cfg.shard_size, cfg.num_samples)
        if change:  # the same settings on other data: finished shards would mix with new ones
            raise InputError(f"cannot resume {out}: {change}; {REPLACE}")
        _drop_unreadable_shards(out)
    elif rio.finished_shards(out):
        raise InputError(f"{out} holds result shards but no {rio.CONFIG}; {REPLACE}")


def _drop_unreadable_shards(out: Path) -> None:
    """A shard file that cannot be read (truncated or emptied after it was written) is computed again."""
    for k, p in rio.finished_shards(out).items():
        why = rio.unreadable(p)
        if why:
            print(f"warning: {p} is unreadable ({why}); shard {k} is computed again", file=sys.stderr)
            p.unlink()


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str, sort_keys=True))
