"""``benchmark interactions``: which word goes with which region, scored on exact ground truth.

Each pair's caption names every object of the image, and each object's visible pixels are the true
region of its word: shapes-world scenes with 2-4 objects of different categories ("a bus, a tree
and a house"; the word is the category), or 2 x 2 grids of real photos whose caption names the
four cells ("a cat, a rocket, a clock and coins"; the word is the class text without its article).
Every registered interaction method (references included) is run on every pair and scored with the
interaction metrics of [`vlexplain.metrics.interactions`][vlexplain.metrics.interactions] (one value
per named object), with cluster-bootstrap intervals over pairs; each method is compared, per object
and paired, with the references ``span_first_order`` and ``random``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, MethodError
from .base import SEED_STRIDE
from .registry import Benchmark, Option, register_benchmark

#: first scene seed (shapes) / grid seed (grids) of benchmark seed 0: apart from the shapes
#: benchmark's (5_000_000..), the grids benchmark's (1_000..) and the training scenes (10_000_000..)
SHAPES_SEED_BASE = 6_000_000
GRIDS_SEED_BASE = 2_000_000
WORLDS = ("shapes", "grids")
DEFAULT_MODEL = {"shapes": "testbed:shapes", "grids": "offline"}
REFERENCES = ("span_first_order", "random")
#: cheaper budgets; the caller's ``--method-options`` take precedence
METHOD_OPTIONS: dict[str, dict[str, Any]] = {"banzhaf": {"budget": 256}}


@dataclass
class Item:
    """One pair: the image, its caption, the span of each named object and the objects' masks."""

    image: Any  # PIL image
    caption: str
    spans: list[str]
    masks: np.ndarray  # (K, H, W) bool, at the image's resolution
    seed: int


@dataclass
class InteractionsResult:
    """What ``vlexplain benchmark interactions`` produced."""

    out: Path
    leaderboard: Path
    markdown: str
    results: Path
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def reports(self) -> list[Path]:
        return [self.results]


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def shapes_items(n: int, seed: int = 0) -> list[Item]:
    """``n`` scenes whose objects have different categories, each visible on at least 2 % of the image."""
    from ...testbeds.shapes import render_scene
    from ...testbeds.shapes_categories import category_caption

    out: list[Item] = []
    s = SHAPES_SEED_BASE + SEED_STRIDE * seed
    while len(out) < n:
        scene = render_scene(s, size=64)
        s += 1
        cats = [o.category for o in scene.objects]
        masks = np.stack([scene.object_mask(i) for i in range(len(cats))])
        if len(set(cats)) != len(cats) or len(cats) < 2 or masks.mean((1, 2)).min() < 0.02:
            continue
        caption = _join([category_caption(c) for c in cats])
        out.append(Item(scene.pil(), caption, cats, masks, scene.seed))
    return out


def grids_items(n: int, seed: int = 0) -> list[Item]:
    """``n`` 2 x 2 grids of real photos; the caption names the four cells."""
    from ...testbeds.grids import make_grid

    out = []
    for i in range(n):
        g = make_grid(GRIDS_SEED_BASE + SEED_STRIDE * seed + i, rows=2)
        texts = g.texts
        spans = [t.split(" ", 1)[1] if t.split(" ", 1)[0] in ("a", "an", "the") else t for t in texts]
        masks = np.stack([g.cell_mask(k) for k in range(len(texts))])
        out.append(Item(g.image, _join(texts), spans, masks, g.seed))
    return out


def _methods(model: Any, methods: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    from ...interactions.base import get_interaction_method, list_interaction_methods

    names = list(methods) if methods else list_interaction_methods()
    for r in REFERENCES:
        if r not in names:
            names.append(r)
    run, skipped = [], {}
    for m in names:
        why = get_interaction_method(m).why_not(model)  # unknown name: one line
        if why is None:
            run.append(m)
        else:
            skipped[m] = why
    return run, skipped


def _score(model: Any, items: list[Item], method: str, opts: dict[str, Any], seed: int, batch_size: int, metrics):
    """Per named object: metric -> values, the pair each belongs to, and seconds per pair."""
    import torch
    import torch.nn.functional as F

    from ...interactions.api import interactions
    from ...metrics.interactions import interaction_metrics

    t0 = time.perf_counter()
    got = interactions(
        model, [it.image for it in items], [it.caption for it in items], method=method,
        seed=[seed * SEED_STRIDE + i for i in range(len(items))], batch_size=batch_size, **opts,
    )  # fmt: skip
    per_pair = (time.perf_counter() - t0) / len(items)
    res = got if isinstance(got, list) else [got]
    values: dict[str, list[float]] = {m: [] for m in metrics}
    groups: list[int] = []
    for i, (it, inter) in enumerate(zip(items, res)):
        regions = torch.stack([inter.region(s) for s in it.spans]).float().cpu()
        masks = torch.from_numpy(it.masks)
        if tuple(masks.shape[1:]) != tuple(model.input_size):
            masks = F.interpolate(masks[:, None].float(), size=tuple(model.input_size), mode="nearest")[:, 0] > 0.5
        for name, v in interaction_metrics(regions, masks, list(metrics)).items():
            values[name] += v.tolist()
        groups += [i] * len(it.spans)
    return values, groups, per_pair


def run_interactions(
    out: str | os.PathLike,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    n: int | None = None,
    model: Any = None,
    seed: int = 0,
    batch_size: int = 8,
    resume: bool = False,
    method_options: dict[str, dict[str, Any]] | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    device: str | None = None,
    progress: bool = True,
    world: str = "shapes",
    overwrite: bool = False,
) -> InteractionsResult:
    """Score every interaction method on ``n`` pairs of ``world``; write ``leaderboard.md`` and
    ``results.json`` (an ``out`` that holds them is refused unless ``overwrite``)."""
    from ...metrics.interactions import INTERACTION_METRICS
    from ...models.registry import load_model
    from ...outdir import claimed
    from ...validate import check_seed

    if world not in WORLDS:
        raise InputError(f"--world must be one of {', '.join(WORLDS)}, got {world!r}")
    if resume or metric_options:
        raise InputError("benchmark interactions runs in one pass: --resume and --metric-options do not apply")
    metrics = list(metrics) if metrics else list(INTERACTION_METRICS)
    bad = [m for m in metrics if m not in INTERACTION_METRICS]
    if bad:
        raise InputError(f"unknown interaction metric {bad[0]!r}; choose from {', '.join(INTERACTION_METRICS)}")
    n = 16 if n is None else n
    if not 1 <= n <= SEED_STRIDE:
        raise InputError(f"--n must be between 1 and {SEED_STRIDE}, got {n}")
    seed = check_seed(seed)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file")
    if (out / "leaderboard.md").exists() and not overwrite:
        raise InputError(f"{out} already holds a benchmark; pass --overwrite to replace it, or choose another --out")
    opts = {**METHOD_OPTIONS, **(method_options or {})}
    spec = model if model is not None else DEFAULT_MODEL[world]
    loaded = load_model(spec, device=device) if isinstance(spec, str) else spec
    run, skipped = _methods(loaded, methods)
    for m in run:  # bad options: one line, before any work
        try:
            from ...interactions.base import get_interaction_method

            get_interaction_method(m).create(loaded, **opts.get(m, {}))
        except TypeError as e:
            raise MethodError(f"{m}: {e}") from None
    items = (shapes_items if world == "shapes" else grids_items)(n, seed)
    scored = {}
    for k, m in enumerate(run):
        if progress:
            print(f"[{k + 1}/{len(run)}] {m} on {n} pairs", flush=True)
        scored[m] = _score(loaded, items, m, opts.get(m, {}), seed, batch_size, metrics)
    rows = _rows(scored, metrics)
    md = _markdown(rows, metrics, skipped, loaded.name, world, n, seed, opts, run)
    lb, js = out / "leaderboard.md", out / "results.json"
    with claimed(out):
        out.mkdir(parents=True, exist_ok=True)
        lb.write_text(md)
        js.write_text(json.dumps({"world": world, "model": loaded.name, "n": n, "seed": seed, "methods": rows,
                                  "skipped": skipped, "method_options": opts}, indent=1))  # fmt: skip
    return InteractionsResult(out, lb, md, js, rows, skipped)


def _rows(scored: dict[str, Any], metrics: list[str]) -> dict[str, dict[str, Any]]:
    """Per method: each metric's mean and interval, the paired differences with the references, s/pair."""
    from ..report import bootstrap_ci

    rows: dict[str, dict[str, Any]] = {}
    for m, (values, groups, sec) in scored.items():
        g = np.asarray(groups)
        row: dict[str, Any] = {"seconds_per_pair": sec, "objects": len(groups)}
        for name in metrics:
            v = np.asarray(values[name], dtype=np.float64)
            row[name] = bootstrap_ci(v, groups=g)
            for ref in REFERENCES:
                if ref != m and ref in scored:
                    d = v - np.asarray(scored[ref][0][name], dtype=np.float64)
                    row[f"{name} - {ref}"] = bootstrap_ci(d, groups=g)
        rows[m] = row
    return rows


def _cell(ci: tuple[float, float, float]) -> str:
    mean, lo, hi = ci
    return "n/a" if np.isnan(mean) else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _markdown(rows, metrics, skipped, model, world, n, seed, opts, run) -> str:
    order = sorted(rows, key=lambda m: -np.nan_to_num(rows[m][metrics[0]][0], nan=-1.0))
    lines = [
        f"# Interactions on the {world} world: {n} pairs, model {model}, seed {seed}",
        "",
        f"Sorted by {metrics[0]}; mean [95 % cluster-bootstrap interval over pairs], one value per named object.",
        "",
        "| method | " + " | ".join(metrics) + " | s/pair |",
        "|---|" + "---:|" * (len(metrics) + 1),
    ]
    for m in order:
        r = rows[m]
        lines.append(f"| `{m}` | " + " | ".join(_cell(r[k]) for k in metrics) + f" | {r['seconds_per_pair']:.3f} |")
    lines += ["", "Paired differences with the references (per object; an interval above 0: beats it):", ""]
    lines += ["| method | " + " | ".join(f"{k} - {ref}" for ref in REFERENCES for k in metrics) + " |"]
    lines += ["|---|" + "---:|" * (len(metrics) * len(REFERENCES))]
    for m in order:
        cells = [
            _cell(rows[m][f"{k} - {ref}"]) if f"{k} - {ref}" in rows[m] else "-" for ref in REFERENCES for k in metrics
        ]
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    used = {m: o for m, o in opts.items() if m in run and o}
    if used:
        lines += ["", "Options: " + "; ".join(f"`{m}` {json.dumps(o)}" for m, o in sorted(used.items()))]
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"`{m}`: {why}" for m, why in sorted(skipped.items()))]
    return "\n".join(lines) + "\n"


register_benchmark(
    Benchmark(
        name="interactions",
        summary=(
            "word x region interactions: captions naming every object of shapes scenes (or every cell of "
            "photo grids); ground truth: each word's object"
        ),
        default_model="testbed:shapes",
        default_n=16,
        default_metrics=("pointing", "mass", "reverse"),
        primary="pointing",
        run=run_interactions,
        method_registry="interactions",
        method_options=METHOD_OPTIONS,
        options=(Option("world", "shapes", "shapes (2-4 objects per scene) or grids (2x2 photo grids)."),),
        model_help="Model spec (default: testbed:shapes for --world shapes, offline for --world grids).",
    )
)
