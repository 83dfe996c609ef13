"""Adapter for transformers ``Siglip2Model`` (NaFlex: images keep their aspect ratio).

SigLIP 2 cuts an image into ``h x w`` patches of ``P x P`` pixels where ``h * w`` stays within
``max_num_patches`` (256 by default) and ``h / w`` follows the image's aspect ratio; the learned
16 x 16 position embeddings are resized to each image's ``(h, w)``. Here the image tower takes
ordinary ``(B, 3, H, W)`` pixel tensors (``H = h P``, ``W = w P``) and cuts them into patches in
the processor's order, so every pixel-space method (occlusion, RISE, integrated gradients) works
unchanged, and maps come back on the ``(h, w)`` grid of the model's input size.

The adapter's input size is one ``(H, W)``: by default the square grid that fills
``max_num_patches``; pass ``input_size=(H, W)`` (multiples of the patch size), or
``aspect=(height, width)`` of your photos to get the size the SigLIP 2 processor would pick for
them. A processor batch with a different shape per image (``pixel_values`` (B, max_patches,
C*P*P), ``pixel_attention_mask``, ``spatial_shapes``) is embedded by ``Siglip2DualEncoder.
encode_naflex``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, ModelLoadError
from .base import Tower
from .blocks import padding_mask
from .families import Family, register_family
from .hf_clip import HFTextTower
from .hf_common import (
    HFAdapter,
    HFEntry,
    check_vocab,
    clip_block,
    register_hf,
    resolve_tokenizer,
    tiny_transformer,
    vocab_size_of,
)
from .text import TokenizerSpec, _clean_token, special_tokens_around


def patchify(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, h*w, P*P*C) in the SigLIP 2 processor's order (rows of patches, each
    patch row-major with channels last)."""
    B, C, H, W = x.shape
    h, w = H // patch, W // patch
    x = x.reshape(B, C, h, patch, w, patch).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, P, P, C)
    return x.reshape(B, h * w, patch * patch * C)


def naflex_size(height: int, width: int, patch: int, max_num_patches: int) -> tuple[int, int]:
    """The (H, W) the SigLIP 2 processor resizes a ``height x width`` image to."""
    from transformers.models.siglip2.image_processing_siglip2 import (
        get_image_size_for_max_num_patches,
    )

    h, w = get_image_size_for_max_num_patches(height, width, patch, max_num_patches)
    return h, w


class Siglip2VisionTower(Tower):
    """SigLIP 2 ViT on a fixed ``(h, w)`` patch grid, attention-pooling head, no class token.

    ``x`` is either pixels (B, 3, H, W) or, for ``Siglip2DualEncoder.encode_naflex``, a dict
    with the processor's ``pixel_values``, ``pixel_attention_mask`` and ``spatial_shapes``.
    """

    modality = "image"
    kind = "vit"
    num_prefix_tokens = 0
    grid: tuple[int, int]  # always set: the adapter fixes the patch grid

    def __init__(self, vision_model: Any, grid: tuple[int, int]):
        super().__init__()
        self.vm: Any = vision_model  # a transformers vision model
        cfg = self.vm.config
        self.patch = int(cfg.patch_size)
        self.num_heads = cfg.num_attention_heads
        self.grid = grid

    @property
    def num_blocks(self) -> int:
        return len(self.vm.encoder.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.vm.encoder.layers)

    def stem(self, x: Any, inputs_embeds: Tensor | None = None) -> Tensor:
        emb = self.vm.embeddings
        if isinstance(x, dict):
            return emb(x["pixel_values"], x["spatial_shapes"])
        H, W = x.shape[-2:]
        if (H // self.patch, W // self.patch) != self.grid or H % self.patch or W % self.patch:
            raise InputError(
                f"this SigLIP 2 adapter takes {self.grid[0] * self.patch}x{self.grid[1] * self.patch} images, got {H}x{W}"
            )
        pv = patchify(x.to(emb.patch_embedding.weight.dtype), self.patch)
        shapes = torch.tensor([self.grid], device=x.device).expand(x.shape[0], 2)
        return emb(pv, shapes)

    def _mask(self, x: Any, h: Tensor) -> Tensor | None:
        if isinstance(x, dict):
            return padding_mask(x["pixel_attention_mask"], h.dtype)
        return None

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        return clip_block(self.vm.encoder.layers[i], h, self._mask(x, h), need_attn, self.num_heads, rows)

    def head(self, h: Tensor, x: Any) -> Tensor:
        mask = x["pixel_attention_mask"] if isinstance(x, dict) else None
        return self.vm.head(self.vm.post_layernorm(h), mask)

    def head_ops(self, x: Any) -> list[Any]:
        from .hf_clip import siglip_head_ops

        mask = x["pixel_attention_mask"] if isinstance(x, dict) else None
        return siglip_head_ops(self.vm, None if mask is None else ~mask.bool())


def template_tokenizer(tok: Any, context_length: int) -> TokenizerSpec:
    """A SigLIP 2 tokenizer as its own template lays texts out: the special tokens it adds around a
    text (Gemma: ``<bos>`` first), its padding side (left) and masked padding, padded to the context
    length and pooled at the last position, as ``processor(text=..., padding="max_length")``."""
    sos, eos = special_tokens_around(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else next((i for i in (eos, sos) if i is not None), 0)
    return TokenizerSpec(
        encode=lambda t: tok(t, add_special_tokens=False)["input_ids"],
        decode_token=lambda i: _clean_token(tok.convert_ids_to_tokens(int(i))),
        decode=lambda ids: tok.decode(ids),
        sos_id=sos,
        eos_id=eos,
        pad_id=int(pad),
        context_length=context_length,
        pool="last",
        pad_to_context=True,
        padding_side="left" if getattr(tok, "padding_side", "right") == "left" else "right",
        mask_padding="attention_mask" in getattr(tok, "model_input_names", ()),
    )


class Siglip2TextTower(HFTextTower):
    """SigLIP 2 text tower: bidirectional, padding masked when the tokenizer marks it, pooled at the
    last position (the last real token under left padding)."""

    def __init__(self, text_model: Any):
        super().__init__(text_model, None, siglip=True)

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        m = padding_mask(x.attention_mask, h.dtype)  # (B, 1, 1, T)
        if rows is not None:  # one query row per text: a (B, 1, T, T) mask the block can index
            m = m.expand(-1, 1, h.shape[1], -1)
        return clip_block(self.tm.encoder.layers[i], h, m, need_attn, self.num_heads, rows)


class Siglip2DualEncoder(HFAdapter):
    """A transformers Siglip2Model behind the DualEncoder protocol.

    Args:
        model: the Siglip2Model.
        tokenizer / processor: the model's tokenizer (Gemma's) or processor; required unless the
            text table has CLIP's size (tiny test models).
        input_size: (H, W) of the images explained (multiples of the patch size, at most
            ``max_num_patches`` patches); default: the square that fills ``max_num_patches``.
        aspect: (height, width) of typical photos: the input size the processor would choose.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        processor: Any = None,
        name: str = "hf",
        input_size: tuple[int, int] | None = None,
        aspect: tuple[int, int] | None = None,
    ):
        super().__init__(model, name)
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        ip = getattr(processor, "image_processor", None)
        self.max_num_patches = int(getattr(ip, "max_num_patches", None) or vcfg.num_patches)
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        self._use_processor(processor)
        self.image = Siglip2VisionTower(model.vision_model, (1, 1))
        self.set_input_size(input_size, aspect)
        self.text = Siglip2TextTower(model.text_model)
        table = model.text_model.embeddings.token_embedding
        ctx = tcfg.max_position_embeddings
        if tokenizer is None and processor is not None:
            tokenizer = getattr(processor, "tokenizer", None)
        if (
            tokenizer is not None
            and not isinstance(tokenizer, TokenizerSpec)
            and hasattr(tokenizer, "convert_ids_to_tokens")
        ):
            check_vocab(vocab_size_of(tokenizer), table, "Siglip2Model")
            tokenizer = template_tokenizer(tokenizer, ctx)

        def clip_bpe():
            from .text import clip_bpe_tokenizer

            return clip_bpe_tokenizer(ctx, "last", pad_to_context=True) if table.num_embeddings == 49408 else None

        self._tok = resolve_tokenizer(
            tokenizer, None, table, "Siglip2Model", ctx, "last", pad_to_context=True, fallback=clip_bpe
        )

    def set_input_size(self, input_size: tuple[int, int] | None = None, aspect: tuple[int, int] | None = None) -> None:
        """Explain images at ``input_size`` (H, W), or at the size the SigLIP 2 processor picks for
        photos of ``aspect`` (height, width); neither: the square that fills ``max_num_patches``.

        Raises:
            ModelLoadError: a size that is not a multiple of the patch size or holds too many patches.
        """
        P = int(self.model.config.vision_config.patch_size)
        if input_size is None:
            if aspect is not None:
                if min(int(aspect[0]), int(aspect[1])) <= 0:
                    raise ModelLoadError(f"aspect {aspect[0]}x{aspect[1]}: need a positive height and width")
                input_size = naflex_size(int(aspect[0]), int(aspect[1]), P, self.max_num_patches)
            else:
                g = math.isqrt(self.max_num_patches)
                input_size = (g * P, g * P)
        H, W = int(input_size[0]), int(input_size[1])
        if H % P or W % P or H <= 0 or W <= 0 or (H // P) * (W // P) > self.max_num_patches:
            raise ModelLoadError(
                f"input_size {H}x{W}: need multiples of the patch size {P} with at most {self.max_num_patches} patches"
            )
        self.input_size = (H, W)
        self.image.grid = (H // P, W // P)

    def preprocess(self, image: Any) -> Tensor:
        """PIL image -> (3, H, W): the whole image resized to the input size (no crop), as SigLIP 2's
        processor resizes rather than crops."""
        import numpy as np

        rgb = image.convert("RGB").resize((self.input_size[1], self.input_size[0]), resample=2)  # bilinear
        x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
        m = torch.tensor(self.mean).view(3, 1, 1)
        s = torch.tensor(self.std).view(3, 1, 1)
        return (x - m) / s

    def encode_naflex(
        self, pixel_values: Tensor, pixel_attention_mask: Tensor, spatial_shapes: Tensor, normalize: bool = True
    ) -> Tensor:
        """Embed a SigLIP 2 processor batch (a shape of its own per image, padded patches masked)."""
        x = {
            "pixel_values": pixel_values.to(self.device),
            "pixel_attention_mask": pixel_attention_mask.to(self.device),
            "spatial_shapes": spatial_shapes.to(self.device),
        }
        e = self.image.encode(x)
        return F.normalize(e, dim=-1) if normalize else e


def _siglip2(model: nn.Module, tokenizer: Any = None, processor: Any = None, name: str = "hf") -> Siglip2DualEncoder:
    return Siglip2DualEncoder(model, tokenizer, processor, name)


register_hf(HFEntry(("siglip2",), "Siglip2Model", _siglip2, "hf-siglip2"))


def tiny_siglip2(layers: int = 2, seed: int = 0) -> nn.Module:
    """A random-weight Siglip2Model at a tiny width: 4 x 4 learned positions, at most 16 patches of
    8 px (32 x 32 by default), a 16-token context."""
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(seed)
    cfg = Siglip2Config(
        text_config=tiny_transformer(layers, vocab_size=49408, max_position_embeddings=16, projection_size=32),
        vision_config=tiny_transformer(layers, num_patches=16, patch_size=8),
    )
    return Siglip2Model(cfg).eval()


register_family(
    Family(
        key="hf-siglip2",
        name="SigLIP 2 NaFlex (transformers Siglip2Model)",
        library="transformers",
        examples="hf:google/siglip2-base-patch16-naflex",
        tiny=tiny_siglip2,
        notes="no class token, attention-pooling head; one (H, W) per adapter (SPEC#size=HxW or SPEC#aspect=HxW; "
        "input_size= / aspect= in Python), "
        "encode_naflex for processor batches with a shape per image; M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
    )
)
