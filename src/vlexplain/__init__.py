"""vlexplain: explain CLIP-family vision-language models.

>>> import vlexplain as vx
>>> model = vx.load_model("offline")
>>> exp = vx.explain(model, "cat.jpg", "a cat", method="m2ib", seed=0)
"""

from .attribution.api import explain
from .attribution.base import Explainer, Explanation, PairBatch, get_method, list_methods, methods_for, register_method
from .attribution.targets import Target
from .errors import InputError, MethodError, ModelLoadError, VlexplainError
from .interactions.api import interactions
from .interactions.base import InteractionMethod, get_interaction_method, list_interaction_methods, register_interaction
from .interactions.result import Interactions
from .interactions.similarity import Similarity, explain_similarity
from .models.base import DualEncoder, TextBatch, Tower
from .models.registry import SPEC_FORMS, load_model
from .repair.decompose import Decomposition, decompose
from .testbeds.testbed_models import register as _register_testbeds

_register_testbeds()  # the testbed: specs and the shapes-world family (the model layer never imports testbeds)

__version__ = "0.1.0"

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
