"""``benchmark grids``: ``n x n`` grids of real photos (``vlexplain.testbeds.grids``) queried with
one cell's class text; the ground truth is the queried cell. Default model ``offline``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import InputError
from .base import SEED_STRIDE, _save_mask, _save_png, _write_jsonl
from .registry import Benchmark, Option, register_benchmark

#: first grid seed (grids are not used for training; kept apart from the examples' small seeds)
GRIDS_SEED_BASE = 1_000
#: cheaper budgets for the costly methods where a forward pass is expensive (224-px CNN on a CPU:
#: with their own defaults rise takes ~60 s and kernel_shap ~18 s per grid); options given by the
#: caller take precedence, so ``--method-options '{"rise": {"n_masks": 1000}}'`` restores a default
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "rise": {"n_masks": 250},
    "kernel_shap": {"n_samples": 96},
    "integrated_gradients": {"steps": 16},
}
DEFAULT_METRICS = ("grid_pointing_game", "energy_pointing_game", "pointing_game", "deletion_image", "insertion_image")


def make_grid_data(out_dir: str | os.PathLike, n: int, seed: int = 0, rows: int = 2) -> Path:
    """Compose ``n`` photo grids; write ``images/``, ``masks/`` and ``pairs.jsonl`` under ``out_dir``.

    Returns:
        The JSONL file (``image``, ``caption``, ``mask``, ``cell_index``, ``grid_n``, ``grid_seed``).
    """
    from ...testbeds.grids import grid_dataset

    if rows < 2:
        raise InputError(f"--grid must be at least 2, got {rows}")
    d = Path(out_dir)
    (d / "images").mkdir(parents=True, exist_ok=True)
    (d / "masks").mkdir(parents=True, exist_ok=True)
    out = []
    for i, g in enumerate(grid_dataset(n, seed=GRIDS_SEED_BASE + SEED_STRIDE * seed, rows=rows)):
        img, msk = f"images/{i:06d}.png", f"masks/{i:06d}.png"
        _save_png(g.image, d / img)
        _save_mask(g.mask, d / msk)
        out.append(
            {"image": img, "caption": g.text, "mask": msk, "cell_index": g.query, "grid_n": g.rows, "grid_seed": g.seed}
        )
    return _write_jsonl(d / "pairs.jsonl", out)


def _make(out_dir: str | os.PathLike, n: int, seed: int, grid: int) -> Path:
    return make_grid_data(out_dir, n, seed, rows=grid)


def _describe(n: int, seed: int, grid: int) -> str:
    return f"{n} {grid}x{grid} grids of real photos, queried with one cell's class text; ground truth: the cell"


register_benchmark(
    Benchmark(
        name="grids",
        summary="grids of real photos queried with one cell's class text; ground truth: that cell",
        default_model="offline",
        default_n=16,
        default_metrics=DEFAULT_METRICS,
        primary="grid_pointing_game",
        make_data=_make,
        describe=_describe,
        method_options=METHOD_OPTIONS,
        options=(Option("grid", 2, "Grid side (2: 2x2, 3: 3x3).", type=int, min=2),),
    )
)
