"""Figures and pages for interaction results: each content word's region on the image.

Reads results through their attributes only (``matrix``, ``tokens``, ``word_maps()``, ...), so the
dependency runs one way, as for explanations: ``Interactions.save`` calls into this module.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from .save import _mpl, atomic_write, atomic_write_text, wrap_title

#: the most word panels a figure shows (the JSON keeps every word)
MAX_PANELS = 12
CMAP = "RdBu_r"  # signed: red = the word and the region raise the score together, blue = lower it


def _panels(inter: Any, extra: Sequence[tuple[str, Tensor]] = ()) -> list[tuple[str, Tensor]]:
    """(label, (gh, gw) map): the ``extra`` spans, then each content word (every token when the text has none)."""
    words = [(w, m) for w, _, m in inter.word_maps()]
    if not words:
        words = [(t, inter.matrix[i]) for i, t in enumerate(inter.tokens)]
    return [(f"\u201c{w}\u201d", m) for w, m in extra] + words[: max(0, MAX_PANELS - len(extra))]


def _up(m: Tensor, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(m[None, None].float().cpu(), size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _rgb(pixels: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] from preprocessed (3, H, W) pixels."""
    from ..images import denormalize

    return denormalize(pixels.detach().float().cpu(), mean, std).permute(1, 2, 0).numpy()


def _limit(maps: list[Tensor]) -> float:
    v = max((float(m.abs().max()) for m in maps), default=0.0)
    return v if v > 0 else 1.0


def _heat_rgba(m: np.ndarray, vmax: float) -> np.ndarray:
    """(H, W, 4) signed colours whose opacity grows with |value| (the image shows where nothing interacts)."""
    import matplotlib

    rgba = matplotlib.colormaps[CMAP](np.clip(m / (2 * vmax) + 0.5, 0, 1))
    rgba[..., 3] = 0.8 * np.clip(np.abs(m) / vmax, 0, 1) ** 0.75
    return rgba


def interactions_figure(
    inter: Any, path: str | os.PathLike, extra: Sequence[tuple[str, Tensor]] = (), cols: int = 5
) -> None:
    """PNG: the image, then one panel per requested span and content word with its region map
    (red: the word and the region raise the score together, blue: they lower it). Each panel has
    its own scale, stated in its title with the region's sum (cosine units)."""
    plt = _mpl()
    panels = _panels(inter, extra)
    rgb = inter.image_rgb().detach().float().cpu().permute(1, 2, 0).numpy()
    size = rgb.shape[:2]
    n = len(panels) + 1
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    head = wrap_title(f"\u201c{inter.text}\u201d   cosine {inter.score:.3f}   {inter.method}", width=90)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.5 * cols, 2.75 * rows + 0.3 + 0.2 * head.count("\n")), squeeze=False,
        layout="constrained",
    )  # fmt: skip
    axes[0, 0].imshow(rgb)
    axes[0, 0].set_title("image", fontsize=10)
    muted = rgb * 0.6 + 0.4 * rgb.mean(-1, keepdims=True)
    for k, (label, m) in enumerate(panels, start=1):
        ax = axes[k // cols, k % cols]
        vmax = _limit([m])
        ax.imshow(muted)
        ax.imshow(_heat_rgba(_up(m, size), vmax))
        ax.set_title(f"{label}\nsum {float(m.sum()):+.3g}   scale \u00b1{vmax:.2g}", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(head, fontsize=11)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def _png_data(rgb: np.ndarray, m: Tensor) -> str:
    """data: URL of the image with ``m`` blended over it on its own signed scale."""
    from PIL import Image

    heat = _heat_rgba(_up(m, rgb.shape[:2]), _limit([m]))
    a = heat[..., 3:]
    out = ((rgb * 0.6 + 0.4 * rgb.mean(-1, keepdims=True)) * (1 - a) + heat[..., :3] * a).clip(0, 1)
    buf = io.BytesIO()
    Image.fromarray((out * 255).astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def interactions_html(inter: Any, extra: Sequence[tuple[str, Tensor]] = ()) -> str:
    """A self-contained card: the caption (each token tinted by its total interaction), and each
    content word's region on the image; hovering a word in the caption outlines its panel."""
    rgb = inter.image_rgb().detach().float().cpu().permute(1, 2, 0).numpy()
    panels = _panels(inter, extra)
    totals = inter.matrix.sum((1, 2)).float().cpu()
    tmax = float(totals.abs().max()) or 1.0
    word_of = {i: k + len(extra) for k, (_, idx, _) in enumerate(inter.word_maps()[:MAX_PANELS]) for i in idx}
    spans = []
    for i, (t, v) in enumerate(zip(inter.tokens, totals.tolist())):
        a = abs(v) / tmax
        col = f"rgba(200,30,30,{a:.2f})" if v >= 0 else f"rgba(30,80,200,{a:.2f})"
        k = word_of.get(i)
        hook = f" data-w='{k}'" if k is not None else ""
        spans.append(
            f"<span class='vx-t'{hook} title='total {v:+.4g}' style='background:{col};padding:1px 3px;"
            f"margin:1px;border-radius:3px;font-family:monospace'>{html.escape(t)}</span>"
        )
    cards = "".join(
        f"<figure id='vx-w{k}' class='vx-p' style='display:inline-block;margin:4px;text-align:center'>"
        f"<img src='{_png_data(rgb, m)}' style='width:160px;border-radius:4px'>"
        f"<figcaption style='font:12px sans-serif'>{html.escape(w)}<br>sum {float(m.sum()):+.3g},"
        f" scale ±{_limit([m]):.2g}</figcaption></figure>"
        for k, (w, m) in enumerate(panels)
    )
    script = (
        "<script>document.querySelectorAll('.vx-t[data-w]').forEach(function(s){"
        "var p=document.getElementById('vx-w'+s.dataset.w);if(!p)return;"
        "s.onmouseenter=function(){p.style.outline='3px solid #333'};"
        "s.onmouseleave=function(){p.style.outline=''};});</script>"
    )
    return (
        "<div style='font-family:sans-serif;max-width:760px'>"
        f"<div style='margin:4px'>{''.join(spans)}</div>"
        f"<div style='color:#555;font-size:12px;margin:4px'>{html.escape(inter.method)} · cosine {inter.score:.3f}"
        f" · red: the word and the region raise the score, blue: they lower it (each map on its own scale)"
        f" · {inter.seconds:.2f} s</div>"
        f"{cards}</div>{script}"
    )


def save_interactions(
    inter: Any, path_prefix: str | os.PathLike, extra: Sequence[tuple[str, Tensor]] = ()
) -> list[str]:
    """Write PREFIX_interactions.png, PREFIX_interactions.html and PREFIX_interactions.json
    (``extra``: (label, region) of requested spans, shown first and kept in the JSON)."""
    prefix = str(path_prefix) + "_interactions"
    interactions_figure(inter, prefix + ".png", extra)
    page = (
        "<!doctype html><meta charset='utf-8'><title>vlexplain interactions</title>"
        f"<body style='font-family:sans-serif'>{interactions_html(inter, extra)}</body>"
    )
    atomic_write_text(prefix + ".html", page)
    d = inter.to_dict()
    d["spans"] = [{"span": label, "region": m.float().cpu().tolist()} for label, m in extra]
    atomic_write_text(prefix + ".json", json.dumps(d, indent=1))
    return [prefix + ".png", prefix + ".html", prefix + ".json"]


def save_similarity(sim: Any, path_prefix: str | os.PathLike) -> list[str]:
    """Write PREFIX_similarity.png (each input with its map; texts: the token x token matrix) and the JSON."""
    plt = _mpl()
    prefix = str(path_prefix) + "_similarity"
    vmax = _limit([sim.map_a, sim.map_b])
    if sim.modality == "image":
        fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.9), layout="constrained")
        import matplotlib

        for i, (ax, m) in enumerate(zip(axes, (sim.map_a, sim.map_b))):
            rgb = _rgb(sim.pixels[i], sim.mean, sim.std)
            ax.imshow(rgb * 0.6 + 0.4 * rgb.mean(-1, keepdims=True))
            ax.imshow(_heat_rgba(_up(m, rgb.shape[:2]), vmax))
            ax.set_title(f"image {'ab'[i]}: sum {float(m.sum()):+.3g}", fontsize=10)
            ax.axis("off")
        sm = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(-vmax, vmax), CMAP)
        fig.colorbar(sm, ax=axes, fraction=0.03).set_label(
            "interaction with the other image (cosine units)", fontsize=8
        )
    else:
        mat = sim.matrix.float().cpu().numpy()
        v = float(np.abs(mat).max()) or 1.0
        fig, ax = plt.subplots(figsize=(1.2 + 0.45 * mat.shape[1], 1.2 + 0.4 * mat.shape[0]), layout="constrained")
        im = ax.imshow(mat, cmap=CMAP, vmin=-v, vmax=v)
        ax.set_xticks(range(mat.shape[1]), sim.tokens_b, rotation=60, fontsize=9)
        ax.set_yticks(range(mat.shape[0]), sim.tokens_a, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05).set_label("interaction (cosine units)", fontsize=8)
    fig.suptitle(f"{sim.modality}-{sim.modality} similarity, cosine {sim.score:.3f}", fontsize=11)
    atomic_write(prefix + ".png", lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    atomic_write_text(prefix + ".json", json.dumps(sim.to_dict(), indent=1))
    return [prefix + ".png", prefix + ".json"]
