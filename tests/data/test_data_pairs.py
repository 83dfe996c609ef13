"""Image-caption pair datasets: every file format, malformed lines, bad images, HF datasets."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from vlexplain.data.pairs import PairDataset, open_pairs
from vlexplain.errors import InputError, MissingExtraError


def _img(path, h=20, w=30, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    for i in range(3):
        _img(tmp_path / "img" / f"{i}.png", value=40 * i)
    return tmp_path


def _captions(ds):
    return [(p.caption, p.error is None) for p in ds]


def test_jsonl_relative_paths_boxes_and_mask(images):
    mask = Image.fromarray(np.eye(20, 30, dtype=np.uint8) * 255)
    mask.save(images / "m.png")
    lines = [
        {"image": "img/0.png", "caption": "zero", "boxes": [[1, 2, 3, 4]]},
        {"image": str(images / "img" / "1.png"), "caption": "one", "mask": "m.png"},
        {"image": "img/2.png", "caption": "two", "boxes": [5, 6, 7, 8]},
    ]
    f = images / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    ds = open_pairs(f)
    assert ds.format == "jsonl" and len(ds) == 3
    pairs = list(ds)
    assert [p.caption for p in pairs] == ["zero", "one", "two"]
    assert [p.index for p in pairs] == [0, 1, 2]
    assert pairs[0].row.boxes == [[1.0, 2.0, 3.0, 4.0]]
    assert pairs[2].row.boxes == [[5.0, 6.0, 7.0, 8.0]]  # a single box is accepted
    assert pairs[0].image.size == (30, 20) and pairs[0].image.mode == "RGB"
    assert np.array_equal(np.asarray(pairs[1].mask) > 127, np.eye(20, 30, dtype=bool))
    assert pairs[0].row.source == f"{f}:1"


def test_jsonl_malformed_line_names_file_and_line(images):
    f = images / "pairs.jsonl"
    f.write_text('{"image": "img/0.png", "caption": "a"}\n\n{"image": "img/1.png", "caption": \n')
    with pytest.raises(InputError, match=rf"{f}:3: invalid JSON"):
        list(open_pairs(f))
    f.write_text('{"image": "img/0.png", "caption": "a"}\n{"image": "img/1.png"}\n')
    with pytest.raises(InputError, match=rf"{f}:2: missing 'caption'"):
        len(open_pairs(f))
    f.write_text('[{"image": "img/0.png", "caption": "a"}]\n')
    with pytest.raises(InputError, match=rf"{f}:1: a JSON array; write JSON Lines"):
        list(open_pairs(f))
    f.write_text('{"image": "img/0.png", "caption": "a", "boxes": [[1, 2, 3]]}\n')
    with pytest.raises(InputError, match=rf"{f}:1: each box must be"):
        list(open_pairs(f))


def test_missing_and_corrupt_images_become_error_rows(images):
    (images / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (images / "empty.png").write_bytes(b"")
    f = images / "pairs.jsonl"
    rows = [
        ("img/0.png", "ok"),
        ("nope.png", "missing"),
        ("bad.jpg", "corrupt"),
        ("empty.png", "empty"),
        ("img/1.png", " "),
        ("img/2.png", "last"),
    ]
    f.write_text("\n".join(json.dumps({"image": a, "caption": b}) for a, b in rows))
    pairs = list(open_pairs(f))
    assert [p.error is None for p in pairs] == [True, False, False, False, False, True]
    assert "image not found" in pairs[1].error and f"{f}:2" in pairs[1].error
    assert f"{f}:3" in pairs[2].error and "bad.jpg" in pairs[2].error
    assert "empty" in pairs[3].error
    assert "empty caption" in pairs[4].error
    assert pairs[5].image is not None


def test_csv_with_json_boxes_and_tsv_header(images):
    f = images / "pairs.csv"
    f.write_text('caption,image,boxes\n"a, quoted caption",img/0.png,"[[0, 0, 10, 5]]"\nplain,img/1.png,\n')
    pairs = list(open_pairs(f))
    assert [p.caption for p in pairs] == ["a, quoted caption", "plain"]
    assert pairs[0].row.boxes == [[0.0, 0.0, 10.0, 5.0]] and pairs[1].row.boxes is None
    assert all(p.error is None for p in pairs)
    t = images / "pairs.tsv"
    t.write_text("image\tcaption\nimg/2.png\ttwo\n")
    ds = open_pairs(t)
    assert [(p.caption, p.error) for p in ds] == [("two", None)]


def test_csv_malformed(images):
    f = images / "pairs.csv"
    f.write_text("image,caption\nimg/0.png,a\nimg/1.png,b,extra\n")
    with pytest.raises(InputError, match=rf"{f}:3: expected 2 fields"):
        list(open_pairs(f).rows())
    f.write_text("picture,words\nimg/0.png,a\n")
    with pytest.raises(
        InputError,
        match=rf"{f}:1: no image column among the columns found \(picture, words\); "
        "name it with --image-key",
    ):
        list(open_pairs(f).rows())
    assert [r.caption for r in open_pairs(f, image_key="picture", caption_key="words").rows()] == ["a"]
    f.write_text('image,caption,boxes\nimg/0.png,a,"[[1,2,3,4]"\n')
    with pytest.raises(InputError, match=rf"{f}:2: 'boxes' is not valid JSON"):
        list(open_pairs(f).rows())


def test_conceptual_captions_tsv(images):
    f = images / "cc.tsv"
    f.write_text("a dog on a beach\timg/0.png\nsunset\timg/1.png\n")
    ds = open_pairs(f)
    assert ds.format == "tsv"
    assert _captions(ds) == [("a dog on a beach", True), ("sunset", True)]
    f.write_text("a dog on a beach\timg/0.png\nno tab here\n")
    with pytest.raises(InputError, match=rf"{f}:2: expected 'caption<TAB>image path'"):
        list(open_pairs(f).rows())


def test_image_folder_with_captions_files(images):
    d = images / "img"
    with pytest.raises(InputError, match="captions.txt"):
        list(open_pairs(d).rows())
    (d / "captions.txt").write_text("0.png\tzero\n\n1.png\tone\n")
    ds = open_pairs(d)
    assert ds.format == "folder"
    assert _captions(ds) == [("zero", True), ("one", True)]
    (d / "captions.txt").write_text('image,caption\n0.png,zero\n2.png,"two, with comma"\n')
    assert _captions(open_pairs(d)) == [("zero", True), ("two, with comma", True)]
    (d / "captions.txt").write_text("0.png zero\n")
    with pytest.raises(InputError, match=r"captions.txt:1: expected 'image file<TAB>caption'"):
        list(open_pairs(d).rows())
    (d / "captions.jsonl").write_text(json.dumps({"image": "2.png", "caption": "two"}) + "\n")
    assert _captions(open_pairs(d)) == [("two", True)]  # captions.jsonl wins over captions.txt


def test_unknown_and_missing_sources(tmp_path):
    with pytest.raises(InputError, match="data not found"):
        PairDataset(tmp_path / "nothing.jsonl")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(InputError, match="unknown data file type '.bin'"):
        open_pairs(tmp_path / "x.bin")
    with pytest.raises(InputError, match=r"^--data: the data is a URL \(https://example.com/pairs.tsv\); .*download"):
        open_pairs("https://example.com/pairs.tsv")


def test_rows_are_streamed_without_opening_images(images, monkeypatch):
    import vlexplain.data.pairs as P

    f = images / "pairs.jsonl"
    f.write_text("\n".join(json.dumps({"image": "img/0.png", "caption": str(i)}) for i in range(50)))
    opened = []
    monkeypatch.setattr(P, "load_image", lambda p: opened.append(p) or Image.new("RGB", (4, 4)))
    it = open_pairs(f).rows()
    first = [next(it) for _ in range(5)]
    assert [r.caption for r in first] == ["0", "1", "2", "3", "4"] and opened == []
    ds = open_pairs(f)
    pairs = iter(ds)
    next(pairs)
    assert len(opened) == 1  # one image opened per pair yielded, not all at once


def test_hf_dataset_needs_the_datasets_package(tmp_path, monkeypatch):
    d = tmp_path / "saved"
    d.mkdir()
    (d / "dataset_info.json").write_text("{}")
    ds = open_pairs(d)
    assert ds.format == "hf"
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError, match="pip install datasets"):
        list(ds.rows())


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    paths = [str(_img(tmp_path / f"{i}.png", value=i)) for i in range(2)]
    dd = datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_dict({"image": paths, "text": ["first", "second"]}).cast_column(
                "image", datasets.Image()
            ),
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    ds = open_pairs(tmp_path / "saved")
    assert ds.format == "hf"
    pairs = list(ds)
    assert [(p.caption, p.error) for p in pairs] == [("first", None), ("second", None)]
    assert pairs[1].image.size == (30, 20)
    with pytest.raises(InputError, match="no split 'train'"):
        list(PairDataset(tmp_path / "saved", split="train").rows())
