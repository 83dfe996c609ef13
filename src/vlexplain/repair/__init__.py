"""From audit to repair: find the components that carry a shortcut and remove the model's reliance on it.

* ``decompose``: a ViT image embedding as the sum of its embeddings', heads' and MLPs' parts (TextSpan).
* ``audit_layers``: where M2IB (layer, beta) and Grad-CAM (layer) see a cue.
* ``audit_heads``: heads ranked by how much their part of the score changes when the cue is present.
* ``repair``: mean-ablate those heads, or fine-tune with right-for-the-right-reasons, DEAL or a control,
  and write a model directory that loads as a model spec.
"""

from .decompose import Decomposition, decompose
from .run import METHODS, RepairConfig, RepairResult, repair

__all__ = ["Decomposition", "decompose", "repair", "RepairConfig", "RepairResult", "METHODS"]
