"""One validation step for every option and input, shared by the command line, the API and the explorer.

Everything a user can set is checked here before any work starts and before any folder is created
or claimed: seeds, numbers (finite, in range), the options of methods and metrics (known keys, the
types their signatures declare, finite numbers) and JSON option arguments. A method's own range
checks (``Explainer.__init__``) and the model-dependent ones (a layer that the model has) run next,
through ``Explainer.create``, which calls ``Explainer.checked_options`` (``check_options`` against
its ``__init__``) first. Per-method options of a run and the explorer's bounds are in
``vlexplain.attribution.options`` (they read the methods' registry, which this module does not).
"""

from __future__ import annotations

import inspect
import json
import math
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError

#: seeds are whole numbers in 0 .. 2**63 - 1 (what every generator here accepts)
MAX_SEED = 2**63 - 1
#: whole-number options (counts, sizes, layers) stay within a 32-bit signed int
MAX_INT = 2**31 - 1
#: a JSON option argument longer than this is never taken for a file name
MAX_PATH_CHARS = 4096


def check_seed(seed: Any, name: str = "--seed") -> int:
    """``seed`` as an int in ``0 .. MAX_SEED`` (an integral float is accepted), else an InputError."""
    return int(check_number(seed, name, integer=True, lo=0, hi=MAX_SEED))


def check_number(
    value: Any,
    name: str,
    *,
    integer: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> int | float:
    """A finite number (an int when ``integer``) in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a whole number" if integer else "a number"
        raise InputError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise InputError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise InputError(f"{name} must be {'>' if lo_open else '>='} {_fmt(lo)}, got {value!r}")
    if hi is not None and value > hi:
        raise InputError(f"{name} must be at most {_fmt(hi)}, got {value!r}")
    return value


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# --- options checked against a signature ------------------------------------------------------------
def _hints(fn: Callable) -> dict[str, Any]:
    """``fn``'s resolved annotations; one that cannot be resolved (a name imported only for type
    checking) is left out, and its parameter is not type-checked."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        pass
    out = {}
    scope = getattr(fn, "__globals__", {})
    for name, ann in getattr(fn, "__annotations__", {}).items():
        if isinstance(ann, str):
            try:
                ann = eval(ann, scope)  # the annotations of our own (or a plug-in's) signature
            except Exception:
                continue
        out[name] = ann
    return out


def _union() -> Any:
    import types

    return types.UnionType


def check_value(value: Any, hint: Any, name: str) -> Any:
    """``value`` checked against a type hint (bool, int, float, str, Literal, sequences, unions);
    numbers must be finite and ints within ``MAX_INT``. Returns the value (an integral float given
    for an int becomes an int)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, _union()):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_value(value, a, name)
            except InputError as e:
                errors.append(str(e))
        raise InputError(errors[0] if len(errors) == 1 else f"{name}: {value!r} is not one of the accepted kinds")
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise InputError(f"{name} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        return check_number(value, name, integer=True, lo=-MAX_INT - 1, hi=MAX_INT)
    if hint is float:
        return check_number(value, name)
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"{name} must be a text, got {value!r}")
        return value
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{name} must be a list, got {value!r}")
        item = args[0] if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis) else Any
        return type(value)(check_value(v, item, f"{name}[{i}]") for i, v in enumerate(value))
    return _finite_everywhere(value, name)


def _finite_everywhere(value: Any, name: str) -> Any:
    """Any value whose numbers (nested in lists and dicts too) are finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _finite_everywhere(v, f"{name}[{i}]")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_everywhere(v, f"{name}.{k}")
    return value


def signature_options(fn: Callable, skip: int = 0, exclude: Sequence[str] = ()) -> tuple[dict[str, Any], bool]:
    """(option -> type hint, whether any other keyword is accepted) of ``fn``'s parameters after the
    first ``skip`` (hint ``Any`` where none is declared)."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    hints = _hints(fn)
    opts = {
        p.name: hints.get(p.name, Any)
        for p in params
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in exclude
    }
    return opts, any(p.kind is p.VAR_KEYWORD for p in params)


def check_options(
    options: Any, known: dict[str, Any], open_ended: bool, what: str, error: type[Exception] = InputError
) -> dict[str, Any]:
    """``options`` (a dict) checked against ``known`` (option -> type hint): unknown keys, types, finite numbers."""
    if not isinstance(options, dict):
        raise error(f"the options of {what} must be an object of option: value, got {options!r}")
    bad = sorted(str(k) for k in options if not isinstance(k, str) or (k not in known and not open_ended))
    if bad:
        raise error(f"unknown option(s) for {what}: {', '.join(bad)}; options: {', '.join(known) or 'none'}")
    out = {}
    for k, v in options.items():
        try:
            out[k] = _in_range(k, check_value(v, known.get(k, Any), f"{what} option {k}"), f"{what} option {k}")
        except InputError as e:
            raise error(str(e)) from None
    return out


#: counts and sizes: whole numbers >= 1 (``n_*`` and ``*_size`` options too)
_COUNTS = {
    "steps",
    "n_steps",
    "max_iter",
    "chunk",
    "cell",
    "grid",
    "blur_kernel",
    "num_samples",
    "image_samples",
    "text_samples",
    "blocks",
    "image_blocks",
    "text_blocks",
}
#: scales, tolerances and weights: >= 0
_SCALES = {"blur_sigma", "noise", "tol", "tolerance", "compactness", "beta", "lr"}


def _in_range(name: str, value: Any, label: str) -> Any:
    """The ranges options of these names share, whatever method or metric takes them: counts and
    sizes >= 1, scales and tolerances >= 0, seeds in ``0 .. MAX_SEED`` (each method checks its own
    ranges too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if name in _COUNTS or name.startswith("n_") or name.endswith("_size"):
        return check_number(value, label, lo=1)
    if name in _SCALES:
        return check_number(value, label, lo=0)
    if name == "seed" or name.endswith("_seed"):
        return check_number(value, label, integer=True, lo=0, hi=MAX_SEED)
    return value


def metric_options(info: Any) -> tuple[dict[str, Any], bool]:
    """(option -> type hint, open-ended) of a metric: a registered ``MetricSpec`` (the keyword-only
    arguments of its ``options_fn``, else of its ``fn``) or a plug-in function (its arguments after
    the five common ones)."""
    fn = info.fn
    spec_fn = getattr(fn, "options_fn", None) or getattr(fn, "fn", None)  # a registered MetricSpec
    target = spec_fn if spec_fn is not None else fn
    params = list(inspect.signature(target).parameters.values())
    if spec_fn is None:
        params = params[5:]
    else:
        params = [p for p in params if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD)]
    hints = _hints(target)
    exclude = ("mode", *info.requires)
    known = {
        p.name: hints.get(p.name, Any)
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in exclude
    }
    return known, any(p.kind is p.VAR_KEYWORD for p in params)


def check_metrics_options(
    metric_infos: dict[str, Any], options: Any, flag: str = "--metric-options"
) -> dict[str, dict]:
    """Per-metric options for the chosen metrics: known metric names, known keys, types, finite numbers."""
    if not isinstance(options, dict):
        raise InputError(f'{flag}: expected an object of objects, e.g. {{"deletion_image": {{"n_steps": 8}}}}')
    stray = [m for m in options if m not in metric_infos]
    if stray:
        raise InputError(
            f"{flag} names {', '.join(map(repr, stray))}, not among the metrics run ({', '.join(metric_infos)})"
        )
    out = {}
    for name, opts in options.items():
        known, open_ended = metric_options(metric_infos[name])
        out[name] = check_options(opts, known, open_ended, f"metric {name}")
    return out


def check_metric_function(name: str, fn: Any) -> None:
    """A plug-in metric must be callable as ``fn(model, pixels, texts, image_maps, token_maps, **options)``
    (its required keyword-only parameters are the ground truth it ``requires``: ``masks``, ``boxes``)."""
    try:
        sig = inspect.signature(fn)
        given = {p.name: None for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
        sig.bind(None, None, None, None, None, **given)
    except (TypeError, ValueError):
        raise InputError(
            f"{name!r} is not a metric function: it must take (model, pixels, texts, image_maps, token_maps, "
            "**options) and return a dict of per-pair tensors"
        ) from None


def parse_json_option(value: str | None, flag: str, example: str = '{"m2ib": {"steps": 5}}') -> dict[str, Any]:
    """A JSON object given inline or as the path of a JSON file (``{}`` when empty)."""
    if value is None or not value.strip():
        return {}
    text = value
    if not value.lstrip().startswith("{") and len(value) <= MAX_PATH_CHARS:
        p = Path(value).expanduser()
        try:
            is_file = p.is_file()
        except OSError:  # a name the system cannot hold: it is not a file
            is_file = False
        if is_file:
            from .files import read_text

            text = read_text(p, "JSON file")
        elif p.suffix.lower() == ".json" or "/" in value:
            raise InputError(f"{flag} {value}: no such JSON file (or give the JSON itself, e.g. '{example}')")
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InputError(f"{flag}: not valid JSON ({e.msg} at column {e.colno}); expected e.g. '{example}'") from None
    except ValueError as e:
        raise InputError(f"{flag}: {e}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise InputError(f"{flag}: expected a JSON object of objects, e.g. '{example}'")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows; give a finite number")
