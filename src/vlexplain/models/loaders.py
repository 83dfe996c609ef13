"""The registry of named model loaders (``offline``, ``testbed:``, ...), kept free of torch so that
packages above the model layer register theirs when ``vlexplain`` is imported, before anything
heavy is (``vlexplain.models.registry.load_model`` reads it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import DualEncoder


@dataclass
class LoaderEntry:
    prefix: str  # "offline", "testbed:", ...
    load: Callable[[str], DualEncoder]
    description: str
    available: Callable[[], bool]
    directory: Callable[[Path], str | None] | None = None  # a local directory -> the spec it loads as, or None


_LOADERS: dict[str, LoaderEntry] = {}


def register_loader(
    prefix: str,
    description: str,
    available: Callable[[], bool] | None = None,
    directory: Callable[[Path], str | None] | None = None,
):
    """Register a named model loader (``prefix`` is an exact name or ends with ':').

    ``directory``: recognises a local directory of the loader's own (``PATH`` specs): returns the
    spec to load it with, or None. Packages above the model layer (the testbeds) register theirs.
    """

    def deco(fn: Callable[[str], DualEncoder]):
        _LOADERS[prefix] = LoaderEntry(prefix, fn, description, available or (lambda: True), directory)
        return fn

    return deco


def registered_loaders() -> list[LoaderEntry]:
    return list(_LOADERS.values())
