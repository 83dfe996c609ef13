"""The explorer's concepts tab, free of any web framework: inputs, concept files and one run.

One image, one class and its descriptors give DEAL's category map (the image against the class
prompt) and one concept map per descriptor (the image against each concept prompt), with this
image's disentanglability (published form and raw mean pairwise overlap) and localizability
(insertion test), computed by ``vlexplain.concepts``.
"""

from __future__ import annotations

import csv
import string
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ..concepts.relevance import DEAL_RELEVANCE, Templates
from ..concepts.sets import CATEGORY_TEMPLATE, CONCEPT_TEMPLATE, ConceptSet, validate
from ..errors import InputError, MethodError
from ..models.base import DualEncoder

MAX_DESCRIPTORS = 8  # descriptors per run (published DEAL sets use 5 or 6 per class)
MAX_CLASS_CHARS = 100  # characters of a class name
MAX_TEMPLATE_CHARS = 200  # characters of a prompt template
MAX_FILE_CLASSES = 2000  # classes of an uploaded concept file
CONCEPT_FILE_TYPES = (".json", ".csv")
SHAPES_PRESET = "shapes world (built in)"
TYPED_SOURCE = "typed in the page"


def concept_method_choices(model: DualEncoder) -> list[tuple[str, str]]:
    """(label, name) of the map methods for concept maps on ``model``: DEAL's relevance first.

    ``"deal"`` is the differentiable last-block relevance of ``vlexplain.concepts.relevance``
    (Grad-CAM on the last block of a CNN tower); every registered method with an image side on
    this model also works, for evaluation only (read from the registry).
    """
    from ..attribution.base import methods_for

    kind = "Grad-CAM on the last block" if model.image.kind != "vit" else "last-block attention relevance"
    out = [(f"{DEAL_RELEVANCE} (DEAL: {kind}, differentiable)", DEAL_RELEVANCE)]
    for name, sides in methods_for(model).items():
        if "image" in sides and name != DEAL_RELEVANCE:
            out.append((f"{name} (registered method, not differentiable)", name))
    return out


def parse_class(raw: str | None) -> str:
    """The class name: trimmed, inner whitespace collapsed."""
    cls = " ".join((raw or "").split())
    if not cls:
        raise InputError("type a class name (e.g. 'cat'), or pick a class from a concept set")
    if len(cls) > MAX_CLASS_CHARS:
        raise InputError(f"the class name is limited to {MAX_CLASS_CHARS} characters; shorten {cls[:40]!r}...")
    return cls


def parse_descriptors(raw: str | None, cls: str) -> list[str]:
    """One descriptor per non-empty line, checked like a concept file (duplicates, length)."""
    descs = [" ".join(d.split()) for d in (raw or "").splitlines() if d.strip()]
    if not descs:
        raise InputError(f"type at least one descriptor of {cls!r} (one per line), or pick a class from a concept set")
    if len(descs) > MAX_DESCRIPTORS:
        raise InputError(
            f"at most {MAX_DESCRIPTORS} descriptors per run, got {len(descs)} "
            "(published DEAL concept sets use 5 per class)"
        )
    return list(validate({cls: descs}, TYPED_SOURCE)[cls])


def parse_templates(category: str | None, concept: str | None) -> Templates:
    """Prompt templates (blank -> the defaults); ``{class}`` and ``{descriptor}`` placeholders.

    Only the bare placeholders are accepted: no attribute access, index, conversion or format
    spec (``{class:>99999999}`` would build a huge string).
    """
    t = Templates((category or "").strip() or CATEGORY_TEMPLATE, (concept or "").strip() or CONCEPT_TEMPLATE)
    for template, allowed in ((t.category, {"class"}), (t.concept, {"class", "descriptor"})):
        if len(template) > MAX_TEMPLATE_CHARS:
            raise InputError(f"prompt templates are limited to {MAX_TEMPLATE_CHARS} characters")
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
        except ValueError as e:
            raise InputError(f"bad prompt template {template!r} ({e}); write literal braces as {{{{ and }}}}") from None
        bad = [
            f + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
            for f, spec, conv in fields
            if f not in allowed or spec or conv
        ]
        if bad:
            names = " and ".join(f"{{{a}}}" for a in sorted(allowed))
            raise InputError(f"bad prompt template {template!r}: {{{bad[0]}}} is not a placeholder; use {names}")
    if "{descriptor}" not in t.concept:
        raise InputError("the concept template must contain {descriptor}, e.g. '{class}, which has {descriptor}.'")
    return t


def read_concept_file(path: str | Path, name: str | None = None) -> ConceptSet:
    """Read an uploaded concept file (JSON ``{class: [descriptors]}`` or CSV ``class,descriptor``).

    Args:
        path: the uploaded file.
        name: the name shown in messages (the upload's own name; the server path is never shown).

    Returns:
        A validated ``ConceptSet`` whose ``source`` is ``name``.
    """
    from ..concepts.sets import load_concepts

    path = Path(path)
    name = name or path.name
    if path.suffix.lower() not in CONCEPT_FILE_TYPES:
        raise InputError(
            f"{name}: a concept file is a .json file {{class: [descriptors]}} or a .csv file with class,descriptor rows"
        )
    try:
        cs = load_concepts(path)
    except InputError as e:
        raise InputError(str(e).replace(str(path), name)) from None
    except UnicodeDecodeError:
        raise InputError(f"{name} is not a UTF-8 text file") from None
    except (csv.Error, RecursionError):
        raise InputError(
            f"{name} cannot be read as a concept file (JSON {{class: [descriptors]}} or CSV class,descriptor rows)"
        ) from None
    if len(cs) > MAX_FILE_CLASSES:
        raise InputError(f"{name} has {len(cs)} classes; the explorer reads at most {MAX_FILE_CLASSES}")
    return ConceptSet(dict(cs.concepts), name)


def shapes_templates() -> Templates:
    """The prompts of the shapes world: its captions ("a house") and bare descriptors ("a triangular roof")."""
    try:
        from ..testbeds.shapes_classes import SHAPES_CATEGORY_TEMPLATE, SHAPES_CONCEPT_TEMPLATE
    except ImportError:
        return Templates("a {class}", "{descriptor}")
    return Templates(SHAPES_CATEGORY_TEMPLATE, SHAPES_CONCEPT_TEMPLATE)


def concept_presets() -> dict[str, tuple[Callable[[], ConceptSet], Templates]]:
    """Built-in concept sets: menu label -> (loader, the prompt templates that suit the set).

    The shapes world's part descriptors (``vlexplain.testbeds.shapes.concept_set``) come with the
    prompts the ``testbed:shapes`` model was trained on.
    """
    out: dict[str, tuple[Callable[[], ConceptSet], Templates]] = {}
    try:
        from ..testbeds.shapes_categories import concept_set
    except ImportError:
        return out

    def shapes() -> ConceptSet:
        return ConceptSet({c: tuple(d) for c, d in concept_set().items()}, SHAPES_PRESET)

    out[SHAPES_PRESET] = (shapes, shapes_templates())
    return out


@dataclass
class ConceptRun:
    """The concept explanation of one image for one class.

    Attributes:
        cls: the class name; descriptors: its K descriptors.
        prompts: the category prompt followed by the K concept prompts.
        scores: (1 + K) cosine similarities of the image with each prompt.
        category: (gh, gw) category map; concepts: (K, gh, gw) concept maps (min-max normalised).
        rgb: (3, H, W) the preprocessed image in [0, 1], for display.
        disentanglability: published form ``sigmoid(10 * (0.2 - S / 100))`` (None when K < 2).
        overlap_sum: ``S``, the sum over concept pairs of ``sum_pixels h_i * h_j``.
        mean_overlap: the raw mean pairwise overlap (None when K < 2).
        pair_overlaps: (K, K) ``sum_pixels h_i * h_j`` of every pair.
        localizability: mean insertion score of the concept maps; per_concept_localizability: (K,).
    """

    model: str
    method: str
    image_name: str
    cls: str
    descriptors: list[str]
    prompts: list[str]
    scores: list[float]
    category: Tensor
    concepts: Tensor
    rgb: Tensor
    disentanglability: float | None
    overlap_sum: float | None
    mean_overlap: float | None
    pair_overlaps: Tensor
    localizability: float
    per_concept_localizability: list[float]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (maps as nested lists at patch resolution)."""
        return {
            "model": self.model,
            "method": self.method,
            "image": self.image_name,
            "class": self.cls,
            "descriptors": self.descriptors,
            "category_prompt": self.prompts[0],
            "concept_prompts": self.prompts[1:],
            "scores": dict(zip(self.prompts, self.scores)),
            "disentanglability": self.disentanglability,
            "pairwise_overlap_sum": self.overlap_sum,
            "mean_pairwise_overlap": self.mean_overlap,
            "localizability": self.localizability,
            "concept_localizability": dict(zip(self.prompts[1:], self.per_concept_localizability)),
            "category_map": self.category.tolist(),
            "concept_maps": self.concepts.tolist(),
            "seconds": self.seconds,
        }


def check_method(model: DualEncoder, method: str) -> None:
    """Raise MethodError unless ``method`` gives concept maps on ``model``."""
    names = [n for _, n in concept_method_choices(model)]
    if method not in names:
        raise MethodError(f"{method!r} gives no image maps on {model.name}; choose from {', '.join(names)}")


def check_context(model: DualEncoder, cls: str, descriptors: Sequence[str], templates: Templates) -> None:
    """Raise InputError if the class prompt or a concept prompt is longer than the model's text context."""
    cs = ConceptSet({cls: tuple(descriptors)}, TYPED_SOURCE)
    cs.check_context(model, templates.concept)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if model.tokenize([templates.category_prompt(cls)]).truncated[0]:
            raise InputError(f"the class prompt {templates.category_prompt(cls)!r} exceeds the model's text context")


def run_concepts(
    model: DualEncoder,
    image: Image.Image,
    cls: str,
    descriptors: Sequence[str],
    method: str = DEAL_RELEVANCE,
    options: dict[str, Any] | None = None,
    templates: Templates = Templates(),
    image_name: str = "image",
) -> ConceptRun:
    """Category and concept maps of ``image`` for ``cls``, with this image's DEAL metrics.

    Args:
        model: the dual encoder.
        image: an RGB image.
        cls: the class name (``{class}`` of the templates).
        descriptors: its descriptors (``{descriptor}``), at most ``MAX_DESCRIPTORS``.
        method: ``"deal"`` or a registered method with an image side (see ``concept_method_choices``).
        options: the method's options.
        templates: the prompt templates.
        image_name: shown in the results.

    Returns:
        A ``ConceptRun``; the metrics are those of ``vlexplain.concepts.metrics`` for this image.
    """
    from ..concepts.metrics import disentanglability, localizability
    from ..concepts.relevance import deal_maps

    descriptors = list(descriptors)
    if not descriptors:
        raise InputError("give at least one descriptor")
    if len(descriptors) > MAX_DESCRIPTORS:
        raise InputError(f"at most {MAX_DESCRIPTORS} descriptors per run, got {len(descriptors)}")
    check_method(model, method)
    check_context(model, cls, descriptors, templates)
    t0 = time.perf_counter()
    px = model.preprocess(image)[None].to(model.device, model.dtype)
    cs = ConceptSet({cls: tuple(descriptors)}, TYPED_SOURCE)
    cm = deal_maps(model, px, [cls], cs, templates=templates, method=method, **(options or {}))
    K = len(descriptors)
    concepts = cm.concepts[0].detach().float().cpu()
    published: float | None
    mean_overlap: float | None
    overlap_sum: float | None
    if K >= 2:
        published, mean_overlap = disentanglability(cm.concepts, cm.mask)
        overlap_sum = mean_overlap * K * (K - 1) / 2  # S: the per-image sum over pairs
    else:
        published = mean_overlap = overlap_sum = None
    flat = concepts.flatten(1)
    pairs = flat @ flat.T
    loc, per = localizability(model, px.expand(K, -1, -1, -1), cm.concepts[0], cm.texts[0][1:])
    with torch.no_grad():
        rgb = model.denormalize(px[0]).detach().float().cpu().clamp(0, 1)
    return ConceptRun(
        model=model.name,
        method=method,
        image_name=image_name,
        cls=cls,
        descriptors=descriptors,
        prompts=list(cm.texts[0]),
        scores=[float(s) for s in cm.scores[0]],
        category=cm.category[0].detach().float().cpu(),
        concepts=concepts,
        rgb=rgb,
        disentanglability=published,
        overlap_sum=overlap_sum,
        mean_overlap=mean_overlap,
        pair_overlaps=pairs,
        localizability=loc,
        per_concept_localizability=[float(x) for x in per],
        seconds=time.perf_counter() - t0,
    )
