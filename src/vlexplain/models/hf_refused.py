"""transformers image-text models users hold that are not dual encoders vlexplain can explain.

Each is registered in the transformers table with a refusal, so that an in-memory model, a hub id
or a directory of it is refused at load in one line (before any weight is read) with the reason,
and the reason is listed under the families table.
"""

from __future__ import annotations

from typing import Any

from ..errors import ModelLoadError
from .families import Refusal, register_refusal
from .hf_common import HFEntry, register_hf

BLIP2 = (
    "its image-text contrastive score is the maximum over its query embeddings (32 in the released models) of "
    "their cosine with the text embedding, so an image has no one embedding; vlexplain's methods and targets "
    "compare one image embedding with one text embedding"
)


def _refuse(model_class: str, reason: str):
    def adapter(model: Any, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> Any:
        raise ModelLoadError(f"cannot explain a transformers {model_class}: {reason}")

    return adapter


for _cls, _types, _reason in (("Blip2ForImageTextRetrieval", ("blip-2",), BLIP2),):
    register_hf(HFEntry(_types, _cls, _refuse(_cls, _reason), "", refusal=_reason))
    register_refusal(Refusal(_cls, "transformers", _reason))
