"""``repair``: one interface for four ways to remove a model's reliance on a cue.

* ``ablate_heads``: rank the image tower's heads by how much their part of the score rises with
  the cue (``audit_heads`` on pairs with the cue and without it), and mean-ablate the top ``heads``
  in the weights (no training; ``vlexplain.repair.heads``).
* ``rrr``: fine-tune with the prediction loss plus a penalty on explanation mass inside the cue's
  masks (``vlexplain.repair.rrr``).
* ``deal``: DEAL's fine-tuning (prediction + disentangle + localize losses on concept maps).
* ``control``: the same fine-tuning with the explanation terms off (the prediction loss alone).

The three fine-tuning methods run the same loop (``vlexplain.concepts.train.deal_train``: same data
order for a seed, optimiser, steps, learning rate), so they differ only in their loss. The result
is a directory that loads as a model spec (``vlexplain.repair.checkpoint``) with ``repair.json``
beside it; training logs go to ``OUT/training``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError

Method = Literal["ablate_heads", "rrr", "deal", "control"]
METHODS: tuple[str, ...] = ("ablate_heads", "rrr", "deal", "control")


@dataclass
class RepairConfig:
    """Settings of a repair (saved in ``repair.json``)."""

    method: str  # one of METHODS
    heads: int = 3  # ablate_heads: how many of the top-ranked heads to ablate
    steps: int = 300  # fine-tuning: optimiser steps
    lr: float = 1e-4  # fine-tuning: AdamW learning rate
    batch_size: int = 32  # fine-tuning: images per step
    lambda_rrr: float = 1.0  # rrr: weight of the explanation penalty
    explanation: str = "relevance"  # rrr: "relevance" (DEAL's, last block) or "gradient" (input gradients)
    lambda_sep: float = 0.1  # deal: weight of the disentangle loss
    lambda_con: float = 0.01  # deal: weight of the localize loss
    k: int = 5  # deal: descriptors per class
    freeze_text: bool = False  # fine-tuning: keep the text tower fixed
    freeze_image: bool = False  # fine-tuning: keep the image tower fixed
    p: float | None = None  # spurious data: the training scenes' badge probability (default: the model's)
    category_template: str | None = None  # class prompt (default: "a {class}" on the testbed, else CLIP's)
    concept_template: str | None = None  # concept prompt (deal)
    seed: int = 0  # fine-tuning: data order; ablate_heads: the testbed scenes audited


@dataclass
class RepairResult:
    """What ``repair`` wrote."""

    spec: str  # the model spec that loads the repaired model
    out: Path
    info: dict[str, Any]


def _is_spurious(data: str) -> bool:
    from .data import parse_count

    return parse_count(data, "spurious", 1) is not None


def check(model: Any, cfg: RepairConfig, data: str, concepts: Any) -> None:
    """Every refusal that can be made before work starts (one line each)."""
    from .checkpoint import check_writable

    if cfg.method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.method == "ablate_heads":
        from .heads import check_heads

        check_heads(model, [])
        if cfg.heads < 1:
            raise InputError("--heads must be at least 1")
    elif cfg.method == "deal" and concepts is None and not _is_spurious(data):
        raise InputError("--method deal needs --concepts (a concept set) unless --data is spurious[:N]")
    if cfg.method != "ablate_heads" and (cfg.steps < 1 or cfg.lr <= 0 or cfg.batch_size < 1):
        raise InputError("--steps, --lr and --batch-size must be positive")
    check_writable(model)


def repair(
    model: Any,
    method: str,
    data: str,
    out: str | Path,
    *,
    concepts: Any = None,
    progress: bool = True,
    **options: Any,
) -> RepairResult:
    """Repair ``model`` (a DualEncoder, changed in place) and write it to ``out``.

    Args:
        model: the model to repair.
        method: ``ablate_heads``, ``rrr``, ``deal`` or ``control``.
        data: ``spurious[:N]`` or a JSONL file: pairs with cue masks (``ablate_heads``, see
            ``vlexplain.repair.data.audit_pairs``) or labelled images (the fine-tuning methods,
            ``training_data``; ``rrr`` needs cue masks on them).
        out: the output directory (it becomes the repaired model's directory).
        concepts: a concept set source for ``deal`` / ``control`` on your own data.
        progress: show progress.
        **options: ``RepairConfig`` fields.

    Returns:
        A ``RepairResult`` (``spec`` loads the repaired model).
    """
    from .checkpoint import check_out

    fields = {f.name for f in dataclasses.fields(RepairConfig)}
    unknown = set(options) - fields
    if unknown:
        raise InputError(f"unknown repair option(s): {', '.join(sorted(unknown))}")
    cfg = RepairConfig(method=method, **options)
    check(model, cfg, data, concepts)
    out = Path(out)
    check_out(out)
    if method == "ablate_heads":
        info = _ablate(model, cfg, data, out)
    else:
        info = _finetune(model, cfg, data, out, concepts, progress)
    from .checkpoint import save_repaired

    files = info.pop("_files", {})
    info = {"config": dataclasses.asdict(cfg), "data": data, **info}
    spec = save_repaired(model, out, info, files)
    return RepairResult(spec, out, info)


def _ablate(model: Any, cfg: RepairConfig, data: str, out: Path) -> dict[str, Any]:
    from .data import audit_pairs
    from .heads import audit_heads, head_means, mean_ablate

    pairs = audit_pairs(data, cfg.seed)
    audit = audit_heads(model, pairs)
    heads = audit.top(cfg.heads)
    means = head_means(model, pairs.pixels(model, clean=True), heads)
    mean_ablate(model, means)
    return {
        "heads": [list(h) for h in heads],
        "means_over": f"the {len(pairs)} cue-free images, at the position the tower's head reads",
        "audit": audit.to_dict(),
        "head_means": {f"{layer},{head}": [float(v) for v in mu] for (layer, head), mu in means.items()},
        "_files": {"audit_heads.md": audit.markdown()},
    }


def _finetune(model: Any, cfg: RepairConfig, data: str, out: Path, concepts: Any, progress: bool) -> dict[str, Any]:
    from ..concepts.relevance import Templates
    from ..concepts.sets import CATEGORY_TEMPLATE, CONCEPT_TEMPLATE, ConceptSet, load_concepts
    from ..concepts.train import deal_train
    from ..testbeds.shapes_classes import SHAPES_CATEGORY_TEMPLATE, SHAPES_CONCEPT_TEMPLATE
    from .data import JsonlTraining, training_data
    from .rrr import RRRLoss

    ds = training_data(data, model, cfg.p)
    testbed = not isinstance(ds, JsonlTraining)
    if cfg.method == "rrr" and isinstance(ds, JsonlTraining) and not ds.has_masks():
        raise InputError(f"--method rrr needs cue masks: {data} has no cue_mask or cue_boxes on any row")
    if len(ds.classes) < 2:
        raise InputError(f"{data} has a single class: a fine-tuning repair needs images of several classes")
    cat = cfg.category_template or (SHAPES_CATEGORY_TEMPLATE if testbed else CATEGORY_TEMPLATE)
    con = cfg.concept_template or (SHAPES_CONCEPT_TEMPLATE if testbed else CONCEPT_TEMPLATE)
    if concepts is not None:
        cs = load_concepts(concepts, k=cfg.k, classes=ds.classes)
    elif testbed:
        from ..testbeds.shapes_categories import concept_set

        cs = load_concepts(concept_set(), k=cfg.k, classes=ds.classes)
    else:  # rrr / control on your data: the loss reads no concept; one placeholder per class
        cs = ConceptSet({c: (c,) for c in ds.classes})
    deal = cfg.method == "deal"
    losses_fn = (
        RRRLoss(ds, ds.classes, cfg.lambda_rrr, Templates(cat, con), cfg.explanation) if cfg.method == "rrr" else None
    )
    result = deal_train(
        model,
        ds,
        cs,
        out / "training",
        steps=cfg.steps,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        lambda_sep=cfg.lambda_sep if deal else 0.0,
        lambda_con=cfg.lambda_con if deal else 0.0,
        freeze_text=cfg.freeze_text,
        freeze_image=cfg.freeze_image,
        seed=cfg.seed,
        progress=progress,
        resume=False,
        save_every=10**9,
        tensorboard=False,
        category_template=cat,
        concept_template=con,
        k=cfg.k,
        losses_fn=losses_fn,
    )
    if result.stopped != "done":
        raise InputError(f"the fine-tuning stopped early ({result.stopped}); nothing was written as the model")
    return {"steps": result.step, "last_losses": result.last_losses, "training": describe(ds)}


def describe(ds: Any) -> dict[str, Any]:
    return ds.describe() if hasattr(ds, "describe") else {}
