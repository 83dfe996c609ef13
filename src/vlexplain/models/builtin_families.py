"""The families of library "vlexplain": the built-in offline model and the shapes-world testbed CLIP.

Both ship with the package (no download), so their "tiny" builders load the real models.
"""

from __future__ import annotations

from .base import DualEncoder
from .families import Family, register_family


def _offline() -> DualEncoder:
    from .offline import load_offline

    return load_offline()


def _shapes() -> DualEncoder:
    from ..data.testbed_models import load_shapes_clip

    return load_shapes_clip()


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
register_family(
    Family(
        key="testbed-shapes",
        name="shapes-world CLIP (trained by vlexplain)",
        library="vlexplain",
        examples="testbed:shapes, testbed:shapes@DIR",
        tiny=_shapes,
        notes="a small transformers CLIPModel with a word tokenizer; ground-truth masks in the shapes testbed; M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
    )
)
