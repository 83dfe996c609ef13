"""vlexplain: explain CLIP-family vision-language models.

>>> import vlexplain as vx
>>> model = vx.load_model("offline")
>>> exp = vx.explain(model, "cat.jpg", "a cat", method="m2ib", seed=0)

The names below load on first use (torch and the model libraries are imported then, not by
``import vlexplain``), so that the command line answers ``--help`` and usage errors at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import InputError, MethodError, ModelLoadError, VlexplainError

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "load_model": ".models.registry",
    "SPEC_FORMS": ".models.registry",
    "explain": ".attribution.api",
    "Explainer": ".attribution.base",
    "Explanation": ".attribution.base",
    "PairBatch": ".attribution.base",
    "get_method": ".attribution.base",
    "list_methods": ".attribution.base",
    "methods_for": ".attribution.base",
    "register_method": ".attribution.base",
    "Target": ".attribution.targets",
    "DualEncoder": ".models.base",
    "TextBatch": ".models.base",
    "Tower": ".models.base",
}

if TYPE_CHECKING:
    from .attribution.api import explain
    from .attribution.base import (
        Explainer,
        Explanation,
        PairBatch,
        get_method,
        list_methods,
        methods_for,
        register_method,
    )
    from .attribution.targets import Target
    from .models.base import DualEncoder, TextBatch, Tower
    from .models.registry import SPEC_FORMS, load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vlexplain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "load_model",
    "explain",
    "list_methods",
    "get_method",
    "methods_for",
    "register_method",
    "Explainer",
    "Explanation",
    "PairBatch",
    "Target",
    "DualEncoder",
    "Tower",
    "TextBatch",
    "SPEC_FORMS",
    "VlexplainError",
    "InputError",
    "MethodError",
    "ModelLoadError",
]
