"""The run gallery: one ``index.html`` linking every pair's overlay, token highlight and JSON."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from .core import token_html
from .save import atomic_write_text

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} .sub{color:#666;font-size:13px;margin-bottom:18px}
.grid{display:flex;flex-wrap:wrap;gap:14px}
.card{background:#fff;border:1px solid #e2e2e2;border-radius:8px;padding:10px;width:300px}
.card img{width:100%;border-radius:4px} .meta{font-size:12px;color:#555;margin-top:6px}
.score{font-weight:600;color:#111} .text{font-size:14px;margin:6px 0 2px}
.match{color:#0a7d28} .nomatch{color:#a33}
"""


def write_gallery(out_dir: str | os.PathLike, entries: Sequence[dict], title: str, subtitle: str = "") -> Path:
    """Write ``out_dir/index.html``.

    Args:
        entries: dicts with keys ``overlay`` (relative PNG path or None), ``text``, ``tokens``,
            ``token_scores``, ``score``, ``method``, ``seconds``, ``json`` (relative path), ``image``
            (image name) and optionally ``label`` (e.g. "expected match") and ``contrast`` (what a
            contrastive explanation contrasted, shown instead of the cosine).
    """
    out = Path(out_dir)
    cards = []
    for e in entries:
        img = f"<img src='{html.escape(e['overlay'])}' alt='overlay'>" if e.get("overlay") else ""
        label = e.get("label")
        lab = (
            f"<span class='{'nomatch' if label.endswith('no match') else 'match'}'> · {html.escape(label)}</span>"
            if label
            else ""
        )
        toks = token_html(e["tokens"], e.get("token_scores"))
        score = html.escape(e["contrast"]) if e.get("contrast") else f"cosine {e['score']:.3f}"
        cards.append(
            "<div class='card'>"
            f"{img}<div class='text'>{toks}</div>"
            f"<div class='meta'><span class='score'>{score}</span>{lab}<br>"
            f"{html.escape(e['image'])} · {html.escape(e['method'])} · {e['seconds']:.2f} s · "
            f"<a href='{html.escape(e['json'])}'>json</a></div></div>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(title)
        + f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<div class='sub'>{html.escape(subtitle)}</div><div class='grid'>{''.join(cards)}</div></body></html>"
    )
    path = out / "index.html"
    atomic_write_text(path, page)
    return path
