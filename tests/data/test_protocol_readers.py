"""Readers of the official dataset layouts on small replicas with the real file structures: shapes of
arrays, class names, masks and points checked by hand; a malformed file is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.support.replicas import POINTS, seg_mask, square_image, write_gtsegs, write_openimages, write_voc
from vlexplain.errors import InputError

h5py = pytest.importorskip("h5py")


def test_imagenet_seg_reader(tmp_path) -> None:
    from vlexplain.data.imagenet_seg import ImageNetSegmentation

    a = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)  # H 20, W 30
    m = np.zeros((20, 30), np.uint8)
    m[5:9, 2:25] = 1
    write_gtsegs(tmp_path / "gtsegs_ijcv.mat", [a, square_image()], [m, seg_mask()])
    ds = ImageNetSegmentation(tmp_path)  # the folder holding the file
    assert len(ds) == 2
    image, mask = ds[0]
    assert image.size == (30, 20) and np.array_equal(np.asarray(image), a)
    assert mask.dtype == bool and mask.shape == (20, 30) and mask.sum() == 4 * 23 and mask[5, 2] and not mask[4, 2]
    # malformed: an HDF5 file without the references, a file that is not HDF5, no file
    with h5py.File(tmp_path / "other.mat", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    for bad, msg in (("other.mat", "not the ImageNet-Segmentation file"), ("nope.mat", "not found")):
        with pytest.raises(InputError, match=msg):
            ImageNetSegmentation(tmp_path / bad)
    (tmp_path / "text.mat").write_text("MATLAB 5.0 MAT-file")
    with pytest.raises(InputError, match="HDF5"):
        ImageNetSegmentation(tmp_path / "text.mat")


def test_imagenet_s_reader(tmp_path) -> None:
    from vlexplain.data.imagenet_s import ImageNetS, wnid_names

    root = tmp_path / "ImageNetS50"
    wnid = "n01443537"  # goldfish: class 1 of ImageNet-S50's categories file
    (root / "validation" / wnid).mkdir(parents=True)
    (root / "validation-segmentation" / wnid).mkdir(parents=True)
    Image.fromarray(square_image(32)).save(root / "validation" / wnid / "ILSVRC2012_val_1.JPEG")
    lab = np.zeros((32, 32, 3), np.uint8)
    lab[0:10, 0:10, 0] = 1  # class 1 (R + 256 G)
    lab[20:22, :, 0], lab[20:22, :, 1] = 1000 % 256, 1000 // 256  # ignored
    lab[30:, :, 0] = 7  # another class: not this image's object
    Image.fromarray(lab).save(root / "validation-segmentation" / wnid / "ILSVRC2012_val_1.png")
    (tmp_path / "ImageNetS_categories_im50.txt").write_text(f"{wnid}\nn01491361\n")
    ds = ImageNetS(root)
    image, obj, ignore, name = ds[0]
    assert image.size == (32, 32) and name == wnid_names()[wnid] == "goldfish"
    assert obj.sum() == 100 and obj[0:10, 0:10].all() and ignore.sum() == 64 and not obj[30:].any()
    Image.fromarray(lab[..., 0]).save(root / "validation-segmentation" / wnid / "ILSVRC2012_val_1.png")
    with pytest.raises(InputError, match="annotations are RGB"):
        ds[0]
    with pytest.raises(InputError, match="no validation"):
        ImageNetS(tmp_path)


def test_openimages_reader(tmp_path) -> None:
    from vlexplain.data.openimages_points import OpenImagesPoints

    write_openimages(tmp_path, POINTS, {"img1": square_image(), "img2": square_image()})
    ds = OpenImagesPoints(tmp_path)
    assert len(ds) == 2 and ds.missing == 1
    image, classes = ds[0]
    assert image.size == (64, 64) and [c for c, _, _ in classes] == ["Cat"]
    _, pos, neg = classes[0]
    assert pos.tolist() == [[0.3, 0.3], [0.7, 0.5], [0.1, 0.1]] and neg.shape == (3, 2)
    bad = tmp_path / "bad"
    write_openimages(bad, [("img1", 0.3, 0.3, "/m/9999", "yes")], {"img1": square_image()})
    with pytest.raises(InputError, match="not in oidv7-class-descriptions"):
        OpenImagesPoints(bad)
    (bad / "oidv7-val-annotations-point-labels.csv").write_text("ImageId,X,Label\nimg1,0.3,/m/01yrx\n")
    with pytest.raises(InputError, match="missing column"):
        OpenImagesPoints(bad)


@pytest.mark.parametrize("layout", ["voc", "context", "coco-object", "ade20k"])
def test_semseg_layouts(tmp_path, layout) -> None:
    from vlexplain.data.semseg import LAYOUTS, SemSegFolder

    lay = LAYOUTS[layout]
    lab = np.array([[0, 1, 2], [255, 3, 0]], np.uint8)
    (tmp_path / lay.images).mkdir(parents=True)
    (tmp_path / lay.labels).mkdir(parents=True)
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / lay.images / "a1.jpg")
    Image.fromarray(lab, mode="L").save(tmp_path / lay.labels / f"a1{lay.label_suffix}")
    if lay.split:
        (tmp_path / lay.split).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / lay.split).write_text("a1\n")
    ds = SemSegFolder(tmp_path, layout)
    image, got = ds[0]
    assert image.size == (3, 2) and len(ds) == 1
    n = {"voc": 21, "context": 60, "coco-object": 81, "ade20k": 150}[layout]
    assert len(ds.classes) == n
    if layout == "ade20k":  # label 0 ("other") ignored, the rest shifted down
        assert got.tolist() == [[255, 0, 1], [255, 2, 255]]
    else:
        assert got.tolist() == lab.tolist()
    if layout in ("voc", "context"):  # VOC20 / Context59
        no_bg = SemSegFolder(tmp_path, layout, background=False)
        assert len(no_bg.classes) == n - 1 and no_bg[0][1].tolist() == [[255, 0, 1], [255, 2, 255]]
    else:
        with pytest.raises(InputError, match="no background"):
            SemSegFolder(tmp_path, layout, background=False)
    top = 2 if layout == "ade20k" else 3  # the largest label id
    (tmp_path / "few.txt").write_text("sky, wall\ncat\n" + ("dog\n" if top == 3 else ""))
    with pytest.raises(InputError, match=f"label id {top} but the class list has {top} classes"):
        SemSegFolder(tmp_path, layout, classes=tmp_path / "few.txt")


def test_semseg_malformed_files(tmp_path) -> None:
    """A colour-coded (RGB) label map, a label file that is not a PNG and a missing split file are
    one-line errors when the folder is opened (the label maps are read before any run starts)."""
    from vlexplain.data.semseg import SemSegFolder

    lab = np.array([[0, 1], [2, 3]], np.uint8)
    write_voc(tmp_path, [lab], [np.zeros((2, 2, 3), np.uint8)])
    assert SemSegFolder(tmp_path, "voc")[0][1].tolist() == lab.tolist()
    png = tmp_path / "SegmentationClass" / "2007_000000.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(png)
    with pytest.raises(InputError, match="a RGB image; label maps hold one class id per pixel"):
        SemSegFolder(tmp_path, "voc")
    png.write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable PNG"):
        SemSegFolder(tmp_path, "voc")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(InputError, match="split file .* not found"):
        SemSegFolder(tmp_path, "voc")
