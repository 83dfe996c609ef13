"""OpenCLIP image towers on a timm ``SwinTransformer`` trunk (``open_clip:swin_base_patch4_window7_224``).

Swin attends within shifted local windows, so no block has an attention map over one common set of
tokens: the tower is a stage tower, like ConvNeXt's. stem = ``patch_embed``; blocks = the stages
(``layers``: patch merging, then window-attention blocks); head = ``norm`` + ``forward_head``
(average pooling) + OpenCLIP's projection head. timm's Swin runs channels-last (B, H, W, C); the
tower's hidden states are channels-first feature maps (B, C, H, W), as every stage tower's, and each
stage runs on the channels-last view of them. Attention methods are refused on the image side.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import Tower


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


def tiny_swin(seed: int = 0) -> nn.Module:
    """swin_base_patch4_window7_224's wiring: 4-px patches, two stages of one block, windows of 4, 32 px."""
    from .open_clip_timm import _tiny_custom

    return _tiny_custom(
        dict(timm_model_name="swin_base_patch4_window7_224", timm_pool="", timm_proj="linear", image_size=32),
        dict(embed_dim=16, depths=(1, 1), num_heads=(2, 4), window_size=4, img_size=32),
        seed=seed,
    )


def _register() -> None:
    from .families import Family, register_family

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
