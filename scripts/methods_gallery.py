"""Draw docs/methods.png: every registered method's image map on the same inputs, side by side.

    python scripts/methods_gallery.py [--out docs/methods.png]

Rows: two shapes-world scenes explained with `testbed:shapes` (the queried object outlined in
white) and one photo explained with the offline model. Columns: the registered methods at their
defaults (seed 0); a method that does not apply to a model leaves its cell empty with the reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vlexplain as vx
from vlexplain.eval.benchmarks.shapes import shapes_query
from vlexplain.testbeds.shapes import render_scene
from vlexplain.viz.core import overlay


def _rows():
    shapes = vx.load_model("testbed:shapes")
    for seed in (3, 11):
        scene = render_scene(seed, size=shapes.input_size[0], n_objects=2)
        obj, caption = shapes_query(scene)  # the benchmark's rule for which object is asked about
        yield shapes, Image.fromarray(scene.image), caption, scene.object_mask(obj)
    from skimage import data

    yield vx.load_model("offline"), Image.fromarray(data.chelsea()), "a cat", None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/methods.png")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = vx.list_methods()
    rows = list(_rows())
    fig, axes = plt.subplots(len(rows), len(methods) + 1, figsize=(1.45 * (len(methods) + 1), 1.7 * len(rows)))
    for r, (model, image, text, outline) in enumerate(rows):
        pixels = model.preprocess(image)
        rgb = model.denormalize(pixels)
        axes[r, 0].imshow(rgb.permute(1, 2, 0).numpy())
        axes[r, 0].set_title(f'"{text}"\n{model.name}', fontsize=7)
        for c, name in enumerate(methods, 1):
            ax = axes[r, c]
            if r == 0:
                ax.set_title(name, fontsize=7, fontweight="bold")
            why = vx.get_method(name).why_not(model, "image")
            if why is not None:
                ax.text(
                    0.5,
                    0.5,
                    "does not apply\n(CNN image tower)" if "CNN" in why else "does not apply",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="0.4",
                    transform=ax.transAxes,
                )
                ax.set_facecolor("0.95")
                continue
            exp = vx.explain(model, pixels, text, method=name, seed=0, sides=["image"])
            ax.imshow(overlay(rgb, exp.image_map.detach().float().cpu()))
            if outline is not None:
                ax.contour(
                    torch.nn.functional.interpolate(
                        torch.from_numpy(outline.astype(np.float32))[None, None], size=rgb.shape[-2:]
                    )[0, 0].numpy(),
                    levels=[0.5],
                    colors="white",
                    linewidths=0.6,
                )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Every method's image map at its defaults (red: most relevant); white: the queried object", fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
