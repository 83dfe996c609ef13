"""The DEAL evaluation report: metrics of one or more models side by side, and a concept-map gallery.

``write_report`` writes, into one folder:

* ``metrics.json``: the configuration, every column's metrics (as returned by
  ``evaluate_concepts``), the flattened ``delta`` (last column
  minus first) and the gallery's captions;
  and, where both columns hold per-item scores, ``delta_ci``: the 95 % paired bootstrap interval of
  each delta (images resampled);
* ``metrics.csv``: one row per metric (``metric, <columns...>, delta, delta_low, delta_high,
  higher_is_better``);
* ``scores.npz``: every column's per-item scores (so a later comparison can pair them);
* ``gallery.npz``: the gallery's images and maps (read back by ``read_report``, so a later
  evaluation can be compared with this one without evaluating the model again);
* ``report.html``: one self-contained page (inline CSS, base64 PNGs): the metric table with
  before / after / delta, the configuration, and for a few images the category and concept maps
  of every column.

Columns are named ``before`` and ``after`` for a comparison, ``model`` for a single evaluation.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..viz.html import REPORT_CSS
from ..viz.save import atomic_write, atomic_write_text

METRICS_JSON, METRICS_CSV, GALLERY_NPZ, REPORT_HTML = "metrics.json", "metrics.csv", "gallery.npz", "report.html"
SCORES_NPZ = "scores.npz"

#: (flattened key, label, higher is better (None: neither), decimals)
METRICS: tuple[tuple[str, str, bool | None, int], ...] = (
    ("accuracy_standard.top1", "accuracy, category prompts, top-1 (%)", True, 2),
    ("accuracy_standard.top5", "accuracy, category prompts, top-5 (%)", True, 2),
    ("accuracy_concepts.top1", "accuracy, concept prompts, top-1 (%)", True, 2),
    ("accuracy_concepts.top5", "accuracy, concept prompts, top-5 (%)", True, 2),
    ("disentanglability", "disentanglability", True, 4),
    ("mean_pairwise_overlap", "mean overlap of two concept maps (pixels)", False, 4),
    ("pairwise_overlap_sum", "overlap summed over concept pairs (pixels)", False, 4),
    ("localizability", "localizability (insertion)", True, 4),
    ("part_pointing", "ground truth: concept pointing (%)", True, 2),
    ("part_energy", "ground truth: map energy inside the part", True, 4),
    ("part_area", "ground truth: part area (chance level of both)", None, 4),
    ("part_maps", "ground truth: concept maps scored", None, 0),
    ("images", "images", None, 0),
)
#: the metrics that need ground truth (shown only when some column has them)
TRUTH = ("part_pointing", "part_energy", "part_area", "part_maps")

_CSS = (
    REPORT_CSS
    + """
td.up{background:#e6f4ea;color:#137333;font-weight:600}td.down{background:#fce8e6;color:#a50e0e;font-weight:600}
table.maps td,table.maps th{text-align:center;vertical-align:middle;font-size:11px}
table.maps th.t{max-width:128px;font-weight:normal;background:#fafafa}
table.maps img{width:128px;height:128px;display:block}
.e{color:#555;font-family:monospace}
.ci{color:#666;font-weight:400;font-size:11px}
"""
)


def flatten(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric values of an evaluation, nested dicts flattened (``accuracy_standard.top1``)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            out.update({f"{k}.{a}": float(b) for a, b in v.items() if isinstance(b, (int, float))})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _rows(columns: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, bool | None, int]]:
    flat = [flatten(m) for m in columns.values()]
    keys = set().union(*flat) if flat else set()
    rows = [r for r in METRICS if r[0] in keys]
    known = {r[0] for r in METRICS}
    rows += [(k, k, None, 4) for k in sorted(keys - known)]
    return rows


def deltas(columns: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Last column minus first, per flattened metric (empty for a single column)."""
    names = list(columns)
    if len(names) < 2:
        return {}
    a, b = flatten(columns[names[0]]), flatten(columns[names[-1]])
    return {k: b[k] - a[k] for k in a if k in b}


def delta_intervals(columns: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """95 % paired bootstrap intervals of ``deltas``, for metrics whose per-item scores pair up."""
    from .evaluate import paired_interval

    names = list(columns)
    if len(names) < 2:
        return {}
    a, b = columns[names[0]].get("per_item") or {}, columns[names[-1]].get("per_item") or {}
    out = {}
    for key in a:
        if key in b:
            ci = paired_interval(a[key], b[key])
            if ci is not None:
                out[key] = ci
    return out


def _fmt(v: float | None, decimals: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{decimals}f}" if decimals else f"{int(round(v))}"


def _png(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _overlay(image: np.ndarray, heat: np.ndarray | None, side: int = 128) -> np.ndarray:
    """The image (nearest-upscaled to at least ``side`` pixels) with the map blended over it."""
    import torch

    from ..viz.core import overlay

    rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    if min(rgb.shape[1:]) < side:
        f = max(1, math.ceil(side / min(rgb.shape[1:])))
        rgb = rgb.repeat_interleave(f, 1).repeat_interleave(f, 2)
    if heat is None:
        return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return overlay(rgb, torch.from_numpy(np.asarray(heat, dtype=np.float32)))


def _table_html(
    columns: Mapping[str, Mapping[str, Any]], delta: Mapping[str, float], ci: Mapping[str, tuple[float, float]]
) -> str:
    names = list(columns)
    flat = {c: flatten(m) for c, m in columns.items()}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in names) + ("<th>Δ</th>" if delta else "")
    body = []
    for key, label, hib, dec in _rows(columns):
        arrow = "" if hib is None else (" ↑" if hib else " ↓")
        cells = "".join(f"<td>{_fmt(flat[c].get(key), dec)}</td>" for c in names)
        if delta:
            d = delta.get(key)
            cls = ""
            lo, hi = ci.get(key, (None, None))
            clear = lo is None or hi is None or lo > 0 or hi < 0  # with an interval: only when it excludes 0
            if d is not None and hib is not None and not math.isnan(d) and abs(d) >= 0.5 * 10 ** -max(dec, 0) and clear:
                cls = " class='up'" if (d > 0) == hib else " class='down'"
            sign = "+" if d is not None and d > 0 else ""
            band = f" <span class='ci'>[{_fmt(lo, dec)}, {_fmt(hi, dec)}]</span>" if lo is not None else ""
            cells += f"<td{cls}>{sign}{_fmt(d, dec)}{band}</td>"
        body.append(f"<tr data-metric='{html.escape(key)}'><td class='l'>{html.escape(label)}{arrow}</td>{cells}</tr>")
    return (
        f"<table><tr><th class='l'>metric</th>{head}</tr>{''.join(body)}</table>"
        "<p class='sub'>↑ higher is better, ↓ lower is better"
        + (
            "; Δ = "
            + html.escape(names[-1])
            + " − "
            + html.escape(names[0])
            + "; green: better, red: worse"
            + (
                "; [a, b]: 95 % paired bootstrap interval of Δ (images resampled), coloured only when it excludes 0"
                if ci
                else ""
            )
            + "."
            if delta
            else "."
        )
        + "</p>"
    )


def _gallery_html(galleries: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    names = [c for c in galleries if galleries[c]]
    if not names:
        return "<p class='sub'>No gallery (run with --gallery N).</p>"
    by_col = {c: {int(g["index"]): g for g in galleries[c]} for c in names}
    order = [int(g["index"]) for g in galleries[names[-1]]]  # the images of the last column
    parts = [
        "<p class='sub'>Each image is explained against its true class: the category map, then one map "
        "per concept. Under a concept map: the share of its energy inside the concept's ground-truth "
        "part, where known.</p>"
    ]
    for idx in order:
        first = next(by_col[c][idx] for c in names if idx in by_col[c])
        texts = list(first["texts"])
        preds = " · ".join(
            f"{html.escape(c)}: {html.escape(str(by_col[c][idx]['predicted']))}" for c in names if idx in by_col[c]
        )
        head = "<th></th><th class='t'>image</th>" + "".join(f"<th class='t'>{html.escape(t)}</th>" for t in texts)
        rows = []
        for c in names:
            g = by_col[c].get(idx)
            if g is None:
                rows.append(
                    f"<tr><th>{html.escape(c)}</th><td colspan='{len(texts) + 1}'>not in this "
                    "column's gallery</td></tr>"
                )
                continue
            cells = [f"<td><img alt='image {idx}' src='{_png(_overlay(g['image'], None))}'></td>"]
            energy = [None] + list(g.get("part_energy") or [])
            for j, t in enumerate(g["texts"]):
                e = energy[j] if j < len(energy) else None
                note = f"<div class='e'>in part {e:.2f}</div>" if e is not None else ""
                cells.append(
                    f"<td><img alt='{html.escape(t)}' src='{_png(_overlay(g['image'], g['maps'][j]))}'>{note}</td>"
                )
            rows.append(f"<tr><th>{html.escape(c)}</th>{''.join(cells)}</tr>")
        parts.append(
            f"<h3>#{idx} · {html.escape(str(first['label']))} <span class='sub'>(predicted — {preds})"
            f"</span></h3><table class='maps'><tr>{head}</tr>{''.join(rows)}</table>"
        )
    return "".join(parts)


def _kv_table(config: Mapping[str, Any]) -> str:
    return (
        "<table>"
        + "".join(
            f"<tr><td class='l'>{html.escape(str(k))}</td><td class='l'>{html.escape(_short(v))}</td></tr>"
            for k, v in config.items()
            if v is not None and not isinstance(v, Mapping)
        )
        + "</table>"
    )


def _config_html(config: Mapping[str, Any]) -> str:
    extra = "".join(
        f"<h3>{html.escape(str(k))}</h3>{_kv_table(v)}" for k, v in config.items() if isinstance(v, Mapping)
    )
    return _kv_table(config) + extra


def _short(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, tuple)) else str(v)


def write_report(
    out_dir: str | Path,
    config: Mapping[str, Any],
    columns: Mapping[str, Mapping[str, Any]],
    galleries: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Path:
    """Write ``metrics.json``, ``metrics.csv``, ``gallery.npz`` and ``report.html`` into ``out_dir``.

    Args:
        out_dir: the folder (created).
        config: the evaluation's settings (shown in the report, saved in ``metrics.json``).
        columns: column name -> metrics, in display order (``before``, ``after``).
        galleries: column name -> ``concept_gallery`` items.

    Returns:
        The path of ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    galleries = {c: list(g) for c, g in (galleries or {}).items()}
    delta = deltas(columns)
    ci = delta_intervals(columns)
    per_item = {c: m.get("per_item") or {} for c, m in columns.items()}
    columns = {c: {k: v for k, v in m.items() if k != "per_item"} for c, m in columns.items()}
    meta = {
        c: [{k: v for k, v in g.items() if k not in ("image", "maps")} for g in items] for c, items in galleries.items()
    }
    doc = {
        "config": dict(config),
        "columns": list(columns),
        "metrics": {c: dict(m) for c, m in columns.items()},
        "delta": delta,
        "delta_ci": {k: list(v) for k, v in ci.items()},
        "gallery": meta,
    }
    arrays: dict[str, Any] = {}
    for c, items in galleries.items():
        for n, g in enumerate(items):
            arrays[f"{c}/{n}/image"] = np.asarray(g["image"], dtype=np.uint8)
            arrays[f"{c}/{n}/maps"] = np.asarray(g["maps"], dtype=np.float32)

    def write_npz(p: str) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(out / GALLERY_NPZ, write_npz)
    scores: dict[str, Any] = {
        f"{c}/{k}/{part}": np.asarray(v[part])
        for c, items in per_item.items()
        for k, v in items.items()
        for part in ("values", "image")
    }

    def write_scores(p: str) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **scores)

    atomic_write(out / SCORES_NPZ, write_scores)
    flat = {c: flatten(m) for c, m in columns.items()}
    rows = [
        [
            key,
            *(flat[c].get(key, "") for c in columns),
            delta.get(key, ""),
            *ci.get(key, ("", "")),
            "" if hib is None else hib,
        ]
        for key, _, hib, _ in _rows(columns)
    ]

    def write_csv(p: str) -> None:
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", *columns, "delta", "delta_low", "delta_high", "higher_is_better"])
            w.writerows(rows)

    atomic_write(out / METRICS_CSV, write_csv)
    atomic_write_text(out / METRICS_JSON, json.dumps(doc, indent=1))
    names = list(columns)
    title = "DEAL evaluation" + (": " + " vs ".join(names) if len(names) > 1 else "")
    sub = " · ".join(
        html.escape(str(v))
        for v in (
            config.get("model"),
            config.get("checkpoint"),
            f"step {config['checkpoint_step']}" if config.get("checkpoint_step") is not None else None,
            config.get("data"),
            f"{config['images']} images" if config.get("images") else None,
        )
        if v
    )
    body = [
        f"<h1>{html.escape(title)}</h1><div class='sub'>{sub}</div>",
        "<h2>Metrics</h2>",
        _table_html(columns, delta, ci),
        "<h2>Concept maps</h2>",
        _gallery_html(galleries),
        "<h2>Configuration</h2>",
        _config_html(config),
    ]
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    atomic_write_text(out / REPORT_HTML, page)
    return out / REPORT_HTML


def read_report(folder: str | Path, column: str | None = None) -> tuple[dict[str, Any], dict[str, Any], list[dict]]:
    """One column of an earlier ``write_report`` output: (config, metrics, gallery items).

    Args:
        folder: the folder holding ``metrics.json`` (and ``gallery.npz``).
        column: the column to read (default: its last, i.e. ``after`` or ``model``).

    Returns:
        The config, that column's metrics, and its gallery items (with images and maps).
    """
    folder = Path(folder)
    path = folder / METRICS_JSON
    if not path.is_file():
        raise InputError(f"{folder} holds no {METRICS_JSON}: not the output of `vlexplain deal evaluate`")
    try:
        doc = json.loads(path.read_text())
        col = column or doc["columns"][-1]
        metrics = doc["metrics"][col]
    except (ValueError, KeyError, IndexError, TypeError):
        raise InputError(f"{path} is not a `vlexplain deal evaluate` result (or has no column {column!r})") from None
    if (folder / SCORES_NPZ).is_file():  # per-item scores, for paired intervals
        try:
            with np.load(folder / SCORES_NPZ) as z:
                keys = {name.split("/")[1] for name in z.files if name.startswith(col + "/")}
                per = {k: {"values": z[f"{col}/{k}/values"], "image": z[f"{col}/{k}/image"]} for k in keys}
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise InputError(f"{folder / SCORES_NPZ} cannot be read ({e}); evaluate that model again") from None
        if per:
            metrics = {**metrics, "per_item": per}
    items = [dict(g) for g in doc.get("gallery", {}).get(col, [])]
    if items:
        if not (folder / GALLERY_NPZ).is_file():
            raise InputError(f"{folder / GALLERY_NPZ} is missing; the gallery of {folder} cannot be shown")
        with np.load(folder / GALLERY_NPZ) as z:
            for n, g in enumerate(items):
                g["image"], g["maps"] = z[f"{col}/{n}/image"], z[f"{col}/{n}/maps"]
    return doc["config"], metrics, items
