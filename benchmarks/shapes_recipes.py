"""Compare shapes-world CLIP recipes side by side on this machine.

Each recipe (a set of :class:`~vlexplain.testbeds.shapes_train.ShapesCLIPConfig` overrides) trains in
its own single-threaded process for the same wall-clock budget, all recipes at once, so they share
the machine's load; then each model is measured on the same held-out scenes (300 single-object,
500 multi-object). Prints steps, the bars and each recipe's multi-object ranking against the first
recipe's.

Run (the default recipe, Muon, against AdamW; two recipes on a 2-core machine, about 11 minutes):
    python benchmarks/shapes_recipes.py --minutes 10 "" "optimizer=adamw"

A recipe is a space-separated list of ``key=value`` (values in JSON; a bare word is a string:
``activation=relu``); the empty string is the default recipe. With one core per recipe each
run sees half the scenes of ``vlexplain testbed train-shapes`` (two processes), so compare recipes
with each other, not with the shipped model.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
from pathlib import Path


def _parse(recipe: str) -> dict:
    out = {}
    for item in recipe.split():
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:  # a bare word is a string: activation=relu
            out[key] = value
    return out


def _run(recipe: str, minutes: float, out: str, seed: int, queue) -> None:
    import torch

    from vlexplain.testbeds.shapes_eval import evaluate_shapes
    from vlexplain.testbeds.shapes_train import ShapesCLIPConfig, train_shapes
    from vlexplain.testbeds.testbed_models import load_shapes_clip

    cfg = ShapesCLIPConfig(**{"threads": 1, **_parse(recipe)})
    info = train_shapes(minutes=minutes, out_dir=out, seed=seed, config=cfg, progress=False)
    torch.set_num_threads(1)
    info.update(evaluate_shapes(load_shapes_clip(out), n_single=300, n_multi=500))
    queue.put((recipe, info))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="+", help='ShapesCLIPConfig overrides, e.g. "vision_layers=3"; "" = defaults')
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the trained models here (default: a temporary folder)")
    args = ap.parse_args()
    from vlexplain.testbeds.shapes_train import ShapesCLIPConfig

    defaults = ShapesCLIPConfig()
    for r in args.recipes:  # bad overrides fail before anything trains
        try:
            for key, value in _parse(r).items():
                if not hasattr(defaults, key):
                    raise ValueError(f"no setting {key!r} in ShapesCLIPConfig")
                if isinstance(value, str) != isinstance(getattr(defaults, key), str):
                    raise ValueError(f"{key}={value!r}: expected a value like {getattr(defaults, key)!r}")
        except ValueError as e:
            ap.error(f"recipe {r!r}: {e} (write key=value: lr=3e-3 activation=relu)")
    root = Path(args.out or tempfile.mkdtemp(prefix="shapes-recipes-"))
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [
        ctx.Process(target=_run, args=(r, args.minutes, str(root / f"recipe{i}"), args.seed, queue))
        for i, r in enumerate(args.recipes)
    ]
    for p in procs:
        p.start()
    results = dict(queue.get() for _ in procs)
    for p in procs:
        p.join()
    base = results[args.recipes[0]]["multi_ranking"]
    print(f"{'recipe':<40} {'steps':>6} {'single':>7} {'multi':>7} {'vs first':>9}")
    for r in args.recipes:
        d = results[r]
        print(
            f"{r or '(defaults)':<40} {d['steps']:>6} {d['category_accuracy']:>7.1%} {d['multi_ranking']:>7.1%} "
            f"{d['multi_ranking'] / max(base, 1e-9):>8.2f}x"
        )
    print(f"models in {root}")


if __name__ == "__main__":
    main()
