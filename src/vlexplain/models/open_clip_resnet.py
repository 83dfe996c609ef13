"""OpenCLIP ``ModifiedResNet`` image towers (the original CLIP ResNets: RN50, RN101, RN50x4 ...).

The tower runs OpenCLIP's own modules: stem = ``visual.stem`` (three convolutions and an average
pool), blocks = the ``Bottleneck`` modules of ``layer1`` .. ``layer4`` in order (RN50: 3 + 4 + 6 + 3
= 16 blocks), head = ``visual.attnpool`` (attention pooling whose query is the mean token, then the
output projection). Hidden states are ``(B, C, H, W)`` feature maps.

Default layers: M2IB bottlenecks the last block of ``layer3`` (RN50: block 12 of 16, stride 16, the
shared relative depth of 10/12); Grad-CAM uses the last block of ``layer4`` (the last convolutional
layer, as in the Grad-CAM paper). The only attention is inside the pooling head, so the attention
methods (chefer, attention_rollout) do not apply; every gradient and perturbation method and M2IB do.

Example:
    >>> import open_clip, vlexplain as vx
    >>> model = vx.load_model(open_clip.create_model("RN50"))  # doctest: +SKIP
    >>> model.image.num_blocks  # doctest: +SKIP
    16
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import Tower


class ModifiedResNetTower(Tower):
    """``open_clip.modified_resnet.ModifiedResNet`` behind the Tower protocol."""

    modality = "image"
    kind = "cnn"
    has_attention = False

    def __init__(self, visual: Any):
        super().__init__()
        self.v: Any = visual  # an OpenCLIP ModifiedResNet
        # the Bottlenecks in forward order, and where each stage ends
        self._blocks = [b for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4) for b in stage]
        self.stage_ends = []
        n = 0
        for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            n += len(stage)
            self.stage_ends.append(n - 1)

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    def block_modules(self) -> list[nn.Module]:
        return list(self._blocks)

    def default_layer(self) -> int:
        """The last Bottleneck of ``layer3`` (stride 16)."""
        return self.stage_ends[2]

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        return self.v.stem(x.to(self.v.conv1.weight.dtype))  # (B, C, H/4, W/4)

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        return self._blocks[i](h), None

    def head(self, h: Tensor, x: Any) -> Tensor:
        return self.v.attnpool(h)  # (B, d): attention pooling + projection


def tiny_resnet(seed: int = 0) -> nn.Module:
    """A tiny random-weight OpenCLIP model with a ModifiedResNet image tower (offline)."""
    import torch
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    m = CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=64, layers=[1, 1, 2, 1], width=8, patch_size=None, head_width=8),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=2),
    )
    # OpenCLIP zero-initialises the last BatchNorm of every residual branch; set it to one so that
    # every block contributes to the embedding, as in a trained model
    for name, p in m.visual.named_parameters():
        if name.endswith("bn3.weight"):
            torch.nn.init.ones_(p)
    return m.eval()


def _register() -> None:
    from .families import Family, register_family

    register_family(
        Family(
            key="open_clip-resnet",
            name="OpenCLIP ModifiedResNet (CLIP ResNets)",
            library="open_clip",
            examples="open_clip:RN50, open_clip:RN101, open_clip:RN50x4",
            tiny=tiny_resnet,
            image_tower="cnn",
            notes="blocks = the Bottlenecks of layer1..layer4; M2IB at the end of layer3, Grad-CAM at the end of "
            "layer4; attention lives only in the pooling head, so chefer / attention_rollout do not apply",
        )
    )


_register()
