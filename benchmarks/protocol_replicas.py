"""The three published-protocol benchmarks on small replicas built from the shapes world.

Each replica has the official file structure of its dataset (the readers cannot tell it from the
real thing), filled with shapes-world scenes whose ground truth is exact:

* ImageNet-S layout (``imagenet-seg``): single-object scenes of the two shapes categories that are
  also ImageNet-1k class names, "mushroom" (n07734744) and "traffic light" (n06874185), with an
  ``ImageNetS_categories_im50.txt`` that gives them ids 1 and 2;
* OpenImages V7 points (``openimages-points``): scenes of 1-4 objects; per present category, 3
  positive points drawn from its pixels and 3 negative points from the other pixels;
* VOC 2012 layout (``openvocab-seg``): the same kind of scenes, label 0 background and 1..10 the ten
  categories, with a class file of those names (``--classes``).

Model: the shipped ``testbed:shapes`` CLIP (3-block ViT, 64 px input, its own vocabulary: the prompt
words outside it read as <unk>, so the replicas use one template). Methods: the training-free dense
methods and the CLIP-native ones, plus the random and center references.

Run: ``OMP_NUM_THREADS=1 python benchmarks/protocol_replicas.py [N] [OUT] [KINDS]`` (N scenes per
replica, default 48; OUT a fresh folder; KINDS comma-separated, default all three; a few minutes
on a CPU). Prints the leaderboards.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vlexplain.eval.benchmarks.imagenet_seg import run_imagenet_seg
from vlexplain.eval.benchmarks.openimages_points import run_openimages_points
from vlexplain.eval.benchmarks.openvocab_seg import run_openvocab_seg
from vlexplain.testbeds.shapes import render_scene
from vlexplain.testbeds.shapes_categories import CATEGORIES

MODEL = "testbed:shapes"
METHODS = ["gem", "sclip", "clearclip", "naclip", "mask_clip", "clip_surgery", "legrad", "grad_eclip", "chefer"]
OPTIONS = {"clip_surgery": {"neutral_prompts": ["a"]}}
SEED = 7_000_000  # scene seeds: apart from the shapes benchmark (5 000 000..) and training (10 000 000..)
NAMES = [c.name for c in CATEGORIES]


def imagenet_s(root: Path, n: int) -> Path:
    wnids = {"mushroom": "n07734744", "traffic light": "n06874185"}
    base = root / "ImageNetS50"
    for i in range(n):
        cat = list(wnids)[i % 2]
        s = render_scene(SEED + i, categories=[cat])
        w = wnids[cat]
        for d in ("validation", "validation-segmentation"):
            (base / d / w).mkdir(parents=True, exist_ok=True)
        Image.fromarray(s.image).save(base / "validation" / w / f"val_{i:05d}.JPEG", quality=95)
        lab = np.zeros((*s.labels.shape, 3), np.uint8)
        lab[s.object_mask(0), 0] = 1 + list(wnids).index(cat)
        Image.fromarray(lab).save(base / "validation-segmentation" / w / f"val_{i:05d}.png")
    (root / "ImageNetS_categories_im50.txt").write_text("\n".join(wnids.values()) + "\n")
    return base


def openimages(root: Path, n: int) -> Path:
    base = root / "openimages"
    (base / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        s = render_scene(SEED + 100_000 + i)
        Image.fromarray(s.image).save(base / "images" / f"{i:016x}.jpg", quality=95)
        for cat in s.categories:
            m = np.zeros(s.labels.shape, bool)
            for o in s.objects:
                if o.category == cat:
                    m |= s.object_mask(o.index)
            for yes, pool in (("yes", np.argwhere(m)), ("no", np.argwhere(~m))):
                for y, x in pool[rng.choice(len(pool), 3, replace=False)]:
                    rows.append([f"{i:016x}", (x + 0.5) / s.size, (y + 0.5) / s.size, f"/m/{NAMES.index(cat)}", yes])
    with open(base / "oidv7-val-annotations-point-labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "X", "Y", "Label", "EstimatedYesNo", "Source", "YesVotes", "NoVotes", "UnsureVotes"])
        w.writerows(r + ["ih", 1, 0, 0] for r in rows)
    (base / "oidv7-class-descriptions.csv").write_text(
        "LabelName,DisplayName\n" + "".join(f"/m/{j},{c}\n" for j, c in enumerate(NAMES))
    )
    return base


def voc(root: Path, n: int) -> tuple[Path, Path]:
    base = root / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True)
    ids = []
    for i in range(n):
        s = render_scene(SEED + 200_000 + i)
        lab = np.zeros(s.labels.shape, np.uint8)
        for o in s.objects:
            lab[s.object_mask(o.index)] = 1 + NAMES.index(o.category)
        ids.append(f"2026_{i:06d}")
        Image.fromarray(s.image).save(base / "JPEGImages" / f"{ids[-1]}.jpg", quality=95)
        Image.fromarray(lab, mode="L").save(base / "SegmentationClass" / f"{ids[-1]}.png")
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    classes = root / "shapes_classes.txt"
    classes.write_text("background\n" + "\n".join(NAMES) + "\n")
    return base, classes


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    only = sys.argv[3].split(",") if len(sys.argv) > 3 else ["imagenet-seg", "openimages-points", "openvocab-seg"]
    kw = dict(model=MODEL, methods=METHODS, method_options=OPTIONS, progress=False)
    if "imagenet-seg" in only:
        print(run_imagenet_seg(imagenet_s(out / "data", n), out / "imagenet-seg", **kw).markdown)
    if "openimages-points" in only:
        print(run_openimages_points(openimages(out / "data", n), out / "openimages-points", **kw).markdown)
    if "openvocab-seg" not in only:
        return
    data, classes = voc(out / "data", n)
    res = run_openvocab_seg(
        data, out / "openvocab-seg", layout="voc", classes=classes, templates="single", short_side=64, **kw
    )  # 64 px scenes at their own size: one window of the model's 64 px input
    print(res.markdown)


if __name__ == "__main__":
    main()
