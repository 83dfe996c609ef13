"""Contrastive maps on the shapes world: where "a bus" rather than "a tree" puts its positive mass.

Scenes with exactly a bus and a tree (held-out seeds 5 000 000 + k, drawing order alternating), the
shipped ``testbed:shapes`` model. For every method that explains contrasts, prints one Markdown row:

* pooled share: positive mass of the contrast map on the bus / positive mass on bus and tree,
  summed over all scenes;
* mean share and the number of scenes where the share exceeds one half;
* the same pooled share for the plain map of "a bus" (no contrast), for comparison.

``random`` and ``center`` ignore the model: their share is the two objects' relative area.
``m2ib:contrast_mode=fit`` is M2IB with one bottleneck whose fit is the difference.

Run: ``python benchmarks/contrast_shapes.py [N_SCENES] [METHOD[:KEY=VALUE],...]`` (32 scenes, every
method with a contrastive form; about 40 CPU minutes, mostly RISE and Kernel SHAP).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

import vlexplain as vx
from vlexplain.testbeds.shapes import render_scene

SEED_BASE = 5_000_000


def scenes(n: int) -> list[tuple]:
    """(PIL image, bus mask, tree mask) for ``n`` scenes with a bus and a tree."""
    out = []
    for k in range(n):
        order = ["bus", "tree"] if k % 2 == 0 else ["tree", "bus"]
        s = render_scene(seed=SEED_BASE + k, categories=order)
        out.append(
            (
                s.pil(),
                torch.from_numpy(s.object_mask(order.index("bus"))),
                torch.from_numpy(s.object_mask(order.index("tree"))),
            )
        )
    return out


def masses(exps: list, data: list[tuple]) -> np.ndarray:
    """(n, 2) positive mass of each map on the bus and on the tree."""
    rows = []
    for e, (_, bus, tree) in zip(exps, data):
        pos = e.image_map.clamp_min(0)
        rows.append((float(pos[bus].sum()), float(pos[tree].sum())))
    return np.array(rows)


def parse(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    opts = {k: json.loads(v) if v[:1].isdigit() else v for k, v in (kv.split("=", 1) for kv in rest.split(";") if kv)}
    return name, opts


def main(n: int, specs: list[str]) -> None:
    model = vx.load_model("testbed:shapes")
    data = scenes(n)
    images = [d[0] for d in data]
    print(f"{n} scenes with a bus and a tree; model testbed:shapes; seed 0\n")
    print('| method | pooled share on the bus | mean share | scenes > 0.5 | plain "a bus": pooled share |')
    print("|---|---:|---:|---:|---:|")
    diffs = None
    for spec in specs:
        name, opts = parse(spec)
        c = vx.explain(model, images, "a bus", method=name, versus="a tree", sides=["image"], seed=0, **opts)
        p = vx.explain(model, images, "a bus", method=name, sides=["image"], seed=0, **opts)
        mc, mp = masses(c, data), masses(p, data)
        per = mc[:, 0] / (mc.sum(1) + 1e-12)
        pooled, plain = mc[:, 0].sum() / mc.sum(), mp[:, 0].sum() / mp.sum()
        print(
            f"| `{spec}` | {pooled:.3f} | {per.mean():.3f} | {int((per > 0.5).sum())}/{n} | {plain:.3f} |", flush=True
        )
        diffs = np.array([e.contrast.difference for e in c])
    if diffs is not None:
        print(
            f"\ncos(scene, 'a bus') - cos(scene, 'a tree'): mean {diffs.mean():+.4f}, positive in {(diffs > 0).sum()}/{n}"
        )


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    chosen = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    if chosen is None:
        chosen = [m for m in vx.list_methods() if vx.get_method(m).contrast_form] + ["m2ib:contrast_mode=fit"]
    main(count, chosen)
