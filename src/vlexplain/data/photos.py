"""Real photos that ship with scikit-image and matplotlib (no download)."""

from __future__ import annotations

from PIL import Image

from ..errors import require

# name -> (loader kind, key)
PHOTOS = {
    "cat": ("skimage", "chelsea"),
    "coffee": ("skimage", "coffee"),
    "rocket": ("skimage", "rocket"),
    "astronaut": ("skimage", "astronaut"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),
}


def load_photo(name: str) -> Image.Image:
    """One of :data:`PHOTOS` as an RGB PIL image."""
    kind, key = PHOTOS[name]
    if kind == "skimage":
        data = require("skimage.data", "offline")
        return Image.fromarray(getattr(data, key)()).convert("RGB")
    import matplotlib.cbook as cbook

    with cbook.get_sample_data(key) as f:
        return Image.open(f).convert("RGB")


def demo_set() -> tuple[list[tuple[str, Image.Image]], list[list[str]], dict[tuple[int, str], str]]:
    """Photos, per-photo texts, and whether each text describes its photo ("match" / "no match")."""
    plan = {
        "cat": (["a cat", "a photo of a tabby cat"], ["a cup of coffee"]),
        "coffee": (["a cup of coffee"], ["a rocket"]),
        "rocket": (["a rocket launch"], ["a cat"]),
        "astronaut": (["an astronaut", "a person in a space suit"], ["a cup of coffee"]),
        "grace_hopper": (["a woman in a military uniform"], ["a rocket"]),
    }
    photos, texts, labels = [], [], {}
    for i, (name, (pos, neg)) in enumerate(plan.items()):
        photos.append((name, load_photo(name)))
        texts.append(pos + neg)
        for t in pos:
            labels[(i, t)] = "match"
        for t in neg:
            labels[(i, t)] = "no match"
    return photos, texts, labels
