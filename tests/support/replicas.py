"""Small replicas of the official dataset layouts (ImageNet-Segmentation, OpenImages V7 points,
VOC 2012) that the reader and protocol tests build."""

from __future__ import annotations

import numpy as np
from PIL import Image


def square_image(size=64, lo=16, hi=48, colour=(255, 0, 0)) -> np.ndarray:
    a = np.zeros((size, size, 3), np.uint8)
    a[lo:hi, lo:hi] = colour
    return a


def write_gtsegs(path, images: list[np.ndarray], masks: list[np.ndarray]) -> None:
    """gtsegs_ijcv.mat as MATLAB v7.3 writes it: /value/img and /value/gt hold object references;
    arrays are stored column-major (transposed); each mask sits in a 1x1 cell."""
    import h5py

    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        img = f.create_dataset("value/img", (len(images), 1), dtype=h5py.ref_dtype)
        gt = f.create_dataset("value/gt", (len(images), 1), dtype=h5py.ref_dtype)
        for i, (a, m) in enumerate(zip(images, masks)):
            img[i, 0] = refs.create_dataset(f"img{i}", data=a.transpose(2, 1, 0)).ref
            mask = refs.create_dataset(f"mask{i}", data=m.astype(np.uint8).T)
            cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = mask.ref
            gt[i, 0] = cell.ref


def seg_mask(size=64) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[16:48, 24:56] = 1
    return m


def write_openimages(root, rows: list[tuple], images: dict[str, np.ndarray]) -> None:
    (root / "images").mkdir(parents=True)
    for k, a in images.items():
        Image.fromarray(a).save(root / "images" / f"{k}.jpg", quality=100)
    head = "ImageId,X,Y,Label,EstimatedYesNo,Source,YesVotes,NoVotes,UnsureVotes\n"
    body = "".join(f"{i},{x},{y},{lab},{yn},ih,1,0,0\n" for i, x, y, lab, yn in rows)
    (root / "oidv7-val-annotations-point-labels.csv").write_text(head + body)
    (root / "oidv7-class-descriptions.csv").write_text("LabelName,DisplayName\n/m/01yrx,Cat\n/m/0bt9lr,Dog\n")


# points (x, y) in [0, 1]; the red square covers pixels 16..47 of 64: x, y in [0.25, 0.75)
POINTS = [
    ("img1", 0.3, 0.3, "/m/01yrx", "yes"),  # in: tp
    ("img1", 0.7, 0.5, "/m/01yrx", "yes"),  # in: tp
    ("img1", 0.1, 0.1, "/m/01yrx", "yes"),  # out: fn
    ("img1", 0.5, 0.5, "/m/01yrx", "no"),  # in: fp
    ("img1", 0.9, 0.9, "/m/01yrx", "no"),  # out: tn
    ("img1", 0.95, 0.2, "/m/01yrx", "no"),  # out: tn
    ("img1", 0.05, 0.5, "/m/01yrx", "unsure"),  # left out
    ("img2", 0.5, 0.6, "/m/0bt9lr", "yes"),  # in: tp
    ("gone", 0.5, 0.6, "/m/0bt9lr", "yes"),  # image not on disk
]


def write_voc(root, labels: list[np.ndarray], images: list[np.ndarray]) -> None:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"2007_{i:06d}" for i in range(len(labels))]
    for i, lab, a in zip(ids, labels, images):
        Image.fromarray(a).save(
            root / "JPEGImages" / f"{i}.jpg", quality=100, subsampling=0
        )  # colours exact in 8x8 blocks
        p = Image.fromarray(lab.astype(np.uint8), mode="P")
        p.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
        p.save(root / "SegmentationClass" / f"{i}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
