"""Rendering a run for the explorer: the heatmap grid PNG, the scores and token tables, the JSON."""

from __future__ import annotations

import html
import json
import os
import textwrap
from pathlib import Path

import numpy as np

from ..viz.core import overlay, token_html
from .runner import RunResult


def grid_figure(res: RunResult, dpi: int = 100):
    """A matplotlib Figure: one row per text, the input image then one heatmap per method."""
    from matplotlib.figure import Figure

    nt, nm = len(res.texts), len(res.methods)
    fig = Figure(figsize=(2.5 * (nm + 1), 3.0 * nt + 0.4), dpi=dpi)
    axes = fig.subplots(nt, nm + 1, squeeze=False)
    for i, text in enumerate(res.texts):
        row = res.results[i]
        first = row[res.methods[0]]
        rgb = first.image_rgb().float().cpu()
        ax = axes[i, 0]
        ax.imshow(rgb.permute(1, 2, 0).numpy())
        label = "\n".join(textwrap.wrap(text, 26)[:3])
        ax.set_title(f"{label}\ncosine {first.score:.3f}", fontsize=9, loc="left")
        for j, m in enumerate(res.methods):
            e = row[m]
            ax = axes[i, j + 1]
            if e.image_map is not None:
                ax.imshow(overlay(rgb, e.image_map))
            else:
                ax.imshow(rgb.permute(1, 2, 0).numpy())
                ax.text(0.5, 0.5, "no image map", ha="center", va="center", transform=ax.transAxes,
                        fontsize=9, bbox=dict(facecolor="white", alpha=0.8))
            ax.set_title(f"{m}  ({e.seconds:.2f} s)", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"model: {res.model}   (red = high attribution, blue = low; each map min-max scaled)", fontsize=9)
    fig.tight_layout(h_pad=1.2)
    return fig


def grid_png(res: RunResult, path: str | os.PathLike) -> np.ndarray:
    """Write the grid to ``path`` and return it as an (H, W, 3) uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = grid_figure(res)
    canvas = FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def scores_html(res: RunResult) -> str:
    """HTML table: each text with its cosine similarity to the image, best first, with a bar."""
    scores = res.scores()
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    rows = []
    for rank, i in enumerate(order, 1):
        s = scores[i]
        width = max(0.0, min(1.0, (s + 1) / 2)) * 100
        rows.append(
            f"<tr><td>{rank}</td><td>{html.escape(res.texts[i])}</td><td class='vx-score'>{s:.4f}</td>"
            f"<td style='width:40%'><div style='background:#4a7bd0;height:10px;width:{width:.0f}%'></div></td></tr>"
        )
    return (
        "<table class='vx-scores'><thead><tr><th>#</th><th>text</th><th>cosine similarity</th><th></th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def tokens_html(res: RunResult) -> str:
    """HTML table of token highlights: one row per text, one column per method with a text side."""
    cols = [m for m in res.methods if any(r[m].token_scores is not None for r in res.results)]
    if not cols:
        return "<p>None of the chosen methods explains the text side.</p>"
    head = "".join(f"<th>{html.escape(m)}</th>" for m in cols)
    rows = []
    for i, text in enumerate(res.texts):
        cells = []
        for m in cols:
            e = res.results[i][m]
            cells.append(f"<td>{token_html(e.tokens, e.token_scores)}</td>")
        rows.append(f"<tr><td>{html.escape(text)}</td>{''.join(cells)}</tr>")
    return (
        f"<table class='vx-token-table'><thead><tr><th>text</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table><p class='vx-note'>Darker red = larger attribution (min-max scaled per text and method; "
        "hover a token for its raw value).</p>"
    )


def write_json(res: RunResult, path: str | os.PathLike) -> Path:
    p = Path(path)
    p.write_text(json.dumps(res.to_dict(), indent=1))
    return p
