"""vlexplain: explain CLIP-family vision-language models.

>>> import vlexplain as vx
>>> model = vx.load_model("offline")
>>> exp = vx.explain(model, "cat.jpg", "a cat", method="m2ib", seed=0)
"""

from .attribution.api import explain
from .attribution.base import Explainer, Explanation, PairBatch, get_method, list_methods, methods_for, register_method
from .attribution.targets import Target
from .errors import InputError, MethodError, ModelLoadError, VlexplainError
from .models.base import DualEncoder, TextBatch, Tower
from .models.registry import SPEC_FORMS, load_model
from .repair.decompose import Decomposition, decompose

__version__ = "0.1.0"

__all__ = [
    "load_model",
    "explain",
    "decompose",
    "Decomposition",
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
