"""Does DEAL reduce a model's reliance on a spurious cue beyond plain fine-tuning? DEAL vs its control.

Starting model: ``testbed:spurious`` (the shapes-world CLIP trained with the badge cue). Each run
fine-tunes it on its own biased training distribution (single-object scenes of the class
dataset's train split, badged as in its training: own badge with probability P) with the world's
concept set (5 descriptors per class, prompts "a {class}" / "{descriptor}"), either with DEAL's
losses (lambda_sep 0.1, lambda_con 0.01) or with the prediction loss alone (both lambdas 0: the
control, same data, steps, learning rate and data order). Text tower only (``--freeze-image``) and
both towers; one run per seed.

Measured on held-out single-object scenes in three groups from the same seeds (aligned / absent /
conflicting badge): accuracy per group, mean and worst-group accuracy, the aligned-minus-
conflicting gap, the true reliance of the aligned images (score with the badge minus without),
and the cue share (share of positive map mass on the badge) of the concept maps (DEAL's
relevance, mean over the 5 concept maps of an aligned image) and of M2IB's maps (aligned image,
its category caption). Every change is given with a paired percentile bootstrap interval over
images (2 000 resamples, the images drawn together across groups), as ``deal evaluate --before``
does; DEAL minus control pairs the two runs of the same seed and towers.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/spurious_deal.py --out /tmp/spurious_deal [--steps 150 --seeds 0 1 2]
Results are kept per run (``OUT/<towers>_<arm>_s<seed>.npz``): an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import vlexplain as vx
from vlexplain.concepts.relevance import Templates, deal_maps
from vlexplain.concepts.sets import ConceptSet
from vlexplain.concepts.train import deal_train
from vlexplain.metrics.cue import cue_share
from vlexplain.testbeds.shapes_categories import category_caption, concept_set
from vlexplain.testbeds.spurious import GROUPS, SpuriousClassDataset, group_scenes, image_embeddings, text_embeddings

CATS = list(concept_set())
TEMPLATES = Templates("a {class}", "{descriptor}")
ARMS = {"deal": (0.1, 0.01), "control": (0.0, 0.0)}


def measure(model, n: int, batch: int = 50) -> dict[str, np.ndarray]:
    """Per held-out image: correctness per group, true reliance, cue share of concept and M2IB maps."""
    model.eval()
    scenes = group_scenes(n)
    truth = np.array([CATS.index(s.objects[0].category) for s in scenes["absent"]])
    t = torch.nn.functional.normalize(text_embeddings(model, [category_caption(c) for c in CATS]), dim=-1)
    out, sims = {}, {}
    for g in GROUPS:
        sims[g] = (torch.nn.functional.normalize(image_embeddings(model, scenes[g]), dim=-1) @ t.T).numpy()
        out[f"correct_{g}"] = (sims[g].argmax(1) == truth).astype(float)
    rows = np.arange(n)
    out["reliance"] = sims["aligned"][rows, truth] - sims["absent"][rows, truth]
    concepts = ConceptSet({c: tuple(d) for c, d in concept_set().items()})
    cs, ms = [], []
    for a in range(0, n, batch):
        sc = scenes["aligned"][a : a + batch]
        px = torch.stack([model.preprocess(s.pil()) for s in sc])
        masks = torch.from_numpy(np.stack([s.badge_mask for s in sc]))
        cm = deal_maps(model, px, [s.objects[0].category for s in sc], concepts, k=5, templates=TEMPLATES)
        k = cm.concepts.shape[1]
        share = cue_share(cm.concepts.flatten(0, 1).detach(), masks.repeat_interleave(k, 0)).view(len(sc), k)
        share = torch.where(cm.mask.to(share.device), share, torch.full_like(share, float("nan")))
        cs.append(np.nanmean(share.cpu().numpy(), 1))
        caps = [category_caption(s.objects[0].category) for s in sc]
        exps = vx.explain(model, px, caps, method="m2ib", sides=["image"], seed=list(range(a, a + len(sc))))
        ms.append(cue_share(torch.stack([e.image_map.float() for e in exps]), masks).numpy())
    out["cue_concept"], out["cue_m2ib"] = np.concatenate(cs), np.concatenate(ms)
    return out


STATS = {
    "mean accuracy": lambda d, i: np.mean([d[f"correct_{g}"][i].mean() for g in GROUPS]),
    "worst-group accuracy": lambda d, i: min(d[f"correct_{g}"][i].mean() for g in GROUPS),
    "aligned": lambda d, i: d["correct_aligned"][i].mean(),
    "absent": lambda d, i: d["correct_absent"][i].mean(),
    "conflicting": lambda d, i: d["correct_conflicting"][i].mean(),
    "aligned − conflicting": lambda d, i: d["correct_aligned"][i].mean() - d["correct_conflicting"][i].mean(),
    "reliance (aligned)": lambda d, i: d["reliance"][i].mean(),
    "cue share, concept maps": lambda d, i: np.nanmean(d["cue_concept"][i]),
    "cue share, M2IB": lambda d, i: np.nanmean(d["cue_m2ib"][i]),
}


def paired(after: dict, before: dict, stat, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, float]:
    """(after value, after − before, low, high): the change's interval, images resampled together."""
    n = len(after["reliance"])
    every = np.arange(n)
    rng = np.random.default_rng(seed)
    diffs = [stat(after, i) - stat(before, i) for i in rng.integers(0, n, size=(n_boot, n))]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    v = float(stat(after, every))
    return v, v - float(stat(before, every)), float(lo), float(hi)


def _cell(v: float, d: float, lo: float, hi: float, pct: bool) -> str:
    f = (lambda x: f"{100 * x:+.1f}") if pct else (lambda x: f"{x:+.3f}")
    return (f"{100 * v:.1f} %" if pct else f"{v:.3f}") + f" ({f(d)} [{f(lo)}, {f(hi)}])"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="testbed:spurious")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-n", type=int, default=3000)
    ap.add_argument(
        "--p",
        type=float,
        default=None,
        help="badge probability of the fine-tuning data (default: the one the model was trained with)",
    )
    ap.add_argument("--n", type=int, default=300, help="held-out scenes per group")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--towers", nargs="+", default=["text", "both"], choices=["text", "both"])
    a = ap.parse_args()
    if a.p is None:  # the model's own training distribution
        from vlexplain.testbeds.testbed_models import spurious_dir

        d = spurious_dir() if a.model == "testbed:spurious" else Path(a.model.split("@", 1)[-1])
        cfg = d / "train_config.json"
        if not cfg.exists() or json.loads(cfg.read_text()).get("spurious") is None:
            ap.error(f"--p: {a.model} does not record the badge probability it was trained with; pass --p")
        a.p = float(json.loads(cfg.read_text())["spurious"])
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    concepts = ConceptSet({c: tuple(d) for c, d in concept_set().items()})

    def cached(name: str, fn) -> dict[str, np.ndarray]:
        f = a.out / f"{name}.npz"
        if not f.exists():
            t0 = time.time()
            np.savez(f, **fn())
            print(f"{name}: {time.time() - t0:.0f} s", flush=True)
        return dict(np.load(f))

    before = cached("before", lambda: measure(vx.load_model(a.model), a.n))
    runs = {}
    for towers in a.towers:
        for seed in a.seeds:
            for arm, (ls, lc) in ARMS.items():
                name = f"{towers}_{arm}_s{seed}"

                def run(ls=ls, lc=lc, towers=towers, seed=seed, name=name):
                    model = vx.load_model(a.model)
                    ds = SpuriousClassDataset(a.train_n, p=a.p, split="train", transform=model.preprocess)
                    deal_train(
                        model,
                        ds,
                        concepts,
                        a.out / name,
                        steps=a.steps,
                        lr=a.lr,
                        batch_size=a.batch_size,
                        lambda_sep=ls,
                        lambda_con=lc,
                        freeze_image=towers == "text",
                        seed=seed,
                        progress=False,
                        resume=False,
                        save_every=10**9,
                        tensorboard=False,
                        category_template=TEMPLATES.category,
                        concept_template=TEMPLATES.concept,
                    )
                    return measure(model, a.n)

                runs[name] = cached(name, run)
    lines = [f"Settings: {json.dumps({k: str(v) for k, v in vars(a).items()})}", ""]
    keys = list(STATS)
    pct = {k: "accuracy" in k or k in ("aligned", "absent", "conflicting", "aligned − conflicting") for k in keys}
    lines += [
        "Cells: value after fine-tuning (change from before [95 % paired bootstrap interval]); accuracies "
        "and their changes in percent / points.",
        "",
    ]
    lines += ["| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines.append(
        "| before | "
        + " | ".join(
            (f"{100 * STATS[k](before, np.arange(a.n)):.1f} %" if pct[k] else f"{STATS[k](before, np.arange(a.n)):.3f}")
            for k in keys
        )
        + " |"
    )
    for name, r in runs.items():
        lines.append(f"| {name} | " + " | ".join(_cell(*paired(r, before, STATS[k]), pct[k]) for k in keys) + " |")
    lines += [
        "",
        "DEAL − control (same towers and seed; paired over images):",
        "",
        "| towers, seed | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for towers in a.towers:
        for seed in a.seeds:
            d, c = runs[f"{towers}_deal_s{seed}"], runs[f"{towers}_control_s{seed}"]
            cells = []
            for k in keys:
                _, diff, lo, hi = paired(d, c, STATS[k])
                f = (lambda x: f"{100 * x:+.1f}") if pct[k] else (lambda x: f"{x:+.3f}")
                cells.append(f"{f(diff)} [{f(lo)}, {f(hi)}]")
            lines.append(f"| {towers}, {seed} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (a.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
