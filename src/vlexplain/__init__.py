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
from .testbeds.specs import register as _register_testbeds

# ``vx.interactions`` is a function named like the subpackage: the subpackage (light) is loaded now
# and the name it bound removed, so that ``__getattr__`` gives the function and no later import of
# the subpackage rebinds the name to the module
importlib.import_module(".interactions", __name__)
globals().pop("interactions")

_register_testbeds()  # the testbed: specs and the shapes-world family (torch-free; the model layer never imports testbeds)

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
    "interactions": ".interactions.api",
    "InteractionMethod": ".interactions.base",
    "get_interaction_method": ".interactions.base",
    "list_interaction_methods": ".interactions.base",
    "register_interaction": ".interactions.base",
    "Interactions": ".interactions.result",
    "Similarity": ".interactions.similarity",
    "explain_similarity": ".interactions.similarity",
    "DualEncoder": ".models.base",
    "TextBatch": ".models.base",
    "Tower": ".models.base",
    "decompose": ".repair.decompose",
    "Decomposition": ".repair.decompose",
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
    from .interactions.api import interactions
    from .interactions.base import (
        InteractionMethod,
        get_interaction_method,
        list_interaction_methods,
        register_interaction,
    )
    from .interactions.result import Interactions
    from .interactions.similarity import Similarity, explain_similarity
    from .models.base import DualEncoder, TextBatch, Tower
    from .models.registry import SPEC_FORMS, load_model
    from .repair.decompose import Decomposition, decompose


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
    "decompose",
    "Decomposition",
    "interactions",
    "Interactions",
    "list_interaction_methods",
    "get_interaction_method",
    "register_interaction",
    "InteractionMethod",
    "explain_similarity",
    "Similarity",
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
