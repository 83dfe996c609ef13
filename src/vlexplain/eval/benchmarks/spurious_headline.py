"""The headline of ``benchmark spurious``: the biased model minus the clean one, paired over pairs.

A method that sees a shortcut puts more of its map on the cue where the biased model uses it (the
aligned pairs) than where the clean model does not. The headline table gives, per method, the
paired difference of the normalised cue share (share / its ceiling at the map's resolution) on the
aligned pairs and on every badged pair, of the cue pointing on the aligned pairs, and each model's
within-group reliance rank; the undefined pairs (maps without positive mass) are counted beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def frame_with_groups(run: Path) -> Any:
    """A run's results (pandas) with the ``group`` of every pair read from its pairs file."""
    from .. import io as rio

    df = rio.load_results(run).to_pandas()
    pairs = Path(rio.read_json(run / rio.CONFIG)["data"]["path"])
    groups = [json.loads(x).get("group", "") for x in pairs.read_text().splitlines() if x.strip()]
    df["group"] = [groups[i] for i in df["index"]]
    return df


def _col(df: Any, name: str) -> np.ndarray:
    return df[name].to_numpy(dtype=np.float64, na_value=np.nan) if name in df else np.full(len(df), np.nan)


def _fmt(v: tuple[float, float, float]) -> str:
    d, lo, hi = v
    return "–" if np.isnan(d) else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _rank(df: Any) -> tuple[float, float, float]:
    from ...metrics.cue import spearman_ci
    from ..report import BOOT_SEED, N_BOOT

    m = "cue_reliance_rank_within"
    x, y, g = (_col(df, f"{m}.{c}") for c in ("cue_share", "reliance", "group"))
    if np.isnan(x).all():
        return float("nan"), float("nan"), float("nan")
    return spearman_ci(x, y, N_BOOT, BOOT_SEED, groups=g)


def headline_rows(run_a: Path, run_b: Path, names: list[str]) -> list[dict[str, Any]]:
    """Per method: the paired differences (value, low, high) and both models' within-group ranks."""
    from ..report import bootstrap_ci

    a, b = frame_with_groups(run_a), frame_with_groups(run_b)
    rows = []
    for meth in names:
        sa = a[a["method"] == meth].set_index("index")
        sb = b[b["method"] == meth].set_index("index")
        common = sa.index.intersection(sb.index).sort_values()
        sa, sb = sa.loc[common], sb.loc[common]
        aligned = (sa["group"] == "aligned").to_numpy()
        diff = {c: _col(sa, c) - _col(sb, c) for c in ("cue_share.normalised", "cue_pointing")}
        rows.append(
            {
                "method": meth,
                "aligned": bootstrap_ci(diff["cue_share.normalised"][aligned]),
                "badged": bootstrap_ci(diff["cue_share.normalised"]),
                "pointing": bootstrap_ci(diff["cue_pointing"][aligned]),
                "rank_a": _rank(sa),
                "rank_b": _rank(sb),
            }
        )

    def order(r: dict[str, Any]) -> tuple[bool, float]:
        v = float(r["aligned"][0])
        return (bool(np.isnan(v)), 0.0 if np.isnan(v) else -v)

    rows.sort(key=order)
    return rows


def headline(run_a: Path, run_b: Path, tag_a: str, tag_b: str, names: list[str]) -> list[str]:
    """Markdown lines: the headline section."""
    head = [
        "",
        f"### Headline: `{tag_a}` − `{tag_b}` on the same pairs (paired bootstrap 95 % interval)",
        "",
        "A method that sees the shortcut puts more of its map on the badge where the biased model uses it "
        "(aligned pairs) than the clean model does. Normalised cue share = share / its ceiling at the map's "
        "resolution (a patch map cannot put all its mass on a 10 x 10 px glyph); pointing at the map's own "
        "resolution (a patch counts when it overlaps the badge). Sorted by the aligned difference in "
        "normalised share.",
        "",
        f"| method | Δ normalised cue share, aligned | Δ normalised cue share, badged | Δ cue pointing, aligned | "
        f"reliance rank within groups, `{tag_a}` | reliance rank within groups, `{tag_b}` |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    for r in headline_rows(run_a, run_b, names):
        cells = [_fmt(r[k]) for k in ("aligned", "badged", "pointing", "rank_a", "rank_b")]
        head.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return head


def undefined_pairs(runs: dict[str, Path], names: list[str]) -> list[str]:
    """One line per model: the badged pairs whose cue share is undefined (no positive mass), per method."""
    lines = [""]
    for tag, run in runs.items():
        df = frame_with_groups(run)
        parts = []
        for meth in names:
            nm = _col(df[df["method"] == meth], "cue_share.no_mass")
            k, n = int(np.nansum(nm)), int(np.isfinite(nm).sum())
            if k:
                parts.append(f"{meth} {k} of {n}")
        what = ", ".join(parts) if parts else "none"
        lines.append(
            f"- `{tag}`: badged pairs whose map has no positive mass (cue share undefined, left out of the "
            f"means and ranks, counted here): {what}"
        )
    return lines
