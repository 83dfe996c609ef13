"""transformers models with CLIP's architecture: ``MetaClip2Model`` and the CLIP towers inside
detectors and segmenters (``OwlViTModel``, ``Owlv2Model``, ``CLIPSegModel``).

All four hold CLIP's class-token ViT (OWL-ViT spells its pre-norm ``pre_layernorm``) and CLIP's
causal text tower, so [`HFDualEncoder`][vlexplain.models.hf_clip.HFDualEncoder] explains them; what
differs is where the text tower pools (``causal_text_pool``): MetaCLIP 2 at the first
``eos_token_id`` (``</s> = 2`` of its XLM tokenizer), OWL-ViT and OWLv2 at the largest id, CLIPSeg
by CLIP's rule (the largest id with the legacy ``eos_token_id = 2``).

The detector and segmenter classes users hold (``OwlViTForObjectDetection``,
``Owlv2ForObjectDetection``, ``CLIPSegForImageSegmentation``) are explained through the CLIP model
they contain: the image-text similarity of that backbone (``get_image_features`` /
``get_text_features``), not the boxes or masks of their heads. Their save_pretrained directories
load into the CLIP model class (transformers reads the backbone's weights out of them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .families import Family, register_family
from .hf_clip import HFDualEncoder, _clip
from .hf_common import HFEntry, register_hf, tiny_transformer
from .tiny_tokenizers import xlm_tokenizer


class MetaClip2DualEncoder(HFDualEncoder):
    """``MetaClip2Model``: pass its tokenizer (XLM-V or mT5, not CLIP's BPE)."""

    clip_bpe_fallback = False


def _metaclip2(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> HFDualEncoder:
    return MetaClip2DualEncoder(model, tokenizer, processor, name)


def _inner(attr: str):
    """The adapter of a detector or segmenter: its CLIP model ``model.<attr>``."""

    def adapter(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> HFDualEncoder:
        return HFDualEncoder(getattr(model, attr), tokenizer, processor, name)

    return adapter


register_hf(HFEntry(("metaclip_2",), "MetaClip2Model", _metaclip2, "hf-metaclip2"))
register_hf(HFEntry(("owlvit",), "OwlViTModel", _clip, "hf-owlvit"))
register_hf(HFEntry(("owlv2",), "Owlv2Model", _clip, "hf-owlv2"))
register_hf(HFEntry(("clipseg",), "CLIPSegModel", _clip, "hf-clipseg"))
register_hf(HFEntry((), "OwlViTForObjectDetection", _inner("owlvit"), "hf-owlvit"))
register_hf(HFEntry((), "Owlv2ForObjectDetection", _inner("owlv2"), "hf-owlv2"))
register_hf(HFEntry((), "CLIPSegForImageSegmentation", _inner("clip"), "hf-clipseg"))

_VISION = tiny_transformer(2, image_size=32, patch_size=8)


def tiny_metaclip2(seed: int = 0) -> nn.Module:
    """A random-weight MetaClip2Model whose text tower has the tiny XLM-layout vocabulary
    (``<s>=0 <pad>=1 </s>=2``, ``eos_token_id = 2`` as in the released configs)."""
    from transformers import MetaClip2Config, MetaClip2Model

    torch.manual_seed(seed)
    text = tiny_transformer(2, vocab_size=len(xlm_tokenizer()), max_position_embeddings=16)
    text.update(bos_token_id=0, pad_token_id=1, eos_token_id=2)
    return MetaClip2Model(MetaClip2Config(text_config=text, vision_config=_VISION, projection_dim=16)).eval()


def _tiny(config_cls: str, model_cls: str, seed: int, **vision: Any) -> nn.Module:
    import transformers

    torch.manual_seed(seed)
    cfg = getattr(transformers, config_cls)(
        text_config=tiny_transformer(2, vocab_size=49408, max_position_embeddings=16),
        vision_config={**_VISION, **vision},
        projection_dim=16,
    )
    return getattr(transformers, model_cls)(cfg).eval()


def tiny_owlvit(seed: int = 0) -> nn.Module:
    """A random-weight OwlViTModel (CLIP's vocabulary, texts of up to 16 tokens)."""
    return _tiny("OwlViTConfig", "OwlViTModel", seed)


def tiny_owlv2(seed: int = 0) -> nn.Module:
    """A random-weight Owlv2Model (CLIP's vocabulary, texts of up to 16 tokens)."""
    return _tiny("Owlv2Config", "Owlv2Model", seed)


def tiny_clipseg(seed: int = 0) -> nn.Module:
    """A random-weight CLIPSegModel (CLIP's vocabulary, texts of up to 16 tokens)."""
    return _tiny("CLIPSegConfig", "CLIPSegModel", seed)


_LAYERS = "M2IB and Grad-CAM at block round(10 n / 12) - 1 of n"
for _fam in (
    Family(
        key="hf-metaclip2",
        name="MetaCLIP 2 (transformers MetaClip2Model)",
        library="transformers",
        examples="hf:facebook/metaclip-2-worldwide-huge-quickgelu, hf:facebook/metaclip-2-worldwide-giant",
        tiny=tiny_metaclip2,
        tokenizer=xlm_tokenizer,
        notes="CLIP's architecture, multilingual; class-token ViT; causal text tower pooled at the first "
        f"</s> (pass its XLM-V / mT5 tokenizer, or load its directory); {_LAYERS}",
    ),
    Family(
        key="hf-owlvit",
        name="OWL-ViT, CLIP backbone (transformers OwlViTModel / OwlViTForObjectDetection)",
        library="transformers",
        examples="hf:google/owlvit-base-patch32, hf:google/owlvit-large-patch14",
        tiny=tiny_owlvit,
        notes="the image-text similarity of the detector's CLIP backbone, not its boxes; class-token ViT; "
        f"text pooled at the largest id (the end-of-text token of CLIP's BPE); {_LAYERS}",
    ),
    Family(
        key="hf-owlv2",
        name="OWLv2, CLIP backbone (transformers Owlv2Model / Owlv2ForObjectDetection)",
        library="transformers",
        examples="hf:google/owlv2-base-patch16-ensemble, hf:google/owlv2-large-patch14-ensemble",
        tiny=tiny_owlv2,
        notes="the image-text similarity of the detector's CLIP backbone, not its boxes; class-token ViT; "
        f"text pooled at the largest id (the end-of-text token of CLIP's BPE); {_LAYERS}",
    ),
    Family(
        key="hf-clipseg",
        name="CLIPSeg, CLIP backbone (transformers CLIPSegModel / CLIPSegForImageSegmentation)",
        library="transformers",
        examples="hf:CIDAS/clipseg-rd64-refined",
        tiny=tiny_clipseg,
        notes="the image-text similarity of the segmenter's CLIP backbone, not its masks; class-token ViT; "
        f"causal text tower pooled as CLIPModel's; {_LAYERS}",
    ),
):
    register_family(_fam)
