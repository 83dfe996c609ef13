"""Writing explanations to disk: overlay PNG with colour bar, text highlight (HTML, PNG), JSON.

Every file is written to a temporary name and renamed, so an interrupted run never leaves a
partial file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from .core import normalize_map, overlay, token_html


class Displayable(Protocol):
    """What display reads of an explanation ([`vlexplain.Explanation`][vlexplain.Explanation] is one).

    Display depends on this shape only, never on the attribution package, so the dependency runs
    one way: ``Explanation.save`` and ``Explanation.to_html`` call into this module.
    """

    image_map: Tensor | None
    token_scores: Tensor | None
    tokens: list[str]
    score: float
    method: str
    text: str
    pixels: Tensor | None
    seconds: float

    def image_rgb(self) -> Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path`` (mode 0o666 less the umask)."""
    from ..outdir import file_mode

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())  # mkstemp creates 0600; the renamed file respects the umask
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


#: characters per line of a wrapped figure title, and the most lines shown (the rest is elided)
TITLE_CHARS, TITLE_LINES = 70, 6


def wrap_title(text: str, width: int = TITLE_CHARS, max_lines: int = TITLE_LINES) -> str:
    """Wrap a (possibly long) title into lines of ``width`` characters, at most ``max_lines``."""
    import textwrap

    return textwrap.fill(
        " ".join(text.split()), width=width, max_lines=max_lines, placeholder=" \u2026", break_long_words=True
    )


def overlay_figure(exp: Displayable, path: str | os.PathLike, title: str | None = None) -> None:
    """Image | heatmap overlay with a colour bar in the map's raw units; a long title is wrapped."""
    plt = _mpl()
    rgb = exp.image_rgb().cpu()
    head = wrap_title(title or f"\u201c{exp.text}\u201d   cosine {exp.score:.3f}")
    extra = 0.2 * head.count("\n")  # inches for the title's extra lines
    fig, axes = plt.subplots(
        1, 2, figsize=(7.6, 3.9 + extra), gridspec_kw={"width_ratios": [1, 1.22]}, layout="constrained"
    )
    axes[0].imshow(rgb.permute(1, 2, 0).numpy())
    axes[0].set_title("image", fontsize=10)
    if exp.image_map is not None:
        m = exp.image_map.detach().float().cpu()
        axes[1].imshow(rgb.permute(1, 2, 0).numpy())
        im = axes[1].imshow(m.numpy(), cmap="jet", alpha=0.5)
        cb = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
        unit = "nats" if exp.method in ("m2ib", "m2ib_fast") else "attribution"
        cb.set_label(unit, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    axes[1].set_title(f"{exp.method}", fontsize=10)
    for a in axes:
        a.axis("off")
    fig.suptitle(head, fontsize=11)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def _token_lines(widths: list[float], room: float, gap: float) -> list[list[int]]:
    """Greedy line breaking: token indices per line, each line at most ``room`` wide (a wider token gets its own line)."""
    lines: list[list[int]] = [[]]
    x = 0.0
    for i, w in enumerate(widths):
        if lines[-1] and x + w > room:
            lines.append([])
            x = 0.0
        lines[-1].append(i)
        x += w + gap
    return lines


def text_figure(exp: Displayable, path: str | os.PathLike, max_width: float = 12.0) -> None:
    """PNG of the tokens coloured by their scores, wrapped onto as many lines as they need.

    Args:
        exp: the explanation.
        path: the PNG to write.
        max_width: the figure's widest width in inches (longer texts wrap).
    """
    from matplotlib.font_manager import FontProperties

    plt = _mpl()
    toks = exp.tokens
    scores = exp.token_scores
    n = normalize_map(scores).cpu().numpy() if scores is not None and len(toks) else np.zeros(len(toks))
    dpi, line_h, pad, gap = 110, 0.42, 0.12, 0.1  # inches
    font = FontProperties(family="monospace", size=13)
    fig = plt.figure(figsize=(max_width, 1.0), dpi=dpi)
    renderer = fig.canvas.get_renderer()
    widths = [renderer.get_text_width_height_descent(t or " ", font, ismath=False)[0] / dpi + 0.1 for t in toks]
    lines = _token_lines(widths, max_width - 2 * pad, gap)
    used = max((sum(widths[i] + gap for i in ln) - gap for ln in lines if ln), default=0.0)
    width = max(3.0, min(max_width, used + 2 * pad))
    height = max(0.9, len(lines) * line_h + 2 * pad)
    fig.set_size_inches(width, height)
    for row, ln in enumerate(lines):
        x = pad
        y = 1.0 - (pad + (row + 0.5) * line_h) / height
        for i in ln:
            fig.text(
                x / width,
                y,
                toks[i],
                fontproperties=font,
                va="center",
                bbox=dict(boxstyle="round,pad=0.25", fc=(1.0, 1 - n[i], 1 - n[i]), ec="none"),
            )
            x += widths[i] + gap
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
    plt.close(fig)


def explanation_html(exp: Displayable, image_src: str | None = None) -> str:
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


def save_explanation(exp: Displayable, path_prefix: str | os.PathLike) -> list[str]:
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
