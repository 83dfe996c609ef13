"""Real photos that ship with scikit-image and matplotlib (no download)."""

from __future__ import annotations

from PIL import Image

# demo name -> photo name in ``vlexplain.testbeds.grids.PHOTOS``
PHOTOS = {
    "cat": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "astronaut": "astronaut",
    "grace_hopper": "grace_hopper",
}


def load_photo(name: str) -> Image.Image:
    """One of the demo photos (``cat``, ``coffee``, ``rocket``, ``astronaut``, ``grace_hopper``) as RGB."""
    from .grids import load_photo as _load

    return _load(PHOTOS.get(name, name)).copy()


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
