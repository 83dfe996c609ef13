"""Rendering runs for the explorer: the heatmap grid PNG, the scores and token tables, the JSON;
the concepts tab's figure and metrics table."""

from __future__ import annotations

import html
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from ..viz.core import overlay, token_html
from .concept_runner import ConceptRun
from .runner import RunResult


def grid_figure(res: RunResult, dpi: int = 100):
    """A matplotlib Figure: one row per text, the input image then one heatmap per method."""
    from matplotlib.figure import Figure

    nt, nm = len(res.texts), len(res.methods)
    width = 2.5 * (nm + 1)
    # the title wraps to the figure's width (9-pt text: about 13 characters per inch), never clipped
    head = textwrap.wrap(
        f"model: {res.model}   (red = high attribution, blue = low; each map min-max scaled)", int(width * 13)
    )
    if res.versus is not None:
        head += textwrap.wrap(
            f"the maps explain cos(image, text) \u2212 cos(image, \u201c{res.versus}\u201d)", int(width * 13)
        )
    row_h = 3.0 if res.versus is None else 3.3  # a contrast's titles take a third line
    fig = Figure(figsize=(width, row_h * nt + 0.4 + 0.16 * len(head)), dpi=dpi, layout="constrained")
    axes = fig.subplots(nt, nm + 1, squeeze=False)
    for i, text in enumerate(res.texts):
        row = res.results[i]
        first = row[res.methods[0]]
        rgb = first.image_rgb().float().cpu()
        ax = axes[i, 0]
        ax.imshow(rgb.permute(1, 2, 0).numpy())
        label = "\n".join(textwrap.wrap(text, 26)[:3])
        c = first.contrast
        score = f"cosine {first.score:.3f}"
        if c is not None:
            v = "\n".join(textwrap.wrap(f"rather than \u201c{c.versus}\u201d", 26)[:2])
            score = f"{v}\ncos {c.score:.3f} \u2212 {c.versus_score:.3f} = {c.difference:+.3f}"
        ax.set_title(f"{label}\n{score}", fontsize=9, loc="left")
        for j, m in enumerate(res.methods):
            e = row[m]
            ax = axes[i, j + 1]
            if e.image_map is not None:
                ax.imshow(overlay(rgb, e.image_map))
            else:
                ax.imshow(rgb.permute(1, 2, 0).numpy())
                ax.text(
                    0.5,
                    0.5,
                    "no image map",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=9,
                    bbox=dict(facecolor="white", alpha=0.8),
                )
            ax.set_title(f"{m}  ({e.seconds:.2f} s)", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("\n".join(head), fontsize=9)
    return fig


def _png(fig, path: str | os.PathLike) -> np.ndarray:
    """Write ``fig`` to ``path`` as PNG and return it as an (H, W, 3) uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def grid_png(res: RunResult, path: str | os.PathLike) -> np.ndarray:
    """Write the grid to ``path`` and return it as an (H, W, 3) uint8 array."""
    return _png(grid_figure(res), path)


def scores_html(res: RunResult) -> str:
    """HTML table: each text with its cosine similarity to the image, best first, with a bar whose
    length is the score on [0, the highest score shown] (a negative score has no bar), so that 0.23
    reads as half of 0.46."""
    scores = res.scores()
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    top = max([s for s in scores if s > 0], default=0.0)
    rows = []
    for rank, i in enumerate(order, 1):
        s = scores[i]
        width = max(0.0, min(1.0, s / top)) * 100 if top > 0 else 0.0
        c = next(iter(res.results[i].values())).contrast
        diff = "" if c is None else f"<td class='vx-difference'>{c.difference:+.4f}</td>"
        rows.append(
            f"<tr><td>{rank}</td><td>{html.escape(res.texts[i])}</td><td class='vx-score'>{s:.4f}</td>{diff}"
            f"<td style='width:40%'><div style='background:#4a7bd0;height:10px;width:{width:.0f}%'></div></td></tr>"
        )
    vhead = ""
    note = ""
    if res.versus is not None:
        v = html.escape(res.versus)
        vs = next(iter(res.results[0].values())).contrast.versus_score if res.results else float("nan")
        vhead = f"<th>difference: cosine \u2212 cosine with \u201c{v}\u201d</th>"
        note = (
            f"<p class='vx-note'>Cosine of the image with \u201c{v}\u201d: {vs:.4f}. The maps explain each "
            f"text's difference: what makes the image match the text rather than \u201c{v}\u201d.</p>"
        )
    return (
        "<table class='vx-scores'><thead><tr><th>#</th><th>text</th><th>cosine similarity</th>"
        f"{vhead}<th title='bar length: the score on a scale from 0 to the highest score shown'>0 … highest</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"
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


# --- the concepts tab --------------------------------------------------------------------------


def concept_figure(run: ConceptRun, dpi: int = 100, per_row: int = 3):
    """A matplotlib Figure: the image, the category map, then one map per concept (rows of ``per_row``)."""
    from matplotlib.figure import Figure

    n = 2 + len(run.descriptors)
    cols = min(n, per_row)
    rows = -(-n // cols)
    fig = Figure(figsize=(2.8 * cols, 3.35 * rows + 0.5), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    rgb = run.rgb
    axes[0, 0].imshow(rgb.permute(1, 2, 0).numpy())
    name = run.image_name if len(run.image_name) <= 30 else run.image_name[:14] + "…" + run.image_name[-14:]
    axes[0, 0].set_title(f"image\n{name}", fontsize=9)
    panels: list[tuple[str, str, float, Any, float | None]] = [
        ("category map", run.prompts[0], run.scores[0], run.category, None)
    ]
    for j in range(len(run.descriptors)):
        panels.append(
            (
                f"concept {j + 1}",
                run.prompts[1 + j],
                run.scores[1 + j],
                run.concepts[j],
                run.per_concept_localizability[j],
            )
        )
    for k, (head, prompt, score, m, loc) in enumerate(panels, 1):
        ax = axes[k // cols, k % cols]
        ax.imshow(overlay(rgb, m))
        lines = textwrap.wrap(prompt, 32)
        wrapped = "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")
        extra = f"   localizability {loc:.3f}" if loc is not None else ""
        ax.set_title(f"{head}\n{wrapped}\ncosine {score:.3f}{extra}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].axis("off")
    dis = f"{run.disentanglability:.3f}" if run.disentanglability is not None else "n/a (one concept)"
    fig.suptitle(
        f"class '{run.cls}' — model {run.model}, maps by {run.method}\n"
        f"disentanglability {dis}, localizability {run.localizability:.3f}",
        fontsize=10,
    )
    fig.supxlabel("red = high relevance, blue = low; each map min-max scaled", fontsize=9)
    return fig


def concept_png(run: ConceptRun, path: str | os.PathLike) -> np.ndarray:
    """Write the concept figure to ``path`` and return it as an (H, W, 3) uint8 array."""
    return _png(concept_figure(run), path)


def _val(key: str, value: float | None, digits: int = 4) -> str:
    shown = "n/a" if value is None else f"{value:.{digits}f}"
    return f"<td class='vx-val' data-key='{html.escape(key)}'>{shown}</td>"


def concept_metrics_html(run: ConceptRun) -> str:
    """HTML: this image's DEAL metrics, each prompt's score and localizability, and the pair overlaps."""
    K = len(run.descriptors)
    one = "needs two or more concepts" if K < 2 else ""
    summary = [
        (
            "disentanglability",
            run.disentanglability,
            "published form: sigmoid(10 · (0.2 − S / 100)), S = sum over concept pairs of the overlap "
            "(higher = concepts look at different pixels)" + (f"; {one}" if one else ""),
        ),
        (
            "mean_pairwise_overlap",
            run.mean_overlap,
            "raw: mean over concept pairs of Σ<sub>pixels</sub> h<sub>i</sub>·h<sub>j</sub> on the "
            f"{run.concepts.shape[-2]}×{run.concepts.shape[-1]} map grid (lower = more disentangled)",
        ),
        ("pairwise_overlap_sum", run.overlap_sum, "S: the sum over concept pairs"),
        (
            "localizability",
            run.localizability,
            "insertion test: the concept prompt's score as the top 20…100 % pixels of its map are inserted into "
            "a blurred copy, relative to the full image (mean over concepts and steps; higher = better)",
        ),
    ]
    names = {
        "disentanglability": "Disentanglability",
        "mean_pairwise_overlap": "Mean pairwise overlap",
        "pairwise_overlap_sum": "Sum of pair overlaps S",
        "localizability": "Localizability",
    }
    rows = "".join(
        f"<tr><td><b>{names[k]}</b></td>{_val(k, v)}<td class='vx-note'>{d}</td></tr>" for k, v, d in summary
    )
    out = [
        f"<table class='vx-concept-metrics'><thead><tr><th>this image</th><th>value</th><th>meaning</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    ]
    prompt_rows = [
        f"<tr><td>category</td><td>{html.escape(run.prompts[0])}</td>{_val('score:category', run.scores[0])}"
        "<td>—</td></tr>"
    ]
    for j in range(K):
        prompt_rows.append(
            f"<tr><td>concept {j + 1}</td><td>{html.escape(run.prompts[1 + j])}</td>"
            f"{_val(f'score:{j + 1}', run.scores[1 + j])}{_val(f'localizability:{j + 1}', run.per_concept_localizability[j])}</tr>"
        )
    out.append(
        "<table class='vx-concept-prompts'><thead><tr><th>map</th><th>prompt</th><th>cosine similarity</th>"
        f"<th>localizability</th></tr></thead><tbody>{''.join(prompt_rows)}</tbody></table>"
    )
    if K >= 2:
        head = "".join(f"<th>{j + 1}</th>" for j in range(K))
        body = []
        for i in range(K):
            cells = "".join(
                "<td>·</td>" if i == j else f"<td>{float(run.pair_overlaps[i, j]):.2f}</td>" for j in range(K)
            )
            body.append(f"<tr><th>{i + 1}. {html.escape(run.descriptors[i])}</th>{cells}</tr>")
        out.append(
            "<p class='vx-note'>Overlap Σ<sub>pixels</sub> h<sub>i</sub>·h<sub>j</sub> of each pair of "
            "concept maps:</p>"
            f"<table class='vx-concept-pairs'><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        )
    return "".join(out)


def write_concept_json(run: ConceptRun, path: str | os.PathLike) -> Path:
    p = Path(path)
    p.write_text(json.dumps(run.to_dict(), indent=1))
    return p
