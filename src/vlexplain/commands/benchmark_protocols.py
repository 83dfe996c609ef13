"""The published-protocol kinds of ``vlexplain benchmark`` (imagenet-seg, openimages-points, openvocab-seg)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError
from ..eval.protocols import KINDS

#: the options only these kinds read, with the kinds that take each
ONLY: dict[str, tuple[str, ...]] = {
    "layout": ("openvocab-seg",),
    "classes": ("openvocab-seg",),
    "no_background": ("openvocab-seg",),
    "short_side": ("openvocab-seg",),
    "stride": ("openvocab-seg",),
    "no_slide": ("openvocab-seg",),
    "templates": ("openvocab-seg",),
    "logit_scale": ("openvocab-seg",),
    "prob_threshold": ("openvocab-seg",),
    "clamp_negative": ("imagenet-seg",),
    "point_threshold": ("openimages-points",),
}
DEFAULTS: dict[str, Any] = {
    "layout": None,
    "classes": None,
    "no_background": False,
    "short_side": 336,
    "stride": None,
    "no_slide": False,
    "templates": "imagenet80",
    "logit_scale": 40.0,
    "prob_threshold": None,
    "clamp_negative": False,
    "point_threshold": 0.5,
}


def check_options(kind: str, given: dict[str, Any]) -> None:
    """An option of one protocol kind given to another kind is a one-line error."""
    for name, kinds in ONLY.items():
        if kind not in kinds and given.get(name, DEFAULTS[name]) != DEFAULTS[name]:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} goes with `vlexplain benchmark {' / '.join(kinds)}`, not {kind}")


def run_protocol(kind: str, data: Path | None, out: Path, shared: dict[str, Any], opts: dict[str, Any]) -> None:
    """Run one protocol kind and print its leaderboard."""
    if data is None:
        raise InputError(f"`vlexplain benchmark {kind}` needs --data (your copy of the dataset)")
    check_options(kind, opts)
    mod, fn = KINDS[kind]
    run = getattr(importlib.import_module(mod), fn)
    common = dict(
        model=shared["model"],
        methods=shared["methods"],
        method_options=shared["method_options"],
        n=shared["n"],
        seed=shared["seed"],
        resume=shared["resume"],
        device=shared["device"],
        progress=shared["progress"],
    )
    if kind == "imagenet-seg":
        res = run(data, out, clamp_negative=opts["clamp_negative"], **common)
    elif kind == "openimages-points":
        res = run(data, out, threshold=opts["point_threshold"], **common)
    else:
        if opts["layout"] is None:
            raise InputError("`vlexplain benchmark openvocab-seg` needs --layout voc|context|coco-object|ade20k")
        res = run(
            data,
            out,
            layout=opts["layout"],
            classes=opts["classes"],
            background=not opts["no_background"],
            short_side=opts["short_side"],
            slide=not opts["no_slide"],
            stride=opts["stride"],
            templates=opts["templates"],
            logit_scale=opts["logit_scale"],
            prob_threshold=opts["prob_threshold"],
            **common,
        )
    typer.echo(res.markdown)
    typer.echo(f"results: {res.results}\nleaderboard: {res.leaderboard}")
