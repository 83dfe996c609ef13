"""Class-dataset layouts as users store them: flat class folders (seeded split), ImageNet-style split
folders, hidden folders, and `deal train` / `deal evaluate` reading disjoint splits."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from tests.support.models import tiny_hf_clip
from vlexplain.data.classes import folder_classes, image_folder, open_class_dataset, split_counts, split_folders
from vlexplain.errors import InputError

CONCEPTS = {"cat": ["pointed ears", "whiskers"], "dog": ["floppy ears", "wet nose"]}


def _img(path, value=0, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _flat(root, n=5):
    for c in ("cat", "dog"):
        for i in range(n):
            _img(root / c / f"{i}.jpg", value=10 * i)
    return root


def test_split_counts_by_hand():
    assert split_counts(5, 0.2) == (1, 0)  # 5 * 0.2 = 1
    assert split_counts(10, 0.25, 0.1) == (3, 1)  # 2.5 rounds half up to 3; 1.0 -> 1
    assert split_counts(2, 0.2) == (1, 0)  # 0.4 rounds to 0, but a class of 2 gives one to test
    assert split_counts(1, 0.2) == (0, 0)  # a single image stays in train
    assert split_counts(4, 0.5, 0.25) == (2, 1)
    assert split_counts(3, 0.6, 0.3) == (2, 0)  # 1.8 -> 2 and 0.9 -> 1 would leave nothing to train on


def test_flat_class_folder_split_is_seeded_per_class_and_disjoint(tmp_path):
    root = _flat(tmp_path / "pets")
    # hidden folders and files inside class folders are not samples
    _img(root / "cat" / ".ipynb_checkpoints" / "0-checkpoint.jpg")
    _img(root / "cat" / ".hidden.jpg")
    _img(root / "dog" / "nested" / "deep" / "5.PNG", value=200)  # nested folder, odd extension: a sample
    tr, te, al = (open_class_dataset(root, s) for s in ("train", "test", "all"))
    assert len(al) == 11 and not any(".ipynb" in str(s.path) or ".hidden" in str(s.path) for s in al.samples)
    # by hand: each class's test image is the one whose sha256("0\0<class>/<file>") sorts first
    for label, c in enumerate(("cat", "dog")):
        files = [
            p.relative_to(root).as_posix()
            for p in (root / c).rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root / c).parts)
        ]
        first = min(files, key=lambda r: hashlib.sha256(f"0\0{r}".encode()).hexdigest())
        assert [s.path.relative_to(root).as_posix() for s in te.samples if s.label == label] == [first]
    assert len(te) == 2 and len(tr) == 9  # 5 -> 1 test; 6 -> round(1.2) = 1 test
    paths = lambda ds: {s.path for s in ds.samples}
    assert not paths(tr) & paths(te) and paths(tr) | paths(te) == paths(al)
    assert te.describe()["split"] == "test" and te.describe()["images"] == 2
    assert te.describe()["test_fraction"] == 0.2 and te.describe()["split_seed"] == 0
    # deterministic; another seed gives another split; adding a class leaves the others' split alone
    assert paths(open_class_dataset(root, "test")) == paths(te)
    other = [paths(open_class_dataset(root, "test", split_seed=s)) for s in range(1, 6)]
    assert any(o != paths(te) for o in other)
    _img(root / "emu" / "0.jpg")
    _img(root / "emu" / "1.jpg")
    te2 = open_class_dataset(root, "test")
    assert te2.classes == ["cat", "dog", "emu"] and paths(te) < paths(te2)
    # a val split is carved from what is left after test
    three = open_class_dataset(root, "val", test_fraction=0.2, val_fraction=0.2)
    assert all(s.path not in paths(te) for s in three.samples)
    with pytest.raises(InputError, match="split fractions"):
        open_class_dataset(root, "test", test_fraction=0.7, val_fraction=0.4)
    with pytest.raises(InputError, match="unknown split 'dev'"):
        open_class_dataset(root, "dev")
    assert len(image_folder(root)) == 13  # the library default: every image
    assert [s.path for s in image_folder(root).samples] == [s.path for s in open_class_dataset(root, "all").samples]


def test_imagenet_style_split_folders(tmp_path):
    root = tmp_path / "imagenet"
    _img(root / "train" / "n01_tench" / "a.JPEG")
    _img(root / "train" / "n01_tench" / "b.JPEG")
    _img(root / "train" / "n02_goldfish" / "c.JPEG")
    _img(root / "val" / "n02_goldfish" / "d.JPEG")  # val lacks tench: labels must still agree with train
    _img(root / "val" / ".ipynb_checkpoints" / "x.JPEG")
    assert set(split_folders(root)) == {"train", "val"}
    assert folder_classes(root) == ["n01 tench", "n02 goldfish"]  # two classes, not "train" and "val"
    tr, va = open_class_dataset(root, "train"), open_class_dataset(root, "val")
    assert tr.classes == va.classes == ["n01 tench", "n02 goldfish"]
    assert tr.labels == [0, 0, 1] and va.labels == [1] and va.samples[0].path.name == "d.JPEG"
    assert va.describe()["layout"] == "split folders" and va.describe()["images"] == 1
    assert len(open_class_dataset(root, "all")) == 4
    with pytest.raises(InputError, match=r"no 'test' split folder \(splits: train, val\); pass --split train or val"):
        open_class_dataset(root, "test")
    _img(root / "cat" / "x.jpg")
    with pytest.raises(InputError, match="mixes split folders"):
        open_class_dataset(root, "train")


def test_deal_train_and_evaluate_see_disjoint_images(tmp_path, monkeypatch, capsys):
    """`deal train` (default split train) and `deal evaluate` (default split test) on a flat folder."""
    import vlexplain.concepts.evaluate as ce
    import vlexplain.concepts.train as ct
    from vlexplain.cli import main

    root = _flat(tmp_path / "pets", n=5)
    tiny_hf_clip().save_pretrained(tmp_path / "model")
    (tmp_path / "c.json").write_text(json.dumps(CONCEPTS))
    seen: dict[str, set] = {}
    real_train, real_eval = ct.deal_train, ce.evaluate_concepts

    def spy_train(model, ds, *a, **kw):
        seen["train"] = {s.path for s in ds.samples}
        return real_train(model, ds, *a, **kw)

    def spy_eval(model, ds, *a, **kw):
        seen.setdefault("evaluate", set()).update(s.path for s in ds.samples[: kw.get("max_images") or len(ds)])
        return real_eval(model, ds, *a, **kw)

    monkeypatch.setattr(ct, "deal_train", spy_train)
    monkeypatch.setattr(ce, "evaluate_concepts", spy_eval)
    common = [
        "--data",
        str(root),
        "--concepts",
        str(tmp_path / "c.json"),
        "--model",
        str(tmp_path / "model"),
        "--k",
        "2",
    ]
    assert (
        main(
            [
                "deal",
                "train",
                *common,
                "--out",
                str(tmp_path / "run"),
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--no-progress",
                "--freeze-text",
                "--lr",
                "1e-4",
                "--test-fraction",
                "0.4",
            ]
        )
        == 0
    )
    # deal evaluate takes the split rule of the training run it evaluates
    assert (
        main(
            [
                "deal",
                "evaluate",
                *common,
                "--checkpoint",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "ev"),
                "--gallery",
                "0",
            ]
        )
        == 0
    )
    assert "shares images" not in capsys.readouterr().err
    assert len(seen["train"]) == 6 and len(seen["evaluate"]) == 4  # 5 per class, 5 * 0.4 = 2 per class held out
    assert not seen["train"] & seen["evaluate"]
    assert seen["train"] | seen["evaluate"] == {p for p in root.rglob("*.jpg")}
    # what each output records is the split actually read
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["data"]["split"] == "train" and run["data"]["images"] == 6 and run["data"]["test_fraction"] == 0.4
    cfg = json.loads((tmp_path / "ev" / "metrics.json").read_text())["config"]
    assert cfg["split"] == "test" and cfg["images"] == 4
    assert cfg["data_split"]["layout"] == "class folders" and cfg["data_split"]["images"] == 4
    assert cfg["data_split"]["test_fraction"] == 0.4
    # evaluating the training images is allowed, and said
    assert (
        main(
            [
                "deal",
                "evaluate",
                *common,
                "--checkpoint",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "ev2"),
                "--gallery",
                "0",
                "--split",
                "train",
                "--limit",
                "1",
            ]
        )
        == 0
    )
    assert "warning: the train split evaluated here shares images with the train split" in capsys.readouterr().err


def test_deal_refuses_a_url_in_one_line(tmp_path, capsys):
    from vlexplain.cli import main

    assert main(["deal", "evaluate", "--data", "https://example.com/imagenet", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--data: the data is a URL (https://example.com/imagenet)" in err


def test_cub_split_comes_from_its_own_file(tmp_path):
    from tests.support.cub import make_cub

    make_cub(tmp_path / "CUB_200_2011")  # train_test_split.txt: images 1, 2 train; 3, 4 test
    te = open_class_dataset(tmp_path, "test", test_fraction=0.5)  # the fraction does not apply to CUB
    assert [s.path.name for s in te.samples] == ["img_3.jpg", "img_4.jpg"] and te.labels == [0, 1]
    d = te.describe()
    assert d["layout"] == "CUB-200-2011" and d["split"] == "test" and d["images"] == 2 and "test_fraction" not in d
    with pytest.raises(InputError, match="CUB-200-2011 has train, test"):
        open_class_dataset(tmp_path, "val")
