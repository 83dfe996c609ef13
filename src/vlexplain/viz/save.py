"""Writing explanations to disk: overlay PNG with colour bar, text highlight (HTML, PNG), JSON.

Every file is written to a temporary name and renamed, so an interrupted run never leaves a
partial file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .core import normalize_map, overlay, token_html

if TYPE_CHECKING:
    from ..attribution.base import Explanation


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def overlay_figure(exp: "Explanation", path: str | os.PathLike, title: str | None = None) -> None:
    """Image | heatmap overlay with a colour bar in the map's raw units."""
    plt = _mpl()
    rgb = exp.image_rgb().cpu()
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.9), gridspec_kw={"width_ratios": [1, 1.22]})
    axes[0].imshow(rgb.permute(1, 2, 0).numpy())
    axes[0].set_title("image", fontsize=10)
    if exp.image_map is not None:
        m = exp.image_map.detach().float().cpu()
        axes[1].imshow(rgb.permute(1, 2, 0).numpy())
        im = axes[1].imshow(m.numpy(), cmap="jet", alpha=0.5)
        cb = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
        unit = "nats" if exp.method == "m2ib" else "attribution"
        cb.set_label(unit, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    axes[1].set_title(f"{exp.method}", fontsize=10)
    for a in axes:
        a.axis("off")
    fig.suptitle(title or f"\u201c{exp.text}\u201d   cosine {exp.score:.3f}", fontsize=11)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def text_figure(exp: "Explanation", path: str | os.PathLike) -> None:
    """PNG of the tokens coloured by their scores."""
    plt = _mpl()
    toks = exp.tokens
    scores = exp.token_scores
    n = normalize_map(scores).cpu().numpy() if scores is not None and len(toks) else np.zeros(len(toks))
    width = max(3.0, min(14.0, 0.16 * sum(len(t) + 2 for t in toks) + 1.0))
    fig = plt.figure(figsize=(width, 0.9))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.axis("off")
    renderer = fig.canvas.get_renderer()
    x = 0.01
    for t, v in zip(toks, n):
        txt = ax.text(x, 0.5, t, fontsize=13, family="monospace", va="center",
                      bbox=dict(boxstyle="round,pad=0.25", fc=(1.0, 1 - v, 1 - v), ec="none"))
        bb = txt.get_window_extent(renderer=renderer)
        x += bb.width / fig.bbox.width + 0.012
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def explanation_html(exp: "Explanation", image_src: str | None = None) -> str:
    """A small HTML card: the overlay (inline or linked), the token highlight, the score."""
    import base64
    import io

    from PIL import Image

    if image_src is None and exp.image_map is not None and exp.pixels is not None:
        buf = io.BytesIO()
        Image.fromarray(overlay(exp.image_rgb().cpu(), exp.image_map.cpu())).save(buf, format="PNG")
        image_src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    img = f"<img src='{image_src}' style='width:224px;border-radius:4px'>" if image_src else ""
    toks = token_html(exp.tokens, exp.token_scores)
    return (
        "<div style='display:inline-block;margin:6px;padding:8px;border:1px solid #ddd;border-radius:6px;"
        "font-family:sans-serif;vertical-align:top;max-width:260px'>"
        f"{img}<div style='margin-top:6px'>{toks}</div>"
        f"<div style='color:#555;font-size:12px;margin-top:4px'>{exp.method} · cosine {exp.score:.3f}"
        f" · {exp.seconds:.2f} s</div></div>"
    )


def save_explanation(exp: "Explanation", path_prefix: str | os.PathLike) -> list[str]:
    """Write PREFIX_overlay.png, PREFIX_text.html, PREFIX_text.png and PREFIX.json; return the paths."""
    prefix = str(path_prefix)
    written = []
    if exp.image_map is not None:
        overlay_figure(exp, prefix + "_overlay.png")
        written.append(prefix + "_overlay.png")
    if exp.token_scores is not None:
        page = (
            "<!doctype html><meta charset='utf-8'><title>vlexplain tokens</title>"
            f"<body style='font-family:sans-serif'><p>{token_html(exp.tokens, exp.token_scores)}</p>"
            f"<p style='color:#555'>{exp.method} · cosine {exp.score:.3f}</p></body>"
        )
        atomic_write_text(prefix + "_text.html", page)
        text_figure(exp, prefix + "_text.png")
        written += [prefix + "_text.html", prefix + "_text.png"]
    atomic_write_text(prefix + ".json", json.dumps(exp.to_dict(), indent=1))
    written.append(prefix + ".json")
    return written
