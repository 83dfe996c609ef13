"""Interaction methods: the base class, the registry and what a method sees of a batch.

An interaction method answers "which word goes with which region": for an image-text pair it
returns one image map per token, a ``(T, gh, gw)`` matrix whose rows sum over a span to that span's
region. A method is one file with one class::

    @register_interaction
    class MyMethod(InteractionMethod):
        name = "my_method"
        summary = "one line for listings"
        def interact(self, batch: InteractionBatch) -> Tensor: ...  # (B, T, gh, gw)

``interact`` returns a row for every token position of ``batch.texts`` (start/end tokens and padding
included); `vx.interactions` keeps the rows of the shown tokens.
The CLI, the listings and the contract tests read the registry.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import MethodError
from ..models.base import DualEncoder, TextBatch


@dataclass
class InteractionBatch:
    """B image-text pairs as a method sees them.

    Attributes:
        pixels: (B, 3, H, W) preprocessed images.
        texts: the tokenised texts (B rows, one padding length).
        image_emb / text_emb: (B, d) unit-norm embeddings of the unmodified inputs (no grad).
        seeds: one seed per pair (a pair's result never depends on the rest of the batch).
        image_index / text_index: (B,) which distinct image / text each pair has: pairs with the
            same index share that input, so a method can compute each tower's work once per input.
        strings: the texts as given.
    """

    pixels: Tensor
    texts: TextBatch
    image_emb: Tensor
    text_emb: Tensor
    seeds: list[int]
    image_index: list[int]
    text_index: list[int]
    strings: list[str]

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def generators(self) -> list[torch.Generator]:
        """One CPU generator per pair, seeded with the pair's seed."""
        return [torch.Generator().manual_seed(s) for s in self.seeds]

    def distinct(self, side: str) -> tuple[list[int], list[int]]:
        """(first pair of each distinct input, for each pair the position of its input in that list)."""
        index = self.image_index if side == "image" else self.text_index
        firsts: dict[int, int] = {}
        for j, k in enumerate(index):
            firsts.setdefault(k, j)
        order = list(firsts)
        return [firsts[k] for k in order], [order.index(k) for k in index]


class InteractionMethod:
    """Base class of interaction methods. Subclasses set ``name`` and override ``interact``.

    Options are the keyword arguments of ``__init__`` after ``model``; they are recorded in every
    result's ``settings``.
    """

    name: ClassVar[str] = ""
    #: short description for listings
    summary: ClassVar[str] = ""
    #: the paper the method comes from, for listings
    paper: ClassVar[str] = ""
    #: the method needs gradients through both towers
    needs_gradients: ClassVar[bool] = False
    #: the method runs the model at all (False: a reference that ignores it)
    uses_model: ClassVar[bool] = True
    #: a reference (a floor every interaction method should beat), not an interaction method proper
    reference: ClassVar[bool] = False

    def __init__(self, model: DualEncoder):
        self.model = model
        #: per pair of the last ``interact`` call, method-specific values for ``Interactions.extras``
        self.last_extras: list[dict[str, Any]] = []

    @classmethod
    def create(cls, model: DualEncoder, **options: Any) -> InteractionMethod:
        """Build the method; unknown or bad options raise a one-line [`MethodError`][vlexplain.MethodError]."""
        sig = inspect.signature(cls.__init__)
        known = [k for k, p in list(sig.parameters.items())[2:] if p.kind is not inspect.Parameter.VAR_KEYWORD]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise MethodError(
                f"unknown option(s) for interaction method {cls.name}: {', '.join(unknown)}; "
                f"options: {', '.join(known) or 'none'}"
            )
        why = cls.why_not(model)
        if why is not None:
            raise MethodError(why)
        try:
            return cls(model, **options)
        except TypeError as e:
            raise MethodError(f"bad options for {cls.name}: {e}") from None

    @classmethod
    def why_not(cls, model: DualEncoder) -> str | None:
        """None if the method applies to this model, else the reason (one line)."""
        return None

    def check_text(self, n_tokens: int) -> None:
        """Refuse (MethodError, one line) a text of ``n_tokens`` shown tokens before any work."""

    def interact(self, batch: InteractionBatch) -> Tensor:
        """(B, T, gh, gw): one image map per token position of ``batch.texts``, raw values."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        out: dict[str, Any] = {}
        for k in list(sig.parameters)[2:]:
            if sig.parameters[k].kind is inspect.Parameter.VAR_KEYWORD:
                continue
            v = getattr(self, k, sig.parameters[k].default)
            out[k] = v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v)
        return out


_METHODS: dict[str, type[InteractionMethod]] = {}


def register_interaction(cls: type[InteractionMethod]) -> type[InteractionMethod]:
    """Class decorator adding an interaction method to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError("an interaction method needs a name")
    _METHODS[cls.name] = cls
    return cls


_NOT_METHODS = ("base", "api", "result", "similarity", "paths", "spans")


def _load_builtin() -> None:
    import importlib
    import pkgutil

    package = importlib.import_module(__package__ or "vlexplain.interactions")  # the package, not the function
    for m in pkgutil.iter_modules(package.__path__):
        if m.name not in _NOT_METHODS:
            importlib.import_module(f"{package.__name__}.{m.name}")


def list_interaction_methods() -> list[str]:
    """Names of all registered interaction methods."""
    _load_builtin()
    return sorted(_METHODS)


def get_interaction_method(name: str) -> type[InteractionMethod]:
    """The registered interaction method ``name`` (a one-line MethodError naming the others otherwise)."""
    _load_builtin()
    if name not in _METHODS:
        raise MethodError(f"unknown interaction method {name!r}; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def interaction_methods_for(model: DualEncoder) -> dict[str, str | None]:
    """Every registered interaction method -> None where it applies to ``model``, else why not."""
    return {n: _METHODS[n].why_not(model) for n in list_interaction_methods()}
