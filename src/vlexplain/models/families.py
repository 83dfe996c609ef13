"""The table of supported model families.

One entry per family of dual encoders that vlexplain explains (OpenCLIP ViT, OpenCLIP
ModifiedResNet, transformers CLIP, SigLIP 2, ...). Each family module registers its entries
with [`register_family`][vlexplain.models.families.register_family]; the contract tests iterate over [`families`][vlexplain.models.families.families] (building each family's
tiny random-weight model offline), and ``vlexplain models`` and the README's table are generated
from it, so the list of what is supported cannot drift from the code.

Example:
    >>> from vlexplain.models.families import families
    >>> families()[0].key  # doctest: +SKIP
    'offline'
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: modules that register families when imported (one per library and tower kind)
FAMILY_MODULES: tuple[str, ...] = (
    "vlexplain.models.offline",
    "vlexplain.models.builtin_families",
    "vlexplain.models.hf_clip",
    "vlexplain.models.hf_siglip2",
    "vlexplain.models.hf_align",
    "vlexplain.models.hf_bert_clips",
    "vlexplain.models.hf_blip",
    "vlexplain.models.hf_clip_variants",
    "vlexplain.models.hf_groupvit",
    "vlexplain.models.hf_dual_encoder",
    "vlexplain.models.hf_aimv2",
    "vlexplain.models.hf_tipsv2",
    "vlexplain.models.hf_refused",
    "vlexplain.models.open_clip",
    "vlexplain.models.open_clip_resnet",
    "vlexplain.models.open_clip_timm",
)


@dataclass(frozen=True)
class Family:
    """One family of dual encoders.

    Attributes:
        key: short stable identifier, used as a test id (``"open_clip-vit"``).
        name: what users call it (``"OpenCLIP ViT"``).
        library: ``"open_clip"``, ``"transformers"`` or ``"vlexplain"``.
        examples: model specs or architecture names of this family users will know.
        tiny: builds a tiny random-weight model of the family, offline (no download); returns an
            in-memory model object that [`vlexplain.load_model`][vlexplain.load_model] accepts (or a ``DualEncoder``).
        image_tower: ``"vit"`` or ``"cnn"`` (or ``"hybrid"``): what the image tower is.
        notes: anything a user should know (pooling, layout, limits).
        tokenizer: builds, offline, a small tokenizer in the layout of the family's own (an XLM or
            SentencePiece vocabulary of a few words) for the tiny model; None when the adapter finds
            one itself (CLIP's BPE, the uncased WordPiece vocabulary).
    """

    key: str
    name: str
    library: str
    examples: str
    tiny: Callable[[], Any]
    image_tower: str = "vit"
    notes: str = ""
    tokenizer: Callable[[], Any] | None = None

    def tiny_tokenizer(self) -> Any:
        """The tokenizer to load the tiny model with (None: the adapter's own fallback)."""
        return self.tokenizer() if self.tokenizer is not None else None


@dataclass(frozen=True)
class Refusal:
    """A model class users hold that vlexplain refuses at load, and why (shown under the table).

    Attributes:
        name: the class or architecture (``"Blip2ForImageTextRetrieval"``).
        library: ``"transformers"`` or ``"open_clip"``.
        reason: one line: why its methods cannot explain it.
    """

    name: str
    library: str
    reason: str


_FAMILIES: dict[str, Family] = {}
_REFUSALS: dict[str, Refusal] = {}


def register_refusal(refusal: Refusal) -> Refusal:
    """Add a refused class to the table's list of refusals."""
    _REFUSALS[refusal.name] = refusal
    return refusal


def refusals() -> list[Refusal]:
    """Every registered refusal (the family modules imported first), by name."""
    families()
    return sorted(_REFUSALS.values(), key=lambda r: (r.library, r.name))


_ORIGIN: dict[str, str] = {}  # family key -> the module that registered it


def register_family(family: Family) -> Family:
    """Add ``family`` to the table (a second registration with the same key replaces the first)."""
    _FAMILIES[family.key] = family
    caller = sys._getframe(1).f_globals.get("__name__", "")
    _ORIGIN[family.key] = caller
    return family


def families() -> list[Family]:
    """Every registered family, in the order of ``FAMILY_MODULES`` (registration order within a
    module), whatever was imported first."""
    for mod in FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError:  # a family whose library is not installed is simply not listed
            pass
    rank = {m: i for i, m in enumerate(FAMILY_MODULES)}
    keys = list(_FAMILIES)  # registration order within a module
    # the table's order is FAMILY_MODULES', whichever module happened to be imported first
    return sorted(_FAMILIES.values(), key=lambda f: (rank.get(_ORIGIN[f.key], len(rank)), keys.index(f.key)))


def get_family(key: str) -> Family:
    """The family registered under ``key`` (KeyError naming the known keys otherwise)."""
    fams = {f.key: f for f in families()}
    if key not in fams:
        raise KeyError(f"unknown family {key!r}; known: {', '.join(fams)}")
    return fams[key]
