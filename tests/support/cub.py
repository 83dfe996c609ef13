"""A tiny CUB-200-2011 folder (two classes, four images, boxes and part locations) and its concepts."""

from __future__ import annotations

from PIL import Image

CUB_CONCEPTS = {"Black-footed Albatross": ["dark webbed feet", "long wings"], "Cardinal": ["red crest", "black mask"]}


def solid_image(path, size=(40, 30), color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def make_cub(root):
    classes = ["001.Black_footed_Albatross", "002.Cardinal"]
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    names, labels, split, boxes, locs = [], [], [], [], []
    for iid in range(1, 5):
        c = (iid - 1) % 2
        rel = f"{classes[c]}/img_{iid}.jpg"
        solid_image(root / "images" / rel, size=(60, 40))
        names.append(f"{iid} {rel}\n")
        labels.append(f"{iid} {c + 1}\n")
        split.append(f"{iid} {1 if iid <= 2 else 0}\n")
        boxes.append(f"{iid} 5.0 5.0 30.0 20.0\n")
        locs.append(f"{iid} 1 10.0 20.0 1\n{iid} 2 0.0 0.0 0\n")
    for f, rows in [
        ("images.txt", names),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
    ]:
        (root / f).write_text("".join(rows))
    (root / "parts").mkdir()
    (root / "parts" / "parts.txt").write_text("1 beak\n2 left eye\n")
    (root / "parts" / "part_locs.txt").write_text("".join(locs))
