"""vlexplain.interactions: second-order explanations (which words go with which image regions).

One file per method, registered with [`register_interaction`][vlexplain.interactions.base.register_interaction];
`vx.interactions` runs them and returns [`Interactions`][vlexplain.Interactions].
"""

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
