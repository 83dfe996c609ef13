"""Concept-level explanations and DEAL fine-tuning (Li, Ma, Peng, ECCV 2024).

* ``.sets`` — concept sets (``{class: [descriptors]}`` JSON, CSV or a dict) and validation;
* ``.generate`` — concept sets written by a chat model behind an OpenAI-compatible endpoint;
* ``.relevance`` — differentiable concept maps (last-block gradient-weighted attention
  relevance) and figures;
* ``.metrics`` — disentanglability, localizability, zero-shot accuracy, part metrics;
* ``.losses`` / ``.train`` — DEAL losses and the fine-tuning loop;
* ``.evaluate`` — dataset-level evaluation (with ground truth: CUB keypoints, shapes-world masks);
* ``.report`` — the before / after report (``report.html``, ``metrics.json``, ``metrics.csv``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> its module (imported on first access: ``concepts.sets`` alone needs no torch)
_LAZY = {
    "generate_concepts": ".generate",
    "DealLosses": ".losses",
    "deal_losses": ".losses",
    "disentangle_loss": ".losses",
    "localize_loss": ".losses",
    "prediction_loss": ".losses",
    "RELEASED_TEMPLATES": ".relevance",
    "ConceptMaps": ".relevance",
    "Templates": ".relevance",
    "concept_maps": ".relevance",
    "deal_maps": ".relevance",
    "plot_concept_maps": ".relevance",
    "ConceptSet": ".sets",
    "load_concepts": ".sets",
    "DealConfig": ".train",
    "TrainResult": ".train",
    "deal_train": ".train",
}

if TYPE_CHECKING:
    from .generate import generate_concepts
    from .losses import DealLosses, deal_losses, disentangle_loss, localize_loss, prediction_loss
    from .relevance import RELEASED_TEMPLATES, ConceptMaps, Templates, concept_maps, deal_maps, plot_concept_maps
    from .sets import ConceptSet, load_concepts
    from .train import DealConfig, TrainResult, deal_train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vlexplain.concepts' has no attribute {name!r}")


__all__ = [
    "ConceptSet",
    "load_concepts",
    "generate_concepts",
    "Templates",
    "RELEASED_TEMPLATES",
    "ConceptMaps",
    "concept_maps",
    "deal_maps",
    "plot_concept_maps",
    "DealLosses",
    "deal_losses",
    "disentangle_loss",
    "localize_loss",
    "prediction_loss",
    "DealConfig",
    "TrainResult",
    "deal_train",
]
