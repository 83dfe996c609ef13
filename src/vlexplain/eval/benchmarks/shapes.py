"""``benchmark shapes``: held-out scenes of the shapes world (``vlexplain.testbeds.shapes``), each
queried with the category caption of one of its objects; the ground truth is that caption's mask
(the object, or the union of the objects of that category). Default model ``testbed:shapes``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import InputError
from .base import SEED_STRIDE, _save_mask, _save_png, _write_jsonl
from .registry import Benchmark, register_benchmark

#: first scene seed of the shapes benchmark: below the training seeds
#: (``shapes_train.TRAIN_SEED_BASE`` = 10_000_000 and up) and apart from the zero-shot evaluation
#: scenes of ``evaluate_shapes`` (0.. and 1_000_000..); scene seeds of benchmark seed ``s`` are
#: ``SHAPES_SEED_BASE + SEED_STRIDE * s + i``
SHAPES_SEED_BASE = 5_000_000
SCENE_SIZE = 64
DEFAULT_METRICS = (
    "pointing_game",
    "energy_pointing_game",
    "auroc",
    "deletion_image",
    "insertion_image",
    "confidence_image",
    "confidence_text",
    "deletion_text",
    "insertion_text",
)


def shapes_seeds(n: int, seed: int = 0) -> list[int]:
    """Scene seeds of the shapes benchmark (held out from training)."""
    from ...testbeds.shapes_train import TRAIN_SEED_BASE

    if n > SEED_STRIDE:
        raise InputError(f"the shapes benchmark holds at most {SEED_STRIDE} scenes per seed, got {n}")
    first = SHAPES_SEED_BASE + SEED_STRIDE * seed
    if seed < 0 or first + n > TRAIN_SEED_BASE:
        raise InputError(
            f"benchmark seed must be between 0 and {(TRAIN_SEED_BASE - SHAPES_SEED_BASE) // SEED_STRIDE - 1}"
        )
    return [first + i for i in range(n)]


def shapes_query(scene: Any) -> tuple[int, str]:
    """The object a benchmark scene is queried about (``scene.seed % len(objects)``) and its
    category caption."""
    from ...testbeds.shapes_categories import category_caption

    obj = scene.seed % len(scene.objects)
    return obj, category_caption(scene.objects[obj].category)


def make_shapes_data(out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = SCENE_SIZE) -> Path:
    """Render ``n`` held-out scenes; write ``images/``, ``masks/`` and ``pairs.jsonl`` under ``out_dir``.

    Scene ``i`` is queried with the category caption of object ``scene.seed % len(objects)``; its
    mask is every visible pixel that caption refers to (the object, plus any other object of the
    same category).

    Returns:
        The JSONL file (``image``, ``caption``, ``mask``, ``scene_seed``, ``object``, ``category``).
    """
    from ...testbeds.shapes import render_scene

    d = Path(out_dir)
    (d / "images").mkdir(parents=True, exist_ok=True)
    (d / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(shapes_seeds(n, seed)):
        scene = render_scene(s, size=size)
        obj, caption = shapes_query(scene)
        cat = scene.objects[obj].category
        mask = scene.text_masks()[caption]
        img, msk = f"images/{i:06d}.png", f"masks/{i:06d}.png"
        _save_png(scene.pil(), d / img)
        _save_mask(mask, d / msk)
        rows.append({"image": img, "caption": caption, "mask": msk, "scene_seed": s, "object": obj, "category": cat})
    return _write_jsonl(d / "pairs.jsonl", rows)


def _describe(n: int, seed: int) -> str:
    return (
        f"{n} held-out shapes-world scenes (seeds {shapes_seeds(n, seed)[0]}..), queried with one object's "
        "category caption; ground truth: that caption's mask"
    )


register_benchmark(
    Benchmark(
        name="shapes",
        summary="shapes-world scenes queried with one object's category caption; ground truth: its exact mask",
        default_model="testbed:shapes",
        default_n=64,
        default_metrics=DEFAULT_METRICS,
        primary="pointing_game",
        make_data=make_shapes_data,
        describe=_describe,
    )
)
