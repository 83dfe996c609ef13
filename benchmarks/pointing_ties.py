"""How the pointing game's tie rule changes the leaderboards (a quick subset).

The pointing game scores a map with several pixels tied at its maximum as the share of those
pixels within the tolerance of the mask (the expected hit of a uniformly random choice among
them); before, the first tied pixel in row-major order decided. This script runs the benchmark
testbeds on a small subset with both rules side by side (the old one as a plug-in metric) and
prints, per method, the two means and the share of maps with tied maxima.

Usage (from the repository root):
    python benchmarks/pointing_ties.py --n-shapes 24 --n-grids 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def _masks_and_maps(image_maps, masks):
    from vlexplain.metrics.localization import _prepare

    return _prepare(image_maps.to(masks.device), masks)


def first_argmax_pointing_game(model, pixels, texts, image_maps, token_maps, masks=None, tolerance: int = 15):
    """The previous rule: the first maximum in row-major order decides (hit 1 / miss 0)."""
    from vlexplain.metrics.localization import dilate

    maps, m = _masks_and_maps(image_maps, masks)
    idx = maps.flatten(1).argmax(1)
    hit = dilate(m, tolerance).flatten(1).gather(1, idx[:, None])[:, 0].float()
    return {"first_argmax_pg": torch.where(m.flatten(1).any(1), hit, torch.full_like(hit, float("nan")))}


def tied_maxima(model, pixels, texts, image_maps, token_maps, masks=None):
    """Number of pixels equal to the map's maximum (at the masks' resolution)."""
    maps, _ = _masks_and_maps(image_maps, masks)
    flat = maps.flatten(1)
    return {"tied_maxima": (flat == flat.max(1, keepdim=True).values).sum(1).float()}


for _f in (first_argmax_pointing_game, tied_maxima):
    _f.side, _f.requires, _f.higher_is_better = "image", ("masks",), True
    _f.primary = None


def run(kind: str, n: int, methods: list[str] | None, out: Path) -> None:
    from vlexplain.eval.benchmarks.base import run_benchmark
    from vlexplain.eval.io import load_results

    mets = ["pointing_game", "pointing_ties:first_argmax_pointing_game", "pointing_ties:tied_maxima"]
    res = run_benchmark(kind, out / kind, methods=methods, metrics=mets, n=n, progress=False)
    df = load_results(res.run_dir).to_pandas()
    new_col = "pointing_game"
    old_col = next(c for c in df.columns if c.endswith("first_argmax_pg") or c.endswith("first_argmax_pointing_game"))
    tie_col = next(c for c in df.columns if c.endswith("tied_maxima"))
    print(f"\n{kind} (n={n}, model {res.markdown.splitlines()[0] if res.markdown else ''})")
    print("| method | pointing game (tie share) | first-argmax rule | change | maps with tied maxima |")
    print("|:---|---:|---:|---:|---:|")
    for m, g in df.groupby("method", sort=False):
        new, old = g[new_col].astype(float).mean(), g[old_col].astype(float).mean()
        ties = float((g[tie_col].astype(float) > 1).mean())
        print(f"| {m} | {new:.3f} | {old:.3f} | {new - old:+.3f} | {100 * ties:.0f} % |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-shapes", type=int, default=24)
    ap.add_argument("--n-grids", type=int, default=8)
    ap.add_argument("--methods", default=None, help="comma-separated (default: every applicable method)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the plug-in metrics live in this file
    methods = args.methods.split(",") if args.methods else None
    with tempfile.TemporaryDirectory() as d:
        if args.n_shapes:
            run("shapes", args.n_shapes, methods, Path(d))
        if args.n_grids:
            run("grids", args.n_grids, methods, Path(d))


if __name__ == "__main__":
    main()
