"""The family of library "vlexplain" in the model layer: the built-in offline model.

It ships with pip packages (no download), so its "tiny" builder loads the real model. (The
shapes-world testbed CLIP's family is registered by ``vlexplain.testbeds.testbed_models``.)
"""

from __future__ import annotations

from .base import DualEncoder
from .families import Family, register_family


def _offline() -> DualEncoder:
    from .offline import load_offline

    return load_offline()


register_family(
    Family(
        key="offline",
        name="built-in offline model (EfficientNet-Lite0 + MiniLM, ConSE)",
        library="vlexplain",
        examples="offline",
        tiny=_offline,
        image_tower="cnn",
        notes="pretrained weights from pip packages; blocks = the 7 EfficientNet stages; M2IB after stage 4 "
        "(14 x 14), Grad-CAM after the last stage; MiniLM text tower (mean pooling)",
    )
)
