"""Nothing silent: ground truth a metric needs, pairs that failed, ground truth the crop cut away.

* Before a run, ``scan`` reads the rows (text only) and ``check_metrics`` refuses a metric
  whose ground truth no pair has (or, with ``skip_missing``, drops it and says so).
* While it runs, ``empty_ground_truth`` turns a pair's ground truth that covers no pixel of the
  model's input (boxes wholly outside the centre crop) into "no ground truth" with a warning on
  the pair's rows, instead of metrics computed on an empty mask.
* After it, ``write_summary`` lists every failed or warned pair in ``problems.jsonl`` (index,
  source, reason) and adds the counts to ``manifest.json``; ``summary_line`` is what the
  terminal shows; a run where every pair failed raises ``AllPairsFailedError``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import io as rio

PROBLEMS = "problems.jsonl"


class AllPairsFailedError(InputError):
    """Every pair of a run failed: nothing was measured."""


def _needs(key: str) -> str:
    if key == "masks":
        return "ground-truth masks (a 'boxes' or 'mask' field per pair, or COCO --instances)"
    return f"a {key!r} field per pair"


def scan(ds: Any, limit: int | None) -> tuple[int, dict[str, int]]:
    """(number of pairs, ground-truth key -> pairs that have it): one text-only pass that also
    validates every line. Keys: ``masks`` (boxes or a mask) and the rows' extra fields."""
    n, have = 0, dict[str, int]()
    for row in ds.rows():
        if limit is not None and n >= limit:
            break
        n += 1
        keys = set(row.extras) | ({"masks"} if row.boxes is not None or row.mask is not None else set())
        for k in keys:
            have[k] = have.get(k, 0) + 1
    return n, have


def announce(ds: Any, n: int) -> None:
    """Say what was read, before the run starts: the pair count, the split, and the data's notes."""
    d = ds.describe() if hasattr(ds, "describe") else {}
    split = f" (split {d['split']})" if d.get("split") not in (None, "all") else ""
    what = f"{d['format']} data" if "format" in d else "the data"
    print(f"{n} pair{'' if n == 1 else 's'} from {what}{split}", file=sys.stderr)
    for note in d.get("notes", []):
        print(f"note: {note}", file=sys.stderr)


def check_metrics(
    metric_fns: dict[str, Any], have: dict[str, int], data: str, skip_missing: bool, show: bool = True, n: int = 0
) -> tuple[dict[str, Any], dict[str, str]]:
    """(metrics to run, skipped metric -> reason). A metric whose required ground truth no pair has
    is an error, or with ``skip_missing`` left out with a warning naming it; one that only some of
    the ``n`` pairs can feed is run on those, and said."""
    keep, skipped = {}, {}
    for name, info in metric_fns.items():
        missing = [k for k in info.requires if k != "method" and not have.get(k)]
        if not missing:
            keep[name] = info
            short = [k for k in info.requires if k != "method" and have.get(k, 0) < n]
            if short and show:
                k = short[0]
                print(
                    f"note: metric {name!r}: {n - have[k]} of {n} pairs lack {_needs(k)}; it is left empty for them",
                    file=sys.stderr,
                )
            continue
        reason = f"metric {name!r} needs {' and '.join(_needs(k) for k in missing)}, which no pair of {data} has"
        if not skip_missing:
            raise InputError(f"{reason}; add it to the data, drop the metric, or pass --skip-missing to run without it")
        skipped[name] = reason
        if show:
            print(f"warning: {reason}: skipped (--skip-missing)", file=sys.stderr)
    if not keep:
        raise InputError(f"no metric can be computed on {data}: " + "; ".join(skipped.values()))
    return keep, skipped


def empty_ground_truth(pairs: list[Any], gts: list[Any]) -> dict[int, str]:
    """Pair index -> warning for ground truth that covers no pixel of the input; those ``gts`` become None."""
    notes = {}
    for j, (p, g) in enumerate(zip(pairs, gts)):
        if g is not None and not bool(g.any()):
            what = f"boxes {p.row.boxes}" if p.row.boxes is not None else "mask"
            w, h = p.image.size
            notes[p.index] = (
                f"{p.row.source}: ground truth ({what}) covers no pixel of the model's input (wholly "
                f"outside the centre crop of the {w}x{h} image, or empty): no localisation metrics"
            )
            gts[j] = None
    return notes


def write_summary(out: Path, n_total: int) -> dict[str, Any]:
    """Write ``problems.jsonl`` (one line per failed or warned pair) and add the counts to the manifest."""
    table = rio.load_results(out)
    cols = set(table.column_names)
    rows = table.select([c for c in ("index", "error", "warning") if c in cols]).to_pylist()
    seen: dict[tuple[int, str], str] = {}
    for r in rows:
        for kind in ("error", "warning"):
            if r.get(kind) and (r["index"], kind) not in seen:
                seen[(r["index"], kind)] = r[kind]
    lines = [json.dumps({"index": i, "kind": k, "reason": why}) for (i, k), why in sorted(seen.items())]
    rio.atomic_write_text(out / PROBLEMS, "".join(x + "\n" for x in lines))
    failed = sorted(i for i, k in seen if k == "error")
    warned = sorted(i for i, k in seen if k == "warning")
    summary = {
        "failed": len(failed),
        "warnings": len(warned),
        "problems": PROBLEMS,
        "first_error": seen[(failed[0], "error")] if failed else None,
        "first_warning": seen[(warned[0], "warning")] if warned else None,
    }
    man_path = out / rio.MANIFEST
    man = rio.read_json(man_path) if man_path.is_file() else {}
    rio.atomic_write_json(man_path, {**man, **summary})
    return {**summary, "num_samples": n_total}


def read_summary(out: str | Path) -> dict[str, Any]:
    man_path = Path(out) / rio.MANIFEST
    return rio.read_json(man_path) if man_path.is_file() else {}


def summary_line(out: str | Path) -> str | None:
    """What the terminal says about failed and warned pairs (None when there were none)."""
    s = read_summary(out)
    n, failed, warned = s.get("num_samples", 0), s.get("failed", 0), s.get("warnings", 0)
    if not failed and not warned:
        return None
    parts = []
    if failed:
        parts.append(f"{failed} of {n} pairs failed (first: {s.get('first_error')})")
    if warned:
        parts.append(
            f"{warned} pair{'s' if warned != 1 else ''} without usable ground truth (first: {s.get('first_warning')})"
        )
    return "; ".join(parts) + f"; every reason is in {Path(out) / PROBLEMS}"


def raise_if_all_failed(out: Path) -> None:
    s = read_summary(out)
    n = s.get("num_samples", 0)
    if n and s.get("failed", 0) >= n:
        raise AllPairsFailedError(
            f"every one of the {n} pairs failed, nothing was measured (first: "
            f"{s.get('first_error')}); every reason is in {out / PROBLEMS}"
        )
