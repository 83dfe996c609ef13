"""``report``: one self-contained HTML page (plus CSV and JSON tables) for an evaluation run.

The page holds: the method x metric table (mean and a seeded bootstrap 95 % interval of the mean,
NaN values left out), deletion / insertion curves and sanity-check curves when the run has them,
a gallery of the best and worst pairs per method (overlays when maps were saved), the error rows
and the run's configuration. CSS is inline and images are base64 PNGs, so the file can be mailed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..viz.html import REPORT_CSS
from . import io as rio

N_BOOT = 1000
BOOT_SEED = 0
GALLERY_K = 4

_CSS = (
    REPORT_CSS
    + """
td.best{background:#e6f4ea;font-weight:600}
.ci{color:#777;font-size:11px}
.warn{background:#fff4e5;border:1px solid #f0c36d;padding:8px 12px;border-radius:4px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{width:180px;font-size:12px;border:1px solid #e3e3e3;border-radius:4px;padding:6px;background:#fafafa}
.card img{width:168px;height:168px;image-rendering:pixelated;display:block;margin-bottom:4px}
.card .v{font-family:monospace}
.curves{display:flex;flex-wrap:wrap;gap:12px}.curves img{width:380px;border:1px solid #eee}
"""
)


# --- statistics ----------------------------------------------------------------------------
def bootstrap_ci(
    values: np.ndarray,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of the mean (NaN values dropped).

    ``n_boot`` resamples with replacement from ``numpy.random.default_rng(seed)``; drawn in chunks
    so that memory stays small for large runs. With ``groups`` (one label per value) whole groups
    are resampled (a cluster bootstrap: the values of one image move together), and each resample's
    mean is its values' sum over its values' count.
    """
    v = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(v)
    v = v[keep]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    if groups is None:
        chunk = max(1, min(n_boot, 2_000_000 // v.size))
        for a in range(0, n_boot, chunk):
            b = min(n_boot, a + chunk)
            means[a:b] = v[rng.integers(0, v.size, size=(b - a, v.size))].mean(1)
    else:
        _, inv = np.unique(np.asarray(groups)[keep], return_inverse=True)
        g = int(inv.max()) + 1
        sums = np.bincount(inv, weights=v, minlength=g)
        counts = np.bincount(inv, minlength=g).astype(np.float64)
        chunk = max(1, min(n_boot, 2_000_000 // g))
        for a in range(0, n_boot, chunk):
            b = min(n_boot, a + chunk)
            w = rng.multinomial(g, np.full(g, 1.0 / g), size=b - a).astype(np.float64)  # draws per group
            means[a:b] = (w @ sums) / np.maximum(w @ counts, 1e-12)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(v.mean()), float(lo), float(hi)


def _columns(df: Any, cfg: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(metric, column, higher_is_better) for every scalar metric column, primary first."""
    info = cfg.get("metric_info", {})
    out = []
    for m in cfg.get("metrics", []):
        cols = [c for c in df.columns if c == m or c.startswith(m + ".")]
        prim = info.get(m, {}).get("primary")
        primary = (m, f"{m}.{prim}", f"{m}.{prim} (mean)")
        cols.sort(key=lambda c: (c not in primary, c))
        for c in cols:
            if df[c].dtype.kind == "f":
                hib = info.get(m, {}).get("higher_is_better") if c in primary else None
                out.append((m, c, hib))
    return out


def summary_table(df: Any, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (method, metric column): n, mean, 95 % bootstrap interval, direction."""
    rows = []
    for method in cfg.get("methods", sorted(set(df["method"]))):
        sub = df[df["method"] == method]
        for metric, col, hib in _columns(df, cfg):
            mean, lo, hi = bootstrap_ci(sub[col].to_numpy(dtype=np.float64, na_value=np.nan))
            n = int(sub[col].notna().sum())
            rows.append(
                {
                    "method": method,
                    "metric": metric,
                    "column": col,
                    "n": n,
                    "mean": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "higher_is_better": hib,
                }
            )
        rows.extend(_aggregate_rows(method, sub, cfg))
    return rows


def _aggregate_rows(method: str, sub: Any, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Metrics whose dataset value is not a mean over pairs (``MetricSpec.aggregate``, e.g.
    Spearman's rho of two per-pair outputs): the value and a bootstrap interval over pairs."""
    from ..errors import MethodError
    from ..metrics import get_spec
    from ..metrics.cue import spearman_ci

    out = []
    for m in cfg.get("metrics", []):
        try:
            spec = get_spec(m)
        except MethodError:  # a plug-in metric (module:function): averaged like any other
            continue
        kind, _, cols = spec.aggregate.partition(":")
        if kind not in ("spearman", "spearman_within"):
            continue
        names = [f"{m}.{c}" for c in cols.split(",")]
        if any(c not in sub for c in names):
            continue
        x, y = (sub[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in names[:2])
        groups = sub[names[2]].to_numpy(dtype=np.float64, na_value=np.nan) if kind == "spearman_within" else None
        rho, lo, hi = spearman_ci(x, y, N_BOOT, BOOT_SEED, groups=groups)
        out.append(
            {
                "method": method,
                "metric": m,
                "column": f"{m}.{spec.primary}",
                "n": int((np.isfinite(x) & np.isfinite(y)).sum()),
                "mean": rho,
                "ci_low": lo,
                "ci_high": hi,
                "higher_is_better": spec.higher_is_better,
            }
        )
    return out


# --- figures -------------------------------------------------------------------------------
def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img_tag(arr: np.ndarray, alt: str = "") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _curve_columns(df: Any) -> list[str]:
    out = []
    for c in df.columns:
        v = next((x for x in df[c] if x is not None and not (isinstance(x, float) and np.isnan(x))), None)
        if isinstance(v, (list, np.ndarray)) and len(v) and isinstance(v[0], (float, np.floating)):
            out.append(c)
    return out


def _curve_figure(df: Any, col: str, methods: list[str]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = col.rsplit(".", 1)[0]
    labels = None
    if f"{metric}.stages" in df.columns:
        labels = next((list(x) for x in df[f"{metric}.stages"] if x is not None), None)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    drawn = False
    for m in methods:
        vals = [np.asarray(x, dtype=np.float64) for x in df.loc[df["method"] == m, col] if x is not None]
        vals = [v for v in vals if v.ndim == 1]
        if not vals or len({v.size for v in vals}) != 1:
            continue
        a = np.stack(vals)
        mean = np.nanmean(a, 0)
        x = np.arange(a.shape[1]) if labels else np.linspace(0, 1, a.shape[1])
        ax.plot(x, mean, marker="o", ms=3, label=f"{m} (n={len(vals)})")
        if len(vals) > 1:
            se = np.nanstd(a, 0) / np.sqrt(len(vals))
            ax.fill_between(x, mean - 1.96 * se, mean + 1.96 * se, alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if labels:
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("randomised from")
    else:
        ax.set_xlabel("fraction of pixels / tokens")
    ax.set_ylabel(col.split(".")[-1])
    ax.set_title(col, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# --- HTML sections -------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return "–" if x is None or np.isnan(x) else f"{x:.4g}"


def _table_html(rows: list[dict[str, Any]], methods: list[str], cfg: dict[str, Any] | None = None) -> str:
    # the main table shows each metric's primary value; every column is in table.csv / table.json
    prim = [r for r in rows if r["higher_is_better"] is not None]
    done = {r["metric"] for r in prim}
    rows = prim + [r for r in rows if r["metric"] not in done]
    cols = list(dict.fromkeys(r["column"] for r in rows))
    by = {(r["method"], r["column"]): r for r in rows}
    best: dict[str, str] = {}
    info = (cfg or {}).get("metric_info", {})
    nominal = {r["column"] for r in rows if info.get(r["metric"], {}).get("ranked", True) is False}
    for c in cols:
        if c in nominal:  # no best value to shade: a faithful map follows the model
            continue
        cand = [by[(m, c)] for m in methods if (m, c) in by and not np.isnan(by[(m, c)]["mean"])]
        hib = cand[0]["higher_is_better"] if cand else None
        if cand and hib is not None and len(cand) > 1:
            top = (max if hib else min)(r["mean"] for r in cand)
            winners = [r["method"] for r in cand if r["mean"] == top]
            if len(winners) == 1:  # shade a unique best only
                best[c] = winners[0]
    head = "".join(
        f"<th>{html.escape(c)}{'' if by.get((methods[0], c), {}).get('higher_is_better') is None else (' ↑' if by[(methods[0], c)]['higher_is_better'] else ' ↓')}</th>"
        for c in cols
    )
    body = []
    for m in methods:
        cells = []
        for c in cols:
            r = by.get((m, c))
            if r is None or r["n"] == 0:
                cells.append("<td>–</td>")
                continue
            cls = " class='best'" if best.get(c) == m else ""
            cells.append(
                f"<td{cls}>{_fmt(r['mean'])}<br><span class='ci'>[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] n={r['n']}</span></td>"
            )
        body.append(f"<tr><th class='l'>{html.escape(m)}</th>{''.join(cells)}</tr>")
    note = (
        f"<p class='sub'>{html.escape(', '.join(sorted({r['metric'] for r in rows if r['column'] in nominal})))}: "
        "no best value is shaded (the arrow is nominal): a faithful map follows the model's reliance on the "
        "cue, so read these against the references and across models.</p>"
        if nominal
        else ""
    )
    return f"<table><tr><th class='l'>method</th>{head}</tr>{''.join(body)}</table>{note}"


def _gallery_html(df: Any, cfg: dict[str, Any], run_dir: Path, methods: list[str]) -> str:
    cols = [c for c in _columns(df, cfg) if c[2] is not None] or _columns(df, cfg)
    if not cols:
        return "<p class='sub'>No metric values to rank pairs by.</p>"
    metric, col, hib = cols[0]
    ok = df[df[col].notna()]
    picks: dict[str, tuple[Any, Any]] = {}
    need: set[int] = set()
    for m in methods:
        sub = ok[ok["method"] == m].sort_values([col, "index"], ascending=[not (hib is not False), True], kind="stable")
        top, bottom = sub.head(GALLERY_K), sub.tail(GALLERY_K).iloc[::-1]
        picks[m] = (top, bottom)
        need |= set(top["index"].tolist()) | set(bottom["index"].tolist())
    maps = rio.load_maps(run_dir, need) if cfg.get("save_maps") else {}
    word = ("best", "worst") if hib is not None else ("highest", "lowest")
    parts = [
        f"<p class='sub'>Ranked by <b>{html.escape(col)}</b>"
        f"{'' if hib is None else (' (higher is better)' if hib else ' (lower is better)')}."
        f"{'' if maps else ' Maps were not saved (run with --save-maps for overlays).'}</p>"
    ]
    for m in methods:
        for title, frame in zip(word, picks[m]):
            cards = "".join(_card(r, m, col, maps) for r in frame.to_dict("records"))
            parts.append(f"<h3>{html.escape(m)}: {title} {len(frame)}</h3><div class='grid'>{cards or '–'}</div>")
    return "".join(parts)


def _card(r: dict[str, Any], method: str, col: str, maps: dict[str, Any]) -> str:
    import torch

    from ..viz.core import overlay, token_html

    i = int(r["index"])
    key = f"{i}.{method}"
    pic = ""
    if f"{i}.image" in maps:
        rgb = maps[f"{i}.image"].float() / 255.0
        if f"{key}.image_map" in maps:
            pic = _img_tag(overlay(rgb, maps[f"{key}.image_map"]), f"pair {i}")
        else:
            pic = _img_tag((rgb.permute(1, 2, 0).numpy() * 255).astype(np.uint8), f"pair {i}")
    cap = html.escape(str(r["caption"]))
    if f"{key}.token_scores" in maps and f"{key}.tokens" in maps:
        cap = token_html(maps[f"{key}.tokens"], torch.as_tensor(maps[f"{key}.token_scores"]))
    return f"<div class='card'>{pic}<div>#{i} <span class='v'>{_fmt(r[col])}</span></div><div>{cap}</div></div>"


def _errors_html(df: Any) -> str:
    err = df[df["error"].notna()].drop_duplicates("index")
    if err.empty:
        return "<p class='sub'>No error rows.</p>"
    rows = "".join(
        f"<tr><td>{int(r['index'])}</td><td class='l'>{html.escape(str(r['error']))}</td></tr>"
        for r in err.head(50).to_dict("records")
    )
    more = f"<p class='sub'>… and {len(err) - 50} more (see table.csv).</p>" if len(err) > 50 else ""
    return f"<p>{len(err)} pair(s) could not be evaluated.</p><table><tr><th>index</th><th class='l'>reason</th></tr>{rows}</table>{more}"


# --- entry point ---------------------------------------------------------------------------
def report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``report.html`` (and ``table.csv``, ``table.json`` beside it) for a run.

    Args:
        run_dir: a directory written by ``vlexplain.eval.evaluate``.
        out: the HTML file (default ``RUN_DIR/report.html``).

    Returns:
        The path of the HTML file.
    """
    run_dir = Path(run_dir)
    if not (run_dir / rio.CONFIG).is_file():
        raise InputError(f"{run_dir} is not an evaluation run (no {rio.CONFIG}); run `vlexplain evaluate` first")
    cfg = rio.read_json(run_dir / rio.CONFIG)
    man = rio.read_json(run_dir / rio.MANIFEST) if (run_dir / rio.MANIFEST).is_file() else {}
    df = rio.load_results(run_dir).to_pandas()
    if df.empty:
        raise InputError(f"{run_dir} has no finished shards yet")
    methods = [m for m in cfg.get("methods", []) if m in set(df["method"])]
    _add_curve_means(df, cfg)
    rows = summary_table(df, cfg)
    out = Path(out) if out else run_dir / "report.html"
    _write_tables(rows, out.parent)
    body = [
        f"<h1>vlexplain evaluation</h1><div class='sub'>{html.escape(str(run_dir.resolve()))} · model "
        f"<b>{html.escape(str(cfg.get('model')))}</b> · {int(df['index'].nunique())} pairs · "
        f"methods {html.escape(', '.join(methods))}</div>"
    ]
    if man and not man.get("complete", False):
        body.append(
            f"<p class='warn'>This run is incomplete: {len(man.get('missing', []))} of "
            f"{man.get('num_shards')} shards are missing (resume it with --resume).</p>"
        )
    body.append(
        "<h2>Methods × metrics</h2><p class='sub'>Mean over pairs with a 95 % percentile bootstrap "
        f"interval of the mean ({N_BOOT} resamples, seed {BOOT_SEED}); best per column shaded.</p>"
    )
    body.append(_table_html(rows, methods, cfg) if rows else "<p>No metric columns.</p>")
    body.append(_curves_html(df, methods))
    if cfg.get("save_maps"):
        body.append("<h2>Gallery</h2>" + _gallery_html(df, cfg, run_dir, methods))
    else:  # without maps a gallery would be empty boxes
        body.append(
            "<h2>Gallery</h2><p class='sub'>Maps were not saved, so there is no gallery: run the evaluation "
            "with --save-maps to see the best and worst pairs of each method here.</p>"
        )
    body.append("<h2>Errors</h2>" + _errors_html(df))
    body.append(
        "<h2>Configuration</h2><details><summary>config.json</summary><pre>"
        + html.escape(json.dumps(cfg, indent=2, sort_keys=True))
        + "</pre></details>"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vlexplain report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    rio.atomic_write_text(out, page)
    return out


def _curves_html(df: Any, methods: list[str]) -> str:
    groups: dict[str, list[str]] = {"Deletion / insertion curves": [], "Sanity-check curves": [], "Other curves": []}
    for c in _curve_columns(df):
        name = c.lower()
        if "deletion" in name or "insertion" in name:
            groups["Deletion / insertion curves"].append(c)
        elif "random" in name or "sanity" in name:
            groups["Sanity-check curves"].append(c)
        else:
            groups["Other curves"].append(c)
    parts = []
    for title, cols in groups.items():
        figs = [f for f in (_curve_figure(df, c, methods) for c in cols) if f]
        if figs:
            imgs = "".join(f"<img src='data:image/png;base64,{f}'>" for f in figs)
            parts.append(
                f"<h2>{title}</h2><p class='sub'>Mean over pairs; band: ±1.96 standard errors.</p>"
                f"<div class='curves'>{imgs}</div>"
            )
    return "".join(parts)


def _add_curve_means(df: Any, cfg: dict[str, Any]) -> None:
    """A metric whose primary output is a curve (e.g. a sanity check's per-stage similarity) gets a
    scalar column ``METRIC.PRIMARY (mean)``: the mean over the curve's points."""
    curves = set(_curve_columns(df))
    for m, info in cfg.get("metric_info", {}).items():
        col = f"{m}.{info.get('primary')}"
        if col in curves:
            df[f"{col} (mean)"] = [
                np.nan if x is None else float(np.nanmean(np.asarray(x, dtype=np.float64))) for x in df[col]
            ]


def _write_tables(rows: list[dict[str, Any]], folder: Path) -> None:
    import csv

    keys = ["method", "metric", "column", "n", "mean", "ci_low", "ci_high", "higher_is_better"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    rio.atomic_write_text(folder / "table.csv", buf.getvalue())
    clean = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in rows]
    rio.atomic_write_json(folder / "table.json", clean)
