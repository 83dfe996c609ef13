"""Built-in sample images for the web explorer (no download; nothing is read from user paths)."""

from __future__ import annotations

from typing import Callable

from PIL import Image

Sample = tuple[Image.Image, str]  # (RGB image, suggested texts one per line)

# label shown in the menu -> (photo name in vlexplain.data.photos, suggested texts)
_PHOTOS: dict[str, tuple[str, str]] = {
    "cat (scikit-image 'chelsea')": ("cat", "a cat\na cup of coffee"),
    "coffee (scikit-image)": ("coffee", "a cup of coffee\na rocket"),
    "rocket (scikit-image)": ("rocket", "a rocket launch\na cat"),
    "astronaut (scikit-image)": ("astronaut", "an astronaut\na cup of coffee"),
    "Grace Hopper (matplotlib)": ("grace_hopper", "a woman in a military uniform\na rocket"),
}

_SHAPES_SEEDS = (1, 2)


def _photo_loader(name: str, texts: str) -> Callable[[], Sample]:
    def load() -> Sample:
        from ..data.photos import load_photo

        return load_photo(name), texts

    return load


def _shapes_loader(seed: int) -> Callable[[], Sample]:
    def load() -> Sample:
        from ..data.shapes import render_scene

        scene = render_scene(seed, size=128)
        captions = [obj.captions()[1] for obj in scene.objects]
        return Image.fromarray(scene.image).convert("RGB"), "\n".join(dict.fromkeys(captions))

    return load


def _shapes_available() -> bool:
    try:
        from ..data.shapes import render_scene  # noqa: F401
    except ImportError:
        return False
    return True


def sample_images() -> dict[str, Callable[[], Sample]]:
    """Menu label -> loader returning (RGB PIL image, suggested texts one per line)."""
    out = {label: _photo_loader(name, texts) for label, (name, texts) in _PHOTOS.items()}
    if _shapes_available():
        for seed in _SHAPES_SEEDS:
            out[f"shapes scene (seed {seed})"] = _shapes_loader(seed)
    return out
