"""Pair data as CLIP users store it: OpenCLIP CSVs, Conceptual-Captions TSVs, COCO captions + instances,
webdataset shards, Parquet, HF DatasetDicts, URLs. Each layout is a faithful replica built here from a
few tiny images whose grey level tells which image a pair got."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from vlexplain.data.coco import names_category, rle_from_string, segmentation_mask
from vlexplain.data.pairs import open_pairs
from vlexplain.data.rows import LazyBytes
from vlexplain.errors import InputError


def _img(path, value, w=8, h=6):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


def _png(value, w=8, h=6):
    b = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(b, "PNG")
    return b.getvalue()


def _grey(pair):
    assert pair.error is None, pair.error
    return pair.image.getpixel((0, 0))[0]


@pytest.fixture
def imgs(tmp_path):
    for i in range(3):
        _img(tmp_path / "img" / f"{i}.png", 40 * i)
    return tmp_path


# --- CSV / TSV -----------------------------------------------------------------------------------


def test_openclip_csv_header_is_recognised(imgs):
    f = imgs / "train.tsv"  # OpenCLIP's --csv-img-key filepath --csv-caption-key title convention
    f.write_text("filepath\ttitle\nimg/1.png\ta grey square\nimg/2.png\ta lighter square\n")
    ds = open_pairs(f)
    pairs = list(ds)
    assert [(p.caption, _grey(p)) for p in pairs] == [("a grey square", 40), ("a lighter square", 80)]
    assert ds.describe()["columns"] == {"image": "filepath", "caption": "title"}
    c = imgs / "train.csv"
    c.write_text('image,text\nimg/2.png,"two, with a comma"\n')
    assert [(p.caption, _grey(p)) for p in open_pairs(c)] == [("two, with a comma", 80)]


def test_headerless_tsv_either_order_and_missing_first_image(imgs):
    f = imgs / "cc.tsv"
    f.write_text('"quoted" caption\tnope.png\nsunset\timg/1.png\n')  # first image missing: still no header
    pairs = list(open_pairs(f))
    assert pairs[0].caption == '"quoted" caption' and "image not found" in pairs[0].error
    assert (pairs[1].caption, _grey(pairs[1])) == ("sunset", 40)
    f.write_text("img/2.png\ttwo\n")
    assert [(p.caption, _grey(p)) for p in open_pairs(f)] == [("two", 80)]


def test_header_with_unknown_columns_and_urls_are_refused_in_one_line(imgs):
    f = imgs / "x.tsv"
    f.write_text("picture\twords\nimg/0.png\tzero\n")
    with pytest.raises(InputError, match=r"x.tsv:1: no image column among the columns found \(picture, words\)"):
        list(open_pairs(f).rows())
    assert [(p.caption, _grey(p)) for p in open_pairs(f, image_key="picture", caption_key="words")] == [("zero", 0)]
    with pytest.raises(InputError, match="no column 'pic' for the image"):
        list(open_pairs(f, image_key="pic").rows())
    f.write_text("caption\turl\na cat\thttps://example.com/a.jpg\n")
    with pytest.raises(InputError) as e:
        list(open_pairs(f).rows())
    msg = str(e.value)
    assert "\n" not in msg and "x.tsv:2: the image is a URL (https://example.com/a.jpg)" in msg and "download" in msg


# --- COCO --------------------------------------------------------------------------------------------


def _coco(root):
    _img(root / "val2017" / "000000000001.jpg", 10, w=10, h=8)
    _img(root / "val2017" / "000000000002.jpg", 20, w=10, h=8)
    caps = {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "width": 10, "height": 8},
            {"id": 2, "file_name": "000000000002.jpg", "width": 10, "height": 8},
            {"id": 3, "file_name": "no_captions.jpg", "width": 10, "height": 8},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "Two dogs and a man."},
            {"id": 11, "image_id": 2, "caption": "A cat on a sofa"},
            {"id": 12, "image_id": 1, "caption": "A park in summer"},
        ],
    }
    inst = {
        "images": caps["images"],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 18,
                "bbox": [0, 0, 2, 2],
                "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]],
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 18,
                "bbox": [5, 5, 1, 1],
                "segmentation": {"size": [8, 10], "counts": [1, 2, 77]},
                "iscrowd": 1,
            },
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [6, 0, 3, 4], "segmentation": [], "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 18, "bbox": [1, 1, 1, 1], "segmentation": [], "iscrowd": 0},
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(caps))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(inst))
    return root / "annotations" / "captions_val2017.json", root / "annotations" / "instances_val2017.json"


def test_coco_captions_and_instances(tmp_path):
    caps, inst = _coco(tmp_path)
    ds = open_pairs(caps)  # images found at ../val2017; first caption per image
    assert ds.format == "coco"
    pairs = list(ds)
    assert [(p.caption, _grey(p)) for p in pairs] == [("Two dogs and a man.", 10), ("A cat on a sofa", 20)]
    assert pairs[0].row.boxes is None and ds.describe()["split"] == "val2017"
    every = open_pairs(caps, all_captions=True)
    assert [r.caption for r in every.rows()] == ["Two dogs and a man.", "A park in summer", "A cat on a sofa"]
    # boxes matched to the caption by category name: "dogs" -> both dog boxes, "man" -> the person box
    rows = list(open_pairs(caps, instances=inst, all_captions=True).rows())
    assert rows[0].boxes == [[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 1.0, 1.0], [6.0, 0.0, 3.0, 4.0]]
    assert rows[1].boxes is None  # "A park in summer" names no category of its image: no ground truth
    assert rows[2].boxes is None  # the cat is named, but image 2 only has a dog
    d = open_pairs(caps, instances=inst, all_captions=True)
    list(d.rows())
    assert d.describe()["coco"] == {"images": 2, "pairs": 3, "without_ground_truth": 2}
    assert list(open_pairs(caps, instances=inst, coco_match="all").rows())[1].boxes == [[1.0, 1.0, 1.0, 1.0]]
    # masks: the dog polygon (centres inside (1,4) x (1,3): 3 x 2 = 6 pixels) and the dog RLE (pixels 1, 2
    # in column-major order: (row 1, col 0) and (row 2, col 0))
    p = next(iter(open_pairs(caps, instances=inst, coco_ground_truth="masks")))
    m = np.asarray(p.mask) > 127
    want = np.zeros((8, 10), bool)
    want[1:3, 1:4] = True
    want[1:3, 0] = True
    assert np.array_equal(m, want)  # the person's empty polygon list adds nothing


def test_coco_helpers_by_hand():
    assert rle_from_string("123") == [1, 2, 3] and rle_from_string("1232") == [1, 2, 3, 4]
    assert rle_from_string("X1") == [40]  # 'X' = 48 + 40: low bits 8, continue; '1': 1 << 5 -> 8 + 32
    m = segmentation_mask({"size": [3, 2], "counts": "123"}, 3, 2)
    assert m.tolist() == [[False, False], [True, False], [True, False]]
    assert names_category("Two dogs and a man", "dog") and names_category("Two dogs and a man", "person")
    assert names_category("traffic lights at night", "traffic light") and not names_category("a doghouse", "dog")


def test_coco_file_errors(tmp_path):
    caps, inst = _coco(tmp_path)
    with pytest.raises(InputError, match="an instances file"):
        list(open_pairs(inst, images=tmp_path / "val2017").rows())
    other = tmp_path / "elsewhere.json"
    other.write_text(caps.read_text())
    with pytest.raises(InputError, match="pass --images FOLDER"):
        list(open_pairs(other).rows())
    assert len(open_pairs(other, images=tmp_path / "val2017")) == 2
    odd = tmp_path / "odd.json"  # another key first: found by parsing the file
    odd.write_text(json.dumps({"name": "mine", **json.loads(caps.read_text())}))
    assert open_pairs(odd, images=tmp_path / "val2017").format == "coco"
    jl = tmp_path / "pairs.jsonl"
    jl.write_text(caps.read_text() + "\n")
    with pytest.raises(InputError, match="this is a COCO annotation file, not JSON Lines"):
        list(open_pairs(jl).rows())


# --- webdataset --------------------------------------------------------------------------------------


def _shard(path, samples, mode="w"):
    with tarfile.open(path, mode) as tf:
        for key, members in samples:
            for ext, data in members.items():
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


def test_webdataset_shards(tmp_path, monkeypatch):
    d = tmp_path / "shards"
    d.mkdir()
    _shard(
        d / "00000.tar",
        [
            ("000000000", {"jpg": _png(10), "txt": b"a dark square"}),
            ("000000001", {"png": _png(20), "json": json.dumps({"caption": "from json"}).encode()}),
        ],
    )
    _shard(
        d / "00001.tar",
        [
            ("000000002", {"txt": b"no image here"}),
            ("000000003", {"webp": _png(30), "txt": b"last", "json": json.dumps({"boxes": [[1, 1, 2, 2]]}).encode()}),
        ],
    )
    reads = []
    real = LazyBytes.read
    monkeypatch.setattr(LazyBytes, "read", lambda self: reads.append(self) or real(self))
    ds = open_pairs(d)
    assert ds.format == "webdataset"
    rows = list(ds.rows())
    assert reads == []  # listing the pairs reads no image bytes
    assert [r.caption for r in rows] == ["a dark square", "from json", "no image here", "last"]
    assert rows[3].boxes == [[1.0, 1.0, 2.0, 2.0]] and rows[3].extras["shard"] == "00001.tar"
    pairs = [ds.load(r) for r in rows]
    assert [_grey(pairs[i]) for i in (0, 1, 3)] == [10, 20, 30] and len(reads) == 3
    assert "00001.tar:000000002: no image in this sample (members: txt)" in pairs[2].error
    assert len(open_pairs(str(d / "{00000..00001}.tar"))) == 4  # brace pattern as OpenCLIP takes it
    with pytest.raises(InputError, match="1 of 3 shards are missing"):
        open_pairs(str(d / "{00000..00002}.tar")).rows().__next__()
    gz = tmp_path / "one.tar.gz"
    _shard(
        gz,
        [("./a", {"jpg": _png(50), "txt": b"compressed"}), ("./.hidden", {"jpg": _png(1), "txt": b"no"})],
        mode="w:gz",
    )  # as `tar czf one.tar.gz .` writes them
    assert [(p.caption, _grey(p)) for p in open_pairs(gz)] == [("compressed", 50)]


# --- Parquet and HF ------------------------------------------------------------------------------------


def test_parquet_bytes_paths_and_split_files(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    _img(tmp_path / "pq" / "local.png", 90)
    t = pa.table(
        {
            "image": [{"bytes": _png(5), "path": None}, {"bytes": None, "path": "local.png"}],
            "caption": [["five", "cinq"], ["ninety"]],
        }
    )
    pq.write_table(t, tmp_path / "pq" / "test-00000-of-00001.parquet")
    pq.write_table(t.slice(0, 1), tmp_path / "pq" / "train-00000-of-00001.parquet")
    ds = open_pairs(tmp_path / "pq")  # two splits: test by default
    assert [(p.caption, _grey(p)) for p in ds] == [("five", 5), ("ninety", 90)]
    assert ds.describe()["split"] == "test" and "first caption" in ds.describe()["notes"][0]
    tr = open_pairs(tmp_path / "pq", split="train", all_captions=True)
    assert [(r.index, r.caption) for r in tr.rows()] == [(0, "five"), (1, "cinq")]
    with pytest.raises(InputError, match=r"no split 'val' \(splits: test, train\)"):
        open_pairs(tmp_path / "pq", split="val").rows().__next__()
    # split folders of Parquet parts (names that carry no split): the folder is the split
    (tmp_path / "parts" / "test").mkdir(parents=True)
    (tmp_path / "parts" / "train").mkdir()
    pq.write_table(t.slice(1, 1), tmp_path / "parts" / "test" / "part-0.parquet")
    pq.write_table(t.slice(0, 1), tmp_path / "parts" / "train" / "part-0.parquet")
    parts = open_pairs(tmp_path / "parts")
    assert [p.caption for p in parts] == ["ninety"] and parts.format == "parquet" and parts.split == "test"


def test_hf_datasetdict_named_columns_and_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    paths = [str(_img(tmp_path / f"{i}.png", 30 * i)) for i in range(3)]
    mk = lambda idx: datasets.Dataset.from_dict(
        {"img": [paths[i] for i in idx], "sentences": [[f"caption {i}", f"other {i}"] for i in idx]}
    ).cast_column("img", datasets.Image())
    datasets.DatasetDict({"train": mk([0, 1]), "validation": mk([2])}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(InputError, match=r"no split 'test'; splits: train, validation \(pass --split NAME\)"):
        list(open_pairs(tmp_path / "saved").rows())
    ds = open_pairs(tmp_path / "saved", split="validation", image_key="img", caption_key="sentences")
    assert [(p.caption, _grey(p)) for p in ds] == [("caption 2", 60)]
    assert ds.describe()["split"] == "validation"
    tr = open_pairs(tmp_path / "saved", split="train", all_captions=True)
    assert [(p.caption, _grey(p)) for p in tr] == [("caption 0", 0), ("other 0", 0), ("caption 1", 30), ("other 1", 30)]


# --- through evaluate --------------------------------------------------------------------------------


def test_evaluate_cli_reads_named_columns_of_a_datasetdict_split(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    from tests.support.models import tiny_hf_clip
    from vlexplain.cli import main

    tiny_hf_clip().save_pretrained(tmp_path / "model")
    paths = [str(_img(tmp_path / f"{i}.png", 30 * i)) for i in range(3)]
    mk = lambda idx: datasets.Dataset.from_dict(
        {"img": [paths[i] for i in idx], "sentences": [[f"caption {i}", "other"] for i in idx]}
    )
    datasets.DatasetDict({"train": mk([0, 1]), "validation": mk([2])}).save_to_disk(str(tmp_path / "saved"))
    common = [
        "--data",
        str(tmp_path / "saved"),
        "--model",
        str(tmp_path / "model"),
        "--methods",
        "random",
        "--metrics",
        "confidence_image",
        "--no-progress",
    ]
    assert main(["evaluate", *common, "--out", str(tmp_path / "x")]) == 2
    assert "no split 'test'; splits: train, validation (pass --split NAME)" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                *common,
                "--split",
                "validation",
                "--image-key",
                "img",
                "--caption-key",
                "sentences",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "note: 'sentences' holds lists of captions: the first caption of each is used" in err
    assert "1 pair from hf data (split validation)" in err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["data"]["split"] == "validation" and cfg["num_samples"] == 1
    assert cfg["data"]["columns"] == {"image": "img", "caption": "sentences"}


def test_evaluate_scores_coco_boxes_matched_to_captions(tmp_path, hf_clip, capsys):
    from vlexplain.eval import evaluate, load_results

    caps, inst = _coco(tmp_path)
    ds = open_pairs(caps, instances=inst, all_captions=True)
    out = evaluate(ds, hf_clip, ["random"], ["energy_pointing_game"], tmp_path / "run", progress=False)
    assert "note: metric 'energy_pointing_game': 2 of 3 pairs lack ground-truth masks" in capsys.readouterr().err
    df = load_results(out).to_pandas().sort_values("index")
    # pairs: "Two dogs and a man." (dog + person boxes), "A park in summer" (none), "A cat on a sofa" (none)
    assert df["energy_pointing_game"].notna().tolist() == [True, False, False]
    assert json.loads((out / "config.json").read_text())["data"]["coco"]["without_ground_truth"] == 2


def test_webdataset_resume_reads_only_the_unfinished_shards_images(tmp_path, hf_clip, monkeypatch):
    from vlexplain.eval import evaluate, load_results

    d = tmp_path / "shards"
    d.mkdir()
    for s in range(2):
        _shard(
            d / f"{s:05d}.tar",
            [
                (f"{2 * s + i:09d}", {"png": _png(10 * (2 * s + i)), "txt": f"pair {2 * s + i}".encode()})
                for i in range(2)
            ],
        )
    run = evaluate(
        d, hf_clip, ["random"], ["confidence_image"], tmp_path / "run", batch_size=2, shard_size=2, progress=False
    )
    first = load_results(run).to_pandas()
    (run / "shards" / "metrics-000001.parquet").unlink()  # as if the run had stopped after its first shard
    reads = []
    real = LazyBytes.read
    monkeypatch.setattr(LazyBytes, "read", lambda self: reads.append(self.offset) or real(self))
    evaluate(d, hf_clip, ["random"], ["confidence_image"], run, batch_size=2, shard_size=2, resume=True, progress=False)
    assert len(reads) == 2  # pairs 2 and 3 only
    again = load_results(run).to_pandas()
    cols = [c for c in first.columns if c != "seconds"]  # the same results as the uninterrupted run
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(
        first.sort_values("index")[cols].reset_index(drop=True), again.sort_values("index")[cols].reset_index(drop=True)
    )
    assert again["score"].notna().all()


def test_split_folders_of_pairs_and_split_on_a_single_file(tmp_path):
    for split, v in (("train", 10), ("test", 20)):
        _img(tmp_path / "pairs" / split / "a.png", v)
        (tmp_path / "pairs" / split / "captions.txt").write_text(f"a.png\t{split} image\n")
    ds = open_pairs(tmp_path / "pairs")  # two splits: test by default, and said so
    assert [(p.caption, _grey(p)) for p in ds] == [("test image", 20)] and ds.describe()["split"] == "test"
    tr = open_pairs(tmp_path / "pairs", split="train")
    assert [(p.caption, _grey(p)) for p in tr] == [("train image", 10)]
    with pytest.raises(InputError, match=r"no split 'val' \(splits: test, train\)"):
        open_pairs(tmp_path / "pairs", split="val")
    f = tmp_path / "one.jsonl"
    f.write_text(json.dumps({"image": "pairs/train/a.png", "caption": "x"}) + "\n")
    with pytest.raises(InputError, match="holds a single split"):
        open_pairs(f, split="train")


def test_benchmark_data_ranks_methods_on_your_pairs(tmp_path, capsys):
    """`benchmark data`: the centre map hits a box over the image centre and misses one in a corner."""
    from tests.support.models import tiny_hf_clip
    from vlexplain.cli import main
    from vlexplain.eval import load_results

    tiny_hf_clip().save_pretrained(tmp_path / "model")
    _img(tmp_path / "a.png", 100, w=64, h=64)  # square at the input size: no resize, no crop
    rows = [
        {"image": "a.png", "caption": "middle", "boxes": [[24, 24, 16, 16]]},
        {"image": "a.png", "caption": "corner", "boxes": [[0, 0, 4, 4]]},
    ]  # ~40 px from the centre > 15 px
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "bench"
    assert (
        main(
            [
                "benchmark",
                "data",
                "--data",
                str(f),
                "--model",
                str(tmp_path / "model"),
                "--methods",
                "random",
                "--metrics",
                "pointing_game",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    md = (out / "leaderboard.md").read_text()
    assert "## Benchmark `data`" in md and "| center" in md and "pointing_game" in md
    df = load_results(out / "run").to_pandas()
    centre = df[df["method"] == "center"].sort_values("index")["pointing_game"].tolist()
    assert centre == [1.0, 0.0]
    capsys.readouterr()
    # --data is an option of `benchmark data` only; `benchmark data` needs it
    assert main(["benchmark", "grids", "--data", str(f), "--out", str(tmp_path / "x")]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["benchmark", "data", "--out", str(tmp_path / "y")]) == 2
    assert "Missing option '--data'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_named_ground_truth_fields(imgs):
    Image.fromarray(np.eye(6, 8, dtype=np.uint8) * 255).save(imgs / "m.png")
    f = imgs / "gt.jsonl"  # boxes under another name, on the second record only; a mask under another name
    f.write_text(
        json.dumps({"img": "img/0.png", "text": "no box", "seg": "m.png"})
        + "\n"
        + json.dumps({"img": "img/1.png", "text": "a box", "bbox_list": [[1, 2, 3, 4]]})
        + "\n"
    )
    rows = list(open_pairs(f, box_key="bbox_list", mask_key="seg").rows())
    assert [r.boxes for r in rows] == [None, [[1.0, 2.0, 3.0, 4.0]]]
    pair = open_pairs(f, box_key="bbox_list", mask_key="seg").load(rows[0])
    assert np.array_equal(np.asarray(pair.mask) > 127, np.eye(6, 8, dtype=bool))
    c = imgs / "gt.csv"
    c.write_text("image,caption\nimg/0.png,x\n")
    with pytest.raises(InputError, match=r"no column 'bbox_list' for the boxes \(columns: image, caption\)"):
        list(open_pairs(c, box_key="bbox_list").rows())
