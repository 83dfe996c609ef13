"""Display helpers: normalisation, colour maps, overlays and token highlights."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def normalize_map(m: Tensor, positive_only: bool = False) -> Tensor:
    """Min-max scale a map to [0, 1] for display (a constant map becomes zeros)."""
    m = m.detach().float()
    if positive_only:
        m = m.clamp_min(0)
    lo, hi = m.min(), m.max()
    if float(hi - lo) <= 1e-12:
        return torch.zeros_like(m)
    return (m - lo) / (hi - lo)


def colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """[0, 1] array (...) -> (..., 3) uint8 RGB."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return (cmap(np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(rgb: Tensor, heat: Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a heatmap over an image.

    Args:
        rgb: (3, H, W) image in [0, 1].
        heat: (H, W) raw map (min-max normalised here for display).
        alpha: heatmap opacity.

    Returns:
        (H, W, 3) uint8 array.
    """
    img = (rgb.detach().float().cpu().permute(1, 2, 0).numpy() * 255).astype(np.float32)
    h = normalize_map(heat).cpu().numpy()
    if h.shape != img.shape[:2]:
        t = torch.from_numpy(h)[None, None]
        h = torch.nn.functional.interpolate(t, size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    col = colormap(h, cmap).astype(np.float32)
    return (img * (1 - alpha) + col * alpha).clip(0, 255).astype(np.uint8)


def token_colors(scores: Sequence[float]) -> list[str]:
    """CSS background colours (white -> red) for token scores, min-max normalised."""
    s = torch.tensor(list(scores), dtype=torch.float32) if len(scores) else torch.zeros(0)
    n = normalize_map(s).tolist() if len(s) else []
    out = []
    for v in n:
        g = int(round(255 * (1 - v)))
        out.append(f"rgb(255,{g},{g})")
    return out


def token_html(tokens: Sequence[str], scores: Sequence[float] | Tensor | None) -> str:
    """Inline HTML: each token on a background whose redness is its normalised score."""
    if scores is None:
        return "<span class='vx-tokens'>" + html.escape(" ".join(tokens)) + "</span>"
    if isinstance(scores, Tensor):
        scores = scores.detach().float().cpu().tolist()
    parts = []
    for t, c, s in zip(tokens, token_colors(scores), scores):
        parts.append(
            f"<span title='{s:.4g}' style='background:{c};padding:1px 3px;margin:1px;border-radius:3px;"
            f"font-family:monospace'>{html.escape(t)}</span>"
        )
    return "<span class='vx-tokens'>" + "".join(parts) + "</span>"
