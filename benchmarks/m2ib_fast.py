"""M2IB's noise estimator: CPU cost per pair and agreement with ``m2ib``'s maps, in one run.

For each model, every pair is explained (image and text side) by ``m2ib`` with reference seeds,
by ``m2ib`` with other seeds (how well m2ib agrees with itself) and by cheaper estimators with
the other seeds: fewer i.i.d. draws per step, antithetic pairs (eps, -eps), the same draws at every
step (common random numbers), and ``m2ib_fast``'s defaults. Agreement = Pearson r between a map and
the reference map of the same pair (image: patch map; text: scores of the shown tokens), mean over
pairs. Cost = process CPU seconds per pair (image + text map) at batch 8 and at batch 1.

Models (no download): ``offline`` (real photos from scikit-image / matplotlib), ``shapes``
(``testbed:shapes``, held-out benchmark scenes) and ``vitb32`` (transformers
``CLIPModel(CLIPConfig())``: ViT-B/32 size, random weights, the same photos). Usage:

    python benchmarks/m2ib_fast.py [--models offline,shapes,vitb32] [--pairs N] [--batch1-pairs 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import vlexplain as vx

# label -> (method, options); the first row is the reference's twin under other seeds
SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "m2ib (10 i.i.d. draws), other seeds": ("m2ib", {}),
    "5 i.i.d.": ("m2ib_fast", dict(num_samples=5, antithetic=False)),
    "3 i.i.d.": ("m2ib_fast", dict(num_samples=3, antithetic=False)),
    "2 i.i.d.": ("m2ib_fast", dict(num_samples=2, antithetic=False)),
    "4 antithetic (2 pairs)": ("m2ib_fast", dict(num_samples=4)),
    "2 antithetic (1 pair)": ("m2ib_fast", dict(num_samples=2)),
    "2 antithetic, same draws every step": ("m2ib_fast", dict(num_samples=2, common_noise=True)),
    "image 2 / text 4 antithetic": ("m2ib_fast", dict(image_samples=2, text_samples=4)),
    "image 4 / text 6 antithetic": ("m2ib_fast", dict(image_samples=4, text_samples=6)),
    "m2ib_fast defaults (image 2 / text 6 antithetic)": ("m2ib_fast", {}),
}
# photo -> two captions of 4+ tokens (the offline model and the random ViT-B/32 explain each photo with both)
PHOTOS = {
    "chelsea": ("a photo of a cat", "a cat lying on a blanket"),
    "coffee": ("a cup of coffee", "a cup of coffee on a saucer next to a spoon"),
    "rocket": ("a rocket in the sky", "a rocket launching into the sky with smoke"),
    "astronaut": ("a picture of an astronaut", "a portrait of an astronaut with a flag"),
    "grace_hopper": ("a woman in uniform", "a woman in a navy uniform and a tie"),
    "camera": ("a photographer with a camera", "a man with a camera on a tripod in a field"),
    "clock": ("a clock on a wall", "an old clock on the wall of a room"),
    "coins": ("a pile of coins", "a collection of old coins on a table"),
}
#: the rows of ``--quick`` (for a loaded machine)
QUICK = [
    "m2ib (10 i.i.d. draws), other seeds",
    "3 i.i.d.",
    "4 antithetic (2 pairs)",
    "2 antithetic (1 pair)",
    "m2ib_fast defaults (image 2 / text 6 antithetic)",
]
DEFAULT_PAIRS = {"offline": 16, "vitb32": 16, "shapes": 64}
REF_SEED, OTHER_SEED = 0, 1000


def load(name: str):
    """(model, images, texts) for one of the benchmark's models."""
    from vlexplain.testbeds.grids import load_photo

    photos = [load_photo(p) for _ in range(2) for p in PHOTOS]  # every photo with its first caption, then its second
    texts = [caps[k] for k in range(2) for caps in PHOTOS.values()]
    if name == "offline":
        return vx.load_model("offline"), photos, texts
    if name == "vitb32":
        from transformers import CLIPConfig, CLIPModel

        torch.manual_seed(0)
        return vx.load_model(CLIPModel(CLIPConfig()).eval()), photos, texts
    if name == "shapes":
        from vlexplain.eval.benchmarks.shapes import shapes_query, shapes_seeds
        from vlexplain.testbeds.shapes import render_scene
        from vlexplain.testbeds.shapes_categories import category_caption

        scenes = [render_scene(s) for s in shapes_seeds(64)]
        texts = []
        for sc in scenes:  # the queried object first, then up to two others: several tokens per text
            q, _ = shapes_query(sc)
            objs = [sc.objects[q]] + [o for i, o in enumerate(sc.objects) if i != q]
            texts.append(" of ".join(category_caption(o.category, o.colour) for o in objs[:3]))
        return vx.load_model("testbed:shapes"), [sc.pil() for sc in scenes], texts
    raise SystemExit(f"unknown model {name!r}; choose offline, shapes, vitb32")


def run(model, images, texts, method: str, opts: dict, seed0: int, batch: int) -> tuple[list, float]:
    """Explanations of all pairs and process CPU seconds per pair."""
    seeds = [seed0 + i for i in range(len(texts))]
    c = time.process_time()
    out = vx.explain(model, images, texts, method=method, seed=seeds, batch_size=batch, **opts)
    return out, (time.process_time() - c) / len(texts)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def agreement(exps: list, refs: list) -> dict[str, float]:
    """Mean Pearson r with the reference maps and its standard error, image and text side."""
    out = {}
    for side, key in (("image", "patch_map"), ("text", "token_scores")):
        r = torch.tensor([pearson(getattr(e, key), getattr(x, key)) for e, x in zip(exps, refs)])
        out[f"r_{side}"], out[f"se_{side}"] = float(r.mean()), float(r.std() / len(r) ** 0.5)
    return out


def bench_model(name: str, n: int, n1: int, batch: int, settings: dict[str, tuple[str, dict]]) -> dict[str, Any]:
    from vlexplain.attribution.api import prepare_images

    model, images, texts = load(name)
    images, texts = prepare_images(model, images[:n]), texts[:n]  # preprocessed once: the methods' cost only
    vx.explain(model, images[0], texts[0], method="m2ib", steps=2, num_samples=1)  # warm-up
    refs, ref_cpu = run(model, images, texts, "m2ib", {}, REF_SEED, batch)
    _, ref_cpu1 = run(model, images[:n1], texts[:n1], "m2ib", {}, REF_SEED, 1)
    rows = {
        "m2ib (reference seeds)": dict(
            cpu_b8=ref_cpu, cpu_b1=ref_cpu1, r_image=1.0, r_text=1.0, se_image=0.0, se_text=0.0
        )
    }
    for label, (method, opts) in settings.items():
        exps, cpu = run(model, images, texts, method, opts, OTHER_SEED, batch)
        _, cpu1 = run(model, images[:n1], texts[:n1], method, opts, OTHER_SEED, 1)
        rows[label] = dict(cpu_b8=cpu, cpu_b1=cpu1, **agreement(exps, refs))
        print(f"  {name:8s} {label:40s} done", flush=True)
    return rows


def table(name: str, rows: dict[str, dict[str, float]]) -> str:
    ref = rows["m2ib (reference seeds)"]
    out = [
        f"\n{name}: CPU s per pair (image + text map) and mean Pearson r (+- standard error) with m2ib's maps",
        "| estimator | CPU s/pair b8 | cheaper b8 | CPU s/pair b1 | cheaper b1 | r image | r text |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        out.append(
            f"| {label} | {r['cpu_b8']:.3f} | {ref['cpu_b8'] / r['cpu_b8']:.1f}x | {r['cpu_b1']:.3f} | "
            f"{ref['cpu_b1'] / r['cpu_b1']:.1f}x | {r['r_image']:.4f} +- {r['se_image']:.4f} | "
            f"{r['r_text']:.4f} +- {r['se_text']:.4f} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="offline,shapes,vitb32")
    ap.add_argument(
        "--pairs", type=int, default=None, help="pairs per model (default: offline 16, vitb32 16, shapes 64)"
    )
    ap.add_argument("--batch1-pairs", type=int, default=4, help="pairs timed one at a time")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="only the rows " + "; ".join(QUICK))
    ap.add_argument("--out", default=None, help="also write the numbers as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = {}
    for name in a.models.split(","):
        settings = {k: v for k, v in SETTINGS.items() if k in QUICK} if a.quick else SETTINGS
        res[name] = bench_model(name, a.pairs or DEFAULT_PAIRS[name], a.batch1_pairs, a.batch, settings)
        print(table(name, res[name]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
