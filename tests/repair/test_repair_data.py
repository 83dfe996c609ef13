"""The data of audits and repairs: a cue given as a mask PNG or as boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vlexplain.errors import InputError
from vlexplain.repair.data import JsonlTraining, jsonl_pairs, row_cue_mask


def test_box_mask_by_hand(tmp_path):
    # COCO [x, y, w, h]: a pixel is inside when its centre is; two boxes give their union
    got = row_cue_mask({"cue_boxes": [[1, 2, 3, 1], [0, 0, 1, 1]]}, tmp_path, (4, 6), "row 1")
    want = np.zeros((4, 6), dtype=bool)
    want[2, 1:4] = True
    want[0, 0] = True
    assert got is not None and (got == want).all()
    # one box without the outer list; fractional edges follow the pixel centres
    got = row_cue_mask({"cue_boxes": [0.6, 0.4, 1.0, 1.2]}, tmp_path, (3, 3), "row 1")
    want = np.zeros((3, 3), dtype=bool)
    want[0:2, 1] = True  # x in [0.6, 1.6) holds the centre 1.5 only; y in [0.4, 1.6) holds 0.5 and 1.5
    assert got is not None and (got == want).all()
    assert row_cue_mask({"image": "a.png"}, tmp_path, (3, 3), "row 1") is None


def _files(tmp_path, rows, name="pairs"):
    for i in range(2):
        Image.fromarray(np.full((20, 30, 3), 60 * (i + 1), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[5:9, 10:16] = 255  # the box [10, 5, 6, 4]
    Image.fromarray(mask).save(tmp_path / "cue.png")
    p = tmp_path / f"{name}.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_boxes_and_mask_files_give_the_same_pairs(tmp_path):
    by_mask = _files(tmp_path, [{"image": f"im{i}.png", "caption": "a", "cue_mask": "cue.png"} for i in range(2)], "m")
    by_box = _files(tmp_path, [{"image": f"im{i}.png", "caption": "a", "cue_boxes": [10, 5, 6, 4]} for i in range(2)])
    a, b = jsonl_pairs(by_mask), jsonl_pairs(by_box)
    assert all((x == y).all() for x, y in zip(a.masks, b.masks, strict=True))
    assert all(m.sum() == 24 for m in b.masks)
    # the cue-free images (filled from a ring around the cue) are the same too
    assert all((np.asarray(x) == np.asarray(y)).all() for x, y in zip(a.clean, b.clean, strict=True))


def test_training_rows_read_boxes(tmp_path):
    rows = [
        {"image": "im0.png", "label": "a", "cue_boxes": [[10, 5, 6, 4]]},
        {"image": "im1.png", "label": "b"},
    ]
    ds = JsonlTraining(_files(tmp_path, rows))
    assert ds.has_masks()
    m = ds.cue_mask(0)
    assert m is not None and m.shape == (20, 30) and m.sum() == 24 and m[5:9, 10:16].all()
    assert ds.cue_mask(1) is None


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"image": "im0.png", "label": "a", "cue_boxes": [1, 2, 3]}, "[x, y, w, h]"),
        ({"image": "im0.png", "label": "a", "cue_boxes": [[1, 2, -3, 4]]}, "negative"),
        ({"image": "im0.png", "label": "a", "cue_boxes": "[1, 2"}, "not valid JSON"),
    ],
)
def test_bad_boxes_are_refused_before_training(tmp_path, row, needle):
    with pytest.raises(InputError, match="row 1") as e:
        JsonlTraining(_files(tmp_path, [row, {"image": "im1.png", "label": "b"}]))
    assert needle in str(e.value)


def test_a_box_outside_the_image_is_refused_in_an_audit(tmp_path):
    p = _files(tmp_path, [{"image": "im0.png", "caption": "a", "cue_boxes": [40, 30, 5, 5]}])
    with pytest.raises(InputError, match="covers no pixel"):
        jsonl_pairs(p)
