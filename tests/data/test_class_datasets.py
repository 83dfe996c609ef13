"""Labelled image datasets: class folders, the CUB-200-2011 layout, keypoints in preprocessed coordinates."""

from __future__ import annotations

import pytest

from tests.support.cub import make_cub, solid_image
from vlexplain.data.classes import cub, disk_mask, image_folder, open_class_dataset, to_preprocessed
from vlexplain.errors import InputError


def test_image_folder(tmp_path, hf_clip):
    for c in ("cat", "golden_retriever"):
        for i in range(2):
            solid_image(tmp_path / c / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("x")
    ds = image_folder(tmp_path, transform=hf_clip.preprocess)
    assert ds.classes == ["cat", "golden retriever"] and len(ds) == 4
    x, y = ds[3]
    assert x.shape == (3, 64, 64) and y == 1
    assert open_class_dataset(tmp_path).classes == ds.classes
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without images"):
        image_folder(tmp_path)


def test_cub_layout(tmp_path):
    make_cub(tmp_path / "CUB_200_2011")
    tr = cub(tmp_path / "CUB_200_2011", "train")
    te = open_class_dataset(tmp_path, "test")
    assert tr.classes == ["Black footed Albatross", "Cardinal"]
    assert len(tr) == 2 and len(te) == 2 and tr.labels == [0, 1]
    s = tr.samples[0]
    assert s.bbox == (5.0, 5.0, 30.0, 20.0) and s.parts == {"beak": (10.0, 20.0)}  # invisible part dropped
    im, y = tr[1]
    assert im.size == (60, 40) and y == 1
    (tmp_path / "CUB_200_2011" / "image_class_labels.txt").write_text("1 1\n")
    with pytest.raises(InputError, match="without a label"):
        cub(tmp_path / "CUB_200_2011")


def test_keypoint_geometry():
    # 60x40 image -> 64x64 input: scale 1.6, width 96, crop 16 px from the left
    assert to_preprocessed((10.0, 20.0), (60, 40), (64, 64)) == pytest.approx((0.0, 32.0))
    m = disk_mask([(1.0, 1.0)], (4, 4), 0.8)
    assert m.sum() == 4 and bool(m[0, 0]) and not m[3, 3]
