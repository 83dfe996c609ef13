"""Why gradient methods score at chance on the photo grids (offline model).

For the grids of ``vlexplain benchmark grids`` (seed 0), explains each (grid, query) pair with a few
methods and prints, per method:

* ``mass``: the grid pointing game (share of the map's positive mass in the queried cell; chance
  1/4 on 2 x 2 grids), what the benchmark ranks by;
* ``top cell``: how often the queried cell holds more positive mass than any other cell (chance
  1/4): does the map *point* to the right cell, however diffuse it is;
* both again split by whether the queried cell *dominates* the grid's embedding (its crop,
  embedded alone, is the closest of the cells to the whole grid's embedding). The offline model's
  image embedding is a ConSE mixture (softmax over ImageNet classes times the class names' text
  embeddings), so one cell can take over the softmax.

Then the largest class probability of the model's softmax per grid (is it saturated?) and Grad-CAM
at every stage of the CNN (is the layer the problem?).

Run: ``python benchmarks/grids_probe.py [N]`` (N grids, default 48; a few minutes on a CPU).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import vlexplain as vx
from vlexplain.eval.benchmarks.grids import GRIDS_SEED_BASE, METHOD_OPTIONS
from vlexplain.eval.runner import pair_seed
from vlexplain.metrics.gridpg import cell_masks, grid_pointing_game
from vlexplain.testbeds.grids import grid_dataset

METHODS = ["m2ib", "gradcam", "saliency", "gradient_x_input", "integrated_gradients"]


def cell_masses(maps: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n*n) positive mass of each cell (row-major) of (B, H, W) maps, cells as the metric cuts them."""
    cells = cell_masks(tuple(maps.shape[-2:]), n, maps.device)  # (n*n, H, W)
    return torch.einsum("bhw,chw->bc", maps.clamp_min(0), cells.to(maps.dtype))


def dominant(model, grids) -> np.ndarray:
    """Row-major index of the cell whose crop's embedding is closest to the whole grid's."""
    out = []
    for g in grids:
        boxes = [g.cell_box(i) for i in range(g.rows * g.cols)]
        cells = [g.image.crop((x, y, x + w, y + h)) for x, y, w, h in boxes]
        with torch.no_grad():
            e = torch.nn.functional.normalize(
                model.encode_image(torch.stack([model.preprocess(x) for x in [g.image] + cells])), dim=-1
            )
        out.append(int((e[1:] @ e[0]).argmax()))
    return np.array(out)


def score(model, grids, query: np.ndarray, method: str, **opts) -> tuple[np.ndarray, np.ndarray]:
    """Per grid: the queried cell's share of the positive mass (the benchmark's grid pointing game;
    NaN for a map without positive mass), and whether it holds the most."""
    n = len(grids)
    exps = vx.explain(
        model,
        [g.image for g in grids],
        [g.text for g in grids],
        method=method,
        seed=[pair_seed(0, i) for i in range(n)],
        sides=["image"],
        **opts,
    )
    maps = torch.stack([e.image_map.float() for e in exps])
    share = grid_pointing_game(maps, torch.from_numpy(query), 2).numpy()
    return share, (cell_masses(maps, 2).argmax(1).numpy() == query).astype(float)


def main(n: int = 48) -> None:
    model = vx.load_model("offline")
    grids = grid_dataset(n, seed=GRIDS_SEED_BASE, rows=2)
    query = np.array([g.query for g in grids])
    is_dom = dominant(model, grids) == query
    print(f"{n} grids (2 x 2); the queried cell dominates the grid's embedding in {int(is_dom.sum())}")
    print(f"{'method':<22}{'mass':>7}{'top cell':>10}   {'dominant: mass / top':>22}   {'other: mass / top':>19}")
    for m in METHODS:
        share, top = score(model, grids, query, m, **METHOD_OPTIONS.get(m, {}))
        print(
            f"{m:<22}{np.nanmean(share):>7.3f}{top.mean():>10.3f}   "
            f"{np.nanmean(share[is_dom]):>13.3f} / {top[is_dom].mean():.3f}   "
            f"{np.nanmean(share[~is_dom]):>10.3f} / {top[~is_dom].mean():.3f}"
        )
    tower = model.image
    with torch.no_grad():
        px = torch.stack([model.preprocess(g.image) for g in grids])
        p_max = tower.class_logits(tower.encode(px, stop=tower.num_blocks - 1)).softmax(-1).amax(-1).numpy()
    print(
        f"largest class probability per grid: min {p_max.min():.3f}, median {np.median(p_max):.3f}, "
        f"max {p_max.max():.3f}"
    )
    for layer in range(tower.num_blocks):
        share, top = score(model, grids, query, "gradcam", image_layer=layer)
        print(f"gradcam at stage {layer}: mass {np.nanmean(share):.3f}, top cell {top.mean():.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 48)
