"""Adapter for OpenCLIP models with a ViT image tower and a transformer text tower."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelLoadError
from .base import DualEncoder, TextBatch, Tower
from .blocks import prenorm_block
from .text import TokenizerSpec, clip_bpe_tokenizer


def _oc_block(blk: nn.Module, h: Tensor, mask: Tensor | None, need_attn: bool, rows: Tensor | None = None):
    mha: nn.MultiheadAttention = blk.attn
    D = h.shape[-1]

    def qkv(x: Tensor):
        w, b = mha.in_proj_weight, mha.in_proj_bias
        q = nn.functional.linear(x, w[:D], None if b is None else b[:D])
        k = nn.functional.linear(x, w[D : 2 * D], None if b is None else b[D : 2 * D])
        v = nn.functional.linear(x, w[2 * D :], None if b is None else b[2 * D :])
        return q, k, v

    ls1 = None if isinstance(blk.ls_1, nn.Identity) else blk.ls_1
    ls2 = None if isinstance(blk.ls_2, nn.Identity) else blk.ls_2
    return prenorm_block(
        h,
        ln1=blk.ln_1,
        qkv=qkv,
        out_proj=mha.out_proj,
        ln2=blk.ln_2,
        mlp=blk.mlp,
        num_heads=mha.num_heads,
        mask=mask,
        need_attn=need_attn,
        ls1=ls1,
        ls2=ls2,
        rows=rows,
    )


class OpenCLIPVisionTower(Tower):
    modality = "image"
    kind = "vit"
    num_prefix_tokens = 1

    def __init__(self, visual: nn.Module):
        super().__init__()
        if not hasattr(visual, "transformer") or not hasattr(visual, "class_embedding"):
            raise ModelLoadError(
                f"OpenCLIP image tower {type(visual).__name__} is not supported; vlexplain supports ViT towers"
            )
        if getattr(visual, "attn_pool", None) is not None:
            raise ModelLoadError("OpenCLIP ViT towers with attentional pooling are not supported")
        self.v = visual
        self.grid = (int(visual.grid_size[0]), int(visual.grid_size[1]))

    @property
    def num_blocks(self) -> int:
        return len(self.v.transformer.resblocks)

    def block_modules(self) -> list[nn.Module]:
        return list(self.v.transformer.resblocks)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        v = self.v
        x = v.conv1(x.to(v.conv1.weight.dtype))  # (B, D, g, g)
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x)

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        return _oc_block(self.v.transformer.resblocks[i], h, None, need_attn, rows)

    def pooled_positions(self, x: Any) -> Tensor | None:
        if self.v.pool_type != "tok":
            return None
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def head(self, h: Tensor, x: Any) -> Tensor:
        v = self.v
        if getattr(v, "final_ln_after_pool", False):
            pooled = v.ln_post(h[:, 0] if v.pool_type == "tok" else h[:, 1:].mean(1))
        else:
            h = v.ln_post(h)
            pooled = h[:, 0] if v.pool_type == "tok" else h[:, 1:].mean(1)
        return pooled @ v.proj if v.proj is not None else pooled

    def project_tokens(self, h: Tensor, x: Any) -> Tensor:
        if self.v.pool_type != "tok":
            raise NotImplementedError("this OpenCLIP ViT pools by averaging, not one token")
        t = self.v.ln_post(h)
        return t @ self.v.proj if self.v.proj is not None else t


class OpenCLIPTextTower(Tower):
    modality = "text"
    kind = "text"

    def __init__(self, text: nn.Module, context_length: int):
        super().__init__()
        self.t = text  # the CLIP model itself, or CustomTextCLIP.text
        self.context_length = context_length
        pool = getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax"))
        if pool not in ("argmax", "eos"):
            raise ModelLoadError(f"OpenCLIP text pooling {pool!r} is not supported")
        if getattr(text, "cls_emb", None) is not None:
            raise ModelLoadError("OpenCLIP text towers with a class token (CoCa) are not supported")

    @property
    def num_blocks(self) -> int:
        return len(self.t.transformer.resblocks)

    def block_modules(self) -> list[nn.Module]:
        return list(self.t.transformer.resblocks)

    def token_embeddings(self, x: TextBatch) -> Tensor:
        return self.t.token_embedding(x.ids)

    def stem(self, x: TextBatch, inputs_embeds: Tensor | None = None) -> Tensor:
        e = self.t.token_embedding(x.ids) if inputs_embeds is None else inputs_embeds
        return e + self.t.positional_embedding[: e.shape[1]].to(e.dtype)

    def pooled_positions(self, x: TextBatch) -> Tensor | None:
        return x.pool_index

    def block(self, i: int, h: Tensor, x: TextBatch, need_attn: bool = False, rows: Tensor | None = None):
        T = h.shape[1]
        m = self.t.attn_mask
        mask = None if m is None else m[:T, :T].to(h.dtype)
        return _oc_block(self.t.transformer.resblocks[i], h, mask, need_attn, rows)

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        h = self.t.ln_final(h)
        pooled = h[torch.arange(h.shape[0], device=h.device), x.pool_index]
        proj = self.t.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj

    def project_tokens(self, h: Tensor, x: TextBatch) -> Tensor:
        t, proj = self.t.ln_final(h), self.t.text_projection
        if proj is None:
            return t
        return proj(t) if isinstance(proj, nn.Linear) else t @ proj


class OpenCLIPDualEncoder(DualEncoder):
    def __init__(self, model: nn.Module, tokenizer: Any = None, preprocess: Any = None, name: str = "open_clip"):
        super().__init__()
        self.model = model
        self.name = name
        text = model.text if hasattr(model, "text") else model
        ctx = int(getattr(model, "context_length", 0) or text.positional_embedding.shape[0])
        self.image = OpenCLIPVisionTower(model.visual)
        self.text = OpenCLIPTextTower(text, ctx)
        size = getattr(model.visual, "image_size", (224, 224))
        self.input_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        mean = getattr(model.visual, "image_mean", None)
        std = getattr(model.visual, "image_std", None)
        if mean is not None and std is not None:
            self.mean, self.std = tuple(mean), tuple(std)
        self._preprocess = preprocess
        if isinstance(tokenizer, TokenizerSpec):
            self._tok = tokenizer
        elif tokenizer is not None and hasattr(tokenizer, "encode") and hasattr(tokenizer, "eot_token_id"):
            t = tokenizer
            self._tok = TokenizerSpec(
                encode=t.encode,
                decode_token=lambda i: t.decoder[int(i)].replace("</w>", ""),
                decode=t.decode,
                sos_id=t.sot_token_id,
                eos_id=t.eot_token_id,
                pad_id=0,
                context_length=ctx,
            )
        else:
            self._tok = clip_bpe_tokenizer(ctx)

    def tokenize(self, texts) -> TextBatch:
        return self._tok(texts, device=self.device)

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
