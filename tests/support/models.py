"""Tiny random-weight models for the tests (no download)."""

from __future__ import annotations

import copy

import torch

from vlexplain.models.hf_clip import tiny_clip

# The transformers builders are the families table's own (one definition for the fixtures, the
# contract tests over the families and ``vlexplain models``).
tiny_hf_clip = tiny_clip


def tiny_open_clip(image_size: int = 64, patch: int = 16, layers: int = 3, seed: int = 0):
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    m = CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=image_size, patch_size=patch, width=32, layers=layers, head_width=8),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=layers),
    )
    return m.eval()


_BASE = {}


def fresh_model():
    """A new copy of one tiny CLIP (building it once per session saves time)."""
    if "m" not in _BASE:
        import vlexplain as vx

        _BASE["m"] = vx.load_model(tiny_hf_clip())
    return copy.deepcopy(_BASE["m"])
