"""The tiny OpenCLIP model, inputs and released ViT stem that the CLIP-native methods' reference
tests share (``test_clip_native.py``, ``test_legrad.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEXT = "a photo of a small cat"


def _oc(layers: int = 3, head_width: int = 8, seed: int = 0):
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 64, "patch_size": 16, "width": 32, "layers": layers, "head_width": head_width},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": layers},
    ).eval()


def _pixels(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _text_emb(raw, text: str = TEXT) -> torch.Tensor:
    import open_clip

    with torch.no_grad():
        return F.normalize(raw.encode_text(open_clip.tokenize([text])), dim=-1)


def _embed_patches(visual, x):
    """The released ViT stem (conv1, class token, positions, ln_pre); (N, L, D)."""
    x = visual.conv1(x)  # shape = [*, width, grid, grid]
    feah, feaw = x.shape[-2:]
    x = x.reshape(x.shape[0], x.shape[1], -1)
    x = x.permute(0, 2, 1)
    class_embedding = visual.class_embedding.to(x.dtype)
    x = torch.cat([class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]).to(x), x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(x)
    return x, (feah, feaw)
