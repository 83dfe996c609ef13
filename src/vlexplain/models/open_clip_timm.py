"""OpenCLIP image towers whose trunk is a timm model (``open_clip.timm_model.TimmModel``).

Two tower kinds, both running timm's own modules (never a copied forward):

* ``TimmViTTower`` for timm ``VisionTransformer`` trunks (SigLIP / SigLIP 2 configs with the
  MAP attention-pool head, ViTamin's convolutional patch stem, register tokens, no class token),
  timm ``Eva`` trunks (EVA02, PE-Core; rotary position embeddings passed to every block) and
  ``VisionTransformerRelPos`` trunks (relative-position biases passed to every block, no absolute
  position embedding). stem =
  ``patch_embed`` + ``_pos_embed`` (prefix tokens, positions) + ``norm_pre``; blocks = ``blocks``;
  head = ``norm`` + ``forward_head`` (token / average / MAP pooling) + OpenCLIP's projection head.
  Attention probabilities are read through timm's documented route: the block's ``Attention`` is
  switched to its unfused path (``fused_attn = False``) and a forward hook on ``attn_drop`` takes
  the softmaxed attention (the very tensor multiplied with the values, so gradients with respect
  to it are exact). The patch grid is the trunk's own (``patch_embed.grid_size``), square or not.
* ``TimmStagesTower`` for convolutional and hybrid trunks (ConvNeXt; FastViT / MobileCLIP):
  stem = ``stem``; blocks = the ``stages``, except that a stage whose blocks mix tokens with
  attention (MobileCLIP's last) is split into its blocks; head = the trunk's post-stage layer
  (``norm_pre`` or ``final_conv``) + ``forward_head`` + OpenCLIP's head. Hidden states are feature
  maps. On hybrids the attention methods that need only attention probabilities (chefer,
  attention_rollout, legrad) read the attention blocks of the last attention stage, whose tokens
  are that stage's feature-map positions; ConvNeXt has no attention.

* ``TimmSwinTower`` for timm ``SwinTransformer`` trunks: Swin attends within shifted local
  windows, so no block has an attention map over one set of tokens; it is a stage tower like
  ConvNeXt's (blocks = ``layers``, head = ``norm`` + ``forward_head`` + OpenCLIP's head). timm's
  Swin runs channels-last; the tower's hidden states are channels-first feature maps, each stage
  running on their channels-last view.

Default layers: the shared relative depth (block 9 of 12) for M2IB; Grad-CAM uses the same block
on ViTs and the last stage on stage towers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelLoadError
from .base import Tower
from .blocks import active_records
from .timm_record import recording_attention


@contextlib.contextmanager
def timm_attention_probs(attn: Any) -> Iterator[list[Tensor]]:
    """Collect the softmaxed attention of a timm attention module during one forward.

    Switches ``attn.fused_attn`` off (timm's unfused path computes explicit probabilities) and
    hooks ``attn.attn_drop``, whose output is what multiplies the values; both are restored on exit.
    """
    store: list[Tensor] = []
    prev = attn.fused_attn
    handle = attn.attn_drop.register_forward_hook(lambda m, inp, out: store.append(out))
    attn.fused_attn = False
    try:
        yield store
    finally:
        attn.fused_attn = prev
        handle.remove()


def _timm_attention(a: Any) -> bool:
    """Whether ``a`` is a timm attention module with an unfused path whose probabilities can be read."""
    return a is not None and hasattr(a, "fused_attn") and isinstance(getattr(a, "attn_drop", None), nn.Module)


def _reads_attention(blk: nn.Module) -> bool:
    return _timm_attention(getattr(blk, "attn", None))


class TimmViTTower(Tower):
    """A timm ``VisionTransformer`` or ``Eva`` trunk inside an OpenCLIP ``TimmModel``."""

    modality = "image"
    kind = "vit"

    def __init__(self, visual: Any):
        super().__init__()
        from timm.models.eva import Eva
        from timm.models.vision_transformer_relpos import VisionTransformerRelPos

        self.v: Any = visual  # an OpenCLIP TimmModel
        self.trunk: Any = visual.trunk  # a timm VisionTransformer, Eva or VisionTransformerRelPos
        self.eva = isinstance(self.trunk, Eva)
        self.relpos = isinstance(self.trunk, VisionTransformerRelPos)
        self.num_prefix_tokens = int(getattr(self.trunk, "num_prefix_tokens", 0))
        self.has_class_token = getattr(self.trunk, "cls_token", None) is not None
        pool = getattr(self.trunk, "global_pool", "token")
        self.reads_class_token = (
            self.has_class_token and pool == "token" and getattr(self.trunk, "attn_pool", None) is None
        )
        self.has_attention = all(_reads_attention(b) for b in self.trunk.blocks)
        self._rope_cache: dict[tuple, Any] = {}
        gh, gw = self.trunk.patch_embed.grid_size
        self.grid = (int(gh), int(gw))  # the trunk's own

    @property
    def class_token_pooled(self) -> bool:
        return self.reads_class_token

    @property
    def num_blocks(self) -> int:
        return len(self.trunk.blocks)

    def block_modules(self) -> list[nn.Module]:
        return list(self.trunk.blocks)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        t = self.trunk
        h = t.patch_embed(x.to(next(t.parameters()).dtype))
        if self.relpos:  # positions enter as attention biases; no absolute embedding, no pre-norm
            return h if t.cls_token is None else torch.cat([t.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
        if self.eva:
            h, _ = t._pos_embed(h)
        else:
            h = t.patch_drop(t._pos_embed(h))
        return t.norm_pre(h)

    def _rope(self, x: Tensor, i: int) -> Any:
        """Eva: the rotary embedding of block ``i`` for inputs shaped like ``x``."""
        t = self.trunk
        if getattr(t, "rope", None) is None:
            return None
        key = (tuple(x.shape[-2:]), x.device, x.dtype)
        if key not in self._rope_cache:
            with torch.no_grad():
                probe = t.patch_embed(torch.zeros(1, *x.shape[1:], device=x.device, dtype=x.dtype))
                _, rope = t._pos_embed(probe)
            self._rope_cache = {key: rope}
        rope = self._rope_cache[key]
        return rope[i] if getattr(t, "rope_mixed", False) and rope is not None else rope

    def pooled_positions(self, x: Any) -> Tensor | None:
        """Class-token pooling: position 0 (average and attention pooling read every token: None)."""
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if self.reads_class_token else None

    def pool_attention(self) -> Any:
        """timm's ``AttentionPoolLatent`` (the MAP head) with one latent query, pooled at it."""
        pool: Any = getattr(self.trunk, "attn_pool", None)
        if type(pool).__name__ != "AttentionPoolLatent" or pool.latent_len != 1 or pool.pos_embed is not None:
            return None
        return pool if pool.pool == "token" and self.has_attention else None

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        blk = self.trunk.blocks[i]
        kw = {"rope": self._rope(x, i)} if self.eva else {}
        if self.relpos:
            shared = self.trunk.shared_rel_pos
            kw = {"shared_rel_pos": shared.get_bias() if shared is not None else None}
        records = active_records()
        if records is not None and rows is None and self.has_attention:  # q, k, v read for the CLIP-native methods
            with recording_attention(blk.attn) as cap:
                out = blk(h, **kw)
            rec = cap.record()
            if rec is not None:
                records.append(rec)
            return out, rec.probs if rec is not None and need_attn else None
        if rows is not None:  # the head reads the class token only: its row
            return blk(h, **kw)[torch.arange(h.shape[0], device=h.device), rows][:, None], None
        if not need_attn:
            return blk(h, **kw), None
        with timm_attention_probs(blk.attn) as probs:
            out = blk(h, **kw)
        return out, probs[-1]  # (B, heads, T, T)

    def head(self, h: Tensor, x: Any) -> Tensor:
        t = self.trunk
        return self.v.head(t.forward_head(t.norm(h)))

    def head_ops(self, x: Any) -> list[Any]:
        from .head_ops import Affine, LatentPool, Mean, Norm, ResidualMLP, Select, Tokens

        t = self.trunk
        ops: list[Any] = [Norm(t.norm)]
        include = getattr(t, "pool_include_prefix", False)
        ap = getattr(t, "attn_pool", None)
        if ap is not None:
            if not include:
                ops.append(Tokens(self.num_prefix_tokens))
            ops.append(LatentPool(ap))
            if ap.mlp is not None:
                ops.append(ResidualMLP(ap.norm, ap.mlp))
            latent = {"token": Select(0), "avg": Mean(0)}.get(ap.pool)
            if latent is None:
                raise NotImplementedError(f"timm latent pooling {ap.pool!r} is not described for a decomposition")
            ops.append(latent)
        elif t.global_pool == "token":
            ops.append(Select(0))
        elif t.global_pool == "avg":
            ops.append(Mean(0 if include else self.num_prefix_tokens))
        else:
            raise NotImplementedError(f"timm pooling {t.global_pool!r} is not described for a decomposition")
        return ops + [Norm(t.fc_norm), Affine(lambda z: t.head(t.head_drop(z))), Affine(self.v.head)]

    def attention_projection(self, i: int) -> tuple[nn.Module, Any] | None:
        blk = self.trunk.blocks[i]
        if type(blk).__name__ in ("Block", "RelPosBlock"):  # timm: x + drop_path1(ls1(attn(norm1(x), ...)))
            return blk.attn.proj, blk.ls1
        if type(blk).__name__ == "EvaBlock":  # x + drop_path1(gamma_1 * attn(norm1(x)))
            g = blk.gamma_1
            return blk.attn.proj, (lambda y: y) if g is None else (lambda y: g * y)
        raise NotImplementedError(f"timm block {type(blk).__name__} is not a pre-norm residual block")


#: post-stage module of each supported stage trunk (run between the last stage and forward_head)
_POST_STAGES = {"ConvNeXt": "norm_pre", "FastVit": "final_conv"}


def _attention_mixer(blk: nn.Module) -> Any:
    """The token-mixing attention of a hybrid trunk's block (FastViT ``AttentionBlock``), or None."""
    mixer = getattr(blk, "token_mixer", None)
    return mixer if _timm_attention(mixer) else None


class TimmStagesTower(Tower):
    """A convolutional or hybrid timm trunk (ConvNeXt, FastViT / MobileCLIP) split at its stages.

    Convolutional stages are one block each. A stage whose blocks mix tokens with attention
    (MobileCLIP's last stage, FastViT-SA's) is split into its blocks, its downsampling and
    positional convolution running with the first of them, so that each attention block reports
    its softmaxed attention over the stage's feature-map positions (read from timm's unfused path,
    as for timm ViTs). Attention methods then read ``attention_blocks``: the attention blocks
    of the last attention stage, whose tokens are the positions of that stage's feature map (no
    class token: maps are the mean over query rows, on that stage's grid).
    """

    modality = "image"
    kind = "cnn"

    def __init__(self, visual: Any):
        super().__init__()
        self.v: Any = visual  # an OpenCLIP TimmModel
        self.trunk: Any = visual.trunk  # a timm ConvNeXt or FastVit
        name = type(self.trunk).__name__
        if name not in _POST_STAGES or getattr(self.trunk, "fork_feat", False):
            raise ModelLoadError(
                f"timm trunk {name} is not supported; supported: VisionTransformer, Eva, {', '.join(_POST_STAGES)}"
            )
        self.post: Any = getattr(self.trunk, _POST_STAGES[name])
        #: (stage, block) per tower block; block None: the whole stage
        self.units: list[tuple[int, int | None]] = []
        attn_units: dict[int, list[int]] = {}
        for s, stage in enumerate(self.trunk.stages):
            blocks = list(getattr(stage, "blocks", []))
            if any(_attention_mixer(b) is not None for b in blocks):
                for j, b in enumerate(blocks):
                    if _attention_mixer(b) is not None:
                        attn_units.setdefault(s, []).append(len(self.units))
                    self.units.append((s, j))
            else:
                self.units.append((s, None))
        self._attention_blocks = attn_units[max(attn_units)] if attn_units else []
        self.has_attention = bool(self._attention_blocks)
        self.grid = None  # set by each run through an attention block: that stage's (H, W)

    @property
    def num_blocks(self) -> int:
        return len(self.units)

    @property
    def attention_blocks(self) -> list[int]:
        return list(self._attention_blocks)

    def block_modules(self) -> list[nn.Module]:
        out: list[nn.Module] = []
        for s, j in self.units:
            stage = self.trunk.stages[s]
            if j is None:
                out.append(stage)
            elif j == 0:  # the stage's downsampling and positional convolution run with its first block
                out.append(nn.ModuleList([stage.downsample, stage.pos_emb, stage.blocks[0]]))
            else:
                out.append(stage.blocks[j])
        return out

    def default_layer(self) -> int:
        """The end of the stage at the shared relative depth (stage 3 of 4), whatever the split."""
        n = len(self.trunk.stages)
        k = max(0, min(n - 1, round(10 * n / 12) - 1))
        return max(i for i, (s, _) in enumerate(self.units) if s == k)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        return self.trunk.stem(x.to(next(self.trunk.parameters()).dtype))

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        s, j = self.units[i]
        stage = self.trunk.stages[s]
        if j is None:
            return stage(h), None
        if j == 0:
            h = stage.pos_emb(stage.downsample(h))
        blk = stage.blocks[j]
        if not (need_attn and i in self._attention_blocks):
            return blk(h), None
        self.grid = (int(h.shape[-2]), int(h.shape[-1]))
        with timm_attention_probs(_attention_mixer(blk)) as probs:
            out = blk(h)
        return out, probs[-1]  # (B, heads, H*W, H*W)

    def head(self, h: Tensor, x: Any) -> Tensor:
        return self.v.head(self.trunk.forward_head(self.post(h)))


class TimmSwinTower(Tower):
    """A timm ``SwinTransformer`` trunk inside an OpenCLIP ``TimmModel``, split at its stages."""

    modality = "image"
    kind = "cnn"
    has_attention = False  # window attention: no map over one common set of tokens

    def __init__(self, visual: Any):
        super().__init__()
        self.v: Any = visual  # an OpenCLIP TimmModel
        self.trunk: Any = visual.trunk  # a timm SwinTransformer

    @property
    def num_blocks(self) -> int:
        return len(self.trunk.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.trunk.layers)

    def default_layer(self) -> int:
        """The stage at the shared relative depth (stage 3 of 4)."""
        n = self.num_blocks
        return max(0, min(n - 1, round(10 * n / 12) - 1))

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        h = self.trunk.patch_embed(x.to(next(self.trunk.parameters()).dtype))  # (B, H, W, C)
        return h.permute(0, 3, 1, 2)

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        out = self.trunk.layers[i](h.permute(0, 2, 3, 1))
        return out.permute(0, 3, 1, 2), None

    def head(self, h: Tensor, x: Any) -> Tensor:
        t = self.trunk
        return self.v.head(t.forward_head(t.norm(h.permute(0, 2, 3, 1))))


def timm_tower(visual: Any) -> Tower:
    """The tower for an OpenCLIP ``TimmModel`` (ModelLoadError for unsupported trunks)."""
    from timm.models.eva import Eva
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    if isinstance(visual.trunk, (VisionTransformer, Eva, VisionTransformerRelPos)):
        return TimmViTTower(visual)
    if isinstance(visual.trunk, SwinTransformer):
        return TimmSwinTower(visual)
    return TimmStagesTower(visual)


# --- tiny random-weight builds (offline) ----------------------------------------------------------
@contextlib.contextmanager
def tiny_timm_models(**overrides: Any) -> Iterator[None]:
    """Within the block, ``timm.create_model`` builds with ``overrides`` (smaller depth / width).

    OpenCLIP's ``TimmModel`` then wires the small trunk exactly as it wires the full-size one.
    """
    import timm

    orig = timm.create_model

    def create(model_name: str, *args: Any, **kwargs: Any) -> nn.Module:
        return orig(model_name, *args, **{**kwargs, **overrides})

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = orig


def _tiny_custom(vision_cfg: dict, overrides: dict, embed_dim: int = 16, text_cfg: dict | None = None, seed: int = 0):
    from open_clip.model import CustomTextCLIP

    torch.manual_seed(seed)
    tc = dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=2)
    tc.update(text_cfg or {})
    with tiny_timm_models(**overrides):
        return CustomTextCLIP(embed_dim=embed_dim, vision_cfg=vision_cfg, text_cfg=tc).eval()


_VIT = dict(embed_dim=32, depth=3, num_heads=2, img_size=32)


def tiny_siglip(seed: int = 0) -> nn.Module:
    """ViT-B-16-SigLIP's wiring: timm ViT with a MAP head, no class token, bidirectional text pooled last."""
    return _tiny_custom(
        dict(timm_model_name="vit_base_patch16_siglip_224", timm_pool="map", timm_proj="none", image_size=32),
        _VIT,
        embed_dim=32,
        text_cfg=dict(context_length=16, vocab_size=49408, no_causal_mask=True, proj_bias=True, pool_type="last"),
        seed=seed,
    )


def tiny_siglip_registers(seed: int = 0) -> nn.Module:
    """A timm ViT with 2 register tokens, no class token, average pooling, a non-square 32 x 48 input."""
    return _tiny_custom(
        dict(timm_model_name="vit_base_patch16_224", timm_pool="avg", timm_proj="linear", image_size=(32, 48)),
        dict(_VIT, img_size=(32, 48), class_token=False, reg_tokens=2, no_embed_class=True, global_pool="avg"),
        seed=seed,
    )


def tiny_eva(seed: int = 0) -> nn.Module:
    """EVA02-B-16's wiring: timm Eva (rotary positions, SwiGLU), class-token pooling."""
    return _tiny_custom(
        dict(timm_model_name="eva02_base_patch16_clip_224", timm_pool="token", timm_proj=None, image_size=32),
        _VIT,
        seed=seed,
    )


def tiny_vitamin(seed: int = 0) -> nn.Module:
    """ViTamin-S's wiring: a timm ViT on a MobileNet-conv patch stem, average pooling, linear projection."""
    from timm.models.vitamin import VitCfg, VitConvCfg

    cfg = VitCfg(
        embed_dim=(8, 16, 32),
        depths=(1, 1, 1),
        stem_width=8,
        conv_cfg=VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6),
        head_type="1d",
    )
    return _tiny_custom(
        dict(timm_model_name="vitamin_small_224", timm_pool="", timm_proj="linear", image_size=32),
        dict(embed_dim=32, depth=3, num_heads=2, img_size=32, embed_cfg=cfg),
        seed=seed,
    )


def tiny_relpos(seed: int = 0) -> nn.Module:
    """vit_relpos_medium_patch16_cls_224's wiring: relative-position biases, class-token pooling."""
    return _tiny_custom(
        dict(timm_model_name="vit_relpos_medium_patch16_cls_224", timm_pool="", timm_proj="linear", image_size=32),
        dict(_VIT, patch_size=8),
        seed=seed,
    )


def tiny_convnext(seed: int = 0) -> nn.Module:
    """convnext_base's wiring, 4 stages of one block."""
    return _tiny_custom(
        dict(timm_model_name="convnext_base", timm_pool="", timm_proj="linear", image_size=64),
        dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)),
        seed=seed,
    )


def tiny_mobileclip(seed: int = 0) -> nn.Module:
    """MobileCLIP-S1's wiring: FastViT-MCi (RepMixer stages, attention in the last), bidirectional text."""
    return _tiny_custom(
        dict(timm_model_name="fastvit_mci0", timm_pool="avg", timm_proj=None, image_size=96),
        # two attention blocks on a 3 x 3 grid; layer scale 0.1 (timm's init, 1e-5, leaves random
        # attention blocks nearly silent, unlike trained ones)
        dict(layers=(1, 1, 1, 2), embed_dims=(8, 16, 32, 64), layer_scale_init_value=0.1),
        text_cfg=dict(no_causal_mask=True),
        seed=seed,
    )


def tiny_swin(seed: int = 0) -> nn.Module:
    """swin_base_patch4_window7_224's wiring: 4-px patches, two stages of one block, windows of 4, 32 px."""
    return _tiny_custom(
        dict(timm_model_name="swin_base_patch4_window7_224", timm_pool="", timm_proj="linear", image_size=32),
        dict(embed_dim=16, depths=(1, 1), num_heads=(2, 4), window_size=4, img_size=32),
        seed=seed,
    )


def _register() -> None:
    from .families import Family, register_family

    vit_note = (
        "M2IB and Grad-CAM at block round(10 n / 12) - 1 of n; attention read from timm's unfused "
        "attention path; the patch grid is the trunk's own"
    )
    for key, name, examples, tiny, notes in (
        (
            "open_clip-siglip",
            "OpenCLIP SigLIP / SigLIP 2 (timm ViT, MAP head)",
            "open_clip:ViT-B-16-SigLIP, open_clip:ViT-SO400M-14-SigLIP-384, open_clip:ViT-B-16-SigLIP2",
            tiny_siglip,
            "no class token: attention maps are read as the mean over query rows; text pooled at the "
            "last position, texts padded to the context length; " + vit_note,
        ),
        (
            "open_clip-timm-vit",
            "OpenCLIP timm ViT (register tokens, average pooling)",
            "open_clip:vit_medium_patch16_gap_256",
            tiny_siglip_registers,
            vit_note,
        ),
        (
            "open_clip-eva",
            "OpenCLIP EVA02 (timm Eva, rotary positions)",
            "open_clip:EVA02-B-16, open_clip:EVA02-L-14",
            tiny_eva,
            vit_note,
        ),
        (
            "open_clip-relpos",
            "OpenCLIP relative-position ViT (timm VisionTransformerRelPos)",
            "open_clip:vit_relpos_medium_patch16_cls_224",
            tiny_relpos,
            "positions enter every block as attention biases; " + vit_note,
        ),
        (
            "open_clip-vitamin",
            "OpenCLIP ViTamin (conv stem + timm ViT)",
            "open_clip:ViTamin-S, open_clip:ViTamin-B",
            tiny_vitamin,
            vit_note,
        ),
    ):
        register_family(
            Family(
                key=key, name=name, library="open_clip", examples=examples, tiny=tiny, image_tower="vit", notes=notes
            )
        )
    cnn_note = (
        "blocks = the stages; M2IB after stage 3 of 4, Grad-CAM after the last stage; attention methods "
        "do not apply to the image side"
    )
    register_family(
        Family(
            key="open_clip-convnext",
            name="OpenCLIP ConvNeXt (timm)",
            examples="open_clip:convnext_base, open_clip:convnext_large_d",
            library="open_clip",
            tiny=tiny_convnext,
            image_tower="cnn",
            notes=cnn_note,
        )
    )
    register_family(
        Family(
            key="open_clip-mobileclip",
            name="OpenCLIP MobileCLIP (timm FastViT-MCi)",
            examples="open_clip:MobileCLIP-S1, open_clip:MobileCLIP2-S0",
            library="open_clip",
            tiny=tiny_mobileclip,
            image_tower="hybrid",
            notes=(
                "blocks = the convolutional stages, then the blocks of the attention stage; M2IB after stage 3 "
                "of 4, Grad-CAM after the last stage; chefer, attention_rollout and legrad read the attention "
                "blocks of the last attention stage (no class token: the mean over query rows, on that stage's "
                "grid); grad_eclip, mask_clip and clip_surgery need CLIP's block layout and are refused"
            ),
        )
    )
    register_family(
        Family(
            key="open_clip-swin",
            name="OpenCLIP Swin (timm SwinTransformer)",
            library="open_clip",
            examples="open_clip:swin_base_patch4_window7_224",
            tiny=tiny_swin,
            image_tower="cnn",
            notes="window attention, no map over one set of tokens: blocks = the stages, their feature maps "
            "the hidden states; M2IB after stage 3 of 4, Grad-CAM after the last stage; attention methods do "
            "not apply to the image side",
        )
    )


_register()
