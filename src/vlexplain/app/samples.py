"""Built-in sample images for the web explorer (no download; nothing is read from user paths)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from ..concepts.relevance import Templates

Sample = tuple[Image.Image, str]  # (RGB image, suggested texts one per line)

# label shown in the menu -> (photo name in vlexplain.testbeds.photos, suggested texts)
_PHOTOS: dict[str, tuple[str, str]] = {
    "cat (scikit-image 'chelsea')": ("cat", "a cat\na cup of coffee"),
    "coffee (scikit-image)": ("coffee", "a cup of coffee\na rocket"),
    "rocket (scikit-image)": ("rocket", "a rocket launch\na cat"),
    "astronaut (scikit-image)": ("astronaut", "an astronaut\na cup of coffee"),
    "Grace Hopper (matplotlib)": ("grace_hopper", "a woman in a military uniform\na rocket"),
}

# photo name -> (class, descriptors) suggested in the concepts tab
_PHOTO_CONCEPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cat": ("cat", ("pointed ears", "long white whiskers", "striped fur")),
    "coffee": ("cup of coffee", ("a white saucer", "a silver spoon", "light brown foam")),
    "rocket": ("rocket", ("a tall white body", "bright exhaust flames", "a launch tower")),
    "astronaut": ("astronaut", ("a white spacesuit", "an american flag", "a smiling face")),
    "grace_hopper": ("woman in a military uniform", ("grey hair", "a dark jacket", "a white shirt and tie")),
}

_SHAPES_SEEDS = (1, 2)


def _photo_loader(name: str, texts: str) -> Callable[[], Sample]:
    def load() -> Sample:
        from ..testbeds.photos import load_photo

        return load_photo(name), texts

    return load


def _shapes_loader(seed: int) -> Callable[[], Sample]:
    def load() -> Sample:
        from ..testbeds.shapes import render_scene

        scene = render_scene(seed, size=128)
        captions = [obj.captions()[1] for obj in scene.objects]
        return Image.fromarray(scene.image).convert("RGB"), "\n".join(dict.fromkeys(captions))

    return load


def _shapes_available() -> bool:
    try:
        from ..testbeds.shapes import render_scene  # noqa: F401
    except ImportError:
        return False
    return True


ConceptSample = tuple[str, list[str], "Templates"]  # (class, descriptors, prompt templates)


def concept_suggestions() -> dict[str, Callable[[], ConceptSample]]:
    """Menu label (as in ``sample_images``) -> loader of a suggested (class, descriptors, templates).

    Photos suggest a hand-written class and descriptors with the default prompts; a shapes scene
    suggests its largest visible object's category with that category's descriptors from the
    shapes world's concept set, and the shapes world's prompts.
    """
    out: dict[str, Callable[[], ConceptSample]] = {}
    for label, (name, _) in _PHOTOS.items():
        cls, descs = _PHOTO_CONCEPTS[name]
        out[label] = _photo_concepts(cls, descs)
    if _shapes_available():
        for seed in _SHAPES_SEEDS:
            out[f"shapes scene (seed {seed})"] = _shapes_concepts(seed)
    return out


def _photo_concepts(cls: str, descs: tuple[str, ...]) -> Callable[[], ConceptSample]:
    def load() -> ConceptSample:
        from ..concepts.relevance import Templates

        return cls, list(descs), Templates()

    return load


def _shapes_concepts(seed: int) -> Callable[[], ConceptSample]:
    def load() -> ConceptSample:
        from ..testbeds.shapes import render_scene
        from ..testbeds.shapes_categories import concept_set
        from .concept_runner import shapes_templates

        scene = render_scene(seed, size=128)
        biggest = max(scene.objects, key=lambda o: int(scene.object_mask(o.index).sum()))
        return biggest.category, list(concept_set()[biggest.category]), shapes_templates()

    return load


def sample_images() -> dict[str, Callable[[], Sample]]:
    """Menu label -> loader returning (RGB PIL image, suggested texts one per line)."""
    out = {label: _photo_loader(name, texts) for label, (name, texts) in _PHOTOS.items()}
    if _shapes_available():
        for seed in _SHAPES_SEEDS:
            out[f"shapes scene (seed {seed})"] = _shapes_loader(seed)
    return out
