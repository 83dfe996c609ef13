"""vlexplain.interactions: second-order explanations (which words go with which image regions).

One file per method, registered with [`register_interaction`][vlexplain.interactions.base.register_interaction];
`vx.interactions` runs them and returns [`Interactions`][vlexplain.Interactions].
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it (imported on first access: ``import vlexplain`` stays light)
_LAZY = {
    "interactions": ".api",
    "InteractionBatch": ".base",
    "InteractionMethod": ".base",
    "get_interaction_method": ".base",
    "interaction_methods_for": ".base",
    "list_interaction_methods": ".base",
    "register_interaction": ".base",
    "Interactions": ".result",
}

if TYPE_CHECKING:
    from .api import interactions
    from .base import (
        InteractionBatch,
        InteractionMethod,
        get_interaction_method,
        interaction_methods_for,
        list_interaction_methods,
        register_interaction,
    )
    from .result import Interactions


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vlexplain.interactions' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "interactions",
    "Interactions",
    "InteractionBatch",
    "InteractionMethod",
    "get_interaction_method",
    "interaction_methods_for",
    "list_interaction_methods",
    "register_interaction",
]
