"""Remove the badge shortcut of ``testbed:spurious``: head ablation, right for the right reasons,
DEAL and a control, each measured against the starting model with paired bootstrap intervals.

Every repair goes through ``vlexplain.repair.repair`` (the ``vlexplain repair`` command) and is
measured on the directory it writes, loaded as a model spec:

* ``ablate_heads k=K``: the K heads whose part of the score rises most with the badge (audited on
  64 scenes per group of ``benchmark spurious``'s seeds, ``--seed`` picks the block of scenes),
  mean-ablated in the weights over the audited scenes without badge. No training.
* ``rrr relevance`` / ``rrr gradient``: fine-tuning with the prediction loss plus a penalty on the
  explanation's mass inside the badge masks; the explanation is DEAL's differentiable relevance
  (last block) or the input gradient (Ross et al.'s own).
* ``deal``: DEAL's losses (lambda_sep 0.1, lambda_con 0.01). ``control``: the prediction loss alone.

The fine-tuning runs share everything but the loss: 3 000 training scenes of the spurious class
dataset badged as the model's own training (P read from its train_config.json), both towers, AdamW
lr 1e-4, batch 32, ``--steps`` steps, data order from the seed.

Measured on held-out single-object scenes in three groups from the same seeds (aligned / absent /
conflicting badge, seeds 0 ..): accuracy per group, worst group, the aligned-minus-conflicting gap,
the true reliance with the badge removed (score of the true caption, aligned minus absent) and
swapped (aligned minus conflicting), M2IB's normalised cue share at block 0, beta 3 (the setting
that sees the badge, ``vlexplain audit layers``), and on the clean shapes world the ranking of
multi-object scenes (no harm). Intervals: 95 % paired percentile bootstrap over images (2 000
resamples; an image's renderings move together).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/spurious_repair.py --out /tmp/spur/repair [--seeds 0 1 2 --steps 150]
Each run is cached (``OUT/<name>.npz`` and the model in ``OUT/<name>/``): an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import vlexplain as vx
from vlexplain.metrics.cue import cue_share_report
from vlexplain.testbeds.shapes import render_scene
from vlexplain.testbeds.shapes_categories import CATEGORIES, category_caption
from vlexplain.testbeds.shapes_eval import MULTI_SEEDS
from vlexplain.testbeds.spurious import GROUPS, group_scenes, image_embeddings, text_embeddings

CATS = [c.name for c in CATEGORIES]


def measure(model, n: int, n_multi: int, batch: int = 50) -> dict[str, np.ndarray]:
    """Per held-out image: correctness per group, reliance (removed, swapped), M2IB's normalised
    cue share (aligned), multi-object ranking on clean scenes."""
    model.eval()
    scenes = group_scenes(n)
    truth = np.array([CATS.index(s.objects[0].category) for s in scenes["absent"]])
    t = torch.nn.functional.normalize(text_embeddings(model, [category_caption(c) for c in CATS]), dim=-1)
    out, sims = {}, {}
    for g in GROUPS:
        sims[g] = (torch.nn.functional.normalize(image_embeddings(model, scenes[g]), dim=-1) @ t.T).numpy()
        out[f"correct_{g}"] = (sims[g].argmax(1) == truth).astype(float)
    rows = np.arange(n)
    out["reliance_removed"] = sims["aligned"][rows, truth] - sims["absent"][rows, truth]
    out["reliance_swapped"] = sims["aligned"][rows, truth] - sims["conflicting"][rows, truth]
    shares = []
    for a in range(0, n, batch):
        sc = scenes["aligned"][a : a + batch]
        px = torch.stack([model.preprocess(s.pil()) for s in sc])
        masks = torch.from_numpy(np.stack([s.badge_mask for s in sc]))
        caps = [category_caption(s.objects[0].category) for s in sc]
        exps = vx.explain(
            model, px, caps, method="m2ib", sides=["image"], seed=list(range(a, a + len(sc))), layer=0, beta=3.0
        )
        maps = torch.stack([e.native_map.float() for e in exps])
        shares.append(cue_share_report(maps, masks)["normalised"].numpy())
    out["cue_m2ib"] = np.concatenate(shares)
    multi = [render_scene(MULTI_SEEDS + i, n_objects=2 + i % 3) for i in range(n_multi)]
    sm = (torch.nn.functional.normalize(image_embeddings(model, multi), dim=-1) @ t.T).numpy()
    present = np.array([[c in s.categories for c in CATS] for s in multi])
    out["multi_ok"] = np.array([sm[i][present[i]].min() > sm[i][~present[i]].max() for i in range(n_multi)], float)
    return out


STATS = {
    "aligned": lambda d, i, j: d["correct_aligned"][i].mean(),
    "no cue": lambda d, i, j: d["correct_absent"][i].mean(),
    "conflicting": lambda d, i, j: d["correct_conflicting"][i].mean(),
    "worst group": lambda d, i, j: min(d[f"correct_{g}"][i].mean() for g in GROUPS),
    "gap": lambda d, i, j: d["correct_aligned"][i].mean() - d["correct_conflicting"][i].mean(),
    "reliance, removed": lambda d, i, j: d["reliance_removed"][i].mean(),
    "reliance, swapped": lambda d, i, j: d["reliance_swapped"][i].mean(),
    "cue share, M2IB": lambda d, i, j: np.nanmean(d["cue_m2ib"][i]),
    "clean multi-object ranking": lambda d, i, j: d["multi_ok"][j].mean(),
}
PCT = {"aligned", "no cue", "conflicting", "worst group", "gap", "clean multi-object ranking"}


def paired(after: dict, before: dict, stat, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, float]:
    """(after value, after − before, low, high): images (and clean scenes) resampled together."""
    n, m = len(after["reliance_removed"]), len(after["multi_ok"])
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i, j = rng.integers(0, n, n), rng.integers(0, m, m)
        diffs.append(stat(after, i, j) - stat(before, i, j))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    v = float(stat(after, np.arange(n), np.arange(m)))
    return v, v - float(stat(before, np.arange(n), np.arange(m))), float(lo), float(hi)


def gap_closed(after: dict, before: dict, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Share of the starting gap closed, (gap before − gap after) / gap before, with its interval."""
    n = len(after["reliance_removed"])
    gap = STATS["gap"]
    rng = np.random.default_rng(seed)
    every = np.arange(n)
    v = 1 - gap(after, every, None) / gap(before, every, None)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        g0 = gap(before, i, None)
        boots.append(1 - gap(after, i, None) / g0 if g0 > 0 else np.nan)
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return float(v), float(lo), float(hi)


def fmt(k: str, v: float, d: float | None = None, lo: float | None = None, hi: float | None = None) -> str:
    f = (lambda x: f"{100 * x:+.1f}") if k in PCT else (lambda x: f"{x:+.3f}")
    head = f"{100 * v:.1f} %" if k in PCT else f"{v:.3f}"
    return head if d is None else f"{head} ({f(d)} [{f(lo)}, {f(hi)}])"  # type: ignore[arg-type]


def arms(a) -> dict[str, dict]:
    """Run name prefix -> the repair's method and options."""
    out: dict[str, dict] = {f"ablate_heads k={k}": {"method": "ablate_heads", "heads": k} for k in a.heads}
    common = {"steps": a.steps, "lr": a.lr, "batch_size": a.batch_size}
    out["rrr relevance"] = {"method": "rrr", "explanation": "relevance", "lambda_rrr": a.lambda_relevance, **common}
    out["rrr gradient"] = {"method": "rrr", "explanation": "gradient", "lambda_rrr": a.lambda_gradient, **common}
    out["deal"] = {"method": "deal", **common}
    out["control"] = {"method": "control", **common}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="testbed:spurious")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-n", type=int, default=3000)
    ap.add_argument("--heads", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--lambda-relevance", type=float, default=100.0)
    ap.add_argument("--lambda-gradient", type=float, default=3.0)
    ap.add_argument("--n", type=int, default=300, help="held-out scenes per group")
    ap.add_argument("--n-multi", type=int, default=300, help="clean multi-object scenes")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="*", default=None, help="run only these arms (names as in the table)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)

    def cached(name: str, fn) -> dict[str, np.ndarray]:
        f = a.out / f"{name}.npz"
        if not f.exists():
            t0 = time.process_time()
            np.savez(f, **fn())
            print(f"{name}: {time.process_time() - t0:.0f} CPU-s", flush=True)
        return dict(np.load(f))

    before = cached("before", lambda: measure(vx.load_model(a.model), a.n, a.n_multi))
    runs: dict[str, dict] = {}
    for name, opts in arms(a).items():
        if a.only is not None and name not in a.only:
            continue
        for seed in a.seeds:
            tag = f"{name.replace(' ', '_').replace('=', '')}_s{seed}"

            def run(opts=opts, seed=seed, tag=tag):
                from vlexplain.repair import repair

                model = vx.load_model(a.model)
                data = "spurious:64" if opts["method"] == "ablate_heads" else f"spurious:{a.train_n}"
                r = repair(model, data=data, out=a.out / tag, seed=seed, progress=False, **opts)
                return measure(vx.load_model(r.spec), a.n, a.n_multi)

            runs[f"{name}, seed {seed}"] = cached(tag, run)
    write_tables(a, before, runs)


def write_tables(a, before: dict, runs: dict[str, dict]) -> None:
    keys = list(STATS)
    every = np.arange(len(before["reliance_removed"]))
    allm = np.arange(len(before["multi_ok"]))
    lines = [f"Settings: {json.dumps({k: str(v) for k, v in vars(a).items()})}", ""]
    lines += [
        "Cells: value after the repair (change from the starting model [95 % paired bootstrap interval]); "
        "accuracies and their changes in percent / points.",
        "",
        "| run | " + " | ".join(keys) + " | gap closed | goal |",
        "|---|" + "---|" * (len(keys) + 2),
        "| before | " + " | ".join(fmt(k, STATS[k](before, every, allm)) for k in keys) + " | – | – |",
    ]
    for name, r in runs.items():
        cells = [fmt(k, *paired(r, before, STATS[k])) for k in keys]
        closed = gap_closed(r, before)
        _, d_al, _, _ = paired(r, before, STATS["aligned"])
        goal = "yes" if closed[0] >= 0.5 and d_al >= -0.01 else "no"
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {100 * closed[0]:.0f} % [{100 * closed[1]:.0f}, {100 * closed[2]:.0f}] | {goal} |"
        )
    names = {n.rsplit(", seed", 1)[0] for n in runs}
    if "control" in names:
        lines += ["", "Each method − control (same seed; paired over images):", ""]
        lines += ["| run, seed | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, r in runs.items():
            arm, seed = name.rsplit(", seed ", 1)
            ctrl = runs.get(f"control, seed {seed}")
            if ctrl is None or arm == "control":
                continue
            cells = []
            for k in keys:
                _, d, lo, hi = paired(r, ctrl, STATS[k])
                f = (lambda x: f"{100 * x:+.1f}") if k in PCT else (lambda x: f"{x:+.3f}")
                cells.append(f"{f(d)} [{f(lo)}, {f(hi)}]")
            lines.append(f"| {arm}, {seed} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (a.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
